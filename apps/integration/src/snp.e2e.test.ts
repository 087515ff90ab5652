// End to end under @cocokit/vm (issue 7): an SNP guest launched with measured pages through
// guest_memfd (SNP_LAUNCH_START / LAUNCH_UPDATE / LAUNCH_FINISH), then booted with the firmware's
// DMA flips and lazy acceptance in 4 MiB chunks (seed 003) through the VMM exit-loop helper, on
// both conversion paths; afterwards the RMP agrees with the MMU and with the VMM's mappings.
import { uapi } from '@cocokit/sdk';
import { errnoOf } from '@cocokit/sdk/testing';
import { openKvm, runVmm, setupGuestMemory, type ConversionPath, type DiscardPolicy, type GuestProgram, type HypercallExit, type Vm } from '@cocokit/vm';
import { firmwareBoot, touchWorkingSet, type TouchResult } from '@cocokit/vm/guest';
import { describe, expect, it } from 'vitest';
import snp from '@cocokit/arch-snp';

const MiB = 2 ** 20;
const PAGE = 4096;
const RAM = 16 * MiB;
/** The launch image: 16 measured pages at GPA 0 (the firmware volume, in miniature). */
const IMAGE_PAGES = 16;
const POLICY = 2 ** 17; // RSVD_MBO
/** OVMF's DMA pages (two, flipped alternately). */
const DMA_GPA = 0x10_0000;
const DMA_PAGES = 2;
const TRANSFERS = 8;
/** The OS's working set: 4 MiB aligned so its chunks never cover the launched or DMA pages. */
const WS_GPA = 4 * MiB;
const WS_SIZE = 8 * MiB;
const ACCEPT_CHUNK = 4 * MiB;
const CHUNKS = WS_SIZE / ACCEPT_CHUNK;
/** SPTE.PRIVATE of @cocokit/mmu, whose tables this package reads only through `vm.mmu`. */
const SPTE_PRIVATE = 16;

function image(): Uint8Array[] {
  return Array.from({ length: IMAGE_PAGES }, (_, i) => new Uint8Array(PAGE).fill(0x90 + i));
}

/** Creates an SNP VM with 16 MiB of private RAM and launches the image through guest_memfd. */
async function launch(c: { path: ConversionPath }): Promise<{ vm: Vm<'snp'>; kvm: ReturnType<typeof openKvm>; hva: number }> {
  const kvm = openKvm({ archs: [snp], hostBytes: 1 << 30, seed: 7, inPlaceConversion: c.path === 'in-place' });
  const vm = await kvm.createVm({ type: 'snp' });
  const { hva } = setupGuestMemory(vm, { size: RAM, path: c.path });
  vm.archApi.launchStart({ policy: POLICY });
  // snp_launch_update → kvm_gmem_populate(..., sev_gmem_post_populate): guest_memfd allocates each
  // private page and hands its pfn to the post-populate callback, which is the plugin's
  // LAUNCH_UPDATE of that one page (the resolver answers with the pfn guest_memfd chose).
  const slot = vm.memslots.lookup(0);
  if (slot === undefined) throw new Error('no memslot at gfn 0');
  const src = image().map((bytes) => ({ kind: 'bytes', bytes }) as const);
  let updated = 0;
  const done = vm.gmem.populate({
    slot,
    gfn: 0,
    npages: IMAGE_PAGES,
    src,
    kind: 'normal',
    callback: (gfn, pfn, s) => {
      const left = vm.archApi.launchUpdate({ gfnStart: gfn, npages: 1, type: 'normal' }, () => ({ pfn, src: s }));
      expect(left).toEqual({ gfnStart: gfn + 1, npages: 0 });
      updated++;
    },
  });
  expect([done, updated]).toEqual([IMAGE_PAGES, IMAGE_PAGES]);
  const digest = vm.archApi.launchFinish();
  expect(digest).toHaveLength(48);
  expect(vm.archApi.launchPhase).toBe('finished');
  return { vm, kvm, hva };
}

