/**
 * Page State Change (GHCB specification §4.1.6; arch/x86/kvm/svm/sev.c): the guest asks the
 * hypervisor to make pages private or shared, through the GHCB MSR protocol (one 4K page) or a PSC
 * buffer of up to 253 entries in the GHCB shared buffer. KVM changes nothing itself: it turns each
 * request into KVM_EXIT_HYPERCALL(KVM_HC_MAP_GPA_RANGE) exits, and userspace converts the range
 * (memory attributes, then usually a hole punch whose invalidation makes the RMP entries shared).
 *
 * Resumption, as KVM's complete_userspace_io. An exit ends the vCPU step (`ctx.exit` never
 * returns). Userspace writes the exit's `ret` (kvm_run.hypercall.ret: 0 = done) and runs the vCPU
 * again; before the guest runs, the core calls the plugin's `completeExit` ({@link completePsc}),
 * which plays snp_complete_psc_msr or snp_complete_one_psc: it either returns the value the guest's
 * VMGEXIT returns (the GHCB MSR response, or SW_EXITINFO2) or exits again for the next range. The
 * guest call is never re-issued, so a guest sees one call and one result however many exits it
 * took, and nothing can run on that vCPU in between (a second PSC there is refused). Progress lives
 * where the kernel keeps it: in the guest's buffer (hdr.cur_entry, each entry's cur_page) and in
 * per-vCPU in-flight state (psc_idx, psc_inflight), keyed by `ctx.vcpu`.
 */
import { KvmError, uapi, type ArchExit } from '@cocokit/sdk';
import {
  GHCB_MSR_PSC_REQ,
  GHCB_MSR_PSC_RESP,
  GHCB_MSR_PSC_RESP_ERROR,
  PAGES_PER_2M,
  PSC_OP,
  VMGEXIT_PSC_ERROR,
  VMGEXIT_PSC_MAX_COUNT,
  type PscOpName,
} from './constants.js';
import { mapGpaRangeExitEnabled, vcpuId, type SnpState } from './state.js';

/** One entry of a PSC buffer (struct psc_entry: cur_page:12, gfn:40, operation:4, pagesize:1). */
export interface PscEntry {
  /** Pages of the entry already done; KVM sets it to the entry's size when it completes. */
  curPage: number;
  gfn: number;
  /** {@link PSC_OP}: 1 private, 2 shared, 3 psmash, 4 unsmash. */
  operation: number;
  /** 0 = 4K, 1 = 2M. */
  pageSize: number;
}

/** A PSC buffer in guest memory (struct psc_hdr + entries); KVM updates it in place as it progresses. */
export interface PscBuffer {
  readonly hdr: { curEntry: number; endEntry: number };
  readonly entries: PscEntry[];
}

/** A KVM_EXIT_HYPERCALL for KVM_HC_MAP_GPA_RANGE, as KVM fills kvm_run for a PSC. */
export interface MapGpaRangeExit {
  readonly reason: 'HYPERCALL';
  /** kvm_run.exit_reason. */
  readonly exitReason: typeof uapi.KVM_EXIT_HYPERCALL;
  readonly nr: typeof uapi.KVM_HC_MAP_GPA_RANGE;
  /** [gpa, npages, attrs]: KVM_MAP_GPA_RANGE_ENCRYPTED (private) or DECRYPTED, | PAGE_SZ_4K or _2M. */
  readonly args: readonly [number, number, number];
  /** kvm_run.hypercall.ret: userspace writes 0 for success before running the vCPU again. */
  ret: number;
  readonly [field: string]: unknown;
}

/**
 * Builds a PSC buffer from requests, as the guest's __set_pages_state fills one: `cur_entry` 0,
 * `end_entry` the last index.
 */
export function createPscBuffer(requests: ReadonlyArray<{ gfn: number; op: PscOpName; size?: '4K' | '2M' }>): PscBuffer {
  return {
    hdr: { curEntry: 0, endEntry: requests.length - 1 },
    entries: requests.map((r) => ({ curPage: 0, gfn: r.gfn, operation: PSC_OP[r.op], pageSize: r.size === '2M' ? 1 : 0 })),
  };
}

/** The GHCB MSR value of a single-page PSC request (GHCB_MSR_PSC_REQ_GFN(gfn, op)). */
export function ghcbMsrPscRequest(gfn: number, op: PscOpName): bigint {
  return (BigInt(PSC_OP[op] & 0xf) << 52n) | ((BigInt(gfn) & ((1n << 40n) - 1n)) << 12n) | GHCB_MSR_PSC_REQ;
}

/**
 * KVM cannot start a VMGEXIT on a vCPU whose previous exit is not completed: KVM_RUN runs
 * complete_userspace_io before the guest. A caller of the guest API outside the core can get this
 * wrong, so it is refused.
 */
