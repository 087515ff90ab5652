import { describe, expect, it } from 'vitest';
import { processFault, isProcessFault } from './fault.js';

describe('fault values', () => {
  it('builds and recognises fault values', () => {
    const f = processFault('SIGBUS', 0x1000, 'page is private');
    expect(f).toEqual({ ok: false, signal: 'SIGBUS', addr: 0x1000, reason: 'page is private' });
    expect(isProcessFault(f)).toBe(true);
    expect(isProcessFault({ ok: true })).toBe(false);
    expect(isProcessFault(null)).toBe(false);
    expect(isProcessFault('SIGBUS')).toBe(false);
  });
});
