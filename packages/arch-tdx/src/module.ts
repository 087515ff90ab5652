/**
 * The TDX module of one TD, as KVM sees it through SEAMCALLs (and the guest through TDCALLs): it
 * owns the Secure EPT ({@link SecureEpt}), the PAMT entries of the TD's private pages, the TD
 * epoch used for TLB tracking, and MRTD. Every operation checks everything, then changes state,
 * and returns the module's completion status; a refused operation changes nothing.
 *
 * Rules per leaf follow the TDX module ABI as digested in arch-specs A.4/A.5/A.7/A.8 (which state
 * each leaf accepts, the 4K-only PAGE.ADD, AUG up to 2M, the BLOCK → TRACK → kick → REMOVE
 * sequence). Where the digest leaves a point open, the comment at the rule says which reading was
 * chosen.
 */
import { ModelInvariantError, pfn as pfnBrand, type HostMemoryView, type PageSource, type Sim } from '@cocokit/sdk';
import { Mrtd, TDX_EXTENDMR_CHUNKSIZE } from './measure.js';
import { SEPT_STATE, SecureEpt, framesAtLevel, isBlocked, isLeaf, type SeptLevel, type SeptState } from './sept.js';
import { TDX_OPERAND_ID, TDX_STATUS, tdxStatusName } from './status.js';
import type {} from './costs.js';

/** The SEAMCALL and TDCALL leaves the model implements, by their ABI names. */
export const TDX_LEAVES = [
  'TDH.MEM.SEPT.ADD',
  'TDH.MEM.PAGE.ADD',
  'TDH.MEM.PAGE.AUG',
  'TDH.MEM.RANGE.BLOCK',
  'TDH.MEM.RANGE.UNBLOCK',
  'TDH.MEM.TRACK',
  'TDH.MEM.PAGE.REMOVE',
  'TDH.MEM.PAGE.DEMOTE',
  'TDH.MEM.PAGE.PROMOTE',
  'TDH.MR.EXTEND',
  'TDH.MR.FINALIZE',
  'TDG.MEM.PAGE.ACCEPT',
  'TDH.PHYMEM.PAGE.RECLAIM',
] as const;

/** A leaf of {@link TDX_LEAVES}. */
export type TdxLeaf = (typeof TDX_LEAVES)[number];

/** The guest physical address width of a TD: 48 (4-level S-EPT) or 52 (5-level). */
export type Gpaw = 48 | 52;

/** What a {@link TdxModule} is built with. */
export interface TdxModuleOptions {
  readonly sim: Sim;
  readonly host: HostMemoryView;
  /** GPAW (CPUID 0x80000008.EAX[23:16] in KVM_TDX_INIT_VM): 48 or 52. Default 48. */
  readonly gpaw?: Gpaw;
}

/** The result of TDG.MEM.PAGE.ACCEPT. */
export type AcceptOutcome =
  /** The TDCALL completed with `status` (SUCCESS, PAGE_ALREADY_ACCEPTED, PAGE_SIZE_MISMATCH, OPERAND_INVALID, OPERAND_BUSY). */
  | { readonly kind: 'status'; readonly status: bigint }
  /**
   * The walk stopped (missing S-EPT page, FREE or blocked entry, or a larger PENDING leaf): the
   * module exits the TD to KVM as an EPT violation of type ACCEPT carrying the requested level;
   * KVM maps (or splits) and the guest re-issues the ACCEPT.
   */
  | { readonly kind: 'ept-violation'; readonly level: SeptLevel };

/** Counts of module activity, for tests and reports. */
export interface TdxModuleStats {
  /** Calls per leaf, refused ones included. */
  readonly calls: Readonly<Record<TdxLeaf, number>>;
  /** Refused calls per leaf. */
  readonly errors: Readonly<Record<TdxLeaf, number>>;
  /** Present S-EPT entries per level (index = level). */
  readonly entries: readonly number[];
  /** 4 KiB private pages the module holds (PAMT entries of type PT_REG, a 2M leaf counting 512). */
  readonly privatePages: number;
  readonly epoch: number;
}

const zeroCounts = (): Record<TdxLeaf, number> =>
  Object.fromEntries(TDX_LEAVES.map((l) => [l, 0])) as Record<TdxLeaf, number>;

const S = TDX_STATUS;
const STATE_INCORRECT_RCX = S.TDX_EPT_ENTRY_STATE_INCORRECT | TDX_OPERAND_ID.RCX;
const BUSY_SEPT = S.TDX_OPERAND_BUSY | TDX_OPERAND_ID.SEPT;

/**
 * The TDX module's view of one TD.
 *
 * Frame numbers, not byte addresses, cross this API (`gfn`, `pfn`), except where the ABI is about
 * bytes (MR.EXTEND's 256-byte chunks). Each SEAMCALL charges its cost to the current actor whether
 * it succeeds or not, and emits its trace event (only when `sim.trace.enabled`) when it changed
 * state.
 */