/** OVMF pre-validates its RAM (the DMA pages), flips its DMA pages per transfer; the OS then touches memory, accepting 4 MiB chunks on first use. */
function bootProgram(out: { touch?: TouchResult }): GuestProgram<'snp'> {
  return function* (g) {
    const v = yield* g.accept(DMA_GPA, DMA_PAGES * PAGE);
    if (!v.ok) throw new Error(`pre-validating the DMA pages failed: ${v.reason}`);
    yield* firmwareBoot(g, { dmaGpa: DMA_GPA, dmaPages: DMA_PAGES, transfers: TRANSFERS });
    out.touch = yield* touchWorkingSet(g, { gpa: WS_GPA, size: WS_SIZE, acceptChunk: ACCEPT_CHUNK, accesses: 1024, pattern: 'random' });
  };
}

/**
 * Every private leaf of the MMU maps pages assigned to this VM's ASID at that gfn, not Immutable,
 * and (with `validated`) validated. Mid-operation a mapped page may be unvalidated: the guest
 * rescinds a page before its PSC to shared, while KVM still maps it private.
 */
function expectPrivateLeavesAssigned(vm: Vm<'snp'>, validated: boolean): number {
  const asid = vm.archApi.asid;
  let pages = 0;
  for (const l of vm.mmu.leaves('shared')) {
    if ((l.flags & SPTE_PRIVATE) === 0) continue;
    const n = 512 ** l.level;
    for (let i = 0; i < n; i++) {
      const e = vm.archApi.rmpEntry(l.pfn + i);
      const where = `private leaf gfn 0x${(l.gfn + i).toString(16)} → pfn 0x${(l.pfn + i).toString(16)}`;
      expect([e.assigned, e.asid, e.gfn, e.immutable], where).toEqual([true, asid, l.gfn + i, false]);
      if (validated) expect(e.validated, where).toBe(true);
    }
    pages += n;
  }
  return pages;
}

/** No page the VMM process maps (its anonymous memory, its guest_memfd mmaps) is guest-assigned in the RMP. */
function expectHostPagesShared(vm: Vm<'snp'>): number {
  let pages = 0;
  for (const run of vm.process.mappedRuns()) {
    for (let i = 0; i < run.npages; i++) {
      const e = vm.archApi.rmpEntry(run.pfn + i);
      expect(e.assigned, `host-mapped pfn 0x${(run.pfn + i).toString(16)} (${run.anon ? 'anon' : 'file'}) is assigned to ASID ${e.asid}`).toBe(false);
    }
    pages += run.npages;
  }
  return pages;
}

const cases: Array<{ path: ConversionPath; discard?: DiscardPolicy }> = [
  { path: 'attributes', discard: 'both' },
  { path: 'attributes', discard: 'lazy' },
  { path: 'in-place' },
];

