import { describe, expect, it } from 'vitest';
import { ARCH_PLUGIN_BRAND, CONTRACT_API_VERSION, SUPPORTED_API_VERSIONS, archBusy, archError, archOk } from './contract.js';

describe('ArchResult constructors', () => {
  it('builds plain objects that compare by value', () => {
    expect(archOk()).toEqual({ status: 'ok' });
    expect(archOk()).toBe(archOk());
    expect(Object.isFrozen(archOk())).toBe(true);
    expect(archBusy('S-EPT tree')).toEqual({ status: 'busy', reason: 'S-EPT tree' });
    expect(archError('EINVAL', 'misaligned')).toEqual({ status: 'error', errno: 'EINVAL', reason: 'misaligned' });
  });
});

describe('contract version', () => {
  it('supports the current version', () => {
    expect(CONTRACT_API_VERSION).toBe(1);
    expect(SUPPORTED_API_VERSIONS.min).toBeLessThanOrEqual(CONTRACT_API_VERSION);
    expect(SUPPORTED_API_VERSIONS.max).toBe(CONTRACT_API_VERSION);
  });
  it('brands with a registry symbol, so two copies of the sdk agree', () => {
    expect(ARCH_PLUGIN_BRAND).toBe(Symbol.for('cocokit.arch-plugin'));
  });
});