export class TdxModule {
  /** The Secure EPT. Read it freely; change it only through the SEAMCALLs. */
  readonly sept: SecureEpt;
  /** GPAW, and so the shared bit (GPAW - 1) and the S-EPT depth. */
  readonly gpaw: Gpaw;
  /** The GPA bit that marks a shared access: 47 (GPAW 48) or 51 (GPAW 52). */
  readonly sharedBit: 47 | 51;
  /** One past the highest private gfn (the shared bit, in frames). */
  readonly privateGfnLimit: number;

  private readonly sim: Sim;
  private readonly host: HostMemoryView;
  private readonly mrtd = new Mrtd();
  /** PAMT of 4K private pages: pfn → gfn. */
  private readonly pamt4k = new Map<number, number>();
  /** PAMT of 2M private pages: pfn / 512 → gfn. */
  private readonly pamt2m = new Map<number, number>();
  /** The TD epoch at which each blocked entry was blocked, per level, by entry index. */
  private readonly blockedAt: Array<Map<number, number>>;
  private epochValue = 0;
  /** Whether every vCPU left guest mode since the last TRACK (KVM kicks them right after it). */
  private kicked = true;
  private finalizedFlag = false;
  private pageAdds = 0;
  private readonly busy = new Map<TdxLeaf, number>();
  private readonly calls = zeroCounts();
  private readonly errors = zeroCounts();

  constructor(options: TdxModuleOptions) {
    this.sim = options.sim;
    this.host = options.host;
    this.gpaw = options.gpaw ?? 48;
    this.sharedBit = this.gpaw === 52 ? 51 : 47;
    this.privateGfnLimit = 2 ** (this.sharedBit - 12);
    this.sept = new SecureEpt(this.gpaw === 52 ? 4 : 3);
    this.blockedAt = Array.from({ length: this.sept.rootLevel + 1 }, () => new Map<number, number>());
  }

  /** Whether TDH.MR.FINALIZE has run (the TD is RUNNABLE). */
  get finalized(): boolean {
    return this.finalizedFlag;
  }

  /** The TD epoch (TDH.MEM.TRACK increments it). */
  get epoch(): number {
    return this.epochValue;
  }

  /** Pages added with TDH.MEM.PAGE.ADD so far. */
  get pageAddCount(): number {
    return this.pageAdds;
  }

  /**
   * Makes the next `times` calls of `leaf` fail with TDX_OPERAND_BUSY (operand SEPT), as lock
   * contention with TDH.VP.ENTER's 0-step mitigation or another vCPU's SEAMCALL does (tdx.c,
   * tdx_handle_ept_violation comment).
   */
  injectBusy(leaf: TdxLeaf, times = 1): void {
    if (!Number.isSafeInteger(times) || times < 0) throw new RangeError(`injectBusy: times ${times} is not a count`);
    if (times === 0) this.busy.delete(leaf);
    else this.busy.set(leaf, times);
  }

  /** The gfn whose private page `pfn` is (PAMT owner), or `undefined` when the TD does not own it. */
  ownerOf(pfn: number): number | undefined {
    const g = this.pamt4k.get(pfn);
    if (g !== undefined) return g;
    const big = this.pamt2m.get(Math.floor(pfn / 512));
    return big === undefined ? undefined : big + (pfn % 512);
  }

  /** Counts of module activity. */
  stats(): TdxModuleStats {
    const entries: number[] = [];
    for (let l = 0; l <= this.sept.rootLevel; l++) entries.push(this.sept.count(l));
    return {
      calls: { ...this.calls },
      errors: { ...this.errors },
      entries,
      privatePages: this.pamt4k.size + 512 * this.pamt2m.size,
      epoch: this.epochValue,
    };
  }

  // ---- SEAMCALLs --------------------------------------------------------------------------------

  /**
   * TDH.MEM.SEPT.ADD (leaf 3): links a new S-EPT page under the entry at `level` covering `gfn`,
   * which becomes NL_MAPPED. `level` is the level of that entry (1..rootLevel), as
   * tdx_sept_link_private_spt passes it. Errors: EPT_WALK_FAILED (a higher level is missing),
   * GPA_RANGE_BLOCKED (a higher level is blocked), EPT_ENTRY_NOT_FREE (already linked or a leaf;
   * the module's lookup table also lists NL_MAPPED as a state the leaf may see, but a second ADD
   * would leak the first page, so the model refuses it).
   */
  septAdd(gfn: number, level: number): bigint {
    const leaf = 'TDH.MEM.SEPT.ADD';
    this.enter(leaf, 'tdx.sept_add');
    if (!this.validGfn(gfn, level) || level < 1 || level > this.sept.rootLevel) return this.fail(leaf, S.TDX_OPERAND_INVALID);
    const contended = this.lockAndWalk(leaf, gfn, level);
    if (contended !== undefined) return contended;
    if (this.sept.state(gfn, level) !== SEPT_STATE.FREE) return this.fail(leaf, S.TDX_EPT_ENTRY_NOT_FREE);
    this.sept.set(gfn, level, SEPT_STATE.NL_MAPPED);
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.sept_add', { gfn: this.align(gfn, level), level });
    return S.TDX_SUCCESS;
  }