function refuseInFlight(s: SnpState, vcpu: number): void {
  const p = s.pendingPsc.get(vcpu);
  if (p === undefined) return;
  throw new KvmError(
    'EINVAL',
    'VMGEXIT',
    `vCPU ${vcpu} has a ${p.kind === 'msr' ? 'GHCB MSR' : 'PSC buffer'} page state change waiting for userspace: complete it (completeExit, what KVM_RUN does first) before the guest issues another`,
  );
}

/**
 * The GHCB MSR protocol PSC (snp_begin_psc_msr): `msr` is the request the guest wrote (see
 * {@link ghcbMsrPscRequest}); returns the response it reads back: GHCB_MSR_PSC_RESP_ERROR
 * (bit 63 | 0x015) at once when the op is not private/shared or userspace has not enabled the
 * exit; otherwise exits with a 1-page KVM_HC_MAP_GPA_RANGE, and {@link completePsc} answers.
 */
export function ghcbMsrPsc(s: SnpState, msr: bigint): bigint {
  const vcpu = vcpuId(s);
  refuseInFlight(s, vcpu);
  if ((msr & 0xfffn) !== GHCB_MSR_PSC_REQ) {
    throw new KvmError('EINVAL', 'sev_handle_vmgexit_msr_protocol', `GHCB MSR request 0x${(msr & 0xfffn).toString(16)} is not a PSC request (0x014)`);
  }
  s.sim.charge('snp.vmgexit');
  const gfn = Number((msr >> 12n) & ((1n << 40n) - 1n));
  const op = Number((msr >> 52n) & 0xfn);
  if (op !== PSC_OP.PRIVATE && op !== PSC_OP.SHARED) return finishMsr(s, GHCB_MSR_PSC_RESP_ERROR);
  if (!mapGpaRangeExitEnabled(s)) return finishMsr(s, GHCB_MSR_PSC_RESP_ERROR);
  const exit = mapGpaRange(gfn * 4096, 1, op === PSC_OP.PRIVATE, false);
  s.pendingPsc.set(vcpu, { kind: 'msr', exit, idx: 0, inflight: 0 });
  traceExit(s, 'msr', exit, 1);
  return s.ctx.exit(exit);
}

function finishMsr(s: SnpState, response: bigint): bigint {
  if (s.sim.trace.enabled) s.sim.trace.emit('snp.psc_done', { protocol: 'msr', result: Number(response >> 32n) });
  return response;
}

/**
 * The "Page State Change" VMGEXIT with a PSC buffer (snp_begin_psc). Returns the result KVM puts
 * in SW_EXITINFO2 when no exit is needed: 0, or VMGEXIT_PSC_ERROR_INVALID_HDR / _INVALID_ENTRY /
 * _GENERIC (GENERIC also when userspace has not enabled the exit); otherwise exits, and
 * {@link completePsc} carries on. Along the way:
 *
 * - entries already done (cur_page = size) are skipped; a partly done 2M entry finishes as 4K pages;
 * - consecutive entries with the same op, contiguous gfns, cur_page 0 and the same size are merged
 *   into one KVM_HC_MAP_GPA_RANGE exit;
 * - PSMASH and UNSMASH entries are marked done without any action;
 * - after userspace succeeds, the in-flight entries get cur_page = size and hdr.cur_entry moves
 *   past them; if it fails, the request ends with VMGEXIT_PSC_ERROR_GENERIC and the buffer shows
 *   exactly how far it got (earlier ranges done, the failing one not), so the guest may issue the
 *   same buffer again to resume at cur_entry.
 */
export function psc(s: SnpState, buf: PscBuffer): number {
  const vcpu = vcpuId(s);
  refuseInFlight(s, vcpu);
  s.sim.charge('snp.vmgexit');
  return begin(s, vcpu, buf);
}

/**
 * complete_userspace_io for a PSC exit of vCPU `vcpu` (the plugin's `completeExit`):
 * snp_complete_psc_msr answers the GHCB MSR response; snp_complete_one_psc marks the in-flight
 * entries done and begins the next range, which may exit again (`ctx.exit` throws out of here, as
 * the contract allows). `ret` is read from `exit`, the exit userspace filled in. Returns `undefined`
 * when the vCPU has no PSC waiting (the exit is not the plugin's).
 */
export function completePsc(s: SnpState, exit: ArchExit, vcpu: number): { readonly value: unknown } | undefined {
  const pending = s.pendingPsc.get(vcpu);
  if (pending === undefined || exit.reason !== 'HYPERCALL' || exit['nr'] !== uapi.KVM_HC_MAP_GPA_RANGE) return undefined;
  s.pendingPsc.delete(vcpu);
  const r = exit['ret'];
  // A core that hands back a copy without `ret` leaves the plugin's own exit object as the answer.
  const ret = typeof r === 'number' ? r : pending.exit.ret;
  if (pending.kind === 'msr') return { value: finishMsr(s, ret === 0 ? GHCB_MSR_PSC_RESP : GHCB_MSR_PSC_RESP_ERROR) };
  if (ret !== 0) return { value: complete(s, VMGEXIT_PSC_ERROR.GENERIC) };
  const buf = pending.buffer as PscBuffer;
  completeOne(buf, pending.idx, pending.inflight);
  return { value: begin(s, vcpu, buf) };
}

