import { describe, expect, it } from 'vitest';
import { ArchPluginError, isArchPluginError } from './errors.js';

describe('ArchPluginError', () => {
  it('carries code, subject, attempts and cause', () => {
    const cause = new Error('boom');
    const e = new ArchPluginError('E_PLUGIN_NOT_FOUND', 'nothing', {
      subject: 'snp',
      attempts: [{ place: 'registry', outcome: 'absent', detail: 'none' }],
      cause,
    });
    expect(e.name).toBe('ArchPluginError');
    expect(e.code).toBe('E_PLUGIN_NOT_FOUND');
    expect(e.subject).toBe('snp');
    expect(e.attempts).toHaveLength(1);
    expect(e.cause).toBe(cause);
    expect(new ArchPluginError('E_PLUGIN_INVALID', 'x', { subject: 'a' }).attempts).toEqual([]);
  });
  it('is matched by name and code, not by class (two sdk copies agree)', () => {
    const foreign = Object.assign(new Error('x'), { name: 'ArchPluginError', code: 'E_PLUGIN_DUPLICATE' });
    expect(isArchPluginError(foreign)).toBe(true);
    expect(isArchPluginError(foreign, 'E_PLUGIN_DUPLICATE')).toBe(true);
    expect(isArchPluginError(foreign, 'E_PLUGIN_INVALID')).toBe(false);
    expect(isArchPluginError(new Error('x'))).toBe(false);
    expect(isArchPluginError(null)).toBe(false);
    expect(isArchPluginError({ name: 'ArchPluginError' })).toBe(false);
  });
});
