/**
 * The Secure EPT as the TDX module holds it: sparse, one map per level, keyed by the entry's index
 * at that level (`gfn / 512^level`). An entry absent from its map is FREE, so a 1 TiB TD costs
 * nothing until pages are mapped, and memory grows with the entries touched.
 *
 * Levels are the module's S-EPT levels (tdx_arch.h, pg_level_to_tdx_sept_level): 0 = 4K entries,
 * 1 = 2M, 2 = 1G, 3 = 512G, 4 = 256T. The root table (PML4 with GPAW 48, PML5 with GPAW 52) is
 * created by TDH.MNG.INIT and always present: its entries are at level {@link SecureEpt.rootLevel}.
 *
 * This module is pure state: the SEAMCALL rules (which leaf may act on which state) live in
 * module.ts; this one stores entries and checks its own invariants.
 */
import { ModelInvariantError } from '@cocokit/sdk';

/**
 * S-EPT entry states, with the module's numbering (sept_manager.h, arch-specs A.4). Only the
 * states a non-migrating TD reaches are produced; the live-migration states are listed for
 * completeness of the numbering.
 */
export const SEPT_STATE = {
  FREE: 0,
  REMOVED: 1,
  NL_MAPPED: 2,
  NL_BLOCKED: 3,
  MAPPED: 4,
  BLOCKED: 5,
  BLOCKEDW: 6,
  EXPORTED_BLOCKEDW: 7,
  EXPORTED_DIRTY: 8,
  EXPORTED_DIRTY_BLOCKEDW: 9,
  PENDING: 10,
  PENDING_BLOCKED: 11,
  PENDING_BLOCKEDW: 12,
  PENDING_EXPORTED_BLOCKEDW: 13,
  PENDING_EXPORTED_DIRTY: 14,
  PENDING_EXPORTED_DIRTY_BLOCKEDW: 15,
} as const;

/** An S-EPT entry state. */
export type SeptState = (typeof SEPT_STATE)[keyof typeof SEPT_STATE];

const STATE_NAMES = Object.fromEntries(Object.entries(SEPT_STATE).map(([k, v]) => [v, k])) as Record<number, string>;

/** The name of an S-EPT state (`'PENDING_BLOCKED'`). */
export function septStateName(state: number): string {
  return STATE_NAMES[state] ?? `state ${state}`;
}

/** An S-EPT level: 0 = 4K .. 4 = 256T (TDX S-EPT levels, not KVM's PG_LEVEL_*). */
export type SeptLevel = 0 | 1 | 2 | 3 | 4;

/** Whether `state` is a non-leaf (page-table) entry state. */
export const isNonLeaf = (state: number): boolean => state === SEPT_STATE.NL_MAPPED || state === SEPT_STATE.NL_BLOCKED;
/** Whether `state` is a leaf that maps a page (MAPPED, PENDING and their blocked forms). */
export const isLeaf = (state: number): boolean =>
  state === SEPT_STATE.MAPPED ||
  state === SEPT_STATE.BLOCKED ||
  state === SEPT_STATE.PENDING ||
  state === SEPT_STATE.PENDING_BLOCKED;
/** Whether `state` is a blocked leaf or non-leaf (RANGE.BLOCK was done, UNBLOCK/REMOVE not yet). */
export const isBlocked = (state: number): boolean =>
  state === SEPT_STATE.BLOCKED || state === SEPT_STATE.PENDING_BLOCKED || state === SEPT_STATE.NL_BLOCKED;

/** Frames covered by one entry at `level` (512^level). */
export const framesAtLevel = (level: number): number => 512 ** level;

/** One entry, as {@link SecureEpt.entry} reports it. */
export interface SeptEntry {
  readonly level: SeptLevel;
  /** The first gfn the entry covers. */
  readonly gfn: number;
  readonly state: SeptState;
  /** The host frame a leaf maps (its first frame for a 2M leaf); `undefined` for non-leaf and FREE entries. */
  readonly pfn: number | undefined;
}

// An entry is packed in one number: state in the low 4 bits, pfn above (pfn * 16 + state). Host
// frame numbers stay far below 2^49, so the packed value is an exact integer.
const STATE_UNITS = 16;
const pack = (state: number, pfn: number): number => pfn * STATE_UNITS + state;
const stateOf = (packed: number): SeptState => (packed % STATE_UNITS) as SeptState;
const pfnOf = (packed: number): number => Math.floor(packed / STATE_UNITS);

/**
 * The S-EPT of one TD: per-level sparse maps of entries. Operations here never check SEAMCALL
 * rules; they only store what module.ts decided.
 */
export class SecureEpt {
  /** The level of the root table's entries: 3 with GPAW 48 (4-level), 4 with GPAW 52 (5-level). */
  readonly rootLevel: 3 | 4;
  private readonly levels: Array<Map<number, number>>;