function begin(s: SnpState, vcpu: number, buf: PscBuffer): number {
  // snp_begin_psc checks the capability on every range, so disabling it between exits fails the rest.
  if (!mapGpaRangeExitEnabled(s)) return complete(s, VMGEXIT_PSC_ERROR.GENERIC);
  const { hdr, entries } = buf;
  for (;;) {
    const idxStart = hdr.curEntry;
    const idxEnd = hdr.endEntry;
    // The model's buffer is an array: an end_entry past it is a header the hardware could not have.
    if (!Number.isInteger(idxEnd) || idxEnd >= VMGEXIT_PSC_MAX_COUNT || idxEnd >= entries.length) {
      return complete(s, VMGEXIT_PSC_ERROR.INVALID_HDR);
    }
    let idx = idxStart;
    let start: PscEntry | undefined;
    let gfn = 0;
    let npages = 0;
    let huge = false;
    for (; idx <= idxEnd; idx++, hdr.curEntry++) {
      const e = entries[idx] as PscEntry;
      s.sim.charge('snp.psc_entry');
      gfn = e.gfn;
      huge = e.pageSize !== 0;
      npages = huge ? PAGES_PER_2M : 1;
      if (e.curPage > npages || gfn % npages !== 0) return complete(s, VMGEXIT_PSC_ERROR.INVALID_ENTRY);
      if (e.curPage > 0) {
        // A partly completed 2M range: finish it as 4K pages, never merged with 2M neighbours.
        npages -= e.curPage;
        gfn += e.curPage;
        huge = false;
      }
      start = e;
      if (npages > 0) break;
    }
    if (idx > idxEnd || start === undefined) return complete(s, VMGEXIT_PSC_ERROR.NONE);
    const pscIdx = idx;
    let inflight = 1;
    while (++idx <= idxEnd) {
      const e = entries[idx] as PscEntry;
      s.sim.charge('snp.psc_entry');
      // KVM compares with the start entry's own gfn (not the partly-done adjusted one).
      if (e.operation !== start.operation || e.gfn !== start.gfn + npages || e.curPage !== 0 || (e.pageSize !== 0) !== huge) break;
      inflight++;
      npages += huge ? PAGES_PER_2M : 1;
    }
    if (start.operation === PSC_OP.PRIVATE || start.operation === PSC_OP.SHARED) {
      const exit = mapGpaRange(gfn * 4096, npages, start.operation === PSC_OP.PRIVATE, start.pageSize !== 0);
      s.pendingPsc.set(vcpu, { kind: 'buffer', buffer: buf, exit, idx: pscIdx, inflight });
      traceExit(s, 'buffer', exit, inflight);
      return s.ctx.exit(exit);
    }
    // PSMASH / UNSMASH: KVM has nothing to do for them; mark them done and look further.
    completeOne(buf, pscIdx, inflight);
  }
}

/** __snp_complete_one_psc: the in-flight entries are done; cur_entry moves past them. */
function completeOne(buf: PscBuffer, pscIdx: number, inflight: number): void {
  let idx = pscIdx;
  for (; inflight > 0; inflight--, idx++) {
    const e = buf.entries[idx] as PscEntry;
    e.curPage = e.pageSize !== 0 ? PAGES_PER_2M : 1;
  }
  buf.hdr.curEntry = idx;
}

/** snp_complete_psc: the request is over; `result` goes to SW_EXITINFO2. */
function complete(s: SnpState, result: number): number {
  if (s.sim.trace.enabled) s.sim.trace.emit('snp.psc_done', { protocol: 'buffer', result });
  return result;
}

function mapGpaRange(gpa: number, npages: number, toPrivate: boolean, size2m: boolean): MapGpaRangeExit {
  const attrs =
    (toPrivate ? uapi.KVM_MAP_GPA_RANGE_ENCRYPTED : uapi.KVM_MAP_GPA_RANGE_DECRYPTED) |
    (size2m ? uapi.KVM_MAP_GPA_RANGE_PAGE_SZ_2M : uapi.KVM_MAP_GPA_RANGE_PAGE_SZ_4K);
  // KVM zeroes hypercall.ret before the exit (userspace older than QEMU 9.2 never writes it).
  return { reason: 'HYPERCALL', exitReason: uapi.KVM_EXIT_HYPERCALL, nr: uapi.KVM_HC_MAP_GPA_RANGE, args: [gpa, npages, attrs], ret: 0 };
}

function traceExit(s: SnpState, protocol: 'msr' | 'buffer', exit: MapGpaRangeExit, entries: number): void {
  if (!s.sim.trace.enabled) return;
  const [gpa, npages, attrs] = exit.args;
  const op = (attrs & uapi.KVM_MAP_GPA_RANGE_ENCRYPTED) !== 0 ? 'private' : 'shared';
  s.sim.trace.emit('snp.psc', { protocol, gpa, npages, op, attrs, entries });
}
