import { describe, expectTypeOf, it } from 'vitest';
import type { Gfn, Pfn } from '../units.js';
import { gfn, pfn } from '../units.js';
import type {
  ArchExit,
  ArchGuestApiOf,
  ArchMemoryRequest,
  ArchPlugin,
  ArchResult,
  ArchVm,
  ArchVmApiOf,
  ArchVmContext,
  HostFault,
  PageSource,
} from '@cocokit/sdk';
import { archOk, defineArchPlugin } from '@cocokit/sdk';

/** A VMM-side API a plugin declares for its VM type, the way arch-tdx declares TdxVmApi. */
interface TypetestVmApi {
  initMemRegion(gfn: Gfn, pfn: Pfn): void;
}
interface TypetestGuestApi {
  accept(gfn: Gfn): ArchResult;
}

declare module '@cocokit/sdk' {
  interface ArchVmApis {
    'typetest-arch': TypetestVmApi;
  }
  interface ArchGuestApis {
    'typetest-arch': TypetestGuestApi;
  }
}

const caps = { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false } as const;

describe('brands', () => {
  it('keeps guest and host frames apart', () => {
    expectTypeOf(gfn(1)).not.toEqualTypeOf<Pfn>();
    // @ts-expect-error a Gfn is not a Pfn
    const p: Pfn = gfn(1);
    // @ts-expect-error a Pfn is not a Gfn
    const g: Gfn = pfn(1);
    // @ts-expect-error a plain number is neither
    const q: Pfn = 1;
    void [p, g, q];
  });

  it('types hook parameters with the brands', () => {
    const vm: ArchVm = { capabilities: caps, gmemPrepare: () => undefined };
    // @ts-expect-error gmemPrepare takes (pfn, gfn), not (gfn, pfn)
    vm.gmemPrepare?.(gfn(0), pfn(0), 0);
    // @ts-expect-error an order is 0, 9 or 18
    vm.gmemPrepare?.(pfn(0), gfn(0), 3);
    vm.gmemPrepare?.(pfn(0), gfn(0), 9);
    expectTypeOf<ReturnType<NonNullable<ArchVm['hostAccess']>>>().toEqualTypeOf<'ok' | HostFault>();
  });

  it('makes a plain object fail to be a plugin: only defineArchPlugin brands', () => {
    // @ts-expect-error missing the brand
    const p: ArchPlugin = { name: 'x', apiVersion: 1, vmTypes: ['x'], costs: {}, createVm: () => ({ capabilities: caps }) };
    void p;
  });
});

describe('defineArchPlugin', () => {
  it('infers the VM types and the VM, and hands createVm a context of those types', () => {
    const plugin = defineArchPlugin({
      name: 'toy',
      apiVersion: 1,
      vmTypes: ['toy', 'toy-2m'],
      createVm(ctx) {
        expectTypeOf(ctx).toEqualTypeOf<ArchVmContext<'toy' | 'toy-2m'>>();
        return { capabilities: caps, extra: 1 };
      },
    });
    expectTypeOf(plugin.vmTypes).toEqualTypeOf<readonly ('toy' | 'toy-2m')[]>();
    expectTypeOf(plugin).toExtend<ArchPlugin>();
    expectTypeOf(plugin.createVm).returns.toHaveProperty('extra');
  });

  it('refuses hooks of the wrong shape', () => {
    defineArchPlugin({
      name: 'bad',
      apiVersion: 1,
      vmTypes: ['bad'],
      createVm: () => ({
        capabilities: caps,
        // @ts-expect-error setPrivateSpte returns an ArchResult, not a boolean
        setPrivateSpte: () => true,
      }),
    });
    defineArchPlugin({
      name: 'bad',
      apiVersion: 1,
      vmTypes: ['bad'],
      // @ts-expect-error maxPrivateLevel is 0 | 1 | 2
      createVm: () => ({ capabilities: { ...caps, maxPrivateLevel: 3 } }),
    });
  });
});

