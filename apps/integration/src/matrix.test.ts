// The cross-arch matrix: seed 000's boot (the firmware flips its DMA pages on every transfer, then
// the OS touches its memory, accepting it in chunks on first use) run under the VMM exit-loop
// helper on every VM type with private memory that is available here — sw-protected (built into
// the core), snp, tdx and pkvm (plugins passed to openKvm) — over every conversion path the type
// supports. One scenario, one set of expectations: what all types share is asserted plainly, and
// each place a type differs says so inline, with the reason.
import pkvm from '@cocokit/arch-pkvm';
import snp from '@cocokit/arch-snp';
import tdx from '@cocokit/arch-tdx';
import { BUILTIN_VM_TYPES, isGuestException, openKvm, runVmm, setupGuestMemory, type ConversionPath, type GuestProgram, type Kvm, type Vm } from '@cocokit/vm';
import { firmwareBoot, touchWorkingSet, type FirmwareBootResult, type TouchResult } from '@cocokit/vm/guest';
import { describe, expect, it } from 'vitest';

import { ACCEPT_CHUNK, DMA_GPA, DMA_PAGES, PAGE, RAM, TRANSFERS, WS_GPA, WS_PAGES, WS_SIZE } from './boot-layout.js';

const ARCHS = [snp, tdx, pkvm];
const CHUNKS = WS_SIZE / ACCEPT_CHUNK;

type MatrixType = 'sw-protected' | 'snp' | 'tdx' | 'pkvm';

/**
 * The matrix: each VM type with private memory, with the conversion paths it supports. TDX has no
 * in-place conversion (KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES is not a TDX capability: the plugin
 * reports `inPlaceConversion: false`); the first test checks this table against the VM types and
 * capabilities themselves.
 */
const MATRIX: ReadonlyArray<{ readonly type: MatrixType; readonly paths: readonly ConversionPath[] }> = [
  { type: 'sw-protected', paths: ['attributes', 'in-place'] },
  { type: 'snp', paths: ['attributes', 'in-place'] },
  { type: 'tdx', paths: ['attributes'] },
  // pKVM shares the very page the guest owns (MEM_SHARE: guest SHARED_OWNED, host SHARED_BORROWED),
  // so it converts in place as well as by attributes.
  { type: 'pkvm', paths: ['attributes', 'in-place'] },
];

/**
 * A VM of `type` with 16 MiB of private RAM laid out for `path`, launched so its vCPUs may run.
 * The launch is the one step that cannot be arch-neutral: sw-protected has none; SNP runs
 * SNP_LAUNCH_START and SNP_LAUNCH_FINISH (nothing measured: the image is not what this scenario
 * is about); a TD needs KVM_TDX_FINALIZE_VM before KVM_RUN (tdx_vcpu_pre_run: EINVAL).
 */
async function launched(type: MatrixType, path: ConversionPath): Promise<{ kvm: Kvm; vm: Vm }> {
  const kvm = openKvm({ archs: ARCHS, hostBytes: 1 << 30, seed: 0, inPlaceConversion: path === 'in-place' });
  switch (type) {
    case 'sw-protected': {
      const vm = await kvm.createVm({ type });
      setupGuestMemory(vm, { size: RAM, path });
      return { kvm, vm };
    }
    case 'snp': {
      const vm = await kvm.createVm({ type });
      setupGuestMemory(vm, { size: RAM, path });
      vm.archApi.launchStart({ policy: 2 ** 17 }); // RSVD_MBO
      vm.archApi.launchFinish();
      return { kvm, vm };
    }
    case 'tdx': {
      const vm = await kvm.createVm({ type, archOptions: { gpaw: 48 } });
      setupGuestMemory(vm, { size: RAM, path });
      const m = vm.finalize();
      expect(m?.kind).toBe('mrtd');
      return { kvm, vm };
    }
    case 'pkvm': {
      // A protected VM has no launch in KVM: no measurement, no finalize (pVM firmware is not modelled).
      const vm = await kvm.createVm({ type });
      setupGuestMemory(vm, { size: RAM, path });
      return { kvm, vm };
    }
  }
}

interface Observed {
  boot?: FirmwareBootResult;
  touch?: TouchResult;
  /** Working-set pages whose first 8 bytes read back as something other than the gfn the guest wrote. */
  mismatches: number[];
}

