/**
 * One TDP root: a sparse 4-level page table (x86 EPT with 4-level paging, PG_LEVEL_4K..512G) whose
 * leaves map 4K, 2M or 1G. Tables are allocated lazily, one host page each (purpose 'page_table',
 * so they show in host accounting), and kept compact: a table is a `Float64Array` of 512 entries
 * held in one `Map` per level keyed by the table's index (`gfn / frames covered by the table`), so
 * a 4K fault finds its leaf table with one Map lookup and a mapped 4K page costs 8 bytes plus
 * 1/512 of a table's overhead.
 *
 * An entry is 0 (not present), {@link TABLE_ENTRY} (points to the table one level down, found in
 * the next level's Map), or a leaf `pfn * 32 + flags` with {@link SPTE} flags. Arithmetic, not
 * bitwise operators: pfns go past 2^31.
 *
 * A mirror root (tdp_mmu.c, `is_mirror_sptep`) mirrors private tables held by a trusted component:
 * every change of one of its entries first goes through the {@link PrivateTableHooks} (the
 * kvm_x86_ops link/set/remove/split_external_spt hooks), which may refuse.
 *
 * Page tables outlive their leaves, as in KVM: a leaf zap ({@link PageTable.zap},
 * tdp_mmu_zap_leafs) leaves every table in place, empty or not; only {@link PageTable.zapTables}
 * (a direct root's tdp_mmu_zap_root / huge-page recovery), replacing a table with a huge leaf
 * (handle_removed_pt) and {@link PageTable.destroy} (the root's teardown) free tables. A mirror
 * root's tables are only ever freed by `destroy`: its private twin (an S-EPT page) cannot be
 * removed while the TD lives (tdx_sept_free_private_spt refuses while the HKID is assigned), so a
 * mirror table freed earlier would be linked again over an entry the trusted component still holds.
 */
import { KvmError, type ArchResult, type MappingLevel, type TableLevel } from '@cocokit/sdk';

/** Flags of a leaf SPTE (the model's subset of the EPT entry bits). */
export const SPTE = {
  /** Always set on a leaf (SPTE_MMU_PRESENT_MASK). */
  PRESENT: 1,
  /** The guest may write through it (EPT W; cleared by write-protection for dirty logging). */
  WRITABLE: 2,
  /** Accessed bit (EPT A). */
  ACCESSED: 4,
  /** Dirty bit (EPT D). */
  DIRTY: 8,
  /** The leaf maps private memory (in a root shared by private and shared mappings, as SNP's). */
  PRIVATE: 16,
} as const;

const FLAG_SPACE = 32;
/** The value of a non-leaf entry: the table one level down exists. */
export const TABLE_ENTRY = -1;
/** Entries per table. */
export const PTES_PER_TABLE = 512;
/** The root's level: its entries each cover 512 GiB (PG_LEVEL_512G - 1 in the model's 0-based levels). */
export const ROOT_LEVEL = 3;
/** One past the largest gfn a 4-level table translates (48-bit guest physical addresses). */
export const GFN_LIMIT = 2 ** 36;

/** Frames one entry of a level-`l` table covers. */
export const ENTRY_SPAN = [1, 512, 512 ** 2, 512 ** 3] as const;
/** Frames a whole level-`l` table covers. */
const TABLE_SPAN = [512, 512 ** 2, 512 ** 3, 512 ** 4] as const;

/** Leaf filters of a zap (KVM_FILTER_PRIVATE / KVM_FILTER_SHARED, or both). */
export type ZapFilter = 'both' | 'private' | 'shared';

/** Encodes a leaf. */
export const encodeLeaf = (pfn: number, flags: number): number => pfn * FLAG_SPACE + flags;
/** The pfn of a leaf value. */
export const leafPfn = (v: number): number => Math.floor(v / FLAG_SPACE);
/** The flags of a leaf value. */
export const leafFlags = (v: number): number => v % FLAG_SPACE;

/** A leaf SPTE as {@link PageTable.leaves} reports it. */
export interface LeafSpte {
  /** First gfn the leaf maps (aligned to its level). */
  readonly gfn: number;
  readonly level: MappingLevel;
  /** The pfn of `gfn`; the leaf maps `[pfn, pfn + 512^level)`. */
  readonly pfn: number;
  /** {@link SPTE} flags. */
  readonly flags: number;
}

