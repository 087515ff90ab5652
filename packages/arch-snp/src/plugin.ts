/**
 * The SEV-SNP arch plugin: `defineArchPlugin` wiring the RMP (rmp.ts), the guest_memfd hooks
 * (gmem.ts), access checks (access.ts), PVALIDATE (pvalidate.ts), page state changes (psc.ts),
 * the guest OS's conversion and acceptance code (guest-kernel.ts) and the launch (launch.ts) into
 * one VM of type `snp` (KVM_X86_SNP_VM).
 */
import {
  CONTRACT_API_VERSION,
  KvmError,
  ModelInvariantError,
  defineArchPlugin,
  type ArchVmContext,
  type FaultClass,
  type GuestFault,
  type MappingLevel,
} from '@cocokit/sdk';
import { guestAccess, hostAccess, kernelAccess } from './access.js';
import type { SnpArchVm, SnpGuestApi, SnpVmApi } from './api.js';
import { SNP_COSTS } from './costs.js';
import { gmemInvalidate, gmemPrepare, maxMappingLevel } from './gmem.js';
import { snpGuestKernel } from './guest-kernel.js';
import { addVmsa, decommission, launchFinish, launchStart, launchUpdate, newLaunchState, populate } from './launch.js';
import { completePsc, ghcbMsrPsc, psc } from './psc.js';
import { pvalidate } from './pvalidate.js';
import { rmpForHost } from './rmp.js';
import type { SnpState } from './state.js';

/**
 * An SNP VM takes no options (`ctx.options`). The two it had are now state the core reports or the
 * guest's business; naming them gets a refusal that says what to do instead.
 */
const REMOVED_OPTIONS: Readonly<Record<string, string>> = {
  mapGpaRangeExit: 'enable KVM_HC_MAP_GPA_RANGE exits with KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL, args[0] = 1 << KVM_HC_MAP_GPA_RANGE)',
  acceptChunkPages: 'lazy acceptance is the guest program\'s: it accepts what it chooses with guestKernel.accept',
};

function checkOptions(o: Readonly<Record<string, unknown>>): void {
  for (const k of Object.keys(o)) {
    const instead = REMOVED_OPTIONS[k];
    if (instead !== undefined) throw new KvmError('EINVAL', 'KVM_CREATE_VM(snp)', `option '${k}' is gone: ${instead}`);
    throw new KvmError('EINVAL', 'KVM_CREATE_VM(snp)', `unknown option '${k}' (an SNP VM takes none)`);
  }
}