  /**
   * TDH.MEM.PAGE.ADD (leaf 2): before finalize, copies `src` into `pfn` under the TD's key and
   * maps it MAPPED at 4K `gfn` (the guest may use it without ACCEPT), then extends MRTD with the
   * PAGE.ADD block (contents are measured only by MR.EXTEND). Errors: OP_STATE_INCORRECT after
   * finalize, OPERAND_INVALID for a level other than 4K (PAGE.ADD is 4K-only, A.8), EPT_WALK_FAILED,
   * EPT_ENTRY_NOT_FREE, PAGE_METADATA_INCORRECT when `pfn` is already a TD page (PAMT).
   */
  pageAdd(gfn: number, pfn: number, src: PageSource): bigint {
    const leaf = 'TDH.MEM.PAGE.ADD';
    this.enter(leaf, 'tdx.page_add');
    if (!this.validGfn(gfn, 0) || !this.validPfn(pfn, 0)) return this.fail(leaf, S.TDX_OPERAND_INVALID);
    if (this.finalizedFlag) return this.fail(leaf, S.TDX_OP_STATE_INCORRECT);
    const contended = this.lockAndWalk(leaf, gfn, 0);
    if (contended !== undefined) return contended;
    if (this.sept.state(gfn, 0) !== SEPT_STATE.FREE) return this.fail(leaf, S.TDX_EPT_ENTRY_NOT_FREE);
    if (this.ownerOf(pfn) !== undefined) return this.fail(leaf, S.TDX_PAGE_METADATA_INCORRECT);
    this.copyIn(pfn, src);
    this.sept.set(gfn, 0, SEPT_STATE.MAPPED, pfn);
    this.pamt4k.set(pfn, gfn);
    this.mrtd.pageAdd(gfn * 4096);
    this.pageAdds++;
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.page_add', { gfn, pfn });
    return S.TDX_SUCCESS;
  }

  /**
   * TDH.MEM.PAGE.AUG (leaf 6): after finalize, maps `pfn` at `gfn` as a PENDING leaf of `level`
   * (4K or 2M); the guest must ACCEPT it before use. Errors: OP_STATE_INCORRECT before finalize,
   * OPERAND_INVALID (level, alignment), EPT_WALK_FAILED, EPT_ENTRY_NOT_FREE (including a 2M AUG
   * over a linked page table), PAGE_METADATA_INCORRECT (a page of the range is already the TD's).
   */
  pageAug(gfn: number, level: number, pfn: number): bigint {
    const leaf = 'TDH.MEM.PAGE.AUG';
    this.enter(leaf, 'tdx.page_aug');
    if (level > 1 || !this.validGfn(gfn, level) || !this.validPfn(pfn, level)) return this.fail(leaf, S.TDX_OPERAND_INVALID);
    if (!this.finalizedFlag) return this.fail(leaf, S.TDX_OP_STATE_INCORRECT);
    const contended = this.lockAndWalk(leaf, gfn, level);
    if (contended !== undefined) return contended;
    const state = this.sept.state(gfn, level);
    if (state !== SEPT_STATE.FREE && state !== SEPT_STATE.REMOVED) return this.fail(leaf, S.TDX_EPT_ENTRY_NOT_FREE);
    const n = framesAtLevel(level);
    for (let i = 0; i < n; i++) if (this.ownerOf(pfn + i) !== undefined) return this.fail(leaf, S.TDX_PAGE_METADATA_INCORRECT);
    this.sept.set(gfn, level, SEPT_STATE.PENDING, pfn);
    if (level === 0) this.pamt4k.set(pfn, gfn);
    else this.pamt2m.set(pfn / 512, gfn);
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.page_aug', { gfn, pfn, level });
    return S.TDX_SUCCESS;
  }

