import { describe, expect, it } from 'vitest';
import { isKvmError, isModelInvariantError } from '../errors.js';
import { isSimActorError } from './actor.js';
import { createSim } from './sim.js';
import type { ActorYield, Sim } from './types.js';

const src = 'test fixture';
const withCosts = (sim: Sim): Sim => {
  sim.costs.register('test', { 'sdk.test.op': { ns: 10, source: src }, 'sdk.test.a': { ns: 3, source: src } });
  return sim;
};

describe('createSim', () => {
  it('starts with a vmm actor at time 0 as the current actor', () => {
    const sim = createSim();
    expect(sim.now).toBe(0);
    expect(sim.current).toMatchObject({ id: 0, name: 'vmm', now: 0, waitedNs: 0, busyNs: 0, sleptNs: 0 });
    expect(sim.actors).toEqual([sim.current]);
    expect(sim.rng.seed).toBe(0);
    expect(sim.trace.enabled).toBe(false);
    expect(sim.costs.entries()).toEqual([]); // the sim itself charges nothing
  });

  it('seeds the rng', () => {
    expect(createSim({ seed: 5 }).rng.next()).toBe(createSim({ seed: 5 }).rng.next());
    expect(() => createSim({ seed: 1.5 })).toThrow(expect.objectContaining({ errno: 'EINVAL' }));
  });

  it('applies cost overrides once their name is registered', () => {
    const sim = createSim({ costs: { 'sdk.test.op': 99, 'sdk.test.typo': 1 } });
    withCosts(sim);
    expect(sim.costs.get('sdk.test.op')).toBe(99);
    expect(sim.costs.pendingOverrides()).toEqual(['sdk.test.typo']);
    expect(() => createSim({ costs: { 'sdk.test.op': NaN } })).toThrow(expect.objectContaining({ errno: 'EINVAL' }));
  });
});

describe('charge and advance', () => {
  it('charge adds cost x units to the current clock and busy time', () => {
    const sim = withCosts(createSim());
    sim.charge('sdk.test.op');
    sim.charge('sdk.test.a', 4);
    expect(sim.now).toBe(22);
    expect(sim.current.busyNs).toBe(22);
    sim.advance(8);
    expect(sim.now).toBe(30);
    expect(sim.current.busyNs).toBe(30);
  });

  it('refuses unknown names and bad amounts with EINVAL, leaving the clock alone', () => {
    const sim = withCosts(createSim());
    expect(() => sim.charge('sdk.test.b')).toThrow(expect.objectContaining({ errno: 'EINVAL', op: 'costs.get' }));
    for (const u of [-1, NaN, Infinity]) {
      expect(() => sim.charge('sdk.test.op', u)).toThrow(expect.objectContaining({ errno: 'EINVAL', op: 'sim.charge' }));
      expect(() => sim.advance(u)).toThrow(expect.objectContaining({ errno: 'EINVAL', op: 'sim.advance' }));
    }
    expect(sim.now).toBe(0);
  });
});

