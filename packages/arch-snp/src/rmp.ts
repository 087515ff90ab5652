/**
 * The Reverse Map Table (APM Vol. 2 §15.36.3, Tables 15-34/15-35): one entry per 4K host page
 * saying who owns it. Kept sparse in a {@link RangeMap}: a hypervisor-owned page (the initial,
 * all-zero state) has no stored entry, and neighbouring pages with the same owner, GPA offset and
 * flags share one run, so a 1 TiB host costs nothing until pages are assigned and a contiguous
 * guest costs a few runs.
 *
 * The RMP is a property of the machine, not of a VM: every SNP VM on one host shares it (see
 * {@link rmpForHost}), which is what lets the model catch one guest's page being assigned to
 * another.
 *
 * This module holds the table and the two instructions that write it from the hypervisor side,
 * with the CPU's return codes: RMPUPDATE ({@link Rmp.rmpupdate}; rmp_make_private /
 * rmp_make_shared in arch/x86/virt/svm/sev.c) and PSMASH ({@link Rmp.psmash}; psmash() there).
 * KVM's wrappers and their costs and trace events live with their callers (gmem.ts, launch.ts).
 */
import { KvmError, ModelInvariantError, RangeMap, type HostMemoryView } from '@cocokit/sdk';
import { PAGES_PER_2M, PSMASH, RMPUPDATE, type PsmashRc, type RmpPageSize, type RmpUpdateRc } from './constants.js';

/**
 * A stored RMP entry (architectural fields, APM Table 15-34). The GPA is kept as `gfn - pfn`
 * (`gfnDelta`) so that a contiguous assignment is one run of equal values.
 */
interface StoredEntry {
  /** Guest ASID; 0 for a firmware-owned (AMD-SP) page. */
  readonly asid: number;
  /** Guest frame minus host frame: the entry's GPA is `(pfn + gfnDelta) << 12`. */
  readonly gfnDelta: number;
  readonly size: RmpPageSize;
  readonly validated: boolean;
  readonly immutable: boolean;
  readonly vmsa: boolean;
}

const sameEntry = (a: StoredEntry, b: StoredEntry): boolean =>
  a.asid === b.asid &&
  a.gfnDelta === b.gfnDelta &&
  a.size === b.size &&
  a.validated === b.validated &&
  a.immutable === b.immutable &&
  a.vmsa === b.vmsa;

/**
 * One RMP entry as RMPREAD / `snp_lookup_rmpentry` report it. A hypervisor-owned page reads as
 * `{ assigned: false, asid: 0, gfn: 0, size: '4K', ... }` (the zeroed entry).
 */
export interface RmpEntry {
  readonly pfn: number;
  /** Assigned to a guest or to firmware (not hypervisor-owned). */
  readonly assigned: boolean;
  /** Owning guest's ASID; 0 when hypervisor- or firmware-owned. */
  readonly asid: number;
  /** The guest frame the page is assigned at (the entry's Guest_Physical_Address >> 12). */
  readonly gfn: number;
  /** The authoritative page size: the 2M-aligned entry's Page_Size decides (snp_lookup_rmpentry). */
  readonly size: RmpPageSize;
  /** The guest has PVALIDATEd it (or firmware did, at launch). */
  readonly validated: boolean;
  /** Firmware-owned during launch: RMPUPDATE refuses it until SNP_PAGE_RECLAIM. */
  readonly immutable: boolean;
  /** The page is a vCPU's VM save area. */
  readonly vmsa: boolean;
}

/** What RMPUPDATE writes: the new owner, or `null` to make the pages hypervisor-owned (shared). */
export interface RmpUpdateState {
  /** Guest ASID (> 0), or 0 for firmware-owned (then `immutable` must be set). */
  readonly asid: number;
  /** The guest frame the first page is assigned at; 2M-aligned for a 2M entry. */
  readonly gfn: number;
  readonly immutable: boolean;
  /** Marks the page as a VMSA (KVM sets it only through firmware, at LAUNCH_FINISH). */
  readonly vmsa?: boolean;
}