  /**
   * TDH.MEM.RANGE.BLOCK (leaf 7): blocks the entry at `level` covering `gfn` (MAPPED → BLOCKED,
   * PENDING → PENDING_BLOCKED, NL_MAPPED → NL_BLOCKED) so no new TLB entry can be created from it,
   * and records the epoch it was blocked in. Blocking a blocked entry is the warning
   * GPA_RANGE_ALREADY_BLOCKED; a FREE entry is EPT_ENTRY_STATE_INCORRECT with operand RCX (what
   * tdx_is_sept_zap_err_due_to_premap looks for).
   */
  rangeBlock(gfn: number, level: number): bigint {
    const leaf = 'TDH.MEM.RANGE.BLOCK';
    this.enter(leaf, 'tdx.range_block');
    if (!this.validGfn(gfn, level) || level > this.sept.rootLevel) return this.fail(leaf, S.TDX_OPERAND_INVALID);
    const contended = this.lockAndWalk(leaf, gfn, level);
    if (contended !== undefined) return contended;
    const state = this.sept.state(gfn, level);
    let next: SeptState;
    if (state === SEPT_STATE.MAPPED) next = SEPT_STATE.BLOCKED;
    else if (state === SEPT_STATE.PENDING) next = SEPT_STATE.PENDING_BLOCKED;
    else if (state === SEPT_STATE.NL_MAPPED) next = SEPT_STATE.NL_BLOCKED;
    else if (isBlocked(state)) return this.fail(leaf, S.TDX_GPA_RANGE_ALREADY_BLOCKED);
    else return this.fail(leaf, STATE_INCORRECT_RCX);
    this.sept.set(gfn, level, next, this.sept.pfn(gfn, level) ?? 0);
    this.blockedMap(level).set(this.index(gfn, level), this.epochValue);
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.range_block', { gfn: this.align(gfn, level), level });
    return S.TDX_SUCCESS;
  }

  /**
   * TDH.MEM.RANGE.UNBLOCK (leaf 39): undoes a BLOCK (BLOCKED → MAPPED, PENDING_BLOCKED → PENDING,
   * NL_BLOCKED → NL_MAPPED). Any other state is EPT_ENTRY_STATE_INCORRECT.
   */
  rangeUnblock(gfn: number, level: number): bigint {
    const leaf = 'TDH.MEM.RANGE.UNBLOCK';
    this.enter(leaf, 'tdx.range_unblock');
    if (!this.validGfn(gfn, level) || level > this.sept.rootLevel) return this.fail(leaf, S.TDX_OPERAND_INVALID);
    const contended = this.lockAndWalk(leaf, gfn, level);
    if (contended !== undefined) return contended;
    const state = this.sept.state(gfn, level);
    let next: SeptState;
    if (state === SEPT_STATE.BLOCKED) next = SEPT_STATE.MAPPED;
    else if (state === SEPT_STATE.PENDING_BLOCKED) next = SEPT_STATE.PENDING;
    else if (state === SEPT_STATE.NL_BLOCKED) next = SEPT_STATE.NL_MAPPED;
    else return this.fail(leaf, STATE_INCORRECT_RCX);
    this.sept.set(gfn, level, next, this.sept.pfn(gfn, level) ?? 0);
    this.blockedMap(level).delete(this.index(gfn, level));
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.range_unblock', { gfn: this.align(gfn, level), level });
    return S.TDX_SUCCESS;
  }

  /**
   * TDH.MEM.TRACK (leaf 38): increments the TD epoch. It succeeds from N to N+1 only if no vCPU
   * still runs in epoch N-1 (tdx_track's comment): once the TD is runnable, a TRACK not followed
   * by {@link TdxModule.kickVcpus} before the next TRACK fails with PREVIOUS_TLB_EPOCH_BUSY.
   */
  track(): bigint {
    const leaf = 'TDH.MEM.TRACK';
    this.enter(leaf, 'tdx.track');
    if (this.takeBusy(leaf)) return this.fail(leaf, S.TDX_OPERAND_BUSY | TDX_OPERAND_ID.TD_EPOCH);
    if (this.finalizedFlag && !this.kicked) return this.fail(leaf, S.TDX_PREVIOUS_TLB_EPOCH_BUSY);
    this.epochValue++;
    this.kicked = !this.finalizedFlag;
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.track', { epoch: this.epochValue });
    return S.TDX_SUCCESS;
  }

  /**
   * Every vCPU has left guest mode (KVM's kvm_make_all_cpus_request(KVM_REQ_OUTSIDE_GUEST_MODE)
   * after TDH.MEM.TRACK): no vCPU runs in an epoch older than the current one any more. Not a
   * SEAMCALL; charged as `tdx.kick_vcpus`.
   */
  kickVcpus(): void {
    this.sim.charge('tdx.kick_vcpus');
    this.kicked = true;
  }