/** Where page-table pages come from: the host's allocator, charged as 'page_table'. */
export interface TablePageSource {
  /** Allocates one zeroed page for a table; throws KvmError ENOMEM. */
  alloc(): number;
  free(hostPfn: number): void;
}

/**
 * The private-table hooks a mirror root calls (the sdk's ArchVm link/set/remove/split). `level` of
 * `link` is the level of the entry that becomes a table pointer (1..3), as tdx_sept_link_private_spt
 * receives it.
 */
export interface PrivateTableHooks {
  link(gfn: number, level: TableLevel): ArchResult;
  set(gfn: number, level: MappingLevel, pfn: number): ArchResult;
  remove(gfn: number, level: MappingLevel, pfn: number): ArchResult;
  split(gfn: number, level: MappingLevel): ArchResult;
}

interface Table {
  readonly ptes: Float64Array;
  readonly hostPfn: number;
  /** Non-zero entries. */
  present: number;
}

/** What one zap of a root did. */
export interface ZapCount {
  /** Leaves zapped, by level. */
  readonly byLevel: [number, number, number];
  /** Page-table pages freed. */
  tablesFreed: number;
}

/** Which tables a zap frees: none (a leaf zap), those wholly inside its range, or those too that it leaves empty. */
const FREE_NONE = 0;
const FREE_INSIDE = 1;
const FREE_EMPTIED = 2;
type FreeTables = typeof FREE_NONE | typeof FREE_INSIDE | typeof FREE_EMPTIED;

/** How many times a busy removal is retried before it is treated as an error (tdx_sept_remove_private_spte retries after kicking vCPUs; the model bounds it). */
export const REMOVE_BUSY_RETRIES = 16;

/**
 * One root of the TDP MMU.
 *
 * @example
 * const pt = new PageTable({ alloc: () => host.allocPages(0, 'page_table'), free: (p) => host.freePages(p, 0) });
 * pt.map(0x1234, 0, encodeLeaf(0x5678, SPTE.PRESENT | SPTE.WRITABLE));
 * pt.leafLevel(0x1234); // 0
 */
export class PageTable {
  /** Whether this is a mirror root (private tables in a trusted component). */
  readonly mirror: boolean;
  /** Live leaves by level (4K, 2M, 1G). */
  readonly leafCount: [number, number, number] = [0, 0, 0];
  /** Value of the leaf the last {@link PageTable.leafLevel} found. */
  found = 0;
  /** Called when a mirror removal fails for good (KVM_BUG_ON in handle_removed_pt / remove_external_spte). */
  onBug: (reason: string) => void = () => undefined;

  private readonly levels: Array<Map<number, Table>>;
  /**
   * The level-0 table found last and its key (-1: none): faults and maps walk gfn after gfn, 512
   * of them per leaf table, so most 4K lookups skip the Map. Dropped when that table is freed.
   */
  private lastKey0 = -1;
  private lastTable0: Table | undefined;
  private readonly pages: TablePageSource;
  private readonly hooks: PrivateTableHooks | undefined;
  private readonly root: Table;

  constructor(pages: TablePageSource, hooks?: PrivateTableHooks) {
    this.pages = pages;
    this.hooks = hooks;
    this.mirror = hooks !== undefined;
    this.levels = [new Map(), new Map(), new Map(), new Map()];
    // mmu_alloc_direct_roots / kvm_tdp_mmu_alloc_root: the root page always exists.
    this.root = this.newTable(ROOT_LEVEL, 0);
  }

  /** Page-table pages this root holds, root included. */
  get tablePages(): number {
    return this.levels[0]!.size + this.levels[1]!.size + this.levels[2]!.size + this.levels[3]!.size;
  }

  /** Leaves of any level. */
  get leaves(): number {
    return this.leafCount[0] + this.leafCount[1] + this.leafCount[2];
  }

  /** Frees every table, root included (kvm_tdp_mmu_put_root on VM teardown). Leaves are dropped without hooks. */
  destroy(): void {
    for (const m of this.levels) {
      for (const t of m.values()) this.pages.free(t.hostPfn);
      m.clear();
    }
    this.lastKey0 = -1;
    this.lastTable0 = undefined;
    this.leafCount.fill(0);
  }

