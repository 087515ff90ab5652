/**
 * The SNP launch (SEV-SNP firmware ABI §8.15-8.18; snp_launch_start, snp_launch_update,
 * sev_gmem_post_populate, snp_launch_update_vmsa and snp_launch_finish in arch/x86/kvm/svm/sev.c):
 * the initial image is copied into private pages, each assigned Immutable in the RMP and handed to
 * the firmware, which measures it into the launch digest and makes it Guest-Valid (validated, no
 * longer Immutable); LAUNCH_FINISH measures each vCPU's VMSA and seals the digest.
 */
import { KvmError, pfn as toPfn, type PageSource } from '@cocokit/sdk';
import { RMPUPDATE, SNP_PAGE_TYPE, SNP_POLICY, SNP_POLICY_MASK_VALID, VMSA_GPA, type SnpPageType } from './constants.js';
import { LaunchDigest } from './digest.js';
import { rmpMakePrivate, type SnpState } from './state.js';

/** Where the launch is. */
export type LaunchPhase = 'init' | 'launching' | 'finished' | 'decommissioned';

/** The firmware guest context of one VM, as far as the model needs it. */
export interface LaunchState {
  phase: LaunchPhase;
  policy: number;
  readonly digest: LaunchDigest;
  /** VMSAs registered for LAUNCH_FINISH (one per vCPU, in vCPU order). */
  readonly vmsas: Array<{ readonly pfn: number; readonly bytes: Uint8Array }>;
  hostData: Uint8Array;
}

/** A fresh launch state: before SNP_LAUNCH_START. */
export function newLaunchState(): LaunchState {
  return { phase: 'init', policy: 0, digest: new LaunchDigest(), vmsas: [], hostData: new Uint8Array(32) };
}

/** The page types SNP_LAUNCH_UPDATE accepts from userspace (VMSA is KVM's own, at LAUNCH_FINISH). */
export const LAUNCH_UPDATE_TYPES: readonly SnpPageType[] = ['normal', 'zero', 'unmeasured', 'secrets', 'cpuid'];

/** KVM_SEV_SNP_LAUNCH_START parameters. */
export interface SnpLaunchStartParams {
  /** The guest policy (SEV-SNP ABI §4.3); bit 17 must be set, and only the bits KVM allows. */
  readonly policy: number;
}

/**
 * SNP_LAUNCH_START: creates the firmware guest context and binds the ASID. `EINVAL` when the
 * launch has already started, when the policy lacks bit 17 (reserved, must be one), or sets a bit
 * KVM does not allow (snp_launch_start).
 */
export function launchStart(s: SnpState, params: SnpLaunchStartParams): void {
  const op = 'KVM_SEV_SNP_LAUNCH_START';
  if (s.launch.phase !== 'init') throw new KvmError('EINVAL', op, `the launch is already ${s.launch.phase === 'launching' ? 'started' : s.launch.phase}`);
  const p = params.policy;
  if (!Number.isSafeInteger(p) || p < 0) throw new KvmError('EINVAL', op, `policy ${p} is not a 64-bit value`);
  if (Math.floor(p / SNP_POLICY.RSVD_MBO) % 2 !== 1) throw new KvmError('EINVAL', op, 'policy bit 17 (reserved, must be one) is clear');
  if (p > SNP_POLICY_MASK_VALID || !onlyBits(p, SNP_POLICY_MASK_VALID)) {
    throw new KvmError('EINVAL', op, `policy 0x${p.toString(16)} sets bits outside 0x${SNP_POLICY_MASK_VALID.toString(16)}`);
  }
  s.sim.charge('snp.fw_command');
  s.launch.phase = 'launching';
  s.launch.policy = p;
  if (s.sim.trace.enabled) s.sim.trace.emit('snp.launch_start', { asid: s.asid, policy: p });
}