  /**
   * TDH.MEM.PAGE.REMOVE (leaf 29): removes the blocked leaf at `level` covering `gfn` (→ FREE) and
   * returns its page to the host (PAMT entry freed). Requires BLOCK, then TRACK, then every vCPU
   * out of guest mode, once the TD is runnable; before finalize no vCPU has run, so tracking is
   * already complete (KVM's tdx_track returns early then). Errors: GPA_RANGE_NOT_BLOCKED (a live
   * MAPPED/PENDING leaf; the lookup table's listing of them is an open point in A.4, and KVM never
   * relies on it), TLB_TRACKING_NOT_DONE, EPT_ENTRY_STATE_INCORRECT (FREE or a page table).
   */
  pageRemove(gfn: number, level: number): bigint {
    const leaf = 'TDH.MEM.PAGE.REMOVE';
    this.enter(leaf, 'tdx.page_remove');
    if (level > 1 || !this.validGfn(gfn, level)) return this.fail(leaf, S.TDX_OPERAND_INVALID);
    const contended = this.lockAndWalk(leaf, gfn, level);
    if (contended !== undefined) return contended;
    const state = this.sept.state(gfn, level);
    if (state === SEPT_STATE.MAPPED || state === SEPT_STATE.PENDING) return this.fail(leaf, S.TDX_GPA_RANGE_NOT_BLOCKED);
    if (state !== SEPT_STATE.BLOCKED && state !== SEPT_STATE.PENDING_BLOCKED) return this.fail(leaf, STATE_INCORRECT_RCX);
    if (!this.tracked(gfn, level)) return this.fail(leaf, S.TDX_TLB_TRACKING_NOT_DONE);
    const pfn = this.sept.pfn(gfn, level) ?? 0;
    this.sept.set(gfn, level, SEPT_STATE.FREE);
    this.blockedMap(level).delete(this.index(gfn, level));
    if (level === 0) this.pamt4k.delete(pfn);
    else this.pamt2m.delete(pfn / 512);
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.page_remove', { gfn: this.align(gfn, level), pfn, level });
    return S.TDX_SUCCESS;
  }

  /**
   * TDH.MEM.PAGE.DEMOTE (leaf 15): splits the blocked 2M leaf covering `gfn` into a new S-EPT page
   * of 512 4K leaves in the leaf's unblocked state (BLOCKED → 512 MAPPED, PENDING_BLOCKED → 512
   * PENDING); the 2M entry becomes NL_MAPPED. Only `level` 1 (2M → 4K) is modelled. The TDX huge
   * page series (pending, A.8) demotes only after BLOCK → TRACK → kick: an unblocked leaf is
   * GPA_RANGE_NOT_BLOCKED, an untracked one TLB_TRACKING_NOT_DONE.
   */
  pageDemote(gfn: number, level: number): bigint {
    const leaf = 'TDH.MEM.PAGE.DEMOTE';
    this.enter(leaf, 'tdx.page_demote');
    if (level !== 1 || !this.validGfn(gfn, level)) return this.fail(leaf, S.TDX_OPERAND_INVALID);
    const contended = this.lockAndWalk(leaf, gfn, level);
    if (contended !== undefined) return contended;
    const state = this.sept.state(gfn, 1);
    if (state === SEPT_STATE.MAPPED || state === SEPT_STATE.PENDING) return this.fail(leaf, S.TDX_GPA_RANGE_NOT_BLOCKED);
    if (state !== SEPT_STATE.BLOCKED && state !== SEPT_STATE.PENDING_BLOCKED) return this.fail(leaf, STATE_INCORRECT_RCX);
    if (!this.tracked(gfn, 1)) return this.fail(leaf, S.TDX_TLB_TRACKING_NOT_DONE);
    const pfn = this.sept.pfn(gfn, 1) ?? 0;
    const base = this.align(gfn, 1);
    const child = state === SEPT_STATE.BLOCKED ? SEPT_STATE.MAPPED : SEPT_STATE.PENDING;
    this.sept.set(base, 1, SEPT_STATE.NL_MAPPED);
    this.blockedMap(1).delete(this.index(base, 1));
    this.pamt2m.delete(pfn / 512);
    for (let i = 0; i < 512; i++) {
      this.sept.set(base + i, 0, child, pfn + i);
      this.pamt4k.set(pfn + i, base + i);
    }
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.page_demote', { gfn: base, level });
    return S.TDX_SUCCESS;
  }

