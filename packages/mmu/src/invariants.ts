/**
 * The MMU's invariants (the model's checks, run after every step of property tests): table
 * bookkeeping; every present leaf maps the pfn that guest_memfd or the host says backs its gfn
 * now; no private pfn in the shared root's shared leaves and nothing shared in the private root;
 * no leaf above the level allowed now; no leaf outside a live memslot.
 */
import { ModelInvariantError, type MappingLevel } from '@cocokit/sdk';
import type { Memslot } from '@cocokit/memslot';
import { allowedLevel } from './max-level.js';
import type { Mmu } from './mmu.js';
import { ENTRY_SPAN, SPTE, leafFlags, leafPfn, type PageTable } from './page-table.js';

const fail = (name: string, detail: string): never => {
  throw new ModelInvariantError(`mmu.${name}`, detail);
};

/** The pfn that backs `gfn` of `slot` now (no fault, no allocation), or `undefined` when none does. */
export function backingPfn(mmu: Mmu, slot: Memslot, gfn: number, isPrivate: boolean): number | undefined {
  if (isPrivate || slot.gmem?.gmemOnly === true) {
    const b = mmu.gmemBinding(slot);
    if (b === undefined) return undefined;
    const index = b.pgoff + (gfn - slot.baseGfn);
    const folio = b.file.folioAt(index);
    return folio === undefined ? undefined : folio.pfn + (index - folio.index);
  }
  return mmu.process?.pfnAt(slot.userspaceAddr + (gfn - slot.baseGfn) * 4096);
}

function checkRoot(mmu: Mmu, pt: PageTable, name: 'shared' | 'private'): void {
  const structure = pt.checkStructure();
  if (structure !== undefined) fail('table-structure', `${name} root: ${structure}`);
  pt.forEachLeaf(0, Number.MAX_SAFE_INTEGER, (g, level: MappingLevel, v) => {
    const span = ENTRY_SPAN[level];
    const slot = mmu.memslots.lookup(g, mmu.asId);
    if (slot === undefined || slot.invalid) fail('leaf-without-slot', `${name} root maps gfn 0x${g.toString(16)} (level ${level}) outside any live memslot`);
    const s = slot!;
    if (g < s.baseGfn || g + span > s.baseGfn + s.npages) fail('leaf-outside-slot', `${name} leaf 0x${g.toString(16)} level ${level} leaves slot ${s.id}`);
    const flagged = (leafFlags(v) & SPTE.PRIVATE) !== 0;
    const step = level === 2 ? 512 : 1;
    for (let i = 0; i < span; i += step) {
      const gi = g + i;
      const isPrivate = mmu.isPrivateGfn(gi, s);
      if (name === 'private' && !isPrivate) fail('shared-in-private-root', `gfn 0x${gi.toString(16)} is shared but mapped in the private root`);
      if (name === 'shared' && mmu.mirror !== undefined && flagged) fail('private-in-shared-root', `gfn 0x${gi.toString(16)} is mapped private in the shared root of a mirror VM`);
      if (name === 'shared' && flagged !== isPrivate) fail('kind-mismatch', `gfn 0x${gi.toString(16)} is mapped ${flagged ? 'private' : 'shared'} but is ${isPrivate ? 'private' : 'shared'}`);
      const want = backingPfn(mmu, s, gi, flagged || name === 'private');
      const have = leafPfn(v) + i;
      if (want !== have) fail('stale-pfn', `${name} root maps gfn 0x${gi.toString(16)} → pfn 0x${have.toString(16)}, backed by ${want === undefined ? 'nothing' : `pfn 0x${want.toString(16)}`}`);
    }
    if (level > 0) {
      const allowed = allowedLevel(mmu, s, g);
      if (level > allowed) fail('level-too-large', `${name} leaf 0x${g.toString(16)} is level ${level}, allowed ${allowed}`);
    }
    return undefined;
  });
}

/** Checks every invariant; throws ModelInvariantError naming the first broken one. */
export function checkMmuInvariants(mmu: Mmu): void {
  checkRoot(mmu, mmu.direct, 'shared');
  if (mmu.mirror !== undefined) checkRoot(mmu, mmu.mirror, 'private');
  const tables = mmu.pageTablePages;
  if (mmu.stats.tablesAllocated - mmu.stats.tablesFreed !== tables) {
    fail('table-accounting', `${mmu.stats.tablesAllocated} tables allocated, ${mmu.stats.tablesFreed} freed, ${tables} held`);
  }
  if (mmu.host.buddy.usedBy('page_table') < tables) fail('host-accounting', `host counts fewer page_table pages than the MMU holds (${tables})`);
}
