import { gfn, isKvmError, pfn, type PageSource, type TableLevel } from '@cocokit/sdk';
import { errnoOf } from '@cocokit/sdk/testing';
import { describe, expect, it } from 'vitest';
import { SEPT_STATE } from './sept.js';
import { createTestTd, mapPrivate } from './test-support.js';
import { KVM_TDX_MEASURE_MEMORY_REGION } from './vm.js';

const G = 0x40000;
const P = 0x40000;
const zero: PageSource = { kind: 'zero' };

function thrown(f: () => unknown): { errno: string; data: Record<string, unknown> | undefined } {
  try {
    f();
  } catch (e) {
    if (isKvmError(e)) return { errno: e.errno, data: e.data as Record<string, unknown> | undefined };
    throw e;
  }
  throw new Error('expected a KvmError');
}

/** Seed 001's flow: KVM_PRE_FAULT_MEMORY before KVM_TDX_INIT_MEM_REGION. */
const SEED = { launchFlow: 'seed-001-premap' } as const;

describe('the upstream launch order (default)', () => {
  it('INIT_MEM_REGION maps each page itself (SEPT.ADD, then PAGE.ADD from the S-EPT hook), measures it; FINALIZE allows pre-faulting', () => {
    const t = createTestTd();
    const { vm } = t;
    expect(vm.vmApi.launchFlow).toBe('upstream');
    // tdx_vm_init: pre_fault_allowed stays false until tdx_td_finalize.
    expect(vm.capabilities.preFaultAllowed).toBe(false);
    const progress = vm.vmApi.initMemRegion({ gpa: G * 4096, nrPages: 4, sources: [zero, zero, zero, zero] }, KVM_TDX_MEASURE_MEMORY_REGION);
    expect(progress).toEqual({ gpa: (G + 4) * 4096, nrPages: 0 });
    const calls = vm.vmApi.module.stats().calls;
    expect(calls['TDH.MEM.SEPT.ADD']).toBeGreaterThan(0);
    expect(calls['TDH.MEM.PAGE.ADD']).toBe(4);
    expect(calls['TDH.MR.EXTEND']).toBe(64);
    expect(vm.vmApi.premapped).toBe(0);
    // The mirror root and the S-EPT agree: the MMU mapped what the module added.
    for (let i = 0; i < 4; i++) {
      const m = t.mirror.get(G + i);
      expect(m).toBeDefined();
      expect(vm.vmApi.module.sept.entry(G + i, 0)).toMatchObject({ state: SEPT_STATE.MAPPED, pfn: m?.pfn });
    }
    vm.checkInvariants();
    let allowed = false;
    const u = createTestTd();
    u.ctx.allowPreFault = () => void (allowed = true);
    u.vm.finalize();
    expect(allowed).toBe(true);
    expect(vm.finalize().digest).toHaveLength(48);
    vm.checkInvariants();
  });

  it('gives the MRTD seed 001 gives for the same image: the measurement does not depend on who maps', () => {
    const bytes = new Uint8Array(4096).fill(0x5a);
    const up = createTestTd().vm;
    up.vmApi.initMemRegion({ gpa: G * 4096, nrPages: 2, sources: [{ kind: 'bytes', bytes }, zero] }, KVM_TDX_MEASURE_MEMORY_REGION);
    const seed = createTestTd(SEED).vm;
    for (let i = 0; i < 2; i++) expect(mapPrivate(seed, G + i, P + i)).toEqual({ status: 'ok' });
    seed.vmApi.initMemRegion({ gpa: G * 4096, nrPages: 2, sources: [{ kind: 'bytes', bytes }, zero] }, KVM_TDX_MEASURE_MEMORY_REGION);
    expect(up.finalize().digest).toEqual(seed.finalize().digest);
  });

  it('refuses populating a page twice (kvm_gmem_populate: EEXIST), after FINALIZE (EINVAL), and a source-less page (EOPNOTSUPP)', () => {
    const { vm } = createTestTd();
    vm.vmApi.initMemRegion({ gpa: G * 4096, nrPages: 1, sources: [zero] });
    const again = thrown(() => vm.vmApi.initMemRegion({ gpa: G * 4096, nrPages: 1, sources: [zero] }));
    expect(again).toEqual({ errno: 'EEXIST', data: { gpa: G * 4096, nrPages: 1 } });
    expect(thrown(() => vm.populate(gfn(G + 1), pfn(P + 1), null, 'measured')).errno).toBe('EOPNOTSUPP');
    expect(vm.vmApi.module.stats().calls['TDH.MEM.PAGE.ADD']).toBe(1);
    vm.finalize();
    expect(thrown(() => vm.vmApi.initMemRegion({ gpa: (G + 1) * 4096, nrPages: 1, sources: [zero] })).errno).toBe('EINVAL');
    vm.checkInvariants();
  });

  it('a private mapping before FINALIZE outside INIT_MEM_REGION is a KVM bug (tdx_mem_page_add: no page_add_src): EIO', () => {
    const t = createTestTd();
    const r = mapPrivate(t.vm, G, P);
    expect(r).toMatchObject({ status: 'error', errno: 'EIO' });
    expect(t.bugs).toHaveLength(1);
  });

  it('needs the core to map and populate: without ctx.gmemPopulate INIT_MEM_REGION is EOPNOTSUPP', () => {
    const t = createTestTd();
    delete (t.ctx as { gmemPopulate?: unknown }).gmemPopulate;
    expect(thrown(() => t.vm.vmApi.initMemRegion({ gpa: G * 4096, nrPages: 1, sources: [zero] })).errno).toBe('EOPNOTSUPP');
  });

  it('refuses an unknown launchFlow', () => {
    expect(() => createTestTd({ launchFlow: 'nope' } as never)).toThrow(/launchFlow must be one of upstream, seed-001-premap/);
  });
});