describe('end to end: an SNP guest under @cocokit/vm', () => {
  it('offers in-place conversion when the core enables it', async () => {
    const kvm = openKvm({ archs: [snp], hostBytes: 1 << 28, inPlaceConversion: true });
    const vm = await kvm.createVm({ type: 'snp' });
    expect(vm.capabilities.inPlaceConversion).toBe(true);
  });

  for (const c of cases) {
    it(`boots with the DMA-flip firmware and lazy acceptance; the RMP matches the MMU and the VMM's mappings (${c.path}${c.discard ? `, discard ${c.discard}` : ''})`, async () => {
      const { vm, kvm, hva } = await launch(c);
      const out: { touch?: TouchResult } = {};
      vm.createVcpu(0, bootProgram(out));
      let deviceReads = 0;
      let hostMappedSeen = 0;
      const r = runVmm(vm, {
        path: c.path,
        ...(c.discard ? { discard: c.discard } : {}),
        onExit: (_vcpu, exit) => {
          if (exit.reason !== 'HYPERCALL') return 'unhandled';
          // Mid-boot, before the helper converts: what the previous conversions left must already hold.
          expectPrivateLeavesAssigned(vm, false);
          const [gpa = 0, npages = 0, attrs = 0] = (exit as HypercallExit).args;
          if (npages === 1 && (attrs & uapi.KVM_MAP_GPA_RANGE_ENCRYPTED) !== 0) {
            // The firmware is done with a DMA page and asks for it back: the device (the VMM) reads
            // the transfer out of the still-shared page through its own mapping first.
            const read = vm.process.read(hva + gpa, 8);
            expect(read.ok, `device read of DMA page 0x${gpa.toString(16)}`).toBe(true);
            deviceReads++;
          }
          hostMappedSeen = Math.max(hostMappedSeen, expectHostPagesShared(vm));
          return 'unhandled';
        },
      });
      expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
      expect(Object.keys(r.exits).sort()).toEqual(['HYPERCALL', 'SYSTEM_EVENT']);

      // Page state changes, each one KVM_HC_MAP_GPA_RANGE exit (snp_begin_psc merges the contiguous
      // entries of one buffer into one range): the DMA pages' pre-validation (two 4K entries, one
      // range of 2 pages); per transfer a PSC shared and a PSC private of one page; per 4 MiB chunk
      // one PSC private of two 2M entries (one range of 1024 pages: userspace converts it although
      // it is already private).
      const HYPERCALLS = 1 + 2 * TRANSFERS + CHUNKS;
      // The pre-validation and the chunks ask for pages already private: the ioctl has nothing to do
      // (kvm_vm_set_mem_attributes / kvm_gmem_set_attributes return 0 when the range already has
      // the value), so only the flips convert.
      const NOOPS = 1 + CHUNKS;
      expect(r.exits['HYPERCALL']).toBe(HYPERCALLS);
      expect(r.conversions).toBe(2 * TRANSFERS);
      expect(r.noopConversions).toBe(NOOPS);
      expect(r.convertedPages).toBe(2 * TRANSFERS);
      expect(deviceReads).toBe(TRANSFERS);
      // Lazy acceptance: the 1024 random accesses find both chunks, each accepted once, no #VC.
      expect(out.touch).toEqual({ accesses: 1024, accepts: CHUNKS, exceptions: 0 });

      const s = vm.stats();
      expect(s.exits['HYPERCALL']).toBe(HYPERCALLS);
      expect(s.vcpu.exceptions).toBe(0);
      // PVALIDATEs (the rest of the arch calls are the HYPERCALLS PSC VMGEXITs; a PSC's completion
      // after userspace answered is not a new call):
      // - the DMA pre-validation: per page an NPF (never faulted in) and the re-issue: 2 × 2;
      // - per transfer: the rescind (the page is mapped), and, back to private, the validate, which
      //   takes an NPF and is re-issued: 3 per transfer on every path. The conversion to shared
      //   zapped the private leaf, and PVALIDATE goes through the nested tables (APM Vol. 3
      //   "PVALIDATE": the NPT walk first, then the RMP checks on the page it maps), so with no
      //   private leaf it faults whether or not the page is still in guest_memfd. With discard
      //   'lazy' the page is still there, assigned and prepared: KVM's fault path maps that same
      //   page again (sev_gmem_prepare does nothing for an assigned page) and the re-issue validates
      //   it. (The plugin once kept its own gfn → pfn record, which outlived the zap: with 'lazy'
      //   the validate then succeeded at once, 2 per transfer, and left the DMA page validated but
      //   unmapped.)
      // - per 2M entry of a chunk: the 2M try NPFs, is re-issued and fails FAIL_SIZEMISMATCH (4K
      //   folios: 4K RMP entries), then 512 × 4K, all but the first (mapped by the 2M's NPF) an NPF
      //   and a re-issue: 2 + 1 + 511 × 2 = 1025.
      const PVALIDATES = DMA_PAGES * 2 + TRANSFERS * 3 + (WS_SIZE / (2 * MiB)) * 1025;
      expect(s.vcpu.archCalls).toBe(HYPERCALLS + PVALIDATES);
      // Private NPFs: every working-set page, the DMA pages once, and each flip back.
      expect(s.vcpu.npfs).toBe(WS_SIZE / PAGE + DMA_PAGES + TRANSFERS);
      // The VMM's conversions, plus setupGuestMemory's initial KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) on the attributes path.
      expect(s.conversions.conversions).toBe(2 * TRANSFERS + (c.path === 'attributes' ? 1 : 0));
      expect(s.conversions.noopConversions).toBe(NOOPS);

      // Afterwards: every private mapping is of a validated page assigned to this VM at that gfn,
      // and no page the VMM process maps is guest-assigned.
      const privPages = expectPrivateLeavesAssigned(vm, true);
      // The working set and the DMA pages (private again, faulted back in by the last validate).
      expect(privPages).toBe(WS_SIZE / PAGE + DMA_PAGES);
      expectHostPagesShared(vm);
      expect(hostMappedSeen).toBeGreaterThan(0);
      expect(vm.archApi.leakedPages).toBe(0);
      vm.checkInvariants();
      kvm.checkInvariants();
    });
  }
});