/** Counts of the table, for benches and statistics. */
export interface RmpStats {
  /** Pages assigned to a guest or firmware. */
  readonly assignedPages: number;
  /** Runs stored: what the table costs in memory. */
  readonly runs: number;
}

const HYPERVISOR_ENTRY = (pfn: number): RmpEntry => ({
  pfn,
  assigned: false,
  asid: 0,
  gfn: 0,
  size: '4K',
  validated: false,
  immutable: false,
  vmsa: false,
});

/**
 * The RMP of one host of `nrFrames` frames (RMP coverage from PA 0 to the end of memory: above it a
 * page is permanently hypervisor-owned, which the model treats as "not covered").
 */
export class Rmp {
  /** Frames the table covers. */
  readonly nrFrames: number;
  private readonly entries = new RangeMap<StoredEntry>({ equals: sameEntry });
  private nextAsid = 1;
  private assigned = 0;

  constructor(nrFrames: number) {
    if (!Number.isSafeInteger(nrFrames) || nrFrames <= 0) {
      throw new KvmError('EINVAL', 'snp_rmptable_init', `nrFrames = ${nrFrames} is not a positive integer`);
    }
    this.nrFrames = nrFrames;
  }

  /**
   * A fresh guest ASID (sev_asid_new). ASIDs are never reused by the model: a reused ASID with
   * stale RMP entries is exactly the bug SNP_DECOMMISSION + reclaim exists to prevent.
   */
  allocAsid(): number {
    return this.nextAsid++;
  }

  /** Whether `pfn` is an integer frame inside RMP coverage (snp_lookup_rmpentry's range check). */
  covers(pfn: number): boolean {
    return Number.isSafeInteger(pfn) && pfn >= 0 && pfn < this.nrFrames;
  }

  /**
   * The entry of `pfn` (snp_lookup_rmpentry / RMPREAD). A pfn outside coverage is refused with
   * `EINVAL`, as __snp_lookup_rmpentry returns -EINVAL for it.
   */
  lookup(pfn: number): RmpEntry {
    if (!this.covers(pfn)) throw new KvmError('EINVAL', 'snp_lookup_rmpentry', `pfn ${pfn} is outside RMP coverage [0, ${this.nrFrames})`);
    const e = this.entries.get(pfn);
    if (e === undefined) return HYPERVISOR_ENTRY(pfn);
    return {
      pfn,
      assigned: true,
      asid: e.asid,
      gfn: pfn + e.gfnDelta,
      size: e.size,
      validated: e.validated,
      immutable: e.immutable,
      vmsa: e.vmsa,
    };
  }

  /** Whether `pfn` is assigned (guest- or firmware-owned). `false` outside coverage. */
  isAssigned(pfn: number): boolean {
    return this.covers(pfn) && this.entries.has(pfn);
  }

  /** Pages of `[start, end)` that are assigned. */
  countAssigned(start: number, end: number): number {
    return this.entries.count(Math.max(0, start), Math.min(end, this.nrFrames));
  }