function onlyBits(value: number, mask: number): boolean {
  // Bitwise operators are 32-bit in JS: split into 32-bit halves.
  const hi = Math.floor(value / 2 ** 32);
  const lo = value % 2 ** 32;
  const mhi = Math.floor(mask / 2 ** 32);
  const mlo = mask % 2 ** 32;
  return (hi & ~mhi) === 0 && (lo & ~mlo) >>> 0 === 0;
}

/**
 * sev_gmem_post_populate for one page (the arch `populate` hook): copies `src` into `pfn`, makes it
 * private and Immutable at `gfn`, and has the firmware measure it with page type `kind` and make
 * it Guest-Valid. Refused with no change: `EINVAL` outside a launch, for an unknown type, a missing
 * source (any type but ZERO needs one), or a pfn outside the RMP; `EEXIST` for a pfn already
 * assigned in the RMP.
 *
 * ZERO pages are zeroed (by the firmware); SECRETS pages are zeroed here too: the firmware's
 * secrets (VMPCKs) are not modelled. CPUID pages are copied and not checked (the firmware's CPUID
 * validation and its INVALID_PARAM correction are not modelled).
 */
export function populate(s: SnpState, gfn: number, pfn: number, src: PageSource | null, kind: string): void {
  const op = 'SNP_LAUNCH_UPDATE';
  if (s.launch.phase !== 'launching') throw new KvmError('EINVAL', op, `no launch in progress (phase ${s.launch.phase}): issue KVM_SEV_SNP_LAUNCH_START first`);
  if (!(LAUNCH_UPDATE_TYPES as readonly string[]).includes(kind)) {
    throw new KvmError('EINVAL', op, `page type '${kind}' is not one of ${LAUNCH_UPDATE_TYPES.join(', ')}`);
  }
  const type = kind as SnpPageType;
  if (src === null && type !== 'zero') throw new KvmError('EINVAL', op, `a ${type} page needs a source`);
  if (!Number.isSafeInteger(gfn) || gfn < 0) throw new KvmError('EINVAL', op, `gfn ${gfn} is not a frame number`);
  if (!s.rmp.covers(pfn)) throw new KvmError('EINVAL', op, `pfn ${pfn} is outside RMP coverage`);
  if (s.rmp.isAssigned(pfn)) throw new KvmError('EEXIST', op, `pfn 0x${pfn.toString(16)} is already assigned in the RMP (not in the initial shared state)`);
  if (src !== null && src.kind === 'bytes' && src.bytes.length > 4096) {
    throw new KvmError('EINVAL', op, `source is ${src.bytes.length} bytes, more than a page`);
  }

  // The copy happens while the page is still the hypervisor's, then RMPUPDATE, then the firmware.
  const host = s.ctx.host;
  if (type === 'zero' || type === 'secrets' || src === null || src.kind === 'zero') host.zero(toPfn(pfn));
  else if (src.kind === 'tag') host.writeTag(toPfn(pfn), src.tag);
  else {
    if (src.bytes.length < 4096) host.zero(toPfn(pfn));
    host.writeBytes(toPfn(pfn), 0, src.bytes);
  }
  const rc = rmpMakePrivate(s, pfn, gfn, '4K', true, op);
  if (rc !== RMPUPDATE.SUCCESS) throw new KvmError('EIO', op, `RMPUPDATE of pfn 0x${pfn.toString(16)} failed with ${rc}`);
  s.sim.charge('snp.launch_update_page');
  const measured = type === 'normal';
  s.launch.digest.update(type, gfn * 4096, measured ? host.readBytes(toPfn(pfn)) : null);
  s.rmp.firmwareLaunch(pfn, false);
  if (s.sim.trace.enabled) s.sim.trace.emit('snp.launch_update', { gfn, pfn, type, measured });
}

/** KVM_SEV_SNP_LAUNCH_UPDATE parameters (struct kvm_sev_snp_launch_update, in pages rather than bytes). */
export interface SnpLaunchUpdateParams {
  readonly gfnStart: number;
  readonly npages: number;
  readonly type: SnpPageType;
  /** Must be 0. */
  readonly flags?: number;
}