describe("the seed 001 launch order (launchFlow: 'seed-001-premap')", () => {
  it('KVM_PRE_FAULT_MEMORY builds the S-EPT and premaps; INIT_MEM_REGION PAGE.ADDs; FINALIZE closes MRTD', () => {
    const t = createTestTd(SEED);
    const { vm } = t;
    for (let i = 0; i < 4; i++) expect(mapPrivate(vm, G + i, P + i)).toEqual({ status: 'ok' });
    // SEPT.ADD happened (path built) but no leaf yet: setPrivateSpte before finalize only premaps.
    expect(vm.vmApi.module.sept.state(G, 1)).toBe(SEPT_STATE.NL_MAPPED);
    expect(vm.vmApi.module.sept.state(G, 0)).toBe(SEPT_STATE.FREE);
    expect(vm.vmApi.premapped).toBe(4);
    vm.checkInvariants();
    const progress = vm.vmApi.initMemRegion({ gpa: G * 4096, nrPages: 4, sources: [zero, zero, zero, zero] }, KVM_TDX_MEASURE_MEMORY_REGION);
    expect(progress).toEqual({ gpa: (G + 4) * 4096, nrPages: 0 });
    expect(vm.vmApi.module.sept.entry(G + 3, 0)).toMatchObject({ state: SEPT_STATE.MAPPED, pfn: P + 3 });
    expect(vm.vmApi.module.stats().calls['TDH.MR.EXTEND']).toBe(64);
    vm.checkInvariants();
    const m = vm.finalize();
    expect(m.kind).toBe('mrtd');
    expect(m.digest).toHaveLength(48);
    vm.checkInvariants();
  });

  it('INIT_MEM_REGION without PRE_FAULT is refused with ENOENT, nothing added, the region written back', () => {
    const { vm } = createTestTd(SEED);
    expect(mapPrivate(vm, G, P)).toEqual({ status: 'ok' });
    const e = thrown(() => vm.vmApi.initMemRegion({ gpa: G * 4096, nrPages: 2, sources: [zero, zero] }));
    expect(e.errno).toBe('ENOENT');
    // The first page was added; the second (never pre-faulted) stopped the ioctl, as KVM writes back.
    expect(e.data).toMatchObject({ gpa: (G + 1) * 4096, nrPages: 1 });
    expect(vm.vmApi.module.pageAddCount).toBe(1);
    expect(thrown(() => vm.populate(gfn(G + 5), pfn(P + 5), zero, 'measured')).errno).toBe('ENOENT');
    vm.checkInvariants();
  });

  it('populate refuses a pfn other than the premapped one (EAGAIN), no source (EOPNOTSUPP) and unknown kinds', () => {
    const { vm } = createTestTd(SEED);
    mapPrivate(vm, G, P);
    expect(thrown(() => vm.populate(gfn(G), pfn(P + 1), zero, 'measured')).errno).toBe('EAGAIN');
    expect(thrown(() => vm.populate(gfn(G), pfn(P), null, 'measured')).errno).toBe('EOPNOTSUPP');
    expect(thrown(() => vm.populate(gfn(G), pfn(P), zero, 'normal')).errno).toBe('EINVAL');
    expect(vm.vmApi.premapped).toBe(1);
  });

  it('INIT_MEM_REGION validates like tdx_vcpu_init_mem_region', () => {
    const { vm } = createTestTd(SEED);
    const r = (gpa: number, nrPages: number, flags = 0) => thrown(() => vm.vmApi.initMemRegion({ gpa, nrPages, sources: Array(Math.max(nrPages, 0)).fill(zero) }, flags)).errno;
    expect(r(G * 4096, 1, 2)).toBe('EINVAL'); // unknown flag
    expect(r(G * 4096 + 1, 1)).toBe('EINVAL'); // unaligned
    expect(r(G * 4096, 0)).toBe('EINVAL'); // empty
    expect(r(2 ** 47, 1)).toBe('EINVAL'); // shared GPA
    expect(r(2 ** 47 - 4096, 2)).toBe('EINVAL'); // last page shared
  });

  it('FINALIZE refuses premapped pages never added (nr_premapped) and a second finalize; ADD after it is refused', () => {
    const { vm } = createTestTd(SEED);
    mapPrivate(vm, G, P);
    expect(thrown(() => vm.finalize()).errno).toBe('EINVAL');
    vm.vmApi.initMemRegion({ gpa: G * 4096, nrPages: 1, sources: [zero] });
    vm.finalize();
    expect(thrown(() => vm.finalize()).errno).toBe('EINVAL');
    expect(thrown(() => vm.vmApi.initMemRegion({ gpa: (G + 1) * 4096, nrPages: 1, sources: [zero] })).errno).toBe('EINVAL');
    expect(thrown(() => vm.populate(gfn(G + 1), pfn(P + 1), zero, 'measured')).errno).toBe('EINVAL');
    vm.checkInvariants();
  });

  it('zapping a premapped page drops it from the count (tdx_is_sept_zap_err_due_to_premap)', () => {
    const { vm } = createTestTd(SEED);
    mapPrivate(vm, G, P);
    expect(vm.removePrivateSpte(gfn(G), 0, pfn(P))).toEqual({ status: 'ok' });
    expect(vm.vmApi.premapped).toBe(0);
    expect(vm.finalize().kind).toBe('mrtd');
  });
});

