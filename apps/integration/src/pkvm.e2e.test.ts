// End to end under @cocokit/vm: a protected pKVM guest boots with the firmware's DMA flips and a
// touched working set under runVmm with no pKVM code in the VMM (the plugin's memoryRequest reads
// its forwarded MEM_SHARE / MEM_UNSHARE / MEM_RELINQUISH), on both conversion paths. At each exit
// EL2's ownership invariants hold; the host is refused the guest's private pages and may read the
// shared ones; a relinquished page goes back to the host and out of guest_memfd.
import pkvm, { ARM_SMCCC_VENDOR_HYP_KVM_FUNC_ID, pkvmMemRequest, type PkvmHypercallExit } from '@cocokit/arch-pkvm';
import { pfn, type ArchExit } from '@cocokit/sdk';
import { isGuestException, openKvm, runVmm, setupGuestMemory, type ConversionPath, type GuestProgram, type Vm } from '@cocokit/vm';
import { firmwareBoot, touchWorkingSet, type FirmwareBootResult, type TouchResult } from '@cocokit/vm/guest';
import { describe, expect, it } from 'vitest';

import { DMA_GPA, DMA_PAGES, PAGE, RAM, TRANSFERS, WS_GPA, WS_PAGES, WS_SIZE } from './boot-layout.js';

/** The working-set page the guest relinquishes, and the one it shares at the end. */
const GIVEN_BACK = WS_GPA;
const SHARED = WS_GPA + PAGE;
/** SPTE.PRIVATE of @cocokit/mmu, whose tables this package reads only through `vm.mmu`. */
const SPTE_PRIVATE = 16;

interface Observed {
  boot?: FirmwareBootResult;
  touch?: TouchResult;
  relinquished?: unknown;
  /** The first 8 bytes the guest reads at GIVEN_BACK after relinquishing it. */
  reread?: number[];
  shared?: unknown;
}

/**
 * The firmware's DMA flips, the OS's working set (each page tagged with its gfn), then a balloon
 * in miniature: MEM_RELINQUISH of one page and a read of it (a fresh page), and a MEM_SHARE of
 * another through the guest kernel.
 */
function program(out: Observed): GuestProgram<'pkvm'> {
  return function* (g) {
    out.boot = yield* firmwareBoot(g, { dmaGpa: DMA_GPA, dmaPages: DMA_PAGES, transfers: TRANSFERS });
    out.touch = yield* touchWorkingSet(g, { gpa: WS_GPA, size: WS_SIZE });
    out.relinquished = yield* g.arch.memRelinquish(GIVEN_BACK);
    const r = yield* g.read(GIVEN_BACK, 8);
    if (isGuestException(r)) throw new Error(`reading the relinquished page: ${r.name}`);
    out.reread = [...r];
    out.shared = yield* g.convert(SHARED, PAGE, false);
  };
}

/**
 * Every private leaf maps the page EL2 gave the guest at that gfn, and the host may not touch it;
 * `pending` is the gfn of a forwarded call userspace has not acted on yet, which the core still
 * maps private while EL2 has already changed it.
 */
function expectPrivateLeavesOwned(vm: Vm<'pkvm'>, pending?: number): number {
  let pages = 0;
  for (const l of vm.mmu.leaves('shared')) {
    if ((l.flags & SPTE_PRIVATE) === 0 || l.gfn === pending) continue;
    expect(l.level, 'donation is per 4K page').toBe(0);
    expect(vm.archApi.guestPte(l.gfn), `gfn 0x${l.gfn.toString(16)}`).toEqual({ state: 'owned', pfn: l.pfn });
    expect(vm.archApi.page(l.pfn).owner).toEqual({ vm: vm.archApi.handle, gfn: l.gfn });
    // What every host access to the page asks after its page-table walk: a host stage-2 abort.
    expect(vm.host.checkHostAccess(pfn(l.pfn), false)).toMatchObject({ signal: 'SIGSEGV', kind: 'stage2' });
    pages++;
  }
  return pages;
}