/**
 * Seed 000's boot, plus a read-back: the firmware validates/accepts its DMA pages before using
 * them (OVMF and TDVF both do), flips them per transfer (`firmwareBoot`), the OS writes every
 * working-set page once, accepting 2 MiB chunks on first use (`touchWorkingSet` tags each page
 * with its gfn), then reads every page back.
 */
function seed000Boot(out: Observed): GuestProgram {
  return function* (g) {
    const v = yield* g.accept(DMA_GPA, DMA_PAGES * PAGE);
    if (!v.ok) throw new Error(`accepting the DMA pages failed: ${v.reason}`);
    out.boot = yield* firmwareBoot(g, { dmaGpa: DMA_GPA, dmaPages: DMA_PAGES, transfers: TRANSFERS });
    out.touch = yield* touchWorkingSet(g, { gpa: WS_GPA, size: WS_SIZE, acceptChunk: ACCEPT_CHUNK });
    for (let gpa = WS_GPA; gpa < WS_GPA + WS_SIZE; gpa += PAGE) {
      const r = yield* g.read(gpa, 8);
      if (isGuestException(r)) throw new Error(`reading back 0x${gpa.toString(16)}: ${r.name}`);
      if (new DataView(r.buffer, r.byteOffset, 8).getBigUint64(0, true) !== BigInt(gpa / PAGE)) out.mismatches.push(gpa);
    }
  };
}

