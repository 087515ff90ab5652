/**
 * The simulation kernel's own costs: what a charge costs, what one scheduler step costs as the
 * number of actors grows (the heap makes it O(log actors)), and lock acquisition with and without
 * contention.
 *
 * Run: `cd packages/sdk && pnpm bench sim` (COCOKIT_BENCH_QUICK=1 for a short run).
 */
import { runSuite } from '@cocokit/bench';
import { createSim } from '@cocokit/sdk';
import type { Sim } from '@cocokit/sdk';

const OPS = 10_000;
const STEPS = 16_384;

function simWithCost(): Sim {
  const sim = createSim();
  sim.costs.register('bench', { 'bench.op': { ns: 10, source: 'benchmark fixture' } });
  return sim;
}

/** A sim with `n` actors taking `STEPS / n` steps each, with uneven step lengths so the heap works. */
function schedulerSim(n: number, lockFor?: (id: number) => string): Sim {
  const sim = createSim();
  const steps = STEPS / n;
  for (let id = 0; id < n; id++) {
    const lock = lockFor === undefined ? undefined : sim.lock(lockFor(id));
    sim.spawn(`a${id}`, function* () {
      for (let i = 0; i < steps; i++) {
        const d = 1 + ((i * 7919 + id * 104729) % 13);
        if (lock === undefined) sim.advance(d);
        else lock.with(() => sim.advance(d));
        yield;
      }
    });
  }
  return sim;
}

let sink = 0;

await runSuite('@cocokit/sdk', 'sim', (s) => {
  const charging = simWithCost();
  s.add(
    'charge()',
    () => {
      for (let i = 0; i < OPS; i++) charging.charge('bench.op');
      sink += charging.now;
    },
    { opsPerCall: OPS },
  );

  const advancing = createSim();
  s.add(
    'advance()',
    () => {
      for (let i = 0; i < OPS; i++) advancing.advance(3);
      sink += advancing.now;
    },
    { opsPerCall: OPS },
  );

  for (const n of [4, 64, 1024]) {
    let sim = schedulerSim(n);
    s.add(`scheduler step, ${n} actors`, () => sim.runUntilIdle(), {
      opsPerCall: STEPS,
      beforeEach: () => void (sim = schedulerSim(n)),
    });
  }

  const vmm = createSim();
  const l = vmm.lock('L');
  const rw = vmm.rwlock('RW');
  const body = () => vmm.advance(1);
  s.add(
    'lock.with(), uncontended (one actor)',
    () => {
      for (let i = 0; i < OPS; i++) l.with(body);
    },
    { opsPerCall: OPS },
  );
  s.add(
    'rwlock.read(), uncontended (one actor)',
    () => {
      for (let i = 0; i < OPS; i++) rw.read(body);
    },
    { opsPerCall: OPS },
  );

  // The same 64-actor run with each actor on its own lock and all on one lock: the difference is
  // the cost of the waiting path (every acquisition on the shared lock waits).
  let own = schedulerSim(64, (id) => `own${id}`);
  s.add('step + lock.with(), 64 actors, own locks (uncontended)', () => own.runUntilIdle(), {
    opsPerCall: STEPS,
    beforeEach: () => void (own = schedulerSim(64, (id) => `own${id}`)),
  });
  let shared = schedulerSim(64, () => 'shared');
  s.add('step + lock.with(), 64 actors, one lock (contended)', () => shared.runUntilIdle(), {
    opsPerCall: STEPS,
    beforeEach: () => void (shared = schedulerSim(64, () => 'shared')),
  });
});

if (sink === -1) console.log(sink);
