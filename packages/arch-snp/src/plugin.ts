/**
 * The SEV-SNP arch plugin: `defineArchPlugin` wiring the RMP (rmp.ts), the guest_memfd hooks
 * (gmem.ts), access checks (access.ts), PVALIDATE (pvalidate.ts), page state changes (psc.ts),
 * lazy acceptance (accept.ts) and the launch (launch.ts) into one VM of type `snp`
 * (KVM_X86_SNP_VM).
 */
import {
  CONTRACT_API_VERSION,
  KvmError,
  ModelInvariantError,
  RangeMap,
  defineArchPlugin,
  type ArchVmContext,
  type FaultClass,
  type GuestFault,
  type MappingLevel,
} from '@cocokit/sdk';
import { LazyAcceptor } from './accept.js';
import { guestAccess, hostAccess, kernelAccess } from './access.js';
import type { SnpArchVm, SnpGuestApi, SnpVmApi } from './api.js';
import { SNP_COSTS } from './costs.js';
import { gmemInvalidate, gmemPrepare, handleRmpFault, maxMappingLevel } from './gmem.js';
import { addVmsa, decommission, launchFinish, launchStart, launchUpdate, newLaunchState, populate } from './launch.js';
import { ghcbMsrPsc, psc } from './psc.js';
import { pvalidate } from './pvalidate.js';
import { rmpForHost } from './rmp.js';
import type { SnpState } from './state.js';

/** Options of an SNP VM (`ctx.options`). */
export interface SnpVmOptions {
  /** Whether KVM_HC_MAP_GPA_RANGE exits start enabled (default true, as every SNP VMM enables them). */
  readonly mapGpaRangeExit?: boolean;
  /** Pages per lazily accepted chunk (default 512: the 2 MiB unit of the EFI unaccepted bitmap). */
  readonly acceptChunkPages?: number;
}

const KNOWN_OPTIONS = new Set(['mapGpaRangeExit', 'acceptChunkPages']);

function readOptions(o: Readonly<Record<string, unknown>>): SnpVmOptions {
  for (const k of Object.keys(o)) {
    if (!KNOWN_OPTIONS.has(k)) throw new KvmError('EINVAL', 'KVM_CREATE_VM(snp)', `unknown option '${k}' (known: ${[...KNOWN_OPTIONS].join(', ')})`);
  }
  const m = o['mapGpaRangeExit'];
  if (m !== undefined && typeof m !== 'boolean') throw new KvmError('EINVAL', 'KVM_CREATE_VM(snp)', 'mapGpaRangeExit must be a boolean');
  const c = o['acceptChunkPages'];
  if (c !== undefined && typeof c !== 'number') throw new KvmError('EINVAL', 'KVM_CREATE_VM(snp)', 'acceptChunkPages must be a number');
  return { ...(m !== undefined && { mapGpaRangeExit: m }), ...(c !== undefined && { acceptChunkPages: c }) };
}

/** Creates the arch state of one SNP VM (sev_guest_init for KVM_X86_SNP_VM: an ASID, no launch yet). */
export function createSnpVm(ctx: ArchVmContext): SnpArchVm {
  const options = readOptions(ctx.options);
  const rmp = rmpForHost(ctx.host);
  const s: SnpState = {
    ctx,
    sim: ctx.sim,
    rmp,
    asid: rmp.allocAsid(),
    gfnToPfn: new RangeMap<number>(),
    mapGpaRangeExit: options.mapGpaRangeExit ?? true,
    pendingPsc: new Map(),
    leakedPages: 0,
    launch: newLaunchState(),
  };
  const acceptor = new LazyAcceptor(s, options.acceptChunkPages);

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
    decommission: () => decommission(s),
    handleRmpFault: (gfn, pfn) => handleRmpFault(s, gfn, pfn),
    hostAccessAt: (pfn, write, hostOrder) => hostAccess(s, pfn, write, hostOrder),
    kernelAccess: (pfn, write, op) => kernelAccess(s, pfn, write, op),
    setMapGpaRangeExit: (enabled) => {
      s.mapGpaRangeExit = enabled;
    },
    get leakedPages() {
      return s.leakedPages;
    },
  };

  const guestApi: SnpGuestApi = {
    pvalidate: (gpa, size, validate) => pvalidate(s, gpa, size, validate),
    access: (a) => guestAccess(s, a),
    psc: (buffer) => psc(s, buffer),
    ghcbMsrPsc: (msr) => ghcbMsrPsc(s, msr),
    acceptOnFirstUse: (gpa) => acceptor.acceptOnFirstUse(gpa),
    isAccepted: (gpa) => acceptor.isAccepted(Math.floor(gpa / 4096)),
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
    checkInvariants: () => checkVmInvariants(s),
    vmApi,
    guestApi,
  };
}

/**
 * The VM's invariants, on top of the RMP's own: every private translation points at a page
 * assigned to this ASID at that gfn (so a validated page is always an assigned one: Validated lives
 * in the entry); no page of this ASID is Immutable between operations (Immutable exists only
 * inside a LAUNCH_UPDATE); VMSA pages are the registered VMSAs of a finished launch.
 */
export function checkVmInvariants(s: SnpState): void {
  s.rmp.checkInvariants();
  s.gfnToPfn.checkInvariants();
  for (const r of s.gfnToPfn.runs()) {
    for (const e of s.rmp.assignedRuns(r.start + r.value, r.end + r.value)) {
      const gfn = e.start - r.value;
      if (e.entry.asid !== s.asid || e.entry.gfn !== gfn) {
        throw new ModelInvariantError('snp.vm.translation', `gfn 0x${gfn.toString(16)} → pfn 0x${e.start.toString(16)}, whose RMP entry is ASID ${e.entry.asid} gfn 0x${e.entry.gfn.toString(16)}`);
      }
    }
    const assigned = s.rmp.countAssigned(r.start + r.value, r.end + r.value);
    if (assigned !== r.end - r.start) {
      throw new ModelInvariantError('snp.vm.translation', `gfns [0x${r.start.toString(16)}, 0x${r.end.toString(16)}) translate to ${r.end - r.start - assigned} unassigned page(s)`);
    }
  }
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