  /**
   * The level of the leaf mapping `gfn`, or -1 when none does; the leaf's value is left in
   * {@link PageTable.found}. The 4K case costs one Map lookup, none while `gfn` stays in the leaf
   * table found last.
   */
  leafLevel(gfn: number): number {
    const t0 = this.table0(Math.floor(gfn / 512));
    if (t0 !== undefined) {
      const v = t0.ptes[gfn % 512]!;
      if (v === 0) return -1;
      this.found = v;
      return 0;
    }
    let t = this.root;
    for (let level = ROOT_LEVEL; level > 0; level--) {
      const v = t.ptes[Math.floor(gfn / ENTRY_SPAN[level]!) % 512]!;
      if (v === 0) return -1;
      if (v !== TABLE_ENTRY) {
        this.found = v;
        return level;
      }
      t = this.levels[level - 1]!.get(Math.floor(gfn / TABLE_SPAN[level - 1]!))!;
    }
    // Only reached when a level-0 table exists, which the fast path above handled.
    return -1;
  }

  /** The leaf mapping `gfn`, or `undefined`. */
  lookup(gfn: number): LeafSpte | undefined {
    const level = this.leafLevel(gfn);
    if (level < 0) return undefined;
    const v = this.found;
    const base = gfn - (gfn % ENTRY_SPAN[level]!);
    return { gfn: base, level: level as MappingLevel, pfn: leafPfn(v) + (gfn - base), flags: leafFlags(v) };
  }

  /** Whether a page table exists under the level-`level` entry covering `gfn` (level 1 or 2). */
  hasTableBelow(gfn: number, level: number): boolean {
    return this.levels[level - 1]!.has(Math.floor(gfn / TABLE_SPAN[level - 1]!));
  }

  /**
   * Installs the leaf `value` for the `level`-aligned block holding `gfn` (kvm_tdp_mmu_map): walks
   * down from the root, allocating and linking missing tables (tdp_mmu_link_sp), splitting a huge
   * leaf above `level` (zapped in a direct root as kvm_tdp_mmu_map does; demoted through the split
   * hook in a mirror root), and replacing what is at `level` (a table there is removed with its
   * leaves, handle_removed_pt; a mirror root never gets here, the caller caps the level).
   * Returns `undefined` when done, or the refusing hook's non-ok result (nothing installed at the
   * target; tables linked on the way stay, as in KVM). `zapped` receives leaves it had to remove.
   */
  map(gfn: number, level: MappingLevel, value: number, zapped?: ZapCount): ArchResult | undefined {
    if (!(gfn >= 0 && gfn < GFN_LIMIT)) throw new KvmError('EINVAL', 'kvm_tdp_mmu_map', `gfn ${gfn} is beyond the 4-level table's 48-bit limit`);
    let t: Table;
    if (level === 0) {
      const t0 = this.table0(Math.floor(gfn / 512));
      if (t0 !== undefined) return this.setLeaf(t0, gfn % 512, gfn, 0, value, zapped);
    }
    t = this.root;
    for (let l = ROOT_LEVEL; l > level; l--) {
      const i = Math.floor(gfn / ENTRY_SPAN[l]!) % 512;
      const v = t.ptes[i]!;
      const childKey = Math.floor(gfn / TABLE_SPAN[l - 1]!);
      if (v === TABLE_ENTRY) {
        t = this.levels[l - 1]!.get(childKey)!;
        continue;
      }
      const base = childKey * TABLE_SPAN[l - 1]!;
      if (v !== 0) {
        // A huge leaf above the target level.
        if (this.hooks !== undefined) {
          const r = this.hooks.split(base, l as MappingLevel);
          if (r.status !== 'ok') return r;
          t.ptes[i] = TABLE_ENTRY;
          this.leafCount[l as 1 | 2]--;
          const child = this.newTable(l - 1, childKey);
          const flags = leafFlags(v);
          const pfn0 = leafPfn(v);
          for (let j = 0; j < 512; j++) child.ptes[j] = encodeLeaf(pfn0 + j * ENTRY_SPAN[l - 1]!, flags);
          child.present = 512;
          this.leafCount[(l - 1) as 0 | 1] += 512;
          t = child;
          continue;
        }
        t.ptes[i] = 0;
        t.present--;
        this.leafCount[l as 1 | 2]--;
        if (zapped) zapped.byLevel[l as 1 | 2]++;
      }
      // tdp_mmu_alloc_sp, then tdp_mmu_link_sp: a mirror link that is refused frees the page again.
      const child = this.newTable(l - 1, childKey);
      if (this.hooks !== undefined) {
        const r = this.hooks.link(base, l as TableLevel);
        if (r.status !== 'ok') {
          this.freeTable(l - 1, childKey, child);
          return r;
        }
      }
      t.ptes[i] = TABLE_ENTRY;
      t.present++;
      t = child;
    }
    return this.setLeaf(t, Math.floor(gfn / ENTRY_SPAN[level]) % 512, gfn - (gfn % ENTRY_SPAN[level]), level, value, zapped);
  }