  constructor(rootLevel: 3 | 4) {
    this.rootLevel = rootLevel;
    this.levels = Array.from({ length: rootLevel + 1 }, () => new Map<number, number>());
  }

  private map(level: number): Map<number, number> {
    const m = this.levels[level];
    if (!m) throw new ModelInvariantError('sept-level', `S-EPT level ${level} outside 0..${this.rootLevel}`);
    return m;
  }

  /** The state of the entry at `level` covering `gfn` (FREE when never set). */
  state(gfn: number, level: number): SeptState {
    const v = this.map(level).get(Math.floor(gfn / framesAtLevel(level)));
    return v === undefined ? SEPT_STATE.FREE : stateOf(v);
  }

  /** The pfn of the leaf at `level` covering `gfn`, or `undefined`. */
  pfn(gfn: number, level: number): number | undefined {
    const v = this.map(level).get(Math.floor(gfn / framesAtLevel(level)));
    return v === undefined || !isLeaf(stateOf(v)) ? undefined : pfnOf(v);
  }

  /** The entry at `level` covering `gfn`. */
  entry(gfn: number, level: SeptLevel): SeptEntry {
    const span = framesAtLevel(level);
    const index = Math.floor(gfn / span);
    const v = this.map(level).get(index);
    const state = v === undefined ? SEPT_STATE.FREE : stateOf(v);
    return { level, gfn: index * span, state, pfn: v !== undefined && isLeaf(state) ? pfnOf(v) : undefined };
  }

  /** Sets the entry at `level` covering `gfn`; FREE deletes it. */
  set(gfn: number, level: number, state: SeptState, pfn = 0): void {
    const index = Math.floor(gfn / framesAtLevel(level));
    if (state === SEPT_STATE.FREE) this.map(level).delete(index);
    else this.map(level).set(index, pack(state, pfn));
  }

  /**
   * Walks from the root towards `level` for `gfn` (the module's S-EPT walk): returns the level of
   * the first entry above `level` that is not NL_MAPPED (the walk stops there), or `-1` when every
   * entry above `level` is NL_MAPPED and the entry at `level` is reachable.
   */
  walkStop(gfn: number, level: number): number {
    for (let l = this.rootLevel; l > level; l--) {
      if (this.state(gfn, l) !== SEPT_STATE.NL_MAPPED) return l;
    }
    return -1;
  }

  /** The number of present (non-FREE) entries at `level`. */
  count(level: number): number {
    return this.map(level).size;
  }

  /** Every present entry at `level`, in no particular order. */
  *entries(level: SeptLevel): IterableIterator<SeptEntry> {
    const span = framesAtLevel(level);
    for (const [index, v] of this.map(level)) {
      const state = stateOf(v);
      yield { level, gfn: index * span, state, pfn: isLeaf(state) ? pfnOf(v) : undefined };
    }
  }

  /** Whether any entry at `level` lies inside the entry at `level + 1` covering `gfn`. */
  hasChildren(gfn: number, parentLevel: number): boolean {
    if (parentLevel === 0) return false;
    const child = this.map(parentLevel - 1);
    const first = Math.floor(gfn / framesAtLevel(parentLevel)) * 512;
    if (child.size < 512) {
      for (const index of child.keys()) if (index >= first && index < first + 512) return true;
      return false;
    }
    for (let i = first; i < first + 512; i++) if (child.has(i)) return true;
    return false;
  }

  /**
   * Structural invariants: leaves only at levels 0..1, non-leaf entries only above level 0, every
   * present entry below the root has a non-leaf parent, and nothing lies under a leaf.
   *
   * @throws {@link ModelInvariantError}
   */
  checkInvariants(): void {
    for (let level = 0; level <= this.rootLevel; level++) {
      const span = framesAtLevel(level);
      for (const [index, v] of this.map(level)) {
        const state = stateOf(v);
        const gfn = index * span;
        const where = `S-EPT entry at level ${level}, gfn 0x${gfn.toString(16)} (${septStateName(state)})`;
        if (isLeaf(state)) {
          if (level > 1) throw new ModelInvariantError('sept-leaf-level', `${where}: a leaf above 2M`);
          if (pfnOf(v) % span !== 0) throw new ModelInvariantError('sept-leaf-aligned', `${where}: pfn 0x${pfnOf(v).toString(16)} not aligned to the level`);
        } else if (isNonLeaf(state)) {
          if (level === 0) throw new ModelInvariantError('sept-nl-level', `${where}: a non-leaf entry at 4K`);
        } else {
          throw new ModelInvariantError('sept-state', `${where}: a state a non-migrating TD never reaches`);
        }
        if (level < this.rootLevel) {
          const parent = this.state(gfn, level + 1);
          if (!isNonLeaf(parent)) {
            throw new ModelInvariantError('sept-parent-linked', `${where}: its parent at level ${level + 1} is ${septStateName(parent)}, not a linked S-EPT page`);
          }
        }
      }
    }
  }
}