  /**
   * TDH.MEM.PAGE.PROMOTE (leaf 23): merges the 512 4K leaves under the blocked (NL_BLOCKED) 2M
   * entry covering `gfn` into one 2M leaf. The module requires all 512 present, all MAPPED or all
   * PENDING, on 512 contiguous host pages starting 2M-aligned (EPT_INVALID_PROMOTE_CONDITIONS
   * otherwise), and the page table blocked and tracked. KVM does not promote (A.8); the leaf is
   * here for experiments.
   */
  pagePromote(gfn: number, level: number): bigint {
    const leaf = 'TDH.MEM.PAGE.PROMOTE';
    this.enter(leaf, 'tdx.page_promote');
    if (level !== 1 || !this.validGfn(gfn, level)) return this.fail(leaf, S.TDX_OPERAND_INVALID);
    const contended = this.lockAndWalk(leaf, gfn, level);
    if (contended !== undefined) return contended;
    const state = this.sept.state(gfn, 1);
    if (state === SEPT_STATE.NL_MAPPED) return this.fail(leaf, S.TDX_GPA_RANGE_NOT_BLOCKED);
    if (state !== SEPT_STATE.NL_BLOCKED) return this.fail(leaf, STATE_INCORRECT_RCX);
    if (!this.tracked(gfn, 1)) return this.fail(leaf, S.TDX_TLB_TRACKING_NOT_DONE);
    const base = this.align(gfn, 1);
    const first = this.sept.state(base, 0);
    const pfn0 = this.sept.pfn(base, 0);
    if ((first !== SEPT_STATE.MAPPED && first !== SEPT_STATE.PENDING) || pfn0 === undefined || pfn0 % 512 !== 0) {
      return this.fail(leaf, S.TDX_EPT_INVALID_PROMOTE_CONDITIONS);
    }
    for (let i = 1; i < 512; i++) {
      if (this.sept.state(base + i, 0) !== first || this.sept.pfn(base + i, 0) !== pfn0 + i) {
        return this.fail(leaf, S.TDX_EPT_INVALID_PROMOTE_CONDITIONS);
      }
    }
    for (let i = 0; i < 512; i++) {
      this.sept.set(base + i, 0, SEPT_STATE.FREE);
      this.pamt4k.delete(pfn0 + i);
    }
    this.sept.set(base, 1, first, pfn0);
    this.blockedMap(1).delete(this.index(base, 1));
    this.pamt2m.set(pfn0 / 512, base);
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.page_promote', { gfn: base, level });
    return S.TDX_SUCCESS;
  }

  /**
   * TDH.MR.EXTEND (leaf 16): measures the 256 bytes at `gpa` (bytes, 256-aligned) into MRTD. The
   * page must be MAPPED at 4K (A.2) and the TD not finalized (OP_STATE_INCORRECT).
   */
  mrExtend(gpa: number): bigint {
    const leaf = 'TDH.MR.EXTEND';
    this.enter(leaf, 'tdx.mr_extend');
    const gfn = Math.floor(gpa / 4096);
    if (!Number.isSafeInteger(gpa) || gpa % TDX_EXTENDMR_CHUNKSIZE !== 0 || !this.validGfn(gfn, 0)) {
      return this.fail(leaf, S.TDX_OPERAND_INVALID);
    }
    if (this.finalizedFlag) return this.fail(leaf, S.TDX_OP_STATE_INCORRECT);
    const contended = this.lockAndWalk(leaf, gfn, 0);
    if (contended !== undefined) return contended;
    if (this.sept.state(gfn, 0) !== SEPT_STATE.MAPPED) return this.fail(leaf, STATE_INCORRECT_RCX);
    const pfn = this.sept.pfn(gfn, 0) ?? 0;
    this.mrtd.mrExtend(gpa, this.host.readBytes(pfnBrand(pfn), gpa % 4096, TDX_EXTENDMR_CHUNKSIZE));
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.mr_extend', { gpa });
    return S.TDX_SUCCESS;
  }

  /**
   * TDH.MR.FINALIZE (leaf 17): closes MRTD; the TD becomes runnable. A second call is
   * OP_STATE_INCORRECT. Returns the status and, on success, the 48-byte digest.
   */
  mrFinalize(): { readonly status: bigint; readonly digest?: Uint8Array } {
    const leaf = 'TDH.MR.FINALIZE';
    this.enter(leaf, 'tdx.mr_finalize');
    if (this.finalizedFlag) return { status: this.fail(leaf, S.TDX_OP_STATE_INCORRECT) };
    if (this.takeBusy(leaf)) return { status: this.fail(leaf, S.TDX_OPERAND_BUSY) };
    const digest = this.mrtd.finalize();
    this.finalizedFlag = true;
    this.kicked = true;
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.mr_finalize', { records: this.mrtd.records });
    return { status: S.TDX_SUCCESS, digest };
  }

  /**
   * TDH.PHYMEM.PAGE.RECLAIM of the TD's S-EPT pages at teardown, after KVM has removed every private
   * page and released the HKID (tdx_mmu_release_hkid; its TDH.PHYMEM.CACHE.WB and
   * TDH.MNG.KEY.FREEID are not modelled): KVM frees each mirror page table with
   * tdx_sept_free_private_spt, which reclaims the S-EPT page behind it (arch/x86/kvm/vmx/tdx.c).
   * Each non-leaf entry is one S-EPT page. A page that still holds entries cannot be reclaimed (the
   * module still uses it): reclaiming runs bottom-up and leaves the path to any leaf still mapped,
   * which KVM then leaks ("intentionally leak the page", tdx_sept_free_private_spt). The root
   * table belongs to the TD's control structures (TDR/TDCS), which the model does not hold as pages.
   * Returns the number of S-EPT pages reclaimed; each is charged `tdx.page_reclaim`.
   */
  reclaimSeptPages(): number {
    const leaf = 'TDH.PHYMEM.PAGE.RECLAIM';
    let reclaimed = 0;
    for (let level = 1; level <= this.sept.rootLevel; level++) {
      const gone: number[] = [];
      for (const e of this.sept.entries(level as SeptLevel)) {
        if (isLeaf(e.state) || this.sept.hasChildren(e.gfn, level)) continue;
        gone.push(e.gfn);
      }
      for (const gfn of gone) {
        this.enter(leaf, 'tdx.page_reclaim');
        this.sept.set(gfn, level, SEPT_STATE.FREE);
        this.blockedMap(level).delete(this.index(gfn, level));
        reclaimed++;
      }
    }
    return reclaimed;
  }