  private setLeaf(t: Table, i: number, base: number, level: MappingLevel, value: number, zapped: ZapCount | undefined): ArchResult | undefined {
    const old = t.ptes[i]!;
    if (old === value) return undefined;
    const hooks = this.hooks;
    if (old === TABLE_ENTRY) {
      if (hooks !== undefined) return { status: 'error', errno: 'EIO', reason: 'a mirror root cannot replace a page table with a huge leaf (no promote hook)' };
      // Replacing a table with a huge leaf: handle_removed_pt frees the subtree (direct roots only).
      const childKey = Math.floor(base / TABLE_SPAN[level - 1]!);
      const z = zapped ?? { byLevel: [0, 0, 0], tablesFreed: 0 };
      this.dropSubtree(level - 1, childKey, z);
      t.ptes[i] = 0;
      t.present--;
    } else if (old !== 0) {
      if (leafPfn(old) === leafPfn(value)) {
        // Same page, new permissions or A/D bits: no hook (the S-EPT holds no A/D or W bits here).
        t.ptes[i] = value;
        return undefined;
      }
      if (hooks !== undefined) {
        const r = this.removeLeaf(base, level, leafPfn(old));
        if (r !== undefined) return r;
      }
      t.ptes[i] = 0;
      t.present--;
      this.leafCount[level]--;
      if (zapped) zapped.byLevel[level]++;
    }
    if (hooks !== undefined) {
      const r = hooks.set(base, level, leafPfn(value));
      if (r.status !== 'ok') return r;
    }
    t.ptes[i] = value;
    t.present++;
    this.leafCount[level]++;
    return undefined;
  }

  /** Removes a mirror leaf through the hook, retrying busy; `undefined` when removed. */
  private removeLeaf(gfn: number, level: MappingLevel, pfn: number): ArchResult | undefined {
    let r = this.hooks!.remove(gfn, level, pfn);
    for (let n = 0; r.status === 'busy' && n < REMOVE_BUSY_RETRIES; n++) r = this.hooks!.remove(gfn, level, pfn);
    return r.status === 'ok' ? undefined : r;
  }

  /**
   * Zaps the leaves intersecting `[start, end)` that match `filter` (tdp_mmu_zap_leafs, which
   * kvm_tdp_mmu_unmap_gfn_range and kvm_tdp_mmu_zap_leafs run on every root; a huge leaf partly
   * inside goes whole). Page tables stay, even when left empty: KVM frees them only with the
   * root, on a huge-page recovery or when a huge leaf replaces them, and a mirror root's twin
   * S-EPT page stays linked in the TDX module until the TD is torn down. In a mirror root each
   * leaf is removed through the hook (busy retried); a removal that still fails calls
   * {@link PageTable.onBug} and the mirror entry is dropped anyway, as KVM_BUG_ON does. `each`,
   * when given, sees every zapped leaf before it goes.
   */
  zap(start: number, end: number, filter: ZapFilter, out: ZapCount, each?: (gfn: number, level: MappingLevel, value: number) => void): void {
    const s = Math.max(0, start);
    const e = Math.min(end, GFN_LIMIT);
    if (s >= e || this.leaves === 0) return;
    this.zapIn(this.root, ROOT_LEVEL, 0, s, e, filter, FREE_NONE, out, each);
  }

