// End to end under @cocokit/vm (issue 8): a TD launched with measured pages (upstream:
// KVM_TDX_INIT_MEM_REGION through kvm_gmem_populate, mapping each page itself; seed 001's
// KVM_PRE_FAULT_MEMORY-first flow as the `launchFlow` option), finalized, then
// booted with the firmware's DMA flips and lazy acceptance through the VMM exit-loop helper;
// afterwards the MMU's mirror root and the TDX module's S-EPT agree entry for entry.
import { openKvm, runVmm, setupGuestMemory, type DiscardPolicy, type GuestProgram, type Vm } from '@cocokit/vm';
import { firmwareBoot, touchWorkingSet, type TouchResult } from '@cocokit/vm/guest';
import { describe, expect, it } from 'vitest';
import tdx, { KVM_TDX_MEASURE_MEMORY_REGION, SEPT_STATE, isLeaf, isNonLeaf, septStateName, type SeptLevel } from '@cocokit/arch-tdx';

const MiB = 2 ** 20;
const PAGE = 4096;
const RAM = 16 * MiB;
/** The TD image: 16 measured pages at GPA 0 (the firmware volume, in miniature). */
const IMAGE_GPA = 0;
const IMAGE_PAGES = 16;
const DMA_GPA = 0x10_0000;
const TRANSFERS = 8;
const WS_GPA = 0x20_0000;
const WS_SIZE = 8 * MiB;
const ACCEPT_CHUNK = 2 * MiB;

function image(flip?: number): Uint8Array[] {
  return Array.from({ length: IMAGE_PAGES }, (_, i) => {
    const b = new Uint8Array(PAGE);
    for (let j = 0; j < PAGE; j += 64) b[j] = (i * 7 + j) & 0xff;
    if (flip !== undefined && i === Math.floor(flip / PAGE)) b[flip % PAGE] = (b[flip % PAGE] ?? 0) ^ 1;
    return b;
  });
}

/**
 * Creates a TD with private RAM, launches `pages` as its measured image and finalizes it; returns
 * the VM and its MRTD. Upstream (default): KVM_TDX_INIT_MEM_REGION through kvm_gmem_populate maps
 * each page itself (tdx_gmem_post_populate → kvm_tdp_map_page: SEPT.ADD, then PAGE.ADD from the
 * S-EPT hook) and measures it (16 × MR.EXTEND). Seed 001: KVM_PRE_FAULT_MEMORY premaps first.
 */
async function launch(pages: Uint8Array[], flow: 'upstream' | 'seed-001-premap' = 'upstream'): Promise<{ vm: Vm<'tdx'>; mrtd: Uint8Array; kvm: ReturnType<typeof openKvm> }> {
  const kvm = openKvm({ archs: [tdx], hostBytes: 1 << 30, seed: 8 });
  const vm = await kvm.createVm({ type: 'tdx', archOptions: { gpaw: 48, launchFlow: flow } });
  setupGuestMemory(vm, { size: RAM, path: 'attributes' });
  const range = { gpa: IMAGE_GPA, size: IMAGE_PAGES * PAGE };
  if (flow === 'upstream') {
    // pre_fault_allowed is false until KVM_TDX_FINALIZE_VM.
    expect(() => vm.preFaultMemory({ ...range })).toThrow(/EOPNOTSUPP/);
  } else {
    vm.preFaultMemory(range);
    expect(range.size).toBe(0);
    expect(vm.archApi.premapped).toBe(IMAGE_PAGES);
  }
  const progress = vm.archApi.initMemRegion({ gpa: IMAGE_GPA, nrPages: IMAGE_PAGES, sources: pages.map((bytes) => ({ kind: 'bytes', bytes }) as const) }, KVM_TDX_MEASURE_MEMORY_REGION);
  expect(progress).toEqual({ gpa: IMAGE_GPA + IMAGE_PAGES * PAGE, nrPages: 0 });
  expect(vm.archApi.premapped).toBe(0);
  if (flow === 'upstream') expect(vm.mmu.leaves('private')).toHaveLength(IMAGE_PAGES);
  // KVM_TDX_FINALIZE_VM through the core (the contract types the hook's result as optional).
  const m = vm.finalize();
  if (m?.kind !== 'mrtd') throw new Error('finalize gave no MRTD');
  // tdx_td_finalize set pre_fault_allowed.
  expect(vm.preFaultAllowed).toBe(true);
  return { vm, mrtd: m.digest, kvm };
}