  /**
   * RMPUPDATE (APM Vol. 3): writes the entry of `pfn` (and, for `size` 2M, the 2M entry covering
   * `[pfn, pfn + 512)`) to `state`, or to hypervisor-owned when `state` is `null`. Always leaves
   * the page(s) not validated: any change of owner, GPA or size clears Validated (APM §15.36.4).
   * Returns the CPU's code; on failure nothing changed.
   *
   * - FAIL_INPUT: `pfn` outside coverage, a 2M update not 2M-aligned (pfn or gfn), a bad state.
   * - FAIL_PERMISSION: a target entry is Immutable (firmware must reclaim it first).
   * - FAIL_INUSE: a target entry is a VMSA (the vCPU may be running on it).
   * - FAIL_OVERLAP: a 4K update of a page covered by an assigned 2M entry, or a 2M update over
   *   assigned 4K entries (Linux PSMASHes first: sev_gmem_invalidate).
   */
  rmpupdate(pfn: number, size: RmpPageSize, state: RmpUpdateState | null): RmpUpdateRc {
    const n = size === '2M' ? PAGES_PER_2M : 1;
    if (!this.covers(pfn) || pfn + n > this.nrFrames) return RMPUPDATE.FAIL_INPUT;
    if (size === '2M' && pfn % PAGES_PER_2M !== 0) return RMPUPDATE.FAIL_INPUT;
    if (state !== null) {
      if (!Number.isSafeInteger(state.gfn) || state.gfn < 0) return RMPUPDATE.FAIL_INPUT;
      if (size === '2M' && state.gfn % PAGES_PER_2M !== 0) return RMPUPDATE.FAIL_INPUT;
      if (!Number.isSafeInteger(state.asid) || state.asid < 0 || (state.asid === 0 && !state.immutable)) return RMPUPDATE.FAIL_INPUT;
    }
    for (const r of this.entries.runs(pfn, pfn + n)) {
      if (r.value.immutable) return RMPUPDATE.FAIL_PERMISSION;
      if (r.value.vmsa) return RMPUPDATE.FAIL_INUSE;
      if (size === '4K' && r.value.size === '2M') return RMPUPDATE.FAIL_OVERLAP;
      if (size === '2M' && r.value.size === '4K') return RMPUPDATE.FAIL_OVERLAP;
    }
    const before = this.entries.count(pfn, pfn + n);
    if (state === null) {
      this.entries.clear(pfn, pfn + n);
      this.assigned -= before;
    } else {
      this.entries.set(pfn, pfn + n, {
        asid: state.asid,
        gfnDelta: state.gfn - pfn,
        size,
        validated: false,
        immutable: state.immutable,
        vmsa: state.vmsa ?? false,
      });
      this.assigned += n - before;
    }
    return RMPUPDATE.SUCCESS;
  }

  /**
   * PSMASH (APM Vol. 3): splits the 2M entry at `pfn` (2M-aligned) into 512 4K entries with
   * consecutive GPAs, copying every other field, Validated included, so the guest's validation
   * survives. There is no inverse for the hypervisor (no "unsmash" instruction).
   *
   * - FAIL_INPUT: `pfn` not 2M-aligned or outside coverage.
   * - FAIL_BADADDR: the 2M region is not covered by an assigned 2M entry.
   * - FAIL_PERMISSION: the entry is Immutable.
   */
  psmash(pfn: number): PsmashRc {
    if (!this.covers(pfn) || pfn % PAGES_PER_2M !== 0 || pfn + PAGES_PER_2M > this.nrFrames) return PSMASH.FAIL_INPUT;
    const e = this.entries.get(pfn);
    if (e === undefined || e.size !== '2M') return PSMASH.FAIL_BADADDR;
    if (e.immutable) return PSMASH.FAIL_PERMISSION;
    this.entries.set(pfn, pfn + PAGES_PER_2M, { ...e, size: '4K' });
    return PSMASH.SUCCESS;
  }

  /**
   * Sets the Validated bit of the entry covering `pfn` (the whole 2M entry for `size` 2M): the RMP
   * write PVALIDATE performs once its checks passed (pvalidate.ts makes them).
   */
  setValidated(pfn: number, size: RmpPageSize, validated: boolean): void {
    const start = size === '2M' ? pfn - (pfn % PAGES_PER_2M) : pfn;
    const n = size === '2M' ? PAGES_PER_2M : 1;
    this.entries.update(start, start + n, (old) => {
      if (old === undefined) throw new ModelInvariantError('snp.rmp.validate-unassigned', `pfn ${pfn} is not assigned`);
      return { ...old, validated };
    });
  }

  /**
   * The firmware's launch transition (SNP_LAUNCH_UPDATE, SEV-SNP ABI §8.17): a Pre-Guest page
   * (assigned, Immutable) becomes Guest-Valid: Validated set, Immutable cleared, VMSA as given.
   */
  firmwareLaunch(pfn: number, vmsa: boolean): void {
    this.entries.update(pfn, pfn + 1, (old) => {
      if (old === undefined || !old.immutable) {
        throw new ModelInvariantError('snp.rmp.launch-not-pre-guest', `pfn ${pfn} is not an immutable, assigned page`);
      }
      return { ...old, validated: true, immutable: false, vmsa };
    });
  }