  /**
   * Zaps every leaf intersecting `[start, end)` and frees every page table whose whole span lies
   * inside it (the root stays): the zap of non-leaf SPTEs that tdp_mmu_zap_root
   * (kvm_tdp_mmu_zap_all) and kvm_tdp_mmu_zap_sp do, handle_removed_pt freeing what hung below.
   * Tables only partly inside keep their other entries; with `emptied`, those the zap leaves
   * empty go too (the model's stand-in for kvm_mmu_zap_all_fast, which drops whole roots). Direct
   * roots only: a mirror root's tables are freed with the root alone (tdx_sept_free_private_spt
   * refuses while the TD lives), so a mirror root refuses with EINVAL and changes nothing.
   */
  zapTables(start: number, end: number, out: ZapCount, emptied = false): void {
    if (this.hooks !== undefined) {
      throw new KvmError('EINVAL', 'tdp_mmu_zap_root', 'a mirror root keeps its page tables until the root goes (tdx_sept_free_private_spt refuses while the TD lives)');
    }
    const s = Math.max(0, start);
    const e = Math.min(end, GFN_LIMIT);
    if (s >= e || this.tablePages === 1) return;
    this.zapIn(this.root, ROOT_LEVEL, 0, s, e, 'both', emptied ? FREE_EMPTIED : FREE_INSIDE, out, undefined);
  }

  /** Zaps under `t`; `free` (direct roots, filter 'both', no `each`) says which tables go: none, those wholly inside `[start, end)`, or also those left empty. */
  private zapIn(
    t: Table,
    level: number,
    key: number,
    start: number,
    end: number,
    filter: ZapFilter,
    free: FreeTables,
    out: ZapCount,
    each: ((gfn: number, level: MappingLevel, value: number) => void) | undefined,
  ): void {
    const span = ENTRY_SPAN[level]!;
    const base = key * TABLE_SPAN[level]!;
    const i0 = Math.max(0, Math.floor((start - base) / span));
    const i1 = Math.min(512, Math.ceil((end - base) / span));
    const ptes = t.ptes;
    if (level === 0 && i0 === 0 && i1 === 512 && filter === 'both' && each === undefined && this.hooks === undefined) {
      // A whole leaf table of a direct root: clear it in place; the table stays.
      out.byLevel[0] += t.present;
      this.leafCount[0] -= t.present;
      ptes.fill(0);
      t.present = 0;
      return;
    }
    for (let i = i0; i < i1 && t.present > 0; i++) {
      const v = ptes[i]!;
      if (v === 0) continue;
      const g = base + i * span;
      if (v === TABLE_ENTRY) {
        const childKey = key * 512 + i;
        if (free !== FREE_NONE && g >= start && g + span <= end) {
          this.dropSubtree(level - 1, childKey, out);
          ptes[i] = 0;
          t.present--;
          continue;
        }
        const child = this.levels[level - 1]!.get(childKey)!;
        if (child.present > 0) this.zapIn(child, level - 1, childKey, start, end, filter, free, out, each);
        if (free === FREE_EMPTIED && child.present === 0) {
          this.freeTable(level - 1, childKey, child);
          out.tablesFreed++;
          ptes[i] = 0;
          t.present--;
        }
        continue;
      }
      if (filter !== 'both' && ((leafFlags(v) & SPTE.PRIVATE) !== 0) !== (filter === 'private') && !this.mirror) continue;
      const lv = level as MappingLevel;
      each?.(g, lv, v);
      if (this.hooks !== undefined) {
        const r = this.removeLeaf(g, lv, leafPfn(v));
        if (r !== undefined) this.onBug(`removePrivateSpte(gfn 0x${g.toString(16)}, level ${lv}) failed: ${r.status === 'error' ? r.reason : 'busy'}`);
      }
      ptes[i] = 0;
      t.present--;
      this.leafCount[lv]--;
      out.byLevel[lv]++;
    }
  }

  /** Removes the table at (`level`, `key`) and everything under it, counting its leaves (direct roots only: no hooks). */
  private dropSubtree(level: number, key: number, out: ZapCount): void {
    const t = this.levels[level]!.get(key)!;
    if (level === 0) {
      out.byLevel[0] += t.present;
      this.leafCount[0] -= t.present;
    } else {
      const ptes = t.ptes;
      for (let i = 0; i < 512; i++) {
        const v = ptes[i]!;
        if (v === 0) continue;
        if (v === TABLE_ENTRY) this.dropSubtree(level - 1, key * 512 + i, out);
        else {
          out.byLevel[level as 1 | 2]++;
          this.leafCount[level as 1 | 2]--;
        }
      }
    }
    this.freeTable(level, key, t);
    out.tablesFreed++;
  }