/** Seed 000's boot on a TD: the firmware flips its DMA pages, then the OS touches memory, accepting 2 MiB chunks on first use. */
function bootProgram(out: { touch?: TouchResult }): GuestProgram<'tdx'> {
  return function* (g) {
    yield* firmwareBoot(g, { dmaGpa: DMA_GPA, transfers: TRANSFERS });
    out.touch = yield* touchWorkingSet(g, { gpa: WS_GPA, size: WS_SIZE, acceptChunk: ACCEPT_CHUNK, accesses: 1024, pattern: 'random' });
  };
}

/** Every leaf of the MMU's mirror root has a MAPPED S-EPT leaf at the same gfn/level/pfn, and vice versa. */
function expectMirrorMatchesSept(vm: Vm<'tdx'>): number {
  const sept = vm.archApi.module.sept;
  const mirror = vm.mmu.leaves('private');
  for (const l of mirror) {
    const state = sept.state(l.gfn, l.level);
    expect(septStateName(state), `mirror leaf gfn 0x${l.gfn.toString(16)} level ${l.level}`).toBe('MAPPED');
    expect(sept.pfn(l.gfn, l.level)).toBe(l.pfn);
  }
  const septLeaves = [];
  for (let level = 0; level <= sept.rootLevel; level++) {
    for (const e of sept.entries(level as SeptLevel)) {
      if (!isLeaf(e.state)) continue;
      septLeaves.push(e);
      expect(e.state, `S-EPT leaf gfn 0x${e.gfn.toString(16)} level ${level} is ${septStateName(e.state)}`).toBe(SEPT_STATE.MAPPED);
      const m = vm.mmu.lookup(e.gfn, 'private');
      expect(m, `S-EPT leaf gfn 0x${e.gfn.toString(16)} has no mirror leaf`).toBeDefined();
      expect([m?.gfn, m?.level, m?.pfn]).toEqual([e.gfn, e.level, e.pfn]);
    }
  }
  expect(septLeaves.length).toBe(mirror.length);
  // The PAMT agrees too: every private page the module owns is one the mirror maps.
  expect(vm.archApi.module.stats().privatePages).toBe(mirror.reduce((n, l) => n + 512 ** l.level, 0));
  return mirror.length;
}

/**
 * The mirror root's page tables and the S-EPT's non-leaf entries agree: every S-EPT page table
 * (an NL_MAPPED entry at level 1..3) is a table the mirror root holds, and the mirror holds no other.
 */
function expectMirrorTablesMatchSept(vm: Vm<'tdx'>): void {
  const sept = vm.archApi.module.sept;
  const mirror = vm.mmu.mirror;
  if (mirror === undefined) throw new Error('a TD has a mirror root');
  let septTables = 0;
  for (let level = 1; level <= sept.rootLevel; level++) {
    for (const e of sept.entries(level as SeptLevel)) {
      if (!isNonLeaf(e.state)) continue;
      septTables++;
      expect(mirror.hasTableBelow(e.gfn, level), `S-EPT page table under level ${level}, gfn 0x${e.gfn.toString(16)}, is not in the mirror root`).toBe(true);
    }
  }
  // The mirror's tables: its root (TDH.MNG.INIT's S-EPT root, not an S-EPT entry) plus one per NL entry.
  expect(mirror.tablePages - 1).toBe(septTables);
}