describe('ArchVmApis augmentation', () => {
  it('types the API of a declared VM type, and leaves others unknown', () => {
    expectTypeOf<ArchVmApiOf<'typetest-arch'>>().toEqualTypeOf<TypetestVmApi>();
    expectTypeOf<ArchGuestApiOf<'typetest-arch'>>().toEqualTypeOf<TypetestGuestApi>();
    expectTypeOf<ArchVmApiOf<'undeclared'>>().toBeUnknown();
  });

  it('makes a plugin for a declared VM type provide that API', () => {
    const api: TypetestVmApi = { initMemRegion: () => undefined };
    const guest: TypetestGuestApi = { accept: () => archOk() };
    const plugin = defineArchPlugin({
      name: 'typetest',
      apiVersion: 1,
      vmTypes: ['typetest-arch'],
      createVm: () => ({ capabilities: caps, vmApi: api, guestApi: guest }),
    });
    expectTypeOf(plugin.createVm).returns.toHaveProperty('vmApi').toEqualTypeOf<TypetestVmApi>();
    defineArchPlugin({
      name: 'typetest',
      apiVersion: 1,
      vmTypes: ['typetest-arch'],
      // @ts-expect-error the declared vmApi is missing
      createVm: () => ({ capabilities: caps, guestApi: guest }),
    });
    defineArchPlugin({
      name: 'typetest',
      apiVersion: 1,
      vmTypes: ['typetest-arch'],
      // @ts-expect-error the vmApi does not match the declaration
      createVm: () => ({ capabilities: caps, vmApi: { initMemRegion: 1 }, guestApi: guest }),
    });
  });
});

describe('pre-fault permission (additive, apiVersion 1)', () => {
  it('is an optional capability and an optional context method, so older plugins and cores still type-check', () => {
    expectTypeOf<ArchVm['capabilities']['preFaultAllowed']>().toEqualTypeOf<boolean | undefined>();
    expectTypeOf<ArchVmContext['allowPreFault']>().toEqualTypeOf<(() => void) | undefined>();
    // A context built by a core that predates allowPreFault is still an ArchVmContext.
    const older: Omit<ArchVmContext, 'allowPreFault'> = null as never;
    expectTypeOf(older).toExtend<ArchVmContext>();
  });
});

describe('populate through the core (additive, apiVersion 1)', () => {
  it('offers kvm_gmem_populate and kvm_tdp_mmu_map_private_pfn as optional context methods', () => {
    expectTypeOf<ArchVmContext['gmemPopulate']>().toEqualTypeOf<
      ((gfn: Gfn, npages: number, src: ReadonlyArray<PageSource | null>, kind: string) => number) | undefined
    >();
    expectTypeOf<ArchVmContext['mapPrivatePfn']>().toEqualTypeOf<((gfn: Gfn, pfn: Pfn) => void) | undefined>();
    // A context built by a core that predates them is still an ArchVmContext.
    const older: Omit<ArchVmContext, 'gmemPopulate' | 'mapPrivatePfn'> = null as never;
    expectTypeOf(older).toExtend<ArchVmContext>();
    const ctx: ArchVmContext = null as never;
    // @ts-expect-error mapPrivatePfn takes (gfn, pfn), not (pfn, gfn)
    ctx.mapPrivatePfn?.(pfn(0), gfn(0));
  });
});

describe('memory requests (additive, apiVersion 1)', () => {
  it('is an optional hook reading an exit as a convert or discard request', () => {
    expectTypeOf<ArchVm['memoryRequest']>().toEqualTypeOf<((exit: ArchExit) => ArchMemoryRequest | undefined) | undefined>();
    // An ArchVm written before the hook existed is still an ArchVm.
    const older: Omit<ArchVm, 'memoryRequest'> = { capabilities: caps };
    expectTypeOf(older).toExtend<ArchVm>();
    const r: ArchMemoryRequest = { op: 'convert', gpa: 0, size: 4096, toPrivate: false };
    if (r.op === 'convert') expectTypeOf(r.toPrivate).toEqualTypeOf<boolean>();
    // @ts-expect-error a discard changes no shareability
    const d: ArchMemoryRequest = { op: 'discard', gpa: 0, size: 4096, toPrivate: true };
    // @ts-expect-error a conversion says which way
    const c: ArchMemoryRequest = { op: 'convert', gpa: 0, size: 4096 };
    void [d, c];
  });
});