describe('end to end: a pKVM protected guest under @cocokit/vm', () => {
  for (const path of ['attributes', 'in-place'] as const satisfies readonly ConversionPath[]) {
    it(`boots with no pKVM code in the VMM; ownership holds at each exit; relinquish returns the page (${path})`, async () => {
      const kvm = openKvm({ archs: [pkvm], hostBytes: 1 << 30, seed: 3, inPlaceConversion: path === 'in-place' });
      const vm = await kvm.createVm({ type: 'pkvm' });
      const { hva } = setupGuestMemory(vm, { size: RAM, path });
      const out: Observed = {};
      vm.createVcpu(0, program(out));
      const ops: string[] = [];
      let givenBackPfn: number | undefined;
      const r = runVmm(vm, {
        path,
        onExit: (_vcpu, exit) => {
          // Before the helper acts: EL2 has done the call, and its table and the core agree.
          vm.checkInvariants();
          const req = pkvmMemRequest(exit as ArchExit);
          expectPrivateLeavesOwned(vm, req === undefined ? undefined : req.gpa / PAGE);
          if (req === undefined) return 'unhandled';
          ops.push(req.op);
          expect((exit as PkvmHypercallExit).args).toEqual([req.gpa, 0, 0, 0, 0, 0]);
          if (req.op === 'share') {
            // __pkvm_guest_share_host: guest SHARED_OWNED, host SHARED_BORROWED; the host may touch it.
            const pte = vm.archApi.guestPte(req.gpa / PAGE);
            expect(pte?.state).toBe('shared-owned');
            if (pte?.pfn === undefined) throw new Error('a shared IPA without its page');
            expect(vm.archApi.page(pte.pfn).host).toBe('shared-borrowed');
            expect(vm.host.checkHostAccess(pfn(pte.pfn), true)).toBe('ok');
          }
          if (req.op === 'relinquish') {
            // __pkvm_guest_relinquish_to_host (mem_protect.c): the IPA is NOPAGE, the page the host's
            // again, wiped (the guest owned it alone); the core still maps it until userspace
            // punches it out of guest_memfd, which zaps the mapping.
            const leaf = vm.mmu.lookup((req.gpa / PAGE) as never, 'shared');
            if (leaf === undefined) throw new Error('the relinquished page is not mapped');
            givenBackPfn = leaf.pfn;
            expect(vm.archApi.guestPte(req.gpa / PAGE)).toBeUndefined();
            expect(vm.archApi.page(leaf.pfn)).toMatchObject({ host: 'owned', owner: undefined });
            expect(vm.host.checkHostAccess(pfn(leaf.pfn), true)).toBe('ok');
          }
          return 'unhandled';
        },
      });
      expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
      expect(out.boot).toEqual({ transfers: TRANSFERS, conversions: 2 * TRANSFERS });
      // pKVM has no acceptance: touchWorkingSet accepts nothing and takes no exception.
      expect(out.touch).toEqual({ accesses: WS_PAGES, accepts: 0, exceptions: 0 });

      // Exits: per transfer a forwarded MEM_SHARE and MEM_UNSHARE, the MEM_RELINQUISH, the final
      // MEM_SHARE; nothing else reaches userspace (private faults are the fault path's donation).
      expect(ops).toEqual([...Array.from({ length: TRANSFERS }, () => ['share', 'unshare']).flat(), 'relinquish', 'share']);
      expect(r.exits).toEqual({ HYPERCALL: 2 * TRANSFERS + 2, SYSTEM_EVENT: 1 });
      expect([r.conversions, r.convertedPages, r.noopConversions]).toEqual([2 * TRANSFERS + 1, 2 * TRANSFERS + 1, 0]);
      expect([r.discards, r.discardedPages]).toEqual([1, 1]);
      // Each call's x0 came back SUCCESS through completeExit.
      expect(out.relinquished).toBe(0);
      expect(out.shared).toEqual({ ok: true });

      const s = vm.stats();
      // Arch calls: per transfer MEM_SHARE (the IPA is NOPAGE: the host faults the page in first),
      // its re-issue and MEM_UNSHARE; then MEM_RELINQUISH and the final MEM_SHARE (mapped by the
      // working set: no fault).
      expect(s.vcpu.archCalls).toBe(3 * TRANSFERS + 2);
      expect(s.vcpu.npfs).toBe(TRANSFERS);
      expect(s.vcpu.exceptions).toBe(0);

      // Relinquish: the page left guest_memfd and the guest's read after it faulted in (and EL2
      // donated) a fresh, zeroed page at the same gfn.
      expect(out.reread).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
      // (The buddy allocator may hand the freed frame straight back: same pfn, donated anew.)
      const again = vm.mmu.lookup((GIVEN_BACK / PAGE) as never, 'shared');
      expect(givenBackPfn).toBeDefined();
      expect(vm.archApi.guestPte(GIVEN_BACK / PAGE)).toEqual({ state: 'owned', pfn: again?.pfn });
      expect(s.conversions.punchHoles).toBeGreaterThanOrEqual(1);

      // Private pages: the working set, one page now shared, each the guest's alone at EL2 and
      // refused to the host. The DMA pages are private but unmapped: the last MEM_UNSHARE found no
      // page (guest_memfd let it go at the conversion to shared) and nothing touched them since. Through the VMM's own mapping, in place, guest_memfd
      // refuses the private page first (SIGBUS), before any stage-2 check; by attributes the
      // process maps only the shared copy.
      expect(expectPrivateLeavesOwned(vm)).toBe(WS_PAGES - 1);
      const priv = vm.process.read(hva + WS_GPA + 2 * PAGE, 8);
      if (path === 'in-place') expect(priv).toMatchObject({ ok: false, signal: 'SIGBUS' });
      else expect(priv.ok).toBe(true);
      // The shared page: the host reads it. In place it is the very page the guest wrote (its gfn
      // tag, little-endian); by attributes the shared copy is another page, never written.
      const shared = vm.process.read(hva + SHARED, 8);
      if (!shared.ok || shared.data === undefined) throw new Error(`host read of the shared page: ${shared.ok ? 'no data' : shared.reason}`);
      expect([...shared.data.slice(0, 2)]).toEqual(path === 'in-place' ? [(SHARED / PAGE) % 256, Math.floor(SHARED / PAGE / 256)] : [0, 0]);
      // EL2's count: the private working set. The shared page's IPA stays shared at EL2 without
      // its page once guest_memfd let the page go at the conversion (kvm_arch_gmem_invalidate: the
      // host reclaims it); the DMA IPAs are NOPAGE.
      expect(vm.archApi.guestPages).toBe(WS_PAGES - 1);
      expect(vm.archApi.guestPte(SHARED / PAGE)).toEqual({ state: 'shared-owned' });
      for (let i = 0; i < DMA_PAGES; i++) expect(vm.archApi.guestPte(DMA_GPA / PAGE + i)).toBeUndefined();
      vm.checkInvariants();
      kvm.checkInvariants();
      expect(ARM_SMCCC_VENDOR_HYP_KVM_FUNC_ID.MEM_RELINQUISH).toBe(0xc6000009);
    });
  }
});
