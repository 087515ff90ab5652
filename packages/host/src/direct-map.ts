/**
 * The kernel's direct map (the linear mapping of all physical memory), with removal and refcounted
 * temporary restoration as guest_memfd's "unmapping from the direct map" series does it (seed 002:
 * `KVM_GMEM_NO_DIRECT_MAP`; `set_direct_map_invalid_noflush` after allocation, a "sharing
 * refcount" for KVM's own temporary accesses, `set_direct_map_default_noflush` before the folio is
 * freed).
 *
 * Only exceptions are stored: a RangeMap of removed frames and a RangeMap of temporary-restoration
 * counts. Every frame is direct-mapped unless removed and not temporarily restored.
 *
 * Costs: each page whose direct-map entry changes costs `host.direct_map_update`; taking entries
 * away also costs one `host.tlb_shootdown` (flush_tlb_kernel_range: other CPUs may cache the
 * translation). Adding an entry needs no flush (a non-present entry is never cached).
 */
import { ModelInvariantError, PAGE_SIZE, RangeMap, pfn as toPfn } from '@cocokit/sdk';
import type { Pfn } from '@cocokit/sdk';
import type { HostCostName } from './costs.js';

/** What the direct map has done so far (seed 002 counts temporary remaps and exposure time). */
export interface DirectMapStats {
  /** Pages taken out of the direct map (each removal of a mapped page counts once). */
  readonly pagesRemoved: number;
  /** Pages put back (restoreDirectMap). */
  readonly pagesRestored: number;
  /** Temporary restorations requested (tempMap calls). */
  readonly tempMaps: number;
  /** Temporary restorations that really remapped a removed page (the count went 0 → 1). */
  readonly tempRemaps: number;
  /** Bytes of removed memory made visible again by temporary restorations. */
  readonly bytesExposed: number;
  /** Virtual time removed pages spent reachable through a temporary mapping, summed over pages, ns (0 without a Sim): from the PTE write to the end of the unmap's TLB shootdown. */
  readonly exposureNs: number;
  /** TLB shootdowns issued for direct-map changes. */
  readonly shootdowns: number;
  /** Pages currently removed (including temporarily restored ones). */
  readonly removedNow: number;
  /** Pages currently temporarily restored. */
  readonly tempMappedNow: number;
}

/** A temporary restoration of one page (kmap-like); `unmap()` ends it exactly once. */
export interface DirectMapHandle {
  /** The page made accessible. */
  readonly pfn: Pfn;
  /** Drops this restoration; the page leaves the direct map again when the last one ends. */
  unmap(): void;
}

/** Hooks the host gives the direct map: charging the current actor, the clock, tracing. */
export interface DirectMapEnv {
  charge(name: HostCostName, units: number): void;
  now(): number;
  trace?(op: 'remove' | 'restore' | 'temp_map' | 'temp_unmap', start: number, end: number, pages: number): void;
}

/**
 * Which frames the direct map maps.
 *
 * @example
 * dm.remove(p, p + 512);           // guest_memfd folio out of the direct map
 * const h = dm.tempMap(p);         // KVM reads it (MMIO emulation): remapped, counted
 * h.unmap();                       // gone again, one shootdown charged
 */
export class DirectMap {
  private readonly removed = new RangeMap<true>();
  private readonly temp = new RangeMap<number>();
  /** Start of the current exposure of a removed, temporarily restored page. */
  private readonly exposedSince = new Map<number, number>();
  private s = { pagesRemoved: 0, pagesRestored: 0, tempMaps: 0, tempRemaps: 0, bytesExposed: 0, exposureNs: 0, shootdowns: 0 };

  private readonly env: DirectMapEnv;

  /** A direct map that maps every frame; `env` charges costs, reads the clock and traces. */
  constructor(env: DirectMapEnv) {
    this.env = env;
  }

  /** Whether the direct map currently maps `pfn`. O(log n). */
  isMapped(pfn: number): boolean {
    return !this.removed.has(pfn) || this.temp.has(pfn);
  }

  /** Whether `pfn` has been removed (whether or not it is temporarily restored). */
  isRemoved(pfn: number): boolean {
    return this.removed.has(pfn);
  }

  /** Frames of `[start, end)` removed from the direct map (temporarily restored ones included). O(log n + runs). */
  removedCount(start: number, end: number): number {
    return this.removed.count(start, end);
  }

  /** Outstanding temporary restorations of `pfn`. */
  tempCount(pfn: number): number {
    return this.temp.get(pfn) ?? 0;
  }

  /** Whether no frame of `[start, end)` is removed or temporarily restored (the state a free page must be in). */
  isPristine(start: number, end: number): boolean {
    return this.removed.isUniform(start, end, undefined) && this.temp.isUniform(start, end, undefined);
  }

