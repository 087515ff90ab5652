/**
 * TDX module hot paths: PAGE.AUG + ACCEPT per 4 KiB page, the BLOCK/TRACK/kick/REMOVE removal
 * sequence (module level and through the removePrivateSpte hook, which adds WBINVD and clearing),
 * MR.EXTEND per measured page (16 × 256-byte SHA-384 updates), and the heap one mapped page costs.
 *
 *   cd packages/arch-tdx && pnpm bench
 *   COCOKIT_BENCH_QUICK=1 pnpm bench
 */
import { heapUsed, runSuite } from '@cocokit/bench';
import { createHost } from '@cocokit/host';
import { createSim, gfn, pfn, type ArchVmContext } from '@cocokit/sdk';
import tdx, { SEPT_STATE, TdxModule, createTdxVm } from '../src/index.js';

const BATCH = 1024;
const G = 2 ** 18; // 1 GiB-aligned gfn
const sim = createSim({ seed: 1 });
sim.costs.register(tdx.name, tdx.costs);
const host = createHost({ bytes: 2 ** 33 });
for (let i = 0; i < 8; i++) host.allocPages(18, 'guest_memfd'); // 8 GiB of guest pages: pfns 0..2^21

function link(m: TdxModule, first: number, pages: number): void {
  for (let g = first; g < first + pages; g += 512) {
    for (let l = m.sept.rootLevel; l >= 1; l--) {
      const at = Math.floor(g / 512 ** l) * 512 ** l;
      if (m.sept.state(at, l) === SEPT_STATE.FREE) m.septAdd(at, l);
    }
  }
}

function module(finalized: boolean, augmented = 0): TdxModule {
  const m = new TdxModule({ sim, host });
  link(m, G, Math.max(augmented, BATCH));
  if (finalized) m.mrFinalize();
  for (let i = 0; i < augmented; i++) m.pageAug(G + i, 0, i);
  return m;
}

await runSuite('@cocokit/arch-tdx', 'sept', (s) => {
  let m = module(true);
  s.add(
    'PAGE.AUG + TDG.MEM.PAGE.ACCEPT (per 4 KiB page)',
    () => {
      for (let i = 0; i < BATCH; i++) {
        m.pageAug(G + i, 0, i);
        m.accept(G + i, 0);
      }
    },
    { opsPerCall: BATCH, beforeEach: () => void (m = module(true)) },
  );

  let r = module(true, BATCH);
  s.add(
    'RANGE.BLOCK + TRACK + kick + PAGE.REMOVE (per 4 KiB page)',
    () => {
      for (let i = 0; i < BATCH; i++) {
        r.rangeBlock(G + i, 0);
        r.track();
        r.kickVcpus();
        r.pageRemove(G + i, 0);
      }
    },
    { opsPerCall: BATCH, beforeEach: () => void (r = module(true, BATCH)) },
  );

  const ctx = (): ArchVmContext => ({
    sim,
    host,
    vmType: 'tdx',
    options: {},
    exit: (e) => {
      throw new Error(e.reason);
    },
    vcpu: undefined,
    enabledCap: () => undefined,
    markBugged: () => undefined,
    translate: () => undefined,
  });
  let vm = createTdxVm(ctx());
  const fresh = () => {
    vm = createTdxVm(ctx());
    vm.finalize();
    link(vm.vmApi.module, G, BATCH);
    for (let i = 0; i < BATCH; i++) vm.setPrivateSpte(gfn(G + i), 0, pfn(i));
  };
  s.add(
    'removePrivateSpte hook: BLOCK/TRACK/kick/REMOVE/WBINVD/clear (per 4 KiB page)',
    () => {
      for (let i = 0; i < BATCH; i++) vm.removePrivateSpte(gfn(G + i), 0, pfn(i));
    },
    { opsPerCall: BATCH, beforeEach: fresh },
  );

  const PAGES = 64;
  let e = module(false);
  const data = new Uint8Array(4096).fill(0x5a);
  s.add(
    'PAGE.ADD + 16 × MR.EXTEND (per measured 4 KiB page)',
    () => {
      for (let i = 0; i < PAGES; i++) {
        e.pageAdd(G + i, i, { kind: 'bytes', bytes: data });
        for (let off = 0; off < 4096; off += 256) e.mrExtend((G + i) * 4096 + off);
      }
    },
    { opsPerCall: PAGES, beforeEach: () => void (e = module(false)) },
  );

  // Heap per mapped page: 2^20 pages (4 GiB) AUGed into one TD.
  const N = 2 ** 20;
  const base = heapUsed();
  const big = module(true, N);
  const used = heapUsed() - base;
  const one = (v: number) => ({ median: v, min: v, max: v, samples: 1 });
  s.record({ name: `heap per mapped 4 KiB page (${N} pages AUGed)`, unit: 'bytes', ...one(used / N) });
  s.record({ name: 'S-EPT entries for 4 GiB mapped (all levels)', unit: 'entries', ...one(big.stats().entries.reduce((a, b) => a + b, 0)) });
  const emptyBase = heapUsed();
  const empty = new TdxModule({ sim, host });
  s.record({ name: 'heap of a new TD module (1 TiB or any size, nothing mapped)', unit: 'bytes', ...one(heapUsed() - emptyBase) });
  void empty.sept;
});