describe('the private-table hooks after finalize', () => {
  function runnable(options = {}) {
    const t = createTestTd(options);
    t.vm.finalize();
    return t;
  }

  it('setPrivateSpte is PAGE.AUG (PENDING); removePrivateSpte is BLOCK/TRACK/kick/REMOVE and clears the page', () => {
    const t = runnable();
    const { vm } = t;
    expect(mapPrivate(vm, G, P)).toEqual({ status: 'ok' });
    expect(vm.vmApi.module.sept.state(G, 0)).toBe(SEPT_STATE.PENDING);
    expect(vm.hostAccess(pfn(P), true)).toMatchObject({ signal: 'SIGBUS', kind: 'integrity' });
    expect(vm.hostAccess(pfn(P + 1), true)).toBe('ok');
    t.host.writeBytes(pfn(P), 0, new Uint8Array([1, 2, 3]));
    expect(vm.removePrivateSpte(gfn(G), 0, pfn(P))).toEqual({ status: 'ok' });
    expect(vm.vmApi.module.sept.state(G, 0)).toBe(SEPT_STATE.FREE);
    expect(vm.vmApi.module.epoch).toBe(1);
    expect(t.host.readBytes(pfn(P), 0, 3)).toEqual(new Uint8Array(3));
    expect(vm.hostAccess(pfn(P), true)).toBe('ok');
    vm.checkInvariants();
  });

  it('TDX_OPERAND_BUSY from SEPT.ADD or PAGE.AUG is busy (the fault is retried), with nothing changed', () => {
    const { vm } = runnable();
    vm.vmApi.module.injectBusy('TDH.MEM.SEPT.ADD');
    expect(mapPrivate(vm, G, P).status).toBe('busy');
    expect(mapPrivate(vm, G, P)).toEqual({ status: 'ok' });
    vm.vmApi.module.injectBusy('TDH.MEM.PAGE.AUG');
    expect(mapPrivate(vm, G + 1, P + 1).status).toBe('busy');
    expect(vm.vmApi.module.sept.state(G + 1, 0)).toBe(SEPT_STATE.FREE);
    expect(mapPrivate(vm, G + 1, P + 1)).toEqual({ status: 'ok' });
  });

  it('removal retries a busy SEAMCALL once (tdx_no_vcpus_enter_start); twice busy is a KVM_BUG_ON: EIO, VM bugged', () => {
    const { vm } = runnable();
    mapPrivate(vm, G, P);
    mapPrivate(vm, G + 1, P + 1);
    vm.vmApi.module.injectBusy('TDH.MEM.PAGE.REMOVE', 1);
    expect(vm.removePrivateSpte(gfn(G), 0, pfn(P))).toEqual({ status: 'ok' });
    vm.vmApi.module.injectBusy('TDH.MEM.RANGE.BLOCK', 2);
    expect(vm.removePrivateSpte(gfn(G + 1), 0, pfn(P + 1))).toMatchObject({ status: 'error', errno: 'EIO' });
    expect(mapPrivate(vm, G + 2, P + 2)).toMatchObject({ status: 'error', errno: 'EIO' });
  });

  it('a SEAMCALL error other than busy is EIO and bugs the VM (KVM_BUG_ON, reported through ctx.markBugged)', () => {
    const t = runnable();
    const { vm } = t;
    mapPrivate(vm, G, P);
    // An MMU bug: mapping the same pfn at a second gfn. PAMT refuses it.
    expect(mapPrivate(vm, G + 1, P)).toMatchObject({ status: 'error', errno: 'EIO' });
    expect(t.bugs).toEqual(['TDH.MEM.PAGE.AUG failed with TDX_PAGE_METADATA_INCORRECT']);
    expect(vm.linkPrivateTable(gfn(G + 512 * 512), 2)).toMatchObject({ status: 'error', errno: 'EIO' });
    expect(t.bugs).toHaveLength(1);
  });

  it('bad inputs are EINVAL and do not bug the VM', () => {
    const { vm } = runnable();
    expect(vm.setPrivateSpte(gfn(G), 1, pfn(P))).toMatchObject({ status: 'error', errno: 'EINVAL' });
    expect(vm.linkPrivateTable(gfn(G), 0 as TableLevel)).toMatchObject({ status: 'error', errno: 'EINVAL' });
    expect(vm.removePrivateSpte(gfn(-1), 0, pfn(P))).toMatchObject({ status: 'error', errno: 'EINVAL' });
    expect(mapPrivate(vm, G, P)).toEqual({ status: 'ok' });
  });

  it('with the huge-page series, maps 2M PENDING and splits with BLOCK/TRACK/DEMOTE', () => {
    const { vm } = runnable({ hugePages: true });
    expect(vm.capabilities.maxPrivateLevel).toBe(1);
    expect(mapPrivate(vm, G, P, 1)).toEqual({ status: 'ok' });
    expect(vm.splitPrivateSpte(gfn(G), 1)).toEqual({ status: 'ok' });
    expect(vm.vmApi.module.sept.entry(G + 7, 0)).toMatchObject({ state: SEPT_STATE.PENDING, pfn: P + 7 });
    expect(vm.removePrivateSpte(gfn(G + 7), 0, pfn(P + 7))).toEqual({ status: 'ok' });
    vm.checkInvariants();
  });

  it('upstream (no huge pages) refuses 2M and splits', () => {
    const { vm } = runnable();
    expect(vm.splitPrivateSpte(gfn(G), 1)).toMatchObject({ status: 'error', errno: 'EINVAL' });
    expect(vm.maxMappingLevel(gfn(G), pfn(P), true)).toBe(0);
  });
});

