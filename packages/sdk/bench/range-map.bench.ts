/**
 * RangeMap throughput and memory: set / get / iterate on maps of 10^4, 10^6 and 10^7 runs, the same
 * operations on a naive per-frame array (what the model would cost if it stored frames), and a
 * range set over a 1 TiB span (2^28 frames) to show the cost follows runs, not frames.
 *
 *   cd packages/sdk && pnpm bench range-map          # full (~2-3 min)
 *   COCOKIT_BENCH_QUICK=1 pnpm bench range-map       # quick
 */
import { heapUsed, runSuite } from '@cocokit/bench';
import type { SuiteContext } from '@cocokit/bench';
import { RangeMap } from '../src/range-map.js';
import { createRng } from '../src/sim/rng.js';

const quick = process.env['COCOKIT_BENCH_QUICK'] === '1';
const TIB_FRAMES = 2 ** 28;
const BATCH = 1000; // ops per timed call, so sub-microsecond ops are measurable

/** Deterministic frames from the sdk's seeded Rng, so every run measures the same work. */
function randomInts(count: number, below: number, seed: number): Float64Array {
  const rng = createRng(seed);
  return Float64Array.from({ length: count }, () => rng.int(0, below));
}

/**
 * A map of `runs` one-frame runs at even frames `[2i, 2i+1)`, values cycling 0..6, built by
 * sequential appends (the fast path). The one-frame gaps keep every run separate.
 */
function buildMap(runs: number): RangeMap<number> {
  const m = new RangeMap<number>();
  for (let i = 0; i < runs; i++) m.set(2 * i, 2 * i + 1, i % 7);
  return m;
}

function timeOnce(f: () => void): number {
  const t0 = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t0);
}

function record(s: SuiteContext, name: string, unit: string, value: number, samples = 1): void {
  s.record({ name, unit, median: value, min: value, max: value, samples });
}

let sink = 0; // consumed results, so the JIT cannot drop the work

function mapTasks(s: SuiteContext, label: string, runs: number): void {
  let m: RangeMap<number> | undefined;
  const before = heapUsed();
  const buildNs = timeOnce(() => {
    m = buildMap(runs);
  });
  const after = heapUsed();
  const map = m as RangeMap<number>;
  record(s, `map ${label} runs: build by sequential append`, 'ns/run', buildNs / runs);
  record(s, `map ${label} runs: heap`, 'bytes/run', (after - before) / runs);

  const span = 2 * runs;
  const frames = randomInts(BATCH, span, runs);
  const runFrames = frames.map((f) => f - (f % 2)); // frames inside a run
  const gapFrames = runFrames.map((f) => f + 1); // frames in the gap after a run
  const values = randomInts(BATCH, 7, runs + 1);

  s.add(
    `map ${label} runs: get (random frame)`,
    () => {
      let acc = 0;
      for (let i = 0; i < BATCH; i++) acc += map.get(frames[i] as number) ?? 0;
      sink += acc;
    },
    { opsPerCall: BATCH },
  );
  s.add(
    `map ${label} runs: set 1 frame (overwrite a run)`,
    () => {
      for (let i = 0; i < BATCH; i++) {
        const f = runFrames[i] as number;
        map.set(f, f + 1, values[i] as number);
      }
    },
    { opsPerCall: BATCH },
  );
  s.add(
    `map ${label} runs: set 1 frame in a gap + clear it (split/merge)`,
    () => {
      for (let i = 0; i < BATCH; i++) {
        const f = gapFrames[i] as number;
        map.set(f, f + 1, 7); // a new run between two others (value 7 never coalesces)
        map.clear(f, f + 1);
      }
    },
    { opsPerCall: 2 * BATCH },
  );
  s.add(
    `map ${label} runs: set 5 frames merging 3 runs + restore`,
    () => {
      for (let i = 0; i < 100; i++) {
        const f = runFrames[i] as number;
        if (f + 5 > span) continue;
        map.set(f, f + 5, 8); // overwrites 3 runs and 2 gaps with one run
        map.clear(f, f + 5);
        map.set(f, f + 1, 1);
        map.set(f + 2, f + 3, 2);
        map.set(f + 4, f + 5, 3);
      }
    },
    { opsPerCall: 500 },
  );
  s.add(
    `map ${label} runs: iterate runs() window of 1000 runs`,
    () => {
      const from = runFrames[Math.floor(sink % BATCH)] as number;
      let acc = 0;
      let n = 0;
      for (const r of map.runs(from, from + 2 * BATCH)) {
        acc += r.value;
        n++;
      }
      sink += acc + n;
    },
    { opsPerCall: BATCH },
  );
  // Whole-map passes take up to ~0.5 s at 10^7 runs, too long for tinybench's minimum sample
  // count: time them a few times by hand.
  const perRun = (f: () => void): { median: number; min: number; max: number; samples: number } => {
    const t: number[] = [];
    for (let k = 0; k < (quick ? 1 : 3); k++) t.push(timeOnce(f) / runs);
    t.sort((a, b) => a - b);
    return { median: t[Math.floor(t.length / 2)] as number, min: t[0] as number, max: t[t.length - 1] as number, samples: t.length };
  };
  s.record({
    name: `map ${label} runs: iterate all runs()`,
    unit: 'ns/run',
    ...perRun(() => {
      let acc = 0;
      for (const r of map.runs()) acc += r.end - r.start;
      sink += acc;
    }),
  });
  s.record({ name: `map ${label} runs: count() over the whole map`, unit: 'ns/run', ...perRun(() => void (sink += map.count(0, span))) });
  s.add(`map ${label} runs: clone()`, () => void (sink += map.clone().runCount));
}