/** Creates the arch state of one SNP VM (sev_guest_init for KVM_X86_SNP_VM: an ASID, no launch yet). */
export function createSnpVm(ctx: ArchVmContext): SnpArchVm {
  checkOptions(ctx.options);
  const rmp = rmpForHost(ctx.host);
  const s: SnpState = {
    ctx,
    sim: ctx.sim,
    rmp,
    asid: rmp.allocAsid(),
    pendingPsc: new Map(),
    leakedPages: 0,
    launch: newLaunchState(),
  };

  const vmApi: SnpVmApi = {
    asid: s.asid,
    rmpEntry: (pfn) => rmp.lookup(pfn),
    rmpStats: () => rmp.stats(),
    launchStart: (params) => launchStart(s, params),
    launchUpdate: (params, resolve) => launchUpdate(s, params, resolve),
    addVmsa: (pfn, bytes) => addVmsa(s, pfn, bytes),
    launchFinish: (params) => launchFinish(s, params),
    launchDigest: () => s.launch.digest.digest,
    get launchPhase() {
      return s.launch.phase;
    },
    hostAccessAt: (pfn, write, hostOrder) => hostAccess(s, pfn, write, hostOrder),
    kernelAccess: (pfn, write, op) => kernelAccess(s, pfn, write, op),
    get leakedPages() {
      return s.leakedPages;
    },
  };

  const guestApi: SnpGuestApi = {
    pvalidate: (gpa, size, validate) => pvalidate(s, gpa, size, validate),
    psc: (buffer) => psc(s, buffer),
    ghcbMsrPsc: (msr) => ghcbMsrPsc(s, msr),
  };

  return {
    capabilities: {
      privateMem: true,
      privateByDefault: true,
      // The largest RMP entry is 2M (1G host mappings are checked as 2M: APM Table 15-39).
      maxPrivateLevel: 1,
      mirrorRoot: false,
      // Conversion only flips RMP ownership, never copies: SNP works with guest_memfd in place
      // (the in-place conversion series makes SNP_LAUNCH_UPDATE's uaddr optional for it).
      inPlaceConversion: true,
      measurement: 'snp-launch-digest',
      // svm_vm_init: pre_fault_allowed = !has_private_mem, false for SNP until snp_launch_finish
      // (a pre-faulted private page would be RMP-assigned outside the launch's LAUNCH_UPDATEs).
      preFaultAllowed: false,
    },
    // svm_handle_npf → PFERR_PRIVATE_ACCESS from PFERR_GUEST_ENC_MASK: the guest's C-bit decides.
    classifyFault(fault: GuestFault): FaultClass {
      if (!Number.isSafeInteger(fault.gpa) || fault.gpa < 0) throw new KvmError('EINVAL', 'svm_handle_npf', `gpa ${fault.gpa} is not an address`);
      return { gfn: Math.floor(fault.gpa / 4096) as FaultClass['gfn'], private: fault.encrypted === true };
    },
    gmemPrepare: (pfn, gfn, order) => gmemPrepare(s, pfn, gfn, order),
    gmemInvalidate: (start, end) => gmemInvalidate(s, start, end),
    maxMappingLevel: (_gfn, pfn, isPrivate): MappingLevel => maxMappingLevel(s, pfn, isPrivate),
    populate: (gfn, pfn, src, kind) => populate(s, gfn, pfn, src, kind),
    hostAccess: (pfn, write) => hostAccess(s, pfn, write),
    finalize: () => ({ kind: 'snp-launch-digest', digest: launchFinish(s) }),
    guestAccess: (a) => guestAccess(s, a),
    // KVM's complete_userspace_io (snp_complete_psc_msr, snp_complete_one_psc): the guest's PSC
    // gets its result here, or the next range's exit; it is never re-issued.
    completeExit: (exit, vcpu) => completePsc(s, exit, vcpu),
    guestKernel: snpGuestKernel,
    checkInvariants: () => checkVmInvariants(s),
    // sev_vm_destroy → snp_decommission_context (SNP_DECOMMISSION), and sev_free_vcpu giving each
    // VMSA page back (firmware-owned pages KVM cannot RMPUPDATE: snp_page_reclaim). Guest pages
    // are already back: guest_memfd invalidated them before the VM goes.
    destroy: () => {
      decommission(s);
      s.pendingPsc.clear();
    },
    vmApi,
    guestApi,
  };
}

/**
 * The VM's invariants, on top of the RMP's own: no page of this ASID is Immutable between
 * operations (Immutable exists only inside a LAUNCH_UPDATE); VMSA pages are the registered VMSAs
 * of a finished launch. Whether each private nested mapping points at a page assigned to this ASID
 * at that gfn is not checked here: the plugin keeps no gfn → pfn map (see {@link SnpState}); the
 * hardware checks it per access (`guestAccess`, PVALIDATE) and `apps/integration/src/snp.e2e.test.ts`
 * over the MMU's leaves.
 */
export function checkVmInvariants(s: SnpState): void {
  s.rmp.checkInvariants();
  const vmsas = new Set(s.launch.vmsas.map((v) => v.pfn));
  for (const e of s.rmp.assignedRuns()) {
    if (e.entry.asid !== s.asid) continue;
    if (e.entry.immutable) throw new ModelInvariantError('snp.vm.immutable', `pfn 0x${e.start.toString(16)} is Immutable outside a launch update`);
    if (e.entry.vmsa) {
      for (let p = e.start; p < e.end; p++) {
        if (!vmsas.has(p) || s.launch.phase !== 'finished') throw new ModelInvariantError('snp.vm.vmsa', `pfn 0x${p.toString(16)} is a VMSA the launch did not create`);
      }
    }
  }
}

/**
 * The SEV-SNP plugin: VM type `snp`. Found by the core as `@cocokit/arch-snp` (its package.json
 * declares `"cocokit": { "arch": ["snp"] }`) or passed directly (`openKvm({ archs: [snp] })`).
 */
const snp = defineArchPlugin({
  name: 'snp',
  apiVersion: CONTRACT_API_VERSION,
  vmTypes: ['snp'],
  description: 'AMD SEV-SNP: the RMP, RMPUPDATE/PSMASH, PVALIDATE, page state changes and the launch digest',
  costs: SNP_COSTS,
  createVm: createSnpVm,
});

export default snp;