describe('capabilities and fault classification', () => {
  it('GPAW 48: shared bit 47; GPAW 52: shared bit 51 and a 5-level S-EPT', () => {
    const a = createTestTd().vm;
    expect(a.capabilities).toMatchObject({ sharedGpaBit: 47, mirrorRoot: true, privateByDefault: true, measurement: 'mrtd' });
    expect(a.classifyFault({ gpa: 2 ** 47 + 0x5000, access: 'read' })).toEqual({ gfn: 5, private: false });
    expect(a.classifyFault({ gpa: 0x5123, access: 'read' })).toEqual({ gfn: 5, private: true });
    const b = createTestTd({ gpaw: 52, launchFlow: 'seed-001-premap' }).vm;
    expect(b.capabilities.sharedGpaBit).toBe(51);
    expect(b.vmApi.module.sept.rootLevel).toBe(4);
    expect(b.classifyFault({ gpa: 2 ** 51 + 2 ** 47, access: 'write' })).toEqual({ gfn: 2 ** 35, private: false });
    expect(mapPrivate(b, 2 ** 35, P)).toEqual({ status: 'ok' }); // above bit 47 is private with GPAW 52
  });
});

describe('destroy (kvm_arch_destroy_vm → tdx_mmu_release_hkid, tdx_sept_free_private_spt)', () => {
  function withPages(n: number) {
    const t = createTestTd();
    t.vm.finalize();
    for (let i = 0; i < n; i++) expect(mapPrivate(t.vm, G + i * 512 * 512, P + i)).toEqual({ status: 'ok' });
    return t;
  }

  it('after the core removed every private page, reclaims each S-EPT page (TDH.PHYMEM.PAGE.RECLAIM + clear)', () => {
    const t = withPages(2);
    // Two 1G regions: one 512G entry, two 1G entries, two 2M entries point at S-EPT pages.
    expect(t.vm.vmApi.module.stats().entries).toEqual([2, 2, 2, 1]);
    for (let i = 0; i < 2; i++) expect(t.vm.removePrivateSpte(gfn(G + i * 512 * 512), 0, pfn(P + i))).toEqual({ status: 'ok' });
    const before = t.sim.now;
    t.vm.destroy();
    const stats = t.vm.vmApi.module.stats();
    expect(stats.entries).toEqual([0, 0, 0, 0]);
    expect(stats.calls['TDH.PHYMEM.PAGE.RECLAIM']).toBe(5);
    expect(t.sim.now - before).toBe(5 * (t.sim.costs.get('tdx.page_reclaim') + t.sim.costs.get('tdx.page_clear')));
    t.vm.checkInvariants();
    // The TD is gone: every hook refuses, and a second destroy does nothing.
    expect(mapPrivate(t.vm, G, P)).toMatchObject({ status: 'error', errno: 'EIO' });
    expect(errnoOf(() => t.vm.guestApi.accept(G * 4096))).toBe('EIO');
    t.vm.destroy();
    expect(t.vm.vmApi.module.stats().calls['TDH.PHYMEM.PAGE.RECLAIM']).toBe(5);
  });

  it('leaks a private page the core did not remove, with the S-EPT pages above it: the host still may not touch it', () => {
    const t = withPages(2);
    expect(t.vm.removePrivateSpte(gfn(G), 0, pfn(P))).toEqual({ status: 'ok' });
    t.vm.destroy();
    // The second page's path (512G, 1G, 2M tables) stays; the first region's 1G and 2M tables go.
    expect(t.vm.vmApi.module.stats().entries).toEqual([1, 1, 1, 1]);
    expect(t.vm.vmApi.module.stats().calls['TDH.PHYMEM.PAGE.RECLAIM']).toBe(2);
    expect(t.vm.hostAccess(pfn(P + 1), true)).toMatchObject({ signal: 'SIGBUS' });
    t.vm.checkInvariants();
  });

  it('drops premapped pages of a TD destroyed before finalize', () => {
    const t = createTestTd();
    mapPrivate(t.vm, G, P);
    t.vm.destroy();
    expect(t.vm.vmApi.premapped).toBe(0);
    expect(t.vm.vmApi.module.stats().entries).toEqual([0, 0, 0, 0]);
    t.vm.checkInvariants();
  });
});
