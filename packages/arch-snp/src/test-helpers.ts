/**
 * Shared set-up for arch-snp's unit tests (not exported from the package): a stand-in for the
 * core's nested tables, so that PVALIDATE, which asks `ctx.translate(gfn, 'private')` which host
 * page the guest's gfn is mapped to (the nested page table walk of APM Vol. 3 "PVALIDATE"), finds
 * what the core would have mapped.
 */
import { pfn as toPfn, type ArchVmContext, type Gfn, type MappingLevel, type Pfn } from '@cocokit/sdk';
import type { SnpArchVm } from './api.js';

/** The stand-in's private leaves (SNP has one root; these are its private ones), 4K each. */
export interface TestNestedTables {
  /** gfn → pfn of every private leaf. */
  readonly leaves: ReadonlyMap<number, number>;
  /** Maps `[gfn, gfn + npages)` to `[pfn, pfn + npages)` (what the core's fault path installs). */
  map(gfn: number, pfn: number, npages?: number): void;
  /** Zaps `[start, end)`. */
  zap(start: number, end: number): void;
}

/**
 * Gives the VM of `t` nested tables that follow the core's fault path and zaps, as far as the
 * unit tests need:
 *
 * - `ctx.translate(gfn, 'private')` answers from the stand-in's leaves; `'shared'` finds nothing;
 * - `vm.gmemPrepare(pfn, gfn, order)` maps the folio once it is prepared: the core calls it only
 *   from its fault path (kvm_gmem_get_pfn → sev_gmem_prepare), right before it installs the leaf;
 * - `vm.gmemInvalidate(start, end)` first zaps every leaf that points into `[start, end)`:
 *   guest_memfd's kvm_gmem_invalidate_begin zaps the mappings before the pages go back
 *   (sev_gmem_invalidate), and a conversion to shared zaps the private leaves before that.
 *
 * A test that wants a mapping the fault path would not make (a stale one, another VM's page)
 * calls `t.npt.map` itself. Returns `t` with its nested tables as `npt`.
 */
export function withNestedTables<T extends { readonly ctx: ArchVmContext; readonly vm: SnpArchVm }>(t: T): T & { readonly npt: TestNestedTables } {
  const leaves = new Map<number, number>();
  const npt: TestNestedTables = {
    leaves,
    map(gfn, pfn, npages = 1) {
      for (let i = 0; i < npages; i++) leaves.set(gfn + i, pfn + i);
    },
    zap(start, end) {
      for (let g = start; g < end; g++) leaves.delete(g);
    },
  };
  t.ctx.translate = (gfn: Gfn, root): { readonly pfn: Pfn; readonly level: MappingLevel } | undefined => {
    const p = root === 'private' ? leaves.get(gfn) : undefined;
    return p === undefined ? undefined : { pfn: toPfn(p), level: 0 };
  };
  const prepare = t.vm.gmemPrepare.bind(t.vm);
  const invalidate = t.vm.gmemInvalidate.bind(t.vm);
  t.vm.gmemPrepare = (pfn, gfn, order) => {
    prepare(pfn, gfn, order);
    npt.map(gfn, pfn, 2 ** order);
  };
  t.vm.gmemInvalidate = (start, end) => {
    for (const [g, p] of leaves) if (p >= start && p < end) leaves.delete(g);
    invalidate(start, end);
  };
  return Object.assign(t, { npt });
}
