import { describe, expect, it } from 'vitest';
import { isKvmError } from '../errors.js';
import { ARCH_PLUGIN_BRAND, SUPPORTED_API_VERSIONS } from './contract.js';
import { defineArchPlugin, isArchName, validateArchPlugin } from './define.js';
import { isArchPluginError } from './errors.js';

const base = {
  name: 'toy',
  apiVersion: 1,
  vmTypes: ['toy'],
  costs: { 'toy.op': { ns: 10, source: 'made up for the test' } },
  createVm: () => ({
    capabilities: {
      privateMem: false,
      privateByDefault: false,
      maxPrivateLevel: 0 as const,
      mirrorRoot: false,
      inPlaceConversion: false,
    },
  }),
};

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return isArchPluginError(e) ? e.code : `not an ArchPluginError: ${String(e)}`;
  }
  return undefined;
}

function messageOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return (e as Error).message;
  }
  return '';
}

describe('defineArchPlugin', () => {
  it('returns a frozen, branded copy', () => {
    const p = defineArchPlugin(base);
    expect(p[ARCH_PLUGIN_BRAND]).toBe(1);
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.isFrozen(p.vmTypes)).toBe(true);
    expect(Object.isFrozen(p.costs)).toBe(true);
    expect(p.name).toBe('toy');
    expect(validateArchPlugin(p, 'test')).toBe(p);
  });

  it('defaults costs to none', () => {
    const { costs: _costs, ...noCosts } = base;
    expect(defineArchPlugin(noCosts).costs).toEqual({});
  });

  it('refuses names that are not lowercase identifiers', () => {
    for (const name of ['', 'Toy', '../x', '@scope/x', 'a.b', 'x/y', '-x', 'x-', 'a'.repeat(65)]) {
      expect(codeOf(() => defineArchPlugin({ ...base, name }))).toBe('E_PLUGIN_INVALID');
    }
    expect(isArchName('sw-protected')).toBe(true);
    expect(isArchName('arch_2')).toBe(true);
  });

  it('refuses an apiVersion out of range, naming the plugin and the supported range', () => {
    expect(codeOf(() => defineArchPlugin({ ...base, apiVersion: 2 }))).toBe('E_PLUGIN_API_VERSION');
    expect(codeOf(() => defineArchPlugin({ ...base, apiVersion: 0 }))).toBe('E_PLUGIN_API_VERSION');
    const msg = messageOf(() => defineArchPlugin({ ...base, apiVersion: 7 }));
    expect(msg).toContain("'toy'");
    expect(msg).toContain(`${SUPPORTED_API_VERSIONS.min}..${SUPPORTED_API_VERSIONS.max}`);
    expect(msg).toContain('upgrade @cocokit/sdk');
    expect(codeOf(() => defineArchPlugin({ ...base, apiVersion: 1.5 }))).toBe('E_PLUGIN_INVALID');
  });

  it('refuses empty, duplicate or malformed vmTypes', () => {
    expect(codeOf(() => defineArchPlugin({ ...base, vmTypes: [] as string[] }))).toBe('E_PLUGIN_INVALID');
    expect(codeOf(() => defineArchPlugin({ ...base, vmTypes: ['a', 'a'] }))).toBe('E_PLUGIN_INVALID');
    expect(codeOf(() => defineArchPlugin({ ...base, vmTypes: ['../../etc'] }))).toBe('E_PLUGIN_INVALID');
  });

  it('refuses costs without a source or with a negative or non-finite ns', () => {
    const msg = messageOf(() => defineArchPlugin({ ...base, costs: { 'toy.op': { ns: 1, source: ' ' } } }));
    expect(msg).toContain("'toy.op'");
    expect(msg).toContain('source');
    expect(codeOf(() => defineArchPlugin({ ...base, costs: { a: { ns: -1, source: 's' } } }))).toBe('E_PLUGIN_INVALID');
    expect(codeOf(() => defineArchPlugin({ ...base, costs: { a: { ns: Infinity, source: 's' } } }))).toBe(
      'E_PLUGIN_INVALID',
    );
  });

  it('refuses a createVm that is not a function', () => {
    expect(codeOf(() => defineArchPlugin({ ...base, createVm: 3 as never }))).toBe('E_PLUGIN_INVALID');
  });

  it('is not a kernel refusal', () => {
    try {
      defineArchPlugin({ ...base, vmTypes: [] as string[] });
    } catch (e) {
      expect(isKvmError(e)).toBe(false);
    }
  });
});

describe('validateArchPlugin', () => {
  it('refuses an unbranded object that would otherwise be valid, pointing at defineArchPlugin', () => {
    const msg = messageOf(() => validateArchPlugin(base, 'cocokit-arch-toy'));
    expect(msg).toContain("'toy'");
    expect(msg).toContain('cocokit-arch-toy');
    expect(msg).toContain('defineArchPlugin');
  });
  it('accepts a plugin branded by another copy of the sdk (Symbol.for)', () => {
    const foreign = { ...base, [Symbol.for('cocokit.arch-plugin')]: 1 };
    expect(validateArchPlugin(foreign, 'elsewhere')).toBe(foreign);
  });
  it('re-validates a branded object (the brand can be forged)', () => {
    const forged = { ...base, apiVersion: 99, [Symbol.for('cocokit.arch-plugin')]: 99 };
    expect(codeOf(() => validateArchPlugin(forged, 'x'))).toBe('E_PLUGIN_API_VERSION');
    expect(codeOf(() => validateArchPlugin(null, 'x'))).toBe('E_PLUGIN_INVALID');
    expect(codeOf(() => validateArchPlugin('snp', 'x'))).toBe('E_PLUGIN_INVALID');
  });
});