describe('actors and the scheduler', () => {
  it('steps the actor with the smallest clock; ties go to the earlier spawn', () => {
    const sim = createSim();
    const log: string[] = [];
    const worker = (name: string, step: number, n: number) =>
      function* (): Generator<ActorYield> {
        for (let i = 0; i < n; i++) {
          log.push(`${name}@${sim.now}`);
          sim.advance(step);
          yield;
        }
      };
    const a = sim.spawn('a', worker('a', 30, 3));
    const b = sim.spawn('b', worker('b', 20, 4));
    expect(a.state).toBe('runnable');
    sim.runUntilIdle();
    expect(log).toEqual(['a@0', 'b@0', 'b@20', 'a@30', 'b@40', 'a@60', 'b@60']);
    expect([a.now, b.now, a.state, b.state]).toEqual([90, 80, 'done', 'done']);
    expect(sim.current.name).toBe('vmm');
    expect(sim.now).toBe(0); // no implicit join
    expect(sim.actors.map((x) => [x.id, x.name])).toEqual([
      [0, 'vmm'],
      [1, 'a'],
      [2, 'b'],
    ]);
  });

  it('runs each body as its own actor, starting at its creator\'s clock', () => {
    const sim = createSim();
    sim.advance(100);
    const seen: string[] = [];
    sim.spawn('parent', function* () {
      seen.push(`${sim.current.name}@${sim.now}`);
      sim.advance(5);
      // eslint-disable-next-line require-yield -- a one-step actor: its work is its single step
      sim.spawn('child', function* () {
        seen.push(`${sim.current.name}@${sim.now}`);
      });
      yield;
      seen.push(`${sim.current.name}@${sim.now}`);
    });
    sim.runUntilIdle();
    // both at 105: the parent was spawned first, so it goes first
    expect(seen).toEqual(['parent@100', 'parent@105', 'child@105']);
  });

  it('a { sleep } yield moves the clock without busy time', () => {
    const sim = createSim();
    const a = sim.spawn('sleeper', function* () {
      sim.advance(1);
      yield { sleep: 1000 };
      sim.advance(1);
    });
    let midState = '';
    sim.spawn('observer', function* () {
      sim.advance(500);
      yield;
      midState = a.state;
    });
    sim.runUntilIdle();
    expect(midState).toBe('sleeping');
    expect(a).toMatchObject({ now: 1002, busyNs: 2, sleptNs: 1000, waitedNs: 0, state: 'done' });
  });

  it('stops before stepping an actor beyond limitNs, and can resume', () => {
    const sim = createSim();
    const ticks: number[] = [];
    sim.spawn('ticker', function* () {
      for (let i = 0; i < 10; i++) {
        ticks.push(sim.now);
        sim.advance(100);
        yield;
      }
    });
    sim.runUntilIdle(250);
    expect(ticks).toEqual([0, 100, 200]);
    expect(sim.actors[1]!.now).toBe(300);
    sim.runUntilIdle(300);
    expect(ticks).toEqual([0, 100, 200, 300]);
    sim.runUntilIdle();
    expect(ticks).toHaveLength(10);
    expect(() => sim.runUntilIdle(NaN)).toThrow(expect.objectContaining({ errno: 'EINVAL' }));
  });

  it('an exception in a body leaves runUntilIdle naming the actor, with the cause', () => {
    const sim = withCosts(createSim());
    const good = sim.spawn('good', function* () {
      for (let i = 0; i < 3; i++) {
        sim.advance(10);
        yield;
      }
    });
    const bad = sim.spawn('vcpu1', function* () {
      sim.advance(15);
      yield;
      sim.charge('sdk.test.b'); // not registered
    });
    let err: unknown;
    try {
      sim.runUntilIdle();
    } catch (e) {
      err = e;
    }
    expect(isSimActorError(err)).toBe(true);
    const e = err as Error & { actor: string; actorId: number; atNs: number };
    expect(e.message).toContain("'vcpu1'");
    expect([e.actor, e.actorId, e.atNs]).toEqual(['vcpu1', 2, 15]);
    expect(isKvmError(e.cause, 'EINVAL')).toBe(true);
    expect(bad.state).toBe('done');
    expect(sim.current.name).toBe('vmm');
    sim.runUntilIdle(); // the rest can run on
    expect(good).toMatchObject({ state: 'done', now: 30 });
  });

  it('refuses a bad sleep and a body that is not a function', () => {
    const sim = createSim();
    sim.spawn('x', function* () {
      yield { sleep: -1 };
    });
    expect(() => sim.runUntilIdle()).toThrow(expect.objectContaining({ name: 'SimActorError', cause: expect.objectContaining({ errno: 'EINVAL' }) }));
    expect(() => sim.spawn('y', 5 as never)).toThrow(expect.objectContaining({ errno: 'EINVAL' }));
  });

  it('refuses a nested run as a model bug', () => {
    const sim = createSim();
    // eslint-disable-next-line require-yield -- a one-step actor: its work is its single step
    sim.spawn('x', function* () {
      sim.runUntilIdle();
    });
    let err: unknown;
    try {
      sim.runUntilIdle();
    } catch (e) {
      err = e;
    }
    expect(isModelInvariantError((err as Error).cause)).toBe(true);
    expect(() => sim.lock('l').with(() => sim.runUntilIdle())).toThrow(expect.objectContaining({ invariant: 'sim.run-holding-lock' }));
  });

  it('is deterministic: same seed, same interleaving and clocks', () => {
    const run = (seed: number) => {
      const sim = createSim({ seed });
      const log: string[] = [];
      for (let v = 0; v < 6; v++) {
        const rng = sim.rng.fork(`vcpu${v}`);
        sim.spawn(`vcpu${v}`, function* () {
          for (let i = 0; i < 20; i++) {
            const lock = rng.chance(0.5) ? sim.lock('slots_lock') : sim.lock(`own${v}`);
            lock.with(() => sim.advance(rng.int(1, 100)));
            log.push(`${sim.current.name}:${sim.now}`);
            yield rng.chance(0.1) ? { sleep: rng.int(0, 50) } : undefined;
          }
        });
      }
      sim.runUntilIdle();
      return { log, clocks: sim.actors.map((a) => [a.now, a.waitedNs, a.busyNs, a.sleptNs]) };
    };
    expect(run(1)).toEqual(run(1));
    expect(run(1)).not.toEqual(run(2));
  });
});