  // ---- TDCALL -----------------------------------------------------------------------------------

  /**
   * TDG.MEM.PAGE.ACCEPT (TDCALL leaf 6) for the private `gfn` at `level` (0 = 4K, 1 = 2M), as
   * tdg_mem_page_accept.c decides (A.5): a PENDING leaf at the level is zeroed and becomes MAPPED
   * (SUCCESS); a guest-accessible leaf at or above the level is PAGE_ALREADY_ACCEPTED; a page table
   * where a 2M leaf was asked for is PAGE_SIZE_MISMATCH; a missing table, a FREE or blocked entry,
   * or a larger PENDING leaf is an EPT violation to KVM. Level 1G and beyond, misalignment or a gfn
   * outside the private range are OPERAND_INVALID. The 2M accept's interruptibility is not
   * modelled: it completes in one call.
   */
  accept(gfn: number, level: number): AcceptOutcome {
    const leaf = 'TDG.MEM.PAGE.ACCEPT';
    this.calls[leaf]++;
    this.sim.charge('tdx.accept');
    if (level > 1 || !this.validGfn(gfn, level)) return this.acceptStatus(gfn, level, this.fail(leaf, S.TDX_OPERAND_INVALID));
    if (this.takeBusy(leaf)) return this.acceptStatus(gfn, level, this.fail(leaf, BUSY_SEPT));
    // Walk from the root; a leaf above the requested level ends the walk.
    for (let l = this.sept.rootLevel; l > level; l--) {
      const s = this.sept.state(gfn, l);
      if (s === SEPT_STATE.NL_MAPPED) continue;
      if (s === SEPT_STATE.MAPPED) return this.acceptStatus(gfn, level, S.TDX_PAGE_ALREADY_ACCEPTED);
      return this.acceptViolation(gfn, level);
    }
    const state = this.sept.state(gfn, level);
    if (state === SEPT_STATE.MAPPED) return this.acceptStatus(gfn, level, S.TDX_PAGE_ALREADY_ACCEPTED);
    if (isLeaf(state) || state === SEPT_STATE.FREE || state === SEPT_STATE.NL_BLOCKED) {
      if (state !== SEPT_STATE.PENDING) return this.acceptViolation(gfn, level);
      const pfn = this.sept.pfn(gfn, level) ?? 0;
      const n = framesAtLevel(level);
      this.host.zero(pfnBrand(pfn), n);
      this.sim.charge('tdx.page_zero', n);
      this.sept.set(gfn, level, SEPT_STATE.MAPPED, pfn);
      return this.acceptStatus(gfn, level, S.TDX_SUCCESS);
    }
    // NL_MAPPED at the requested level: the page is mapped smaller than asked.
    return this.acceptStatus(gfn, level, S.TDX_PAGE_SIZE_MISMATCH);
  }

  /**
   * Checks the module's own state (S-EPT structure, PAMT ⇔ leaves, blocked epochs, nothing added
   * after finalize). `addsAtFinalize` is the PAGE.ADD count when finalize ran, if it did.
   *
   * @throws {@link ModelInvariantError}
   */
  checkInvariants(addsAtFinalize: number | undefined): void {
    this.sept.checkInvariants();
    let pages = 0;
    for (const level of [0, 1] as const) {
      for (const e of this.sept.entries(level)) {
        if (!isLeaf(e.state)) continue;
        const n = framesAtLevel(level);
        pages += n;
        const pfn = e.pfn ?? 0;
        if (this.ownerOf(pfn) !== e.gfn || this.ownerOf(pfn + n - 1) !== e.gfn + n - 1) {
          throw new ModelInvariantError('tdx-pamt', `leaf at gfn 0x${e.gfn.toString(16)} maps pfn 0x${pfn.toString(16)} but the PAMT does not give it to that gfn`);
        }
        if (isBlocked(e.state) !== this.blockedMap(level).has(this.index(e.gfn, level))) {
          throw new ModelInvariantError('tdx-blocked-epoch', `leaf at gfn 0x${e.gfn.toString(16)}: blocked state and recorded block epoch disagree`);
        }
      }
    }
    if (pages !== this.pamt4k.size + 512 * this.pamt2m.size) {
      throw new ModelInvariantError('tdx-pamt', `${pages} private pages in S-EPT leaves but ${this.pamt4k.size + 512 * this.pamt2m.size} in the PAMT`);
    }
    for (let level = 0; level <= this.sept.rootLevel; level++) {
      for (const index of this.blockedMap(level).keys()) {
        if (!isBlocked(this.sept.state(index * framesAtLevel(level), level))) {
          throw new ModelInvariantError('tdx-blocked-epoch', `a block epoch is recorded for an unblocked entry (level ${level}, index ${index})`);
        }
      }
    }
    if (addsAtFinalize !== undefined && this.pageAdds !== addsAtFinalize) {
      throw new ModelInvariantError('tdx-add-after-finalize', `${this.pageAdds - addsAtFinalize} PAGE.ADDs after MR.FINALIZE`);
    }
    if (this.finalizedFlag !== this.mrtd.isFinalized) {
      throw new ModelInvariantError('tdx-finalize', 'the TD finalize state and MRTD disagree');
    }
  }