describe('the cross-arch matrix: seed 000 boot on every VM type with private memory', () => {
  it('covers every available VM type with private memory, over the conversion paths each supports', async () => {
    const found: Array<{ type: string; paths: ConversionPath[] }> = [];
    for (const type of [...BUILTIN_VM_TYPES, ...ARCHS.flatMap((p) => p.vmTypes)]) {
      const kvm = openKvm({ archs: ARCHS, hostBytes: 1 << 28 });
      const vm = await kvm.createVm({ type });
      if (vm.capabilities.privateMem) found.push({ type, paths: vm.capabilities.inPlaceConversion ? ['attributes', 'in-place'] : ['attributes'] });
      vm.destroy();
    }
    expect(found).toEqual(MATRIX);
  });

  for (const { type, paths } of MATRIX) {
    for (const path of paths) {
      it(`${type}, ${path}: boots, converts only the DMA flips, and reads back what it wrote`, async () => {
        const { kvm, vm } = await launched(type, path);
        expect(vm.capabilities.privateMem).toBe(true);
        const out: Observed = { mismatches: [] };
        vm.createVcpu(0, seed000Boot(out));
        const r = runVmm(vm, { path });

        // Common: the boot completes, with no exit the helper could not handle.
        expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
        expect(r.vcpus.map((v) => v.state)).toEqual(['shutdown']);
        expect(Object.keys(r.exits).sort()).toEqual(['HYPERCALL', 'SYSTEM_EVENT']);
        expect(out.boot).toEqual({ transfers: TRANSFERS, conversions: 2 * TRANSFERS });
        // Every chunk accepted once on first use, and no "not accepted" exception: the accept came
        // first. (On sw-protected accepting does nothing, but the guest still walks its bitmap.)
        expect(out.touch).toEqual({ accesses: WS_PAGES, accepts: CHUNKS, exceptions: 0 });
        expect(vm.stats().vcpu.exceptions).toBe(0);

        // Every conversion request is one KVM_HC_MAP_GPA_RANGE exit to userspace, whatever raised it:
        // on sw-protected the guest's own KVM_HC_MAP_GPA_RANGE hypercall, on SNP a page state change
        // (the PSC VMGEXIT; snp_begin_psc turns each merged range into the exit), on TDX a MapGPA
        // TDVMCALL (tdx_map_gpa), on pKVM a MEM_SHARE / MEM_UNSHARE that EL2 did and forwarded to
        // userspace (KVM_EXIT_HYPERCALL with the SMCCC function ID; the helper reads it through the
        // plugin's memoryRequest). The flips are 2 per transfer everywhere. SNP adds one exit per
        // accept: its acceptance is a PSC to private then PVALIDATE (snp_accept_memory), so the
        // DMA pages' accept and each chunk's exit too, asking for pages already private. TDX's
        // TDG.MEM.PAGE.ACCEPT, pKVM's (nothing: no acceptance) and sw-protected's (nothing) never exit.
        const acceptExits = type === 'snp' ? 1 + CHUNKS : 0;
        expect(r.exits['HYPERCALL']).toBe(2 * TRANSFERS + acceptExits);
        // Only the flips convert; an accept's request finds the range private already, and the
        // ioctl returns 0 with nothing to do.
        expect(r.conversions).toBe(2 * TRANSFERS);
        expect(r.convertedPages).toBe(2 * TRANSFERS);
        expect(r.noopConversions).toBe(acceptExits);

        const s = vm.stats();
        expect(s.type).toBe(type);
        expect(s.exits['HYPERCALL']).toBe(2 * TRANSFERS + acceptExits);
        // setupGuestMemory's initial KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) counts on the attributes
        // path; in place the file starts private and nothing is set.
        expect(s.conversions.conversions).toBe(2 * TRANSFERS + (path === 'attributes' ? 1 : 0));
        expect(s.conversions.noopConversions).toBe(acceptExits);
        // How the guest asked: sw-protected's conversions are the core's hypercall action; SNP's
        // PSC and PVALIDATE and TDX's MapGPA and ACCEPT are the arch's calls instead.
        expect(s.vcpu.hypercalls).toBe(type === 'sw-protected' ? 2 * TRANSFERS : 0);
        // - SNP: the PSCs (one per exit), then PVALIDATEs: the DMA accept, per page an NPF and the
        //   re-issue (2 × 2); per transfer the rescind, and the validate back, which NPFs (the
        //   conversion to shared zapped the private leaf) and is re-issued (3); per 2 MiB chunk a
        //   2M try that NPFs, is re-issued and fails FAIL_SIZEMISMATCH (4K folios, 4K RMP entries),
        //   then 512 × 4K, all but the first (which the 2M NPF mapped) an NPF and a re-issue.
        // - TDX: the MapGPAs (one per exit), then ACCEPTs: the DMA accept, per page an EPT
        //   violation (PAGE.AUG) and the re-issue (2 × 2); per transfer back to private one 4K
        //   accept the same way (2); per 2 MiB chunk a refused 2M try (4K private mappings only),
        //   then 512 × 4K, each an EPT violation and the re-issue.
        // - pKVM: per transfer a MEM_SHARE that finds the IPA NOPAGE (the host first faults the page
        //   in: pkvm_memshare_call turns -EFAULT into a host data abort) and its re-issue, then a
        //   MEM_UNSHARE (3). The IPA is NOPAGE again at every share: going shared, guest_memfd lets
        //   the page go (kvm_arch_gmem_invalidate: EL2 reclaims it, the IPA stays shared without a
        //   page) and the MEM_UNSHARE back leaves it NOPAGE; the first share of each DMA page finds
        //   nothing because the accept did nothing. No acceptance, so no calls for the working set.
        const archCalls = {
          'sw-protected': 0,
          snp: 2 * TRANSFERS + acceptExits + DMA_PAGES * 2 + TRANSFERS * 3 + CHUNKS * (2 + 1 + 511 * 2),
          tdx: 2 * TRANSFERS + DMA_PAGES * 2 + TRANSFERS * 2 + CHUNKS * (1 + 512 * 2),
          pkvm: TRANSFERS * 3,
        }[type];
        expect(s.vcpu.archCalls).toBe(archCalls);
        // The NPFs the arch's calls ran into (the fault path maps the page, the guest re-issues):
        // every working-set page, the DMA pages at their accept, and each flip back. sw-protected
        // has nothing to validate or accept: its private pages fault in on the guest's first write,
        // which is the MMU's fault path, not an arch call's. pKVM likewise (donation is the fault
        // path's gmemPrepare); only each MEM_SHARE's NPF is an arch call's.
        expect(s.vcpu.npfs).toBe({ 'sw-protected': 0, snp: WS_PAGES + DMA_PAGES + TRANSFERS, tdx: WS_PAGES + DMA_PAGES + TRANSFERS, pkvm: TRANSFERS }[type]);

        // The DMA pages end private, on every path: the last conversion of each was back to private.
        for (let i = 0; i < DMA_PAGES; i++) {
          const gfn = DMA_GPA / PAGE + i;
          expect(vm.mmu.isPrivateGfn(gfn, vm.memslots.lookup(gfn)), `DMA page gfn 0x${gfn.toString(16)}`).toBe(true);
        }
        // What the guest wrote to private memory is what it reads back.
        expect(out.mismatches).toEqual([]);
        vm.checkInvariants();
        kvm.checkInvariants();
      });
    }
  }
});