/** Where a page of a launch update comes from: what kvm_gmem_populate finds for one gfn. */
export type LaunchPageResolver = (gfn: number) => { readonly pfn: number; readonly src: PageSource | null };

/**
 * KVM_SEV_SNP_LAUNCH_UPDATE (snp_launch_update over kvm_gmem_populate): validates the parameters
 * (`EINVAL`: no launch, a bad type or the internal VMSA type, flags ≠ 0, no pages), then populates
 * page by page, `resolve` standing in for guest_memfd's lookup of each gfn. As in the kernel,
 * partial progress is success: the returned parameters say what is left (gfnStart advanced,
 * npages reduced) so the VMM re-issues; a failure on the very first page is thrown.
 */
export function launchUpdate(s: SnpState, params: SnpLaunchUpdateParams, resolve: LaunchPageResolver): { gfnStart: number; npages: number } {
  const op = 'KVM_SEV_SNP_LAUNCH_UPDATE';
  if (s.launch.phase !== 'launching') throw new KvmError('EINVAL', op, `no launch in progress (phase ${s.launch.phase})`);
  if (!(LAUNCH_UPDATE_TYPES as readonly string[]).includes(params.type)) {
    throw new KvmError('EINVAL', op, `type '${String(params.type)}' (${SNP_PAGE_TYPE[params.type] ?? '?'}) is not a type userspace may pass`);
  }
  if ((params.flags ?? 0) !== 0) throw new KvmError('EINVAL', op, `flags ${String(params.flags)} must be 0`);
  if (!Number.isSafeInteger(params.npages) || params.npages <= 0) throw new KvmError('EINVAL', op, `len of ${params.npages} pages is not a positive page count`);
  if (!Number.isSafeInteger(params.gfnStart) || params.gfnStart < 0) throw new KvmError('EINVAL', op, `gfn_start ${params.gfnStart} is not a frame number`);
  let done = 0;
  for (; done < params.npages; done++) {
    const gfn = params.gfnStart + done;
    try {
      const { pfn, src } = resolve(gfn);
      populate(s, gfn, pfn, src, params.type);
    } catch (e) {
      if (done === 0) throw e;
      break;
    }
  }
  return { gfnStart: params.gfnStart + done, npages: params.npages - done };
}

/**
 * Registers a vCPU's VMSA for LAUNCH_FINISH (what sev_es_sync_vmsa produces): `pfn` is the page
 * KVM allocated for it (snp_safe_alloc_page never hands out a 2M-aligned one, because of the
 * erratum that makes a 2M-aligned VMSA collide with a huge-page RMP check: `EINVAL`), `bytes` its
 * 4096 bytes. `EINVAL` after the launch, for a pfn already assigned or registered, or a wrong size.
 */
export function addVmsa(s: SnpState, pfn: number, bytes: Uint8Array): void {
  const op = 'snp_launch_update_vmsa';
  if (s.launch.phase !== 'init' && s.launch.phase !== 'launching') throw new KvmError('EINVAL', op, `the launch is ${s.launch.phase}`);
  if (!s.rmp.covers(pfn)) throw new KvmError('EINVAL', op, `pfn ${pfn} is outside RMP coverage`);
  if (pfn % 512 === 0) throw new KvmError('EINVAL', op, `pfn 0x${pfn.toString(16)} is 2M-aligned: KVM never uses one for a VMSA (snp_safe_alloc_page)`);
  if (s.rmp.isAssigned(pfn) || s.launch.vmsas.some((v) => v.pfn === pfn)) {
    throw new KvmError('EINVAL', op, `pfn 0x${pfn.toString(16)} is already assigned or registered`);
  }
  if (bytes.length !== 4096) throw new KvmError('EINVAL', op, `a VMSA is 4096 bytes, got ${bytes.length}`);
  s.launch.vmsas.push({ pfn, bytes: bytes.slice() });
}

