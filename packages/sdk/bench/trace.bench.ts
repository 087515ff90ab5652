/**
 * What a trace point costs. The no-sink case must be negligible: DESIGN.md promises that tracing
 * "costs next to nothing" when no sink is attached, so hot paths can keep their trace points.
 * Each task runs the same loop body (a charge, the hot-path operation trace points sit next to);
 * the difference between "no trace point" and "guarded, no sink" is the overhead.
 *
 * Run: `cd packages/sdk && pnpm bench trace` (COCOKIT_BENCH_QUICK=1 for a short run).
 */
import { runSuite } from '@cocokit/bench';
import { createCounters, createRingBuffer, createSim } from '@cocokit/sdk';
import type { Sim } from '@cocokit/sdk';

const OPS = 10_000;

function simWithCost(): Sim {
  const sim = createSim();
  sim.costs.register('bench', { 'bench.op': { ns: 10, source: 'benchmark fixture' } });
  return sim;
}

const plain = simWithCost();
const guarded = simWithCost();
const counted = simWithCost();
counted.trace.attach(createCounters({ fields: { 'bench.op': ['i'] } }));
const ringed = simWithCost();
ringed.trace.attach(createRingBuffer(4096));

let sink = 0;

await runSuite('@cocokit/sdk', 'trace', (s) => {
  s.add(
    'loop: charge, no trace point',
    () => {
      for (let i = 0; i < OPS; i++) plain.charge('bench.op');
      sink += plain.now;
    },
    { opsPerCall: OPS },
  );
  for (const [label, sim] of [
    ['loop: charge + guarded trace point, no sink', guarded],
    ['loop: charge + guarded trace point, counters sink', counted],
    ['loop: charge + guarded trace point, ring sink (4096)', ringed],
  ] as const) {
    s.add(
      label,
      () => {
        for (let i = 0; i < OPS; i++) {
          sim.charge('bench.op');
          if (sim.trace.enabled) sim.trace.emit('bench.op', { i, npages: 1 });
        }
        sink += sim.now;
      },
      { opsPerCall: OPS },
    );
  }
});

if (sink === -1) console.log(sink); // keep the loops observable