describe('end to end: a TD under @cocokit/vm', () => {
  it('MRTD covers every measured byte: one flipped byte changes it, the same image reproduces it', async () => {
    const a = await launch(image());
    const b = await launch(image());
    const c = await launch(image(5 * PAGE + 1234));
    expect(a.mrtd).toHaveLength(48);
    expect(b.mrtd).toEqual(a.mrtd);
    expect(c.mrtd).not.toEqual(a.mrtd);
    // 16 PAGE.ADDs, each measured in 16 chunks of 256 bytes.
    expect(a.vm.archApi.module.stats().calls['TDH.MEM.PAGE.ADD']).toBe(IMAGE_PAGES);
    expect(a.vm.archApi.module.stats().calls['TDH.MR.EXTEND']).toBe(IMAGE_PAGES * 16);
    for (const t of [a, b, c]) t.kvm.checkInvariants();
  });

  it("gives the same MRTD with seed 001's pre-fault-first flow: the measurement does not depend on who maps", async () => {
    const up = await launch(image());
    const seed = await launch(image(), 'seed-001-premap');
    expect(seed.mrtd).toEqual(up.mrtd);
    expectMirrorMatchesSept(seed.vm);
    expectMirrorMatchesSept(up.vm);
    seed.vm.checkInvariants();
  });

  it('does not offer in-place conversion (KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES is not a TDX capability)', async () => {
    const kvm = openKvm({ archs: [tdx], hostBytes: 1 << 28, inPlaceConversion: true });
    const vm = await kvm.createVm({ type: 'tdx' });
    expect(vm.capabilities.inPlaceConversion).toBe(false);
  });

  for (const discard of ['both', 'lazy'] as const satisfies readonly DiscardPolicy[]) {
    it(`boots with the DMA-flip firmware and lazy acceptance, and the mirror root matches the S-EPT (discard ${discard})`, async () => {
      const { vm, kvm } = await launch(image());
      const out: { touch?: TouchResult } = {};
      vm.createVcpu(0, bootProgram(out));
      const r = runVmm(vm, { path: 'attributes', discard });
      expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
      expect(r.vcpus.map((v) => v.state)).toEqual(['shutdown']);
      // Each DMA flip is two MapGPA TDVMCALLs of one page, each one KVM_HC_MAP_GPA_RANGE exit;
      // TDG.MEM.PAGE.ACCEPT never exits to userspace.
      expect(r.exits['HYPERCALL']).toBe(2 * TRANSFERS);
      expect(r.conversions).toBe(2 * TRANSFERS);
      expect(r.convertedPages).toBe(2 * TRANSFERS);
      expect(Object.keys(r.exits).sort()).toEqual(['HYPERCALL', 'SYSTEM_EVENT']);
      // Lazy acceptance: the 1024 random accesses find all four 2 MiB chunks, each accepted once, no #VE.
      expect(out.touch).toEqual({ accesses: 1024, accepts: WS_SIZE / ACCEPT_CHUNK, exceptions: 0 });

      const dmaPages = 2;
      // AUG: each DMA page on every flip back to private, and every working-set page once.
      const AUGS = TRANSFERS + WS_SIZE / PAGE;
      // ACCEPT (tdx_accept_memory): per 2 MiB chunk one 2M try (refused: 4K private mappings only),
      // then 512 × 4K, each an EPT violation (AUG) and the re-issue; per flip back one 4K the same way.
      const ACCEPTS = (WS_SIZE / ACCEPT_CHUNK) * (1 + 2 * 512) + 2 * TRANSFERS;
      const s = vm.stats();
      expect(s.type).toBe('tdx');
      expect(s.exits['HYPERCALL']).toBe(2 * TRANSFERS);
      // MapGPA and ACCEPT are the arch's TDCALLs (archCalls), not the core's KVM_HC hypercall action.
      expect(s.vcpu.hypercalls).toBe(0);
      expect(s.vcpu.archCalls).toBe(2 * TRANSFERS + ACCEPTS);
      // Every AUG is a private NPF (the ACCEPT's EPT violation), handled in KVM without an exit.
      expect(s.vcpu.npfs).toBe(AUGS);
      expect(s.vcpu.exceptions).toBe(0);
      // The VMM's conversions, plus setupGuestMemory's initial KVM_SET_MEMORY_ATTRIBUTES(PRIVATE).
      expect(s.conversions.conversions).toBe(2 * TRANSFERS + 1);
      // 'both' punches each DMA page on every flip to shared (8) and drops its shared copy on every
      // flip back (8); 'lazy' queues those and still holds the last shared copy of both DMA pages.
      if (discard === 'both') expect([s.conversions.punchHoles, s.conversions.sharedDiscards, s.conversions.pendingDiscardPages]).toEqual([TRANSFERS, TRANSFERS, 0]);
      else expect([s.conversions.punchHoles, s.conversions.pendingDiscardPages]).toEqual([0, dmaPages]);

      const mod = vm.archApi.module.stats();
      // Private pages: the image (PAGE.ADD), both DMA pages (AUG again after each flip back), the
      // working set accepted in full chunks (AUG on the ACCEPT's EPT violation, 4K at a time).
      const privatePages = IMAGE_PAGES + dmaPages + WS_SIZE / PAGE;
      expect(mod.privatePages).toBe(privatePages);
      expect(mod.calls['TDH.MEM.PAGE.ADD']).toBe(IMAGE_PAGES);
      expect(mod.calls['TDH.MEM.PAGE.AUG']).toBe(AUGS);
      expect(mod.calls['TDG.MEM.PAGE.ACCEPT']).toBe(ACCEPTS);
      // The first flip of each DMA page finds it never mapped: nothing to BLOCK/TRACK/REMOVE.
      expect(mod.calls['TDH.MEM.PAGE.REMOVE']).toBe(TRANSFERS - dmaPages);
      expect(mod.calls['TDH.MEM.RANGE.BLOCK']).toBe(TRANSFERS - dmaPages);
      expect(mod.calls['TDH.MEM.TRACK']).toBe(TRANSFERS - dmaPages);
      expect(Object.values(mod.errors).every((n) => n === 0)).toBe(true);

      const leaves = expectMirrorMatchesSept(vm);
      expect(leaves).toBe(privatePages);
      expect(s.mmu.mappedLeaves).toBeGreaterThanOrEqual(leaves);
      vm.checkInvariants();
      kvm.checkInvariants();
    });
  }

  // A 2 MiB region of RAM holding nothing else (the image is at 0, the DMA pages are not used here).
  const LONE = 0x40_0000;
  for (const back of ['one page', 'both pages at once'] as const) {
    it(`converting every private page under a 4K table to shared keeps the table, so a private fault there links nothing (back: ${back})`, async () => {
      const { vm, kvm } = await launch(image());
      const sept = vm.archApi.module.sept;
      const program: GuestProgram<'tdx'> = function* (g) {
        // Two adjacent private pages, alone in their 2M region: ACCEPT (an EPT violation: SEPT.ADD
        // of the 4K table, then PAGE.AUG of each page), then write them.
        const acc = yield* g.accept(LONE, 2 * PAGE);
        if (!acc.ok) throw new Error(`accept: ${acc.reason}`);
        for (const [i, v] of [11n, 22n].entries()) if ((yield* g.write(LONE + i * PAGE, v)) !== undefined) throw new Error('private write faulted');
        // Each to shared with its own MapGPA: the second empties the mirror's 4K table.
        for (const i of [0, 1]) if (!(yield* g.convert(LONE + i * PAGE, PAGE, false)).ok) throw new Error('to shared');
        // Back to private (MapGPA, then the guest kernel's ACCEPT: an EPT violation, PAGE.AUG under
        // the 4K table both sides still hold), and touch.
        const r = yield* g.convert(LONE, back === 'one page' ? PAGE : 2 * PAGE, true);
        if (!r.ok) throw new Error(`to private: ${r.reason}`);
        if ((yield* g.write(LONE, 33n)) !== undefined) throw new Error('private write faulted after the round trip');
      };
      vm.createVcpu(0, program);
      const septAdds = (): number => vm.archApi.module.stats().calls['TDH.MEM.SEPT.ADD'] ?? 0;
      const addsAtLaunch = septAdds();
      const r = runVmm(vm, { path: 'attributes', discard: 'both' });
      expect(vm.deadReason).toBeUndefined();
      expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
      expect(r.vcpus.map((v) => v.state)).toEqual(['shutdown']);
      const mod = vm.archApi.module.stats();
      expect(Object.entries(mod.errors).filter(([, n]) => n !== 0)).toEqual([]);
      // One SEPT.ADD, for the lone region's 4K table (the tables above it exist since the image's
      // pre-fault); the round trip adds none.
      expect(septAdds() - addsAtLaunch).toBe(1);
      expect(sept.state(LONE / PAGE, 1)).toBe(SEPT_STATE.NL_MAPPED);
      expect(vm.mmu.mirror?.hasTableBelow(LONE / PAGE, 1)).toBe(true);
      const pages = back === 'one page' ? 1 : 2;
      expect(vm.mmu.leaves('private', LONE / PAGE, LONE / PAGE + 2)).toHaveLength(pages);
      expectMirrorMatchesSept(vm);
      expectMirrorTablesMatchSept(vm);
      vm.checkInvariants();
      kvm.checkInvariants();
    });
  }
});
