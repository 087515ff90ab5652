/**
 * The buddy allocator on a 64 GiB host: alloc + free at orders 0, 9 and 18 (fresh and fragmented),
 * and the model's memory for a 64 GiB and a 1 TiB host (it must not follow the host's size).
 *
 *   cd packages/host && pnpm bench buddy
 *   COCOKIT_BENCH_QUICK=1 pnpm bench buddy
 */
import { heapUsed, runSuite } from '@cocokit/bench';
import { createHost } from '@cocokit/host';

const GIB64 = 64 * 2 ** 30;
const BATCH = 1000;

await runSuite('@cocokit/host', 'buddy', (s) => {
  for (const order of [0, 9] as const) {
    const host = createHost({ bytes: GIB64 });
    const pfns: number[] = new Array(BATCH);
    s.add(
      `alloc+free order ${order}, 64 GiB host (per op)`,
      () => {
        for (let i = 0; i < BATCH; i++) pfns[i] = host.allocPages(order, 'guest_memfd');
        for (let i = BATCH - 1; i >= 0; i--) host.freePages(pfns[i]!, order);
      },
      { opsPerCall: 2 * BATCH },
    );
  }
  {
    const host = createHost({ bytes: GIB64 });
    const pfns: number[] = new Array(64);
    s.add(
      'alloc+free order 18, 64 GiB host, all 64 blocks (per op)',
      () => {
        for (let i = 0; i < 64; i++) pfns[i] = host.allocPages(18, 'guest_memfd');
        for (let i = 63; i >= 0; i--) host.freePages(pfns[i]!, 18);
      },
      { opsPerCall: 128 },
    );
  }
  {
    // Fragmented: 2^16 order-0 pages allocated, every other one freed, so each free order-0 block
    // is its own run and allocations split or find scattered holes.
    const host = createHost({ bytes: GIB64 });
    const held: number[] = [];
    for (let i = 0; i < 2 ** 16; i++) held.push(host.allocPages(0, 'anon'));
    for (let i = 0; i < held.length; i += 2) host.freePages(held[i]!, 0);
    const pfns: number[] = new Array(BATCH);
    s.add(
      'alloc+free order 0, fragmented 64 GiB host (32768 holes) (per op)',
      () => {
        for (let i = 0; i < BATCH; i++) pfns[i] = host.allocPages(0, 'anon');
        for (let i = BATCH - 1; i >= 0; i--) host.freePages(pfns[i]!, 0);
      },
      { opsPerCall: 2 * BATCH },
    );
  }

  // Memory: creating hosts costs nothing proportional to their size.
  const keep: unknown[] = [];
  const h0 = heapUsed();
  for (let i = 0; i < 100; i++) keep.push(createHost({ bytes: GIB64 }));
  const h1 = heapUsed();
  for (let i = 0; i < 100; i++) keep.push(createHost({ bytes: 2 ** 40 }));
  const h2 = heapUsed();
  const one = (v: number) => ({ median: v, min: v, max: v, samples: 1 });
  s.record({ name: 'heap per 64 GiB host (fresh)', unit: 'bytes', ...one((h1 - h0) / 100) });
  s.record({ name: 'heap per 1 TiB host (fresh)', unit: 'bytes', ...one((h2 - h1) / 100) });
  const big = createHost({ bytes: 2 ** 40 });
  const h3 = heapUsed();
  for (let i = 0; i < 2 ** 18; i++) big.allocPages(0, 'anon');
  const h4 = heapUsed();
  s.record({ name: '1 TiB host: model runs after 2^18 order-0 allocs', unit: 'runs', ...one(big.stats().modelRuns) });
  s.record({ name: '1 TiB host: heap growth for 2^18 order-0 allocs', unit: 'bytes', ...one(h4 - h3) });
  keep.length = 0;
});
