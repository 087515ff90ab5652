import { describe, expect, it } from 'vitest';
import { archBusy, archError, archOk, type ArchResult } from '@cocokit/sdk';
import { PageTable, SPTE, encodeLeaf, leafPfn, type PrivateTableHooks, type ZapCount } from './page-table.js';

function pages() {
  let next = 1_000_000;
  const live = new Set<number>();
  return {
    live,
    alloc: () => {
      live.add(next);
      return next++;
    },
    free: (p: number) => {
      if (!live.delete(p)) throw new Error(`double free ${p}`);
    },
  };
}
const zc = (): ZapCount => ({ byLevel: [0, 0, 0], tablesFreed: 0 });
const W = SPTE.PRESENT | SPTE.WRITABLE;

describe('PageTable', () => {
  it('maps 4K, 2M and 1G leaves lazily, one host page per table', () => {
    const src = pages();
    const pt = new PageTable(src);
    expect(pt.tablePages).toBe(1);
    expect(pt.map(0x12345, 0, encodeLeaf(777, W))).toBeUndefined();
    expect(pt.tablePages).toBe(4); // root + PDPT + PD + PT
    expect(pt.lookup(0x12345)).toEqual({ gfn: 0x12345, level: 0, pfn: 777, flags: W });
    pt.map(0x40000 + 3, 1, encodeLeaf(0x200000, W)); // 2M leaf; aligned down to its block
    expect(pt.lookup(0x40000 + 7)).toMatchObject({ gfn: 0x40000, level: 1, pfn: 0x200007 });
    pt.map(2 ** 18 * 5, 2, encodeLeaf(2 ** 18 * 9, W));
    expect(pt.lookup(2 ** 18 * 5 + 1000)).toMatchObject({ level: 2, pfn: 2 ** 18 * 9 + 1000 });
    expect(pt.leafCount).toEqual([1, 1, 1]);
    expect(src.live.size).toBe(pt.tablePages);
    expect(pt.checkStructure()).toBeUndefined();
  });

  it('a leaf zap keeps the tables (tdp_mmu_zap_leafs); a table freed by zapTables is not found again', () => {
    const src = pages();
    const pt = new PageTable(src);
    pt.map(5, 0, encodeLeaf(50, W));
    pt.map(6, 0, encodeLeaf(60, W));
    const z = zc();
    pt.zap(0, 512, 'both', z); // the leaf table empties but stays, as do the tables above it
    expect([z.byLevel[0], z.tablesFreed, pt.tablePages]).toEqual([2, 0, 4]);
    expect(pt.leafLevel(5)).toBe(-1);
    expect(pt.hasTableBelow(5, 1)).toBe(true);
    pt.map(7, 0, encodeLeaf(70, W)); // under the kept table: nothing is allocated
    expect([pt.tablePages, src.live.size]).toEqual([4, 4]);
    expect(pt.checkStructure()).toBeUndefined();
    pt.zapTables(0, 512 ** 3, z); // tdp_mmu_zap_root: the 1G table and everything under it go
    expect([z.byLevel[0], z.tablesFreed, pt.tablePages]).toEqual([3, 3, 1]);
    expect(pt.leafLevel(7)).toBe(-1); // the freed leaf table is not found through the last-table cache
    pt.map(7, 0, encodeLeaf(70, W));
    expect(pt.lookup(7)).toMatchObject({ level: 0, pfn: 70 });
    expect(pt.lookup(6)).toBeUndefined();
    // A 2M leaf over the same range replaces the table; 4K lookups there find the huge leaf.
    pt.map(0, 1, encodeLeaf(1024, W), zc());
    expect(pt.lookup(7)).toMatchObject({ level: 1, pfn: 1031 });
    expect(src.live.size).toBe(pt.tablePages);
    expect(pt.checkStructure()).toBeUndefined();
  });

  it('zaps partial and whole ranges, a huge leaf partly inside goes whole, tables stay until zapTables', () => {
    const src = pages();
    const pt = new PageTable(src);
    for (let g = 0; g < 1024; g++) pt.map(g, 0, encodeLeaf(5000 + g, W));
    pt.map(1024, 1, encodeLeaf(1 << 20, W));
    const z = zc();
    pt.zap(100, 200, 'both', z);
    expect(z.byLevel).toEqual([100, 0, 0]);
    pt.zap(1030, 1031, 'both', z);
    expect(z.byLevel).toEqual([100, 1, 0]);
    pt.zap(0, 2 ** 30, 'both', z);
    expect(z.byLevel[0]).toBe(1024);
    expect(pt.leaves).toBe(0);
    expect(pt.tablePages).toBe(5); // root, 512G and 1G tables, both leaf tables
    expect(pt.checkStructure()).toBeUndefined();
    // Only tables wholly inside the range go: the leaf table at [512, 1024) and nothing else.
    pt.zapTables(512, 2048, z);
    expect([pt.tablePages, z.tablesFreed]).toEqual([4, 1]);
    expect(pt.hasTableBelow(0, 1)).toBe(true);
    pt.zapTables(0, 2 ** 30, z);
    expect(pt.tablePages).toBe(1);
    expect(src.live.size).toBe(1);
    expect(pt.checkStructure()).toBeUndefined();
  });

  it('filters private and shared leaves in a shared root', () => {
    const pt = new PageTable(pages());
    pt.map(1, 0, encodeLeaf(10, W | SPTE.PRIVATE));
    pt.map(2, 0, encodeLeaf(11, W));
    const z = zc();
    pt.zap(0, 10, 'shared', z);
    expect(pt.lookup(1)).toBeDefined();
    expect(pt.lookup(2)).toBeUndefined();
    pt.zap(0, 10, 'private', z);
    expect(pt.leaves).toBe(0);
  });

  it('splits a huge leaf above the target by zapping it, and replaces a table with a huge leaf', () => {
    const pt = new PageTable(pages());
    pt.map(512, 1, encodeLeaf(1024, W));
    const z = zc();
    pt.map(513, 0, encodeLeaf(1025, W), z);
    expect(z.byLevel).toEqual([0, 1, 0]);
    expect(pt.lookup(512)).toBeUndefined();
    expect(pt.lookup(513)?.level).toBe(0);
    pt.map(512, 1, encodeLeaf(1024, W), z);
    expect(z.byLevel).toEqual([1, 1, 0]);
    expect(pt.lookup(700)).toMatchObject({ level: 1, pfn: 1024 + 188 });
    expect(pt.checkStructure()).toBeUndefined();
  });

  it('a mirror root goes through the private-table hooks, which may refuse', () => {
    const calls: string[] = [];
    const answers: ArchResult[] = [];
    const ans = () => answers.shift() ?? archOk();
    const hooks: PrivateTableHooks = {
      link: (g, l) => (calls.push(`link ${g} ${l}`), ans()),
      set: (g, l, p) => (calls.push(`set ${g} ${l} ${p}`), ans()),
      remove: (g, l, p) => (calls.push(`remove ${g} ${l} ${p}`), ans()),
      split: (g, l) => (calls.push(`split ${g} ${l}`), ans()),
    };
    const src = pages();
    const pt = new PageTable(src, hooks);
    answers.push(archOk(), archBusy('sept'));
    expect(pt.map(5, 0, encodeLeaf(50, W))?.status).toBe('busy');
    expect(calls).toEqual(['link 0 3', 'link 0 2']);
    expect(pt.tablePages).toBe(2); // the refused PD page was freed again
    expect(src.live.size).toBe(2);
    expect(pt.map(5, 0, encodeLeaf(50, W))).toBeUndefined();
    expect(calls.slice(2)).toEqual(['link 0 2', 'link 0 1', 'set 5 0 50']);
    answers.push(archBusy('x'), archBusy('x'), archOk());
    const z = zc();
    pt.zap(0, 10, 'both', z);
    expect(calls.filter((c) => c.startsWith('remove'))).toHaveLength(3); // busy is retried
    expect(z.byLevel[0]).toBe(1);
    // The emptied tables stay, as their private twins do: the next map under them links nothing.
    expect([z.tablesFreed, pt.tablePages]).toEqual([0, 4]);
    pt.map(5, 0, encodeLeaf(51, W));
    expect(calls.at(-1)).toBe('set 5 0 51');
    expect(calls.filter((c) => c.startsWith('link'))).toHaveLength(4);
    expect(() => pt.zapTables(0, 512, z)).toThrow(/EINVAL.*mirror root keeps its page tables/);
    expect(pt.lookup(5)).toMatchObject({ pfn: 51 });
    pt.zap(0, 10, 'both', z);
    let bug = '';
    pt.onBug = (r) => (bug = r);
    pt.map(6, 0, encodeLeaf(60, W));
    answers.push(...Array.from({ length: 20 }, () => archError('EIO', 'broken')));
    pt.zap(0, 10, 'both', z);
    expect(bug).toMatch(/removePrivateSpte/);
    expect(pt.leaves).toBe(0);
  });

  it('a mirror root demotes a huge leaf through the split hook', () => {
    const calls: string[] = [];
    const hooks: PrivateTableHooks = {
      link: () => archOk(),
      set: () => archOk(),
      remove: () => archOk(),
      split: (g, l) => (calls.push(`split ${g} ${l}`), archOk()),
    };
    const pt = new PageTable(pages(), hooks);
    pt.map(512, 1, encodeLeaf(4096, W));
    pt.map(513, 0, encodeLeaf(4097, W | SPTE.DIRTY));
    expect(calls).toEqual(['split 512 1']);
    expect(pt.leafCount).toEqual([512, 0, 0]);
    expect(leafPfn(encodeLeaf(4096 + 511, W))).toBe(4607);
    expect(pt.lookup(1023)).toMatchObject({ level: 0, pfn: 4607 });
    expect(pt.checkStructure()).toBeUndefined();
  });
});