function naiveTasks(s: SuiteContext, label: string, frames: number): void {
  const before = process.memoryUsage().arrayBuffers;
  const arr = new Int32Array(frames); // 0 = no value; a value v is stored as v + 1
  for (let i = 0; i < frames; i += 2) arr[i] = (i % 7) + 1;
  record(s, `naive ${label} frames: memory`, 'bytes/frame', (process.memoryUsage().arrayBuffers - before) / frames);
  const rnd = randomInts(BATCH, frames, frames);
  const values = randomInts(BATCH, 7, frames + 1);
  s.add(
    `naive ${label} frames: get (random frame)`,
    () => {
      let acc = 0;
      for (let i = 0; i < BATCH; i++) acc += arr[rnd[i] as number] as number;
      sink += acc;
    },
    { opsPerCall: BATCH },
  );
  s.add(
    `naive ${label} frames: set 1 frame`,
    () => {
      for (let i = 0; i < BATCH; i++) arr[rnd[i] as number] = (values[i] as number) + 1;
    },
    { opsPerCall: BATCH },
  );
  // "Iterating runs" of a per-frame array means scanning every frame.
  s.add(
    `naive ${label} frames: iterate runs (scan all frames)`,
    () => {
      let runs = 0;
      let prev = 0;
      for (let i = 0; i < frames; i++) {
        const v = arr[i] as number;
        if (v !== prev && v !== 0) runs++;
        prev = v;
      }
      sink += runs;
    },
    { opsPerCall: frames / 2, time: quick ? 50 : 200 },
  );
  s.add(`naive ${label} frames: set the whole span (fill)`, () => void arr.fill(3), { time: quick ? 50 : 200 });
}

/** A range set over a whole 1 TiB span: O(runs replaced + log n), whatever the span in frames. */
function tibTasks(s: SuiteContext): void {
  // 1 run: flipping a whole terabyte is one tree update.
  const one = new RangeMap<number>();
  let flip = 0;
  s.add('1 TiB span: set [0, 2^28) on a map of 1 run', () => {
    flip ^= 1;
    one.set(0, TIB_FRAMES, flip);
  });
  // 10^6 runs elsewhere in the map: the terabyte range touches one run of them, so the cost is
  // that of a lookup in a big tree, not of 2^28 frames.
  const far = new RangeMap<number>();
  for (let i = 0; i < 1e6; i++) far.set(TIB_FRAMES + 2 * i, TIB_FRAMES + 2 * i + 1, i % 7);
  s.add('1 TiB span: set [0, 2^28) on a map of 10^6 runs beside it', () => {
    flip ^= 1;
    far.set(0, TIB_FRAMES, flip);
  });
  // k runs inside the span: the set replaces all of them, so cost grows with k (not frames).
  for (const k of quick ? [100, 10_000] : [100, 10_000, 1_000_000]) {
    const stride = Math.floor(TIB_FRAMES / k);
    const base = new RangeMap<number>();
    for (let i = 0; i < k; i++) base.set(i * stride, i * stride + 1, i % 7);
    const reps = k >= 1e6 ? 3 : 9;
    const times: number[] = [];
    for (let r = 0; r < reps; r++) {
      const m = base.clone(); // copy-on-write: the set below pays for the nodes it copies
      times.push(timeOnce(() => m.set(0, TIB_FRAMES, 9)));
      if (m.runCount !== 1) throw new Error('1 TiB set did not coalesce to one run');
    }
    times.sort((a, b) => a - b);
    s.record({
      name: `1 TiB span: set [0, 2^28) over ${k} runs inside it (clone + set)`,
      unit: 'ns',
      median: times[Math.floor(reps / 2)] as number,
      min: times[0] as number,
      max: times[reps - 1] as number,
      samples: reps,
    });
  }
}

await runSuite('@cocokit/sdk', 'range-map', (s) => {
  mapTasks(s, '1e4', 1e4);
  mapTasks(s, '1e6', 1e6);
  mapTasks(s, '1e7', 1e7);
  naiveTasks(s, '2^20', 2 ** 20);
  naiveTasks(s, '2^26', 2 ** 26);
  tibTasks(s);
});
if (sink === Number.MIN_VALUE) console.log(sink);
