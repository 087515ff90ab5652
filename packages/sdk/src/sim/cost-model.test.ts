import { describe, expect, it } from 'vitest';
import { isKvmError } from '../errors.js';
import { createCostModel } from './cost-model.js';

const src = 'test fixture';

describe('createCostModel', () => {
  it('registers defaults and returns them', () => {
    const c = createCostModel();
    c.register('gmem', { 'sdk.test.a': { ns: 100, source: src }, 'sdk.test.b': { ns: 0, source: src, unit: 'per page' } });
    expect(c.get('sdk.test.a')).toBe(100);
    expect(c.get('sdk.test.b')).toBe(0);
    expect(c.has('sdk.test.a')).toBe(true);
    expect(c.has('nope')).toBe(false);
  });

  it('refuses an unknown name with EINVAL', () => {
    const c = createCostModel();
    expect(() => c.get('sdk.test.op')).toThrow(expect.objectContaining({ errno: 'EINVAL', op: 'costs.get' }));
  });

  it('refuses bad defaults with EINVAL and registers nothing from a refused call', () => {
    const c = createCostModel();
    const bad = [
      { ns: -1, source: src },
      { ns: NaN, source: src },
      { ns: Infinity, source: src },
      { ns: 1, source: '' },
      { ns: 1, source: '   ' },
      { ns: '1', source: src },
    ];
    for (const def of bad) {
      expect(() => c.register('x', { 'sdk.test.a': { ns: 1, source: src }, 'sdk.test.b': def as never })).toThrow(
        expect.objectContaining({ errno: 'EINVAL', op: 'costs.register' }),
      );
    }
    expect(() => c.register('', { 'sdk.test.a': { ns: 1, source: src } })).toThrow(expect.objectContaining({ errno: 'EINVAL' }));
    expect(() => c.register('x', { '': { ns: 1, source: src } })).toThrow(expect.objectContaining({ errno: 'EINVAL' }));
    expect(c.entries()).toEqual([]);
  });

  it('is idempotent for the same owner and definition, EEXIST otherwise', () => {
    const c = createCostModel();
    c.register('gmem', { 'sdk.test.a': { ns: 100, source: src } });
    c.register('gmem', { 'sdk.test.a': { ns: 100, source: src } });
    for (const [owner, def] of [
      ['gmem', { ns: 101, source: src }],
      ['gmem', { ns: 100, source: 'other' }],
      ['gmem', { ns: 100, source: src, unit: 'per page' }],
      ['mmu', { ns: 100, source: src }],
    ] as const) {
      let err: unknown;
      try {
        c.register(owner, { 'sdk.test.b': { ns: 1, source: src }, 'sdk.test.a': def });
      } catch (e) {
        err = e;
      }
      expect(isKvmError(err, 'EEXIST')).toBe(true);
    }
    // the refused calls registered nothing, not even the fresh name before the clash
    expect(c.has('sdk.test.b')).toBe(false);
    expect(c.entries()).toHaveLength(1);
  });

  it('override replaces a value; unknown names and bad values are EINVAL with no change', () => {
    const c = createCostModel();
    c.register('gmem', { 'sdk.test.a': { ns: 100, source: src }, 'sdk.test.b': { ns: 5, source: src } });
    c.override({ 'sdk.test.a': 7 });
    expect(c.get('sdk.test.a')).toBe(7);
    expect(() => c.override({ 'sdk.test.b': 1, 'sdk.test.typo': 1 })).toThrow(expect.objectContaining({ errno: 'EINVAL', op: 'costs.override' }));
    expect(() => c.override({ 'sdk.test.b': -1 })).toThrow(expect.objectContaining({ errno: 'EINVAL' }));
    expect(c.get('sdk.test.b')).toBe(5);
    // re-registering after an override keeps the override
    c.register('gmem', { 'sdk.test.a': { ns: 100, source: src } });
    expect(c.get('sdk.test.a')).toBe(7);
  });

  it('lists entries sorted by name, with default, owner and override flag', () => {
    const c = createCostModel();
    c.register('mmu', { 'sdk.test.b': { ns: 2, source: 'b src', unit: 'per level' } });
    c.register('gmem', { 'sdk.test.a': { ns: 1, source: 'a src' } });
    c.override({ 'sdk.test.b': 20 });
    expect(c.entries()).toEqual([
      { name: 'sdk.test.a', owner: 'gmem', ns: 1, defaultNs: 1, source: 'a src', overridden: false },
      { name: 'sdk.test.b', owner: 'mmu', ns: 20, defaultNs: 2, source: 'b src', unit: 'per level', overridden: true },
    ]);
  });

  it('keeps overrides given at creation until their name is registered', () => {
    const c = createCostModel({ 'sdk.test.a': 3, 'sdk.test.typo': 9 });
    expect(c.pendingOverrides()).toEqual(['sdk.test.a', 'sdk.test.typo']);
    c.register('gmem', { 'sdk.test.a': { ns: 100, source: src } });
    expect(c.get('sdk.test.a')).toBe(3);
    expect(c.entries()[0]).toMatchObject({ ns: 3, defaultNs: 100, overridden: true });
    expect(c.pendingOverrides()).toEqual(['sdk.test.typo']);
    expect(() => createCostModel({ 'sdk.test.a': -5 })).toThrow(expect.objectContaining({ errno: 'EINVAL' }));
  });
});