  /**
   * SNP_PAGE_RECLAIM (SEV-SNP ABI; snp_page_reclaim in arch/x86/kvm/svm/sev.c), then the
   * RMPUPDATE to shared KVM issues after it: a page KVM cannot RMPUPDATE (Immutable, or a VMSA)
   * goes back to the hypervisor through firmware.
   */
  firmwareReclaim(pfn: number): void {
    if (!this.covers(pfn)) throw new KvmError('EINVAL', 'snp_page_reclaim', `pfn ${pfn} is outside RMP coverage`);
    const e = this.entries.get(pfn);
    if (e === undefined) return;
    if (e.size === '2M') {
      const base = pfn - (pfn % PAGES_PER_2M);
      this.entries.clear(base, base + PAGES_PER_2M);
      this.assigned -= PAGES_PER_2M;
    } else {
      this.entries.clear(pfn, pfn + 1);
      this.assigned -= 1;
    }
  }

  /** The assigned entries of `[start, end)` as runs of equal entries (clipped). */
  *assignedRuns(start = 0, end = this.nrFrames): IterableIterator<{ start: number; end: number; entry: RmpEntry }> {
    for (const r of this.entries.runs(start, end)) {
      const e = r.value;
      yield {
        start: r.start,
        end: r.end,
        entry: { pfn: r.start, assigned: true, asid: e.asid, gfn: r.start + e.gfnDelta, size: e.size, validated: e.validated, immutable: e.immutable, vmsa: e.vmsa },
      };
    }
  }

  /** How many pages are assigned and how many runs the table stores. */
  stats(): RmpStats {
    return { assignedPages: this.assigned, runs: this.entries.runCount };
  }

  /**
   * Checks the table: the run structure; 2M entries cover whole, aligned 2M regions at 2M-aligned
   * GPAs; a guest entry has an ASID, a firmware entry (ASID 0) is Immutable; the assigned count
   * adds up. Throws {@link ModelInvariantError}.
   */
  checkInvariants(): void {
    this.entries.checkInvariants();
    let total = 0;
    for (const r of this.entries.runs()) {
      const e = r.value;
      total += r.end - r.start;
      if (r.end > this.nrFrames) throw new ModelInvariantError('snp.rmp.coverage', `run [${r.start}, ${r.end}) beyond ${this.nrFrames} frames`);
      if (e.size === '2M') {
        // A 2M entry is one value for its 512 pages: a run boundary inside a 2M region would give
        // one entry two values.
        if (r.start % PAGES_PER_2M !== 0 || r.end % PAGES_PER_2M !== 0) {
          throw new ModelInvariantError('snp.rmp.2m-aligned', `2M entry run [${r.start}, ${r.end}) is not 2M-aligned`);
        }
        if (e.gfnDelta % PAGES_PER_2M !== 0) {
          throw new ModelInvariantError('snp.rmp.2m-gpa-aligned', `2M entry at pfn ${r.start} has GPA frame ${r.start + e.gfnDelta}, not 2M-aligned`);
        }
      }
      if (e.asid === 0 && !e.immutable) {
        throw new ModelInvariantError('snp.rmp.owner', `pfn ${r.start} is assigned with ASID 0 but not immutable (neither guest nor firmware)`);
      }
    }
    if (total !== this.assigned) {
      throw new ModelInvariantError('snp.rmp.count', `${total} pages assigned in the table, ${this.assigned} counted`);
    }
  }
}

const rmps = new WeakMap<HostMemoryView, Rmp>();

/**
 * The RMP of the host `host` belongs to: one per host, shared by every SNP VM created on it
 * (created on first use, sized to the host's frames).
 */
export function rmpForHost(host: HostMemoryView): Rmp {
  let rmp = rmps.get(host);
  if (rmp === undefined) {
    rmp = new Rmp(host.nrFrames);
    rmps.set(host, rmp);
  }
  return rmp;
}