  // ---- helpers ----------------------------------------------------------------------------------

  private enter(leaf: TdxLeaf, cost: Parameters<Sim['charge']>[0]): void {
    this.calls[leaf]++;
    this.sim.charge(cost);
  }

  private fail(leaf: TdxLeaf, status: bigint): bigint {
    this.errors[leaf]++;
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.seamcall_error', { leaf, status: tdxStatusName(status) });
    return status;
  }

  private takeBusy(leaf: TdxLeaf): boolean {
    const n = this.busy.get(leaf);
    if (n === undefined) return false;
    if (n <= 1) this.busy.delete(leaf);
    else this.busy.set(leaf, n - 1);
    return true;
  }

  private acceptStatus(gfn: number, level: number, status: bigint): AcceptOutcome {
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.accept', { gfn, level, result: tdxStatusName(status) });
    return { kind: 'status', status };
  }

  private acceptViolation(gfn: number, level: number): AcceptOutcome {
    if (this.sim.trace.enabled) this.sim.trace.emit('tdx.accept', { gfn, level, result: 'ept-violation' });
    return { kind: 'ept-violation', level: level as SeptLevel };
  }

  /** The walk's error for reaching `level` at `gfn`, or `undefined` when the entry is reachable. */
  /**
   * The S-EPT leaves' common start, in the module's order: the S-EPT lock (an injected
   * TDX_OPERAND_BUSY), then the walk down to `level`. Returns the failure status, already
   * counted, or `undefined` to go on.
   */
  private lockAndWalk(leaf: TdxLeaf, gfn: number, level: number): bigint | undefined {
    if (this.takeBusy(leaf)) return this.fail(leaf, BUSY_SEPT);
    const walk = this.walkError(gfn, level);
    return walk === undefined ? undefined : this.fail(leaf, walk);
  }

  private walkError(gfn: number, level: number): bigint | undefined {
    const stop = this.sept.walkStop(gfn, level);
    if (stop < 0) return undefined;
    return this.sept.state(gfn, stop) === SEPT_STATE.NL_BLOCKED ? S.TDX_GPA_RANGE_BLOCKED : S.TDX_EPT_WALK_FAILED;
  }

  /** Whether TLB tracking for the blocked entry is complete (TRACK after the block, vCPUs kicked). */
  private tracked(gfn: number, level: number): boolean {
    if (!this.finalizedFlag) return true;
    const at = this.blockedMap(level).get(this.index(gfn, level));
    return at !== undefined && this.epochValue > at && this.kicked;
  }

  private validGfn(gfn: number, level: number): boolean {
    return Number.isSafeInteger(gfn) && gfn >= 0 && gfn < this.privateGfnLimit && level >= 0 && Number.isInteger(level) && gfn % framesAtLevel(level) === 0;
  }

  private validPfn(pfn: number, level: number): boolean {
    const n = framesAtLevel(level);
    return Number.isSafeInteger(pfn) && pfn >= 0 && pfn % n === 0 && pfn + n <= this.host.nrFrames;
  }

  private blockedMap(level: number): Map<number, number> {
    const m = this.blockedAt[level];
    if (!m) throw new ModelInvariantError('sept-level', `S-EPT level ${level} outside 0..${this.sept.rootLevel}`);
    return m;
  }

  private index(gfn: number, level: number): number {
    return Math.floor(gfn / framesAtLevel(level));
  }

  private align(gfn: number, level: number): number {
    return this.index(gfn, level) * framesAtLevel(level);
  }

  /** PAGE.ADD's copy of the source page into the TD page (encrypted with the TD's key). */
  private copyIn(pfn: number, src: PageSource): void {
    const p = pfnBrand(pfn);
    if (src.kind === 'zero') this.host.zero(p, 1);
    else if (src.kind === 'tag') this.host.writeTag(p, src.tag);
    else {
      this.host.zero(p, 1);
      this.host.writeBytes(p, 0, src.bytes.length > 4096 ? src.bytes.subarray(0, 4096) : src.bytes);
    }
  }
}