  /**
   * Calls `f` for every leaf intersecting `[start, end)`, in gfn order. `f` may change the leaf's
   * flags through the returned value (return `undefined` to keep it); it must keep the pfn.
   */
  forEachLeaf(start: number, end: number, f: (gfn: number, level: MappingLevel, value: number) => number | undefined): void {
    const s = Math.max(0, start);
    const e = Math.min(end, GFN_LIMIT);
    if (s >= e || this.leaves === 0) return;
    this.walk(this.root, ROOT_LEVEL, 0, s, e, f);
  }

  private walk(t: Table, level: number, key: number, start: number, end: number, f: (gfn: number, level: MappingLevel, value: number) => number | undefined): void {
    const span = ENTRY_SPAN[level]!;
    const base = key * TABLE_SPAN[level]!;
    const i0 = Math.max(0, Math.floor((start - base) / span));
    const i1 = Math.min(512, Math.ceil((end - base) / span));
    const ptes = t.ptes;
    for (let i = i0; i < i1; i++) {
      const v = ptes[i]!;
      if (v === 0) continue;
      if (v === TABLE_ENTRY) {
        const childKey = key * 512 + i;
        this.walk(this.levels[level - 1]!.get(childKey)!, level - 1, childKey, start, end, f);
        continue;
      }
      const nv = f(base + i * span, level as MappingLevel, v);
      if (nv !== undefined) ptes[i] = nv;
    }
  }

  /** Every leaf intersecting `[start, end)` (default all), in gfn order. */
  leafList(start = 0, end = GFN_LIMIT): LeafSpte[] {
    const out: LeafSpte[] = [];
    this.forEachLeaf(start, end, (g, level, v) => {
      out.push({ gfn: g, level, pfn: leafPfn(v), flags: leafFlags(v) });
      return undefined;
    });
    return out;
  }

  /** Checks table bookkeeping: present counts, pointers ⇔ tables, leaf counts. Returns a problem or `undefined`. */
  checkStructure(): string | undefined {
    const counted = [0, 0, 0];
    let reachable = 0;
    const visit = (t: Table, level: number, key: number): string | undefined => {
      reachable++;
      let present = 0;
      for (let i = 0; i < 512; i++) {
        const v = t.ptes[i]!;
        if (v === 0) continue;
        present++;
        if (v === TABLE_ENTRY) {
          if (level === 0) return `level-0 table ${key} holds a table pointer`;
          const child = this.levels[level - 1]!.get(key * 512 + i);
          if (child === undefined) return `level-${level} table ${key} entry ${i} points to a missing table`;
          const p = visit(child, level - 1, key * 512 + i);
          if (p !== undefined) return p;
        } else {
          if (level > 2) return `root entry ${i} is a leaf`;
          if ((leafFlags(v) & SPTE.PRESENT) === 0) return `leaf without PRESENT at level ${level}`;
          counted[level]!++;
        }
      }
      if (present !== t.present) return `level-${level} table ${key} counts ${t.present} entries, holds ${present}`;
      return undefined;
    };
    const p = visit(this.root, ROOT_LEVEL, 0);
    if (p !== undefined) return p;
    if (reachable !== this.tablePages) return `${this.tablePages} tables allocated, ${reachable} reachable`;
    for (let l = 0; l < 3; l++) if (counted[l] !== this.leafCount[l]) return `level-${l} leaf count ${this.leafCount[l]}, found ${counted[l]}`;
    return undefined;
  }

  /** The level-0 table with `key`, through the last-table cache. */
  private table0(key: number): Table | undefined {
    if (key === this.lastKey0) return this.lastTable0;
    const t = this.levels[0]!.get(key);
    if (t !== undefined) {
      this.lastKey0 = key;
      this.lastTable0 = t;
    }
    return t;
  }

  private newTable(level: number, key: number): Table {
    const t: Table = { ptes: new Float64Array(PTES_PER_TABLE), hostPfn: this.pages.alloc(), present: 0 };
    this.levels[level]!.set(key, t);
    return t;
  }

  private freeTable(level: number, key: number, t: Table): void {
    if (t === this.lastTable0) {
      this.lastKey0 = -1;
      this.lastTable0 = undefined;
    }
    this.levels[level]!.delete(key);
    this.pages.free(t.hostPfn);
  }
}
