import { CONTRACT_API_VERSION, createArchRegistry } from '@cocokit/sdk';
import { runArchConformance } from '@cocokit/sdk/testing';
import { describe, expect, it } from 'vitest';
import tdx from './index.js';

// The sdk's conformance kit. Checks that do not apply to TDX report themselves as skipped:
// prepare-invalidate-balance and no-host-access-to-private need gmemPrepare, which TDX does not
// implement (pages become private through the S-EPT hooks, covered in vm.test.ts).
const launch = { measuredKind: 'measured' };
runArchConformance(tdx, { launch });
runArchConformance(tdx, { launch, vmOptions: { gpaw: 52, hugePages: true } });

describe('the tdx plugin', () => {
  it('declares its name, VM type, contract version and costs', () => {
    expect(tdx.name).toBe('tdx');
    expect(tdx.vmTypes).toEqual(['tdx']);
    expect(tdx.apiVersion).toBe(CONTRACT_API_VERSION);
    expect(Object.keys(tdx.costs)).toContain('tdx.page_aug');
    for (const def of Object.values(tdx.costs)) expect(def.source.length).toBeGreaterThan(20);
  });

  it('is found by name through a registry like any third-party plugin', async () => {
    const registry = createArchRegistry();
    const tried: string[] = [];
    const found = await registry.resolve('tdx', {
      importer: async (spec) => {
        tried.push(spec);
        if (spec === '@cocokit/arch-tdx') return import('./index.js');
        throw Object.assign(new Error(`Cannot find package '${spec}'`), { code: 'ERR_MODULE_NOT_FOUND' });
      },
    });
    expect(tried[0]).toBe('@cocokit/arch-tdx');
    expect(found).toBe(tdx);
  });

  it('refuses unknown options and a GPAW other than 48 or 52 when a VM is created', async () => {
    const { createTestTd } = await import('./test-support.js');
    expect(() => createTestTd({ gpaw: 50 } as never)).toThrow(/GPAW 50/);
    expect(() => createTestTd({ nope: 1 } as never)).toThrow(/unknown TDX option 'nope'/);
  });
});