describe('launch refusals under @cocokit/vm', () => {
  it('KVM_PRE_FAULT_MEMORY is EOPNOTSUPP, changing nothing, until SNP_LAUNCH_FINISH succeeds (snp_launch_finish sets pre_fault_allowed); then it maps', async () => {
    const kvm = openKvm({ archs: [snp], hostBytes: 1 << 30, seed: 7 });
    const vm = await kvm.createVm({ type: 'snp' });
    setupGuestMemory(vm, { size: RAM, path: 'attributes' });
    const range = { gpa: WS_GPA, size: 4 * PAGE };
    const refused = () => {
      const used = vm.host.stats().usedFrames;
      expect(errnoOf(() => vm.preFaultMemory(range))).toBe('EOPNOTSUPP');
      expect([range, vm.mmu.mappedLeaves, vm.host.stats().usedFrames]).toEqual([{ gpa: WS_GPA, size: 4 * PAGE }, 0, used]);
    };
    expect(vm.preFaultAllowed).toBe(false);
    refused();
    vm.archApi.launchStart({ policy: POLICY });
    refused();
    // A refused LAUNCH_FINISH does not allow it either.
    expect(errnoOf(() => vm.archApi.launchFinish({ flags: 1 }))).toBe('EINVAL');
    refused();
    vm.archApi.launchFinish();
    expect(vm.preFaultAllowed).toBe(true);
    expect(vm.preFaultMemory(range)).toBe(0);
    expect(range).toEqual({ gpa: WS_GPA + 4 * PAGE, size: 0 });
    // The pre-faulted pages were prepared (sev_gmem_prepare): assigned to the guest, not yet validated.
    expect(expectPrivateLeavesAssigned(vm, false)).toBe(4);
    vm.checkInvariants();
  });

  it('kvm_gmem_populate of a gfn whose memory attributes are shared is EINVAL: no page allocated, no LAUNCH_UPDATE', async () => {
    const kvm = openKvm({ archs: [snp], hostBytes: 1 << 30, seed: 7 });
    const vm = await kvm.createVm({ type: 'snp' });
    setupGuestMemory(vm, { size: RAM, path: 'attributes' });
    vm.setMemoryAttributes({ address: 0, size: PAGE, attributes: 0 });
    vm.archApi.launchStart({ policy: POLICY });
    const slot = vm.memslots.lookup(0);
    if (slot === undefined) throw new Error('no memslot at gfn 0');
    const src = image().map((bytes) => ({ kind: 'bytes', bytes }) as const);
    let updated = 0;
    const populate = (gfn: number) =>
      vm.gmem.populate({
        slot,
        gfn,
        npages: 2,
        src,
        kind: 'normal',
        callback: (g, pfn, s) => {
          vm.archApi.launchUpdate({ gfnStart: g, npages: 1, type: 'normal' }, () => ({ pfn, src: s }));
          updated++;
        },
      });
    const used = vm.host.stats().usedFrames;
    expect(errnoOf(() => populate(0))).toBe('EINVAL');
    expect([updated, vm.stats().memory.guestMemfdPages, vm.host.stats().usedFrames]).toEqual([0, 0, used]);
    expect(populate(1)).toBe(2);
    expect(updated).toBe(2);
    vm.checkInvariants();
  });
});