/** KVM_SEV_SNP_LAUNCH_FINISH parameters the model checks. */
export interface SnpLaunchFinishParams {
  /** 32 bytes of host data bound into attestation reports (default zeros). */
  readonly hostData?: Uint8Array;
  /** Must be 0. */
  readonly flags?: number;
}

/**
 * SNP_LAUNCH_FINISH: each registered VMSA is written to its page, made private and Immutable at
 * GPA 0xFFFFFFFFF000 and measured with page type VMSA (snp_launch_update_vmsa); then the digest
 * is sealed and KVM_PRE_FAULT_MEMORY allowed (`ctx.allowPreFault`). `EINVAL` outside a launch (before LAUNCH_START, or already finished), for flags ≠ 0 or
 * host data that is not 32 bytes.
 */
export function launchFinish(s: SnpState, params: SnpLaunchFinishParams = {}): Uint8Array {
  const op = 'KVM_SEV_SNP_LAUNCH_FINISH';
  if (s.launch.phase !== 'launching') {
    throw new KvmError('EINVAL', op, s.launch.phase === 'init' ? 'SNP_LAUNCH_START was not issued' : `the launch is already ${s.launch.phase}`);
  }
  if ((params.flags ?? 0) !== 0) throw new KvmError('EINVAL', op, `flags ${String(params.flags)} must be 0`);
  if (params.hostData !== undefined && params.hostData.length !== 32) throw new KvmError('EINVAL', op, `host_data is 32 bytes, got ${params.hostData.length}`);
  for (const v of s.launch.vmsas) {
    if (s.rmp.isAssigned(v.pfn)) throw new KvmError('EINVAL', op, `VMSA pfn 0x${v.pfn.toString(16)} was assigned since it was registered`);
  }
  const gfn = VMSA_GPA / 4096;
  for (const v of s.launch.vmsas) {
    s.ctx.host.writeBytes(toPfn(v.pfn), 0, v.bytes);
    const rc = rmpMakePrivate(s, v.pfn, gfn, '4K', true, op);
    if (rc !== RMPUPDATE.SUCCESS) throw new KvmError('EIO', op, `RMPUPDATE of VMSA pfn 0x${v.pfn.toString(16)} failed with ${rc}`);
    s.sim.charge('snp.launch_update_page');
    s.launch.digest.update('vmsa', VMSA_GPA, v.bytes);
    s.rmp.firmwareLaunch(v.pfn, true);
    if (s.sim.trace.enabled) s.sim.trace.emit('snp.launch_update', { gfn, pfn: v.pfn, type: 'vmsa', measured: true });
  }
  s.sim.charge('snp.fw_command');
  if (params.hostData) s.launch.hostData = params.hostData.slice();
  s.launch.phase = 'finished';
  // snp_launch_finish: "Now that there will be no more SNP_LAUNCH_UPDATE ioctls, private pages can
  // be given to the guest simply by marking the RMP entry as private. This can happen on first
  // access and also with KVM_PRE_FAULT_MEMORY": kvm->arch.pre_fault_allowed = true.
  s.ctx.allowPreFault?.();
  if (s.sim.trace.enabled) s.sim.trace.emit('snp.launch_finish', { vmsas: s.launch.vmsas.length, pages: s.launch.digest.count });
  return s.launch.digest.digest;
}

/**
 * The `destroy` hook: SNP_DECOMMISSION of the guest context (snp_decommission_context, from
 * sev_vm_destroy; nothing to decommission when no LAUNCH_START created one) and the teardown of
 * the VMSAs (sev_free_vcpu): the firmware releases each VMSA page (SNP_PAGE_RECLAIM) and it becomes
 * the hypervisor's again. Idempotent.
 */
export function decommission(s: SnpState): void {
  if (s.launch.phase === 'decommissioned') return;
  if (s.launch.phase !== 'init') s.sim.charge('snp.fw_command');
  if (s.launch.phase === 'finished') {
    for (const v of s.launch.vmsas) {
      s.sim.charge('snp.fw_command');
      s.rmp.firmwareReclaim(v.pfn);
    }
  }
  s.launch.phase = 'decommissioned';
}