  /**
   * Takes `[start, end)` out of the direct map (set_direct_map_invalid_noflush + one
   * flush_tlb_kernel_range). Pages already removed stay removed and cost nothing. Returns the
   * number of pages newly removed.
   */
  remove(start: number, end: number): number {
    const already = this.removed.count(start, end);
    const changed = end - start - already;
    if (changed === 0) return 0;
    // Pages temporarily restored right now keep their mapping until their last handle goes; from
    // now on they count as exposed.
    const stillVisible: number[] = [];
    for (const r of this.temp.runs(start, end)) {
      for (let p = r.start; p < r.end; p++) if (!this.removed.has(p)) stillVisible.push(p);
    }
    this.removed.set(start, end, true);
    const now = this.env.now();
    for (const p of stillVisible) {
      this.exposedSince.set(p, now);
      this.s.bytesExposed += PAGE_SIZE;
    }
    const unmappedNow = changed - stillVisible.length;
    this.s.pagesRemoved += changed;
    if (unmappedNow > 0) {
      this.env.charge('host.direct_map_update', unmappedNow);
      this.env.charge('host.tlb_shootdown', 1);
      this.s.shootdowns++;
    }
    this.env.trace?.('remove', start, end, changed);
    return changed;
  }

  /**
   * Puts `[start, end)` back into the direct map (set_direct_map_default_noflush). No flush is
   * needed. Returns the number of pages newly restored.
   */
  restore(start: number, end: number): number {
    const removed = this.removed.count(start, end);
    if (removed === 0) return 0;
    // Pages removed but temporarily restored are mapped already: only the others are rewritten.
    let visible = 0;
    for (const r of this.temp.runs(start, end)) visible += this.removed.count(r.start, r.end);
    const now = this.env.now();
    for (const r of this.temp.runs(start, end)) {
      for (let p = r.start; p < r.end; p++) {
        const since = this.exposedSince.get(p);
        if (since !== undefined) {
          this.s.exposureNs += now - since;
          this.exposedSince.delete(p);
        }
      }
    }
    this.removed.clear(start, end);
    this.s.pagesRestored += removed;
    this.env.charge('host.direct_map_update', removed - visible);
    this.env.trace?.('restore', start, end, removed);
    return removed;
  }

  /**
   * Temporarily restores `pfn` to the direct map for a kernel access, refcounted: the first
   * restoration of a removed page remaps it (cost, counted as exposure), later ones only count.
   * A page that is not removed is already mapped; the handle still counts, so removing it in the
   * meantime keeps it visible until the handle is dropped.
   */
  tempMap(pfn: number): DirectMapHandle {
    const before = this.temp.get(pfn) ?? 0;
    this.temp.set(pfn, pfn + 1, before + 1);
    this.s.tempMaps++;
    if (before === 0 && this.removed.has(pfn)) {
      this.s.tempRemaps++;
      this.s.bytesExposed += PAGE_SIZE;
      // Reachable once the PTE is written; reachable until the shootdown of tempUnmap completes
      // (other CPUs may still hold the translation before that), so exposure spans both.
      this.env.charge('host.direct_map_update', 1);
      this.exposedSince.set(pfn, this.env.now());
    }
    this.env.trace?.('temp_map', pfn, pfn + 1, 1);
    let live = true;
    return {
      pfn: toPfn(pfn),
      unmap: () => {
        if (!live) throw new ModelInvariantError('host.direct-map-temp', `temporary mapping of pfn ${pfn} unmapped twice`);
        live = false;
        this.tempUnmap(pfn);
      },
    };
  }

  /** The stats so far. */
  stats(): DirectMapStats {
    return { ...this.s, removedNow: this.removed.count(0, Number.MAX_SAFE_INTEGER), tempMappedNow: this.temp.count(0, Number.MAX_SAFE_INTEGER) };
  }

  /** Runs stored: the model's memory for the direct map. */
  get runCount(): number {
    return this.removed.runCount + this.temp.runCount;
  }

  /** The removed runs (for invariant checks). */
  removedRuns(): IterableIterator<{ start: number; end: number }> {
    return this.removed.runs();
  }

  /** The temporarily restored runs and their counts (for invariant checks). */
  tempRuns(): IterableIterator<{ start: number; end: number; value: number }> {
    return this.temp.runs();
  }

  /** Structure of the maps; counts positive. */
  checkInvariants(): void {
    this.removed.checkInvariants();
    this.temp.checkInvariants();
    for (const r of this.temp.runs()) {
      if (!(r.value > 0)) throw new ModelInvariantError('host.direct-map-temp', `pfns [${r.start}, ${r.end}) have count ${r.value}`);
    }
    for (const p of this.exposedSince.keys()) {
      if (!this.removed.has(p) || !this.temp.has(p)) {
        throw new ModelInvariantError('host.direct-map-temp', `pfn ${p} is counted as exposed but is not removed and temporarily mapped`);
      }
    }
  }

  private tempUnmap(pfn: number): void {
    const before = this.temp.get(pfn) ?? 0;
    if (before <= 0) throw new ModelInvariantError('host.direct-map-temp', `pfn ${pfn} has no temporary mapping`);
    this.temp.set(pfn, pfn + 1, before === 1 ? undefined : before - 1);
    if (before === 1 && this.removed.has(pfn)) {
      this.env.charge('host.direct_map_update', 1);
      this.env.charge('host.tlb_shootdown', 1);
      this.s.shootdowns++;
      const since = this.exposedSince.get(pfn);
      if (since !== undefined) {
        this.s.exposureNs += this.env.now() - since;
        this.exposedSince.delete(pfn);
      }
    }
    this.env.trace?.('temp_unmap', pfn, pfn + 1, 1);
  }
}
