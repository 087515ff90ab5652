/**
 * Why RangeMap sits on `sorted-btree`: the ordered-map primitives RangeMap uses (floor lookup,
 * insert + delete of a run, in-order scan from a key, memory per key) on sorted-btree against
 * `@js-sdsl/ordered-map` (a red-black tree, the most-downloaded ordered map on npm), each holding
 * 10^6 runs. Benchmark-only: @js-sdsl/ordered-map is a devDependency.
 *
 * Opt-in: it runs only when named. It justifies a dependency choice rather than tracking a figure
 * across commits. (It once had to be kept apart because sharing a process with range-map.bench.ts
 * made RangeMap lookups 3-5x slower; the harness now runs every suite in a process of its own.)
 *
 *   cd packages/sdk && pnpm bench range-map-alternatives
 */
import { OrderedMap } from '@js-sdsl/ordered-map';
import BTreeDefault from 'sorted-btree';
import { heapUsed, runSuite } from '@cocokit/bench';
import { createRng } from '../src/sim/rng.js';

// sorted-btree is CommonJS with `exports.default` (see src/range-map.ts).
const BTree: typeof BTreeDefault = (BTreeDefault as unknown as { default?: typeof BTreeDefault }).default ?? BTreeDefault;

interface StoredRun {
  readonly start: number;
  readonly end: number;
  readonly value: number;
}

const RUNS = 1e6;
const BATCH = 1000;
/** Deterministic frames from the sdk's seeded Rng, so every run measures the same work. */
function randomInts(count: number, below: number, seed: number): Float64Array {
  const rng = createRng(seed);
  return Float64Array.from({ length: count }, () => rng.int(0, below));
}

let sink = 0;
const once = (v: number) => ({ median: v, min: v, max: v, samples: 1 });
const compare = (a: number, b: number): number => a - b;
const frames = randomInts(BATCH, 2 * RUNS, 12345); // any frame: floor lookups
const gapKeys = frames.map((f) => f - (f % 2) + 1); // odd: never a key, so insert + delete

const requested = process.argv.slice(2).some((a) => a.includes('alternatives'));
if (!requested) console.log('range-map-alternatives: skipped; run `pnpm bench range-map-alternatives`');
else await runSuite('@cocokit/sdk', 'range-map-alternatives', (s) => {
  // ---- sorted-btree (node size 64, as RangeMap uses it) ----
  let h0 = heapUsed();
  let t0 = performance.now();
  const bt = new BTree<number, StoredRun>(undefined, compare, 64);
  for (let i = 0; i < RUNS; i++) bt.set(2 * i, { start: 2 * i, end: 2 * i + 1, value: i % 7 });
  s.record({ name: 'sorted-btree: build 10^6 by append', unit: 'ns/key', ...once(((performance.now() - t0) * 1e6) / RUNS) });
  s.record({ name: 'sorted-btree: heap', unit: 'bytes/key', ...once((heapUsed() - h0) / RUNS) });
  const pair: [number, StoredRun] = [0, { start: 0, end: 0, value: 0 }];
  s.add(
    'sorted-btree: floor lookup',
    () => {
      let acc = 0;
      for (let i = 0; i < BATCH; i++) acc += bt.getPairOrNextLower(frames[i] as number, pair)?.[1].value ?? 0;
      sink += acc;
    },
    { opsPerCall: BATCH },
  );
  s.add(
    'sorted-btree: insert + delete (per op)',
    () => {
      for (let i = 0; i < BATCH; i++) {
        const k = gapKeys[i] as number;
        bt.set(k, { start: k, end: k + 1, value: 7 });
        bt.delete(k);
      }
    },
    { opsPerCall: 2 * BATCH },
  );
  s.add(
    'sorted-btree: scan 1000 keys from a key',
    () => {
      let acc = 0;
      let n = 0;
      for (const [, r] of bt.entries(frames[Math.floor(sink % BATCH)] as number, pair)) {
        acc += r.value;
        if (++n === BATCH) break;
      }
      sink += acc;
    },
    { opsPerCall: BATCH },
  );

  // The same tree built in random order: sequential appends leave every leaf exactly half full
  // (a full leaf splits in half), so one insert + delete merges two leaves and the next insert
  // splits them again. A tree grown by random inserts has slack and shows the steady-state cost.
  const shuffled = randomInts(RUNS, RUNS, 777).map((x, i) => x + i / RUNS); // distinct, random order
  const order = Array.from(shuffled.keys()).sort((a, b) => (shuffled[a] as number) - (shuffled[b] as number));
  const btRandom = new BTree<number, StoredRun>(undefined, compare, 64);
  for (const i of order) btRandom.set(2 * i, { start: 2 * i, end: 2 * i + 1, value: i % 7 });
  s.add(
    'sorted-btree (built in random order): insert + delete (per op)',
    () => {
      for (let i = 0; i < BATCH; i++) {
        const k = gapKeys[i] as number;
        btRandom.set(k, { start: k, end: k + 1, value: 7 });
        btRandom.delete(k);
      }
    },
    { opsPerCall: 2 * BATCH },
  );

  // ---- @js-sdsl/ordered-map ----
  h0 = heapUsed();
  t0 = performance.now();
  const om = new OrderedMap<number, StoredRun>([], compare);
  for (let i = 0; i < RUNS; i++) om.setElement(2 * i, { start: 2 * i, end: 2 * i + 1, value: i % 7 });
  s.record({ name: '@js-sdsl/ordered-map: build 10^6 by append', unit: 'ns/key', ...once(((performance.now() - t0) * 1e6) / RUNS) });
  s.record({ name: '@js-sdsl/ordered-map: heap', unit: 'bytes/key', ...once((heapUsed() - h0) / RUNS) });
  const rEnd = om.rEnd();
  s.add(
    '@js-sdsl/ordered-map: floor lookup',
    () => {
      let acc = 0;
      for (let i = 0; i < BATCH; i++) {
        const it = om.reverseLowerBound(frames[i] as number);
        if (!it.equals(rEnd)) acc += it.pointer[1].value;
      }
      sink += acc;
    },
    { opsPerCall: BATCH },
  );
  s.add(
    '@js-sdsl/ordered-map: insert + delete (per op)',
    () => {
      for (let i = 0; i < BATCH; i++) {
        const k = gapKeys[i] as number;
        om.setElement(k, { start: k, end: k + 1, value: 7 });
        om.eraseElementByKey(k);
      }
    },
    { opsPerCall: 2 * BATCH },
  );
  const end = om.end();
  s.add(
    '@js-sdsl/ordered-map: scan 1000 keys from a key',
    () => {
      let acc = 0;
      const it = om.lowerBound(frames[Math.floor(sink % BATCH)] as number);
      for (let n = 0; n < BATCH && !it.equals(end); n++, it.next()) acc += it.pointer[1].value;
      sink += acc;
    },
    { opsPerCall: BATCH },
  );
});
if (sink === Number.MIN_VALUE) console.log(sink);
