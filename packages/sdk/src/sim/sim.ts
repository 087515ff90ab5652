/**
 * The simulation kernel (DESIGN.md, "The simulation kernel"): virtual clocks per actor, a
 * scheduler that always steps the earliest actor, locks as timelines, the cost table, a seeded
 * random source and the trace bus. Single-threaded and deterministic: the same seed and the same
 * program give the same interleaving and the same clocks.
 */
import { KvmError, ModelInvariantError } from '../errors.js';
import { createTraceBus } from '../trace/bus.js';
import type { TraceBus } from '../trace/types.js';
import { ActorQueue } from './actor-queue.js';
import { SimActor, SimActorError } from './actor.js';
import { createCostModel } from './cost-model.js';
import { SimLock, SimRwLock } from './lock.js';
import type { LockHost } from './lock.js';
import { createRng } from './rng.js';
import type { Actor, ActorYield, CostModel, CostName, Lock, Rng, RwLock, Sim } from './types.js';

/** Options of {@link createSim}. */
export interface SimOptions {
  /** Seed of `sim.rng` (any safe integer). Default 0. */
  readonly seed?: number;
  /**
   * Cost overrides, ns. The sim is created before the packages that run in it register their
   * costs, so an override waits until its name is registered and then replaces the default;
   * `sim.costs.pendingOverrides()` lists those that never matched (a typo). Values are checked
   * at once (EINVAL unless finite and >= 0).
   */
  readonly costs?: Readonly<Record<string, number>>;
}

const badNs = (ns: number): boolean => !(ns >= 0) || ns === Infinity;

class SimImpl implements Sim, LockHost {
  current: SimActor;
  held = 0;
  readonly costs: CostModel;
  readonly rng: Rng;
  readonly trace: TraceBus;
  private readonly all: SimActor[] = [];
  private readonly queue = new ActorQueue<SimActor>();
  private readonly locks = new Map<string, SimLock | SimRwLock>();
  private running = false;

  constructor(options: SimOptions) {
    this.costs = createCostModel(options.costs);
    this.rng = createRng(options.seed ?? 0);
    const vmm = new SimActor(0, 'vmm', 0, undefined);
    this.all.push(vmm);
    this.current = vmm;
    this.trace = createTraceBus(this);
  }

  get now(): number {
    return this.current.now;
  }

  get actors(): readonly Actor[] {
    return this.all;
  }

  charge(cost: CostName, units = 1): void {
    const ns = this.costs.get(cost) * units;
    if (badNs(units)) throw new KvmError('EINVAL', 'sim.charge', `${cost}: ${units} units is not a finite number >= 0`);
    const a = this.current;
    a.now += ns;
    a.busyNs += ns;
  }

  advance(ns: number): void {
    if (badNs(ns)) throw new KvmError('EINVAL', 'sim.advance', `${ns} ns is not a finite number >= 0`);
    const a = this.current;
    a.now += ns;
    a.busyNs += ns;
  }

  lock(name: string): Lock {
    const l = this.locks.get(name) ?? this.newLock(name, 'exclusive');
    if (!(l instanceof SimLock)) throw kindClash(name, 'an exclusive lock', 'a rwlock');
    return l;
  }

  rwlock(name: string): RwLock {
    const l = this.locks.get(name) ?? this.newLock(name, 'rw');
    if (!(l instanceof SimRwLock)) throw kindClash(name, 'a rwlock', 'an exclusive lock');
    return l;
  }

  private newLock(name: string, kind: 'exclusive' | 'rw'): SimLock | SimRwLock {
    const l = kind === 'rw' ? new SimRwLock(name, this) : new SimLock(name, this);
    this.locks.set(name, l);
    return l;
  }

  othersEarliest(): number {
    // While a step runs, its actor sits at the top of the queue; outside a run, the vmm actor is
    // not queued at all.
    if (this.running) return this.queue.secondNow();
    return this.queue.peek()?.now ?? Infinity;
  }

  spawn(name: string, body: () => Iterator<ActorYield>): Actor {
    if (typeof body !== 'function') throw new KvmError('EINVAL', 'sim.spawn', `${name}: body must be a function returning an iterator`);
    // A new thread starts at its creator's clock. Its key (creator's clock, larger id) is never
    // before the running actor's, so the running actor stays at the top of the queue.
    const a = new SimActor(this.all.length, name, this.current.now, body);
    this.all.push(a);
    this.queue.push(a);
    return a;
  }

  runUntilIdle(limitNs?: number): void {
    if (this.running) throw new ModelInvariantError('sim.nested-run', `runUntilIdle called from inside actor '${this.current.name}'`);
    if (this.held > 0) throw new ModelInvariantError('sim.run-holding-lock', 'runUntilIdle called inside a critical section');
    if (limitNs !== undefined && Number.isNaN(limitNs)) throw new KvmError('EINVAL', 'sim.runUntilIdle', 'limitNs is NaN');
    const limit = limitNs ?? Infinity;
    const queue = this.queue;
    const outside = this.current;
    this.running = true;
    try {
      for (;;) {
        const a = queue.peek();
        if (a === undefined || a.now > limit) break;
        this.current = a;
        a.state = 'runnable';
        let r: IteratorResult<ActorYield>;
        try {
          const it = a.iterator ?? (a.iterator = (a.body as () => Iterator<ActorYield>)());
          r = it.next();
          const y = r.value;
          if (!r.done && y !== undefined && y !== null && typeof y === 'object' && 'sleep' in y) {
            const ns = y.sleep;
            if (badNs(ns)) throw new KvmError('EINVAL', 'sim.yield', `sleep of ${ns} ns is not a finite number >= 0`);
            a.now += ns;
            a.sleptNs += ns;
            a.state = 'sleeping';
          }
        } catch (e) {
          this.finish(a);
          throw new SimActorError(a, e);
        }
        if (r.done) this.finish(a);
        else queue.topChanged();
      }
    } finally {
      this.current = outside;
      this.running = false;
    }
  }

  private finish(a: SimActor): void {
    a.state = 'done';
    if (this.queue.peek() !== a) throw new ModelInvariantError('sim.run-queue', `actor '${a.name}' left the top of the run queue during its step`);
    this.queue.pop();
  }
}

function kindClash(name: string, wanted: string, existing: string): ModelInvariantError {
  return new ModelInvariantError('sim.lock-kind', `'${name}' is ${existing}; it cannot also be used as ${wanted}`);
}

/**
 * Creates a simulation kernel.
 *
 * **Actors.** A default `vmm` actor (id 0) is current outside any run. `spawn(name, body)` adds an
 * actor whose clock starts at its creator's; `body()` is called on its first step (so its setup runs
 * as that actor) and each `next()` of the iterator it returns is one step. A step may yield
 * `{ sleep: ns }` to move its own clock without doing work. `runUntilIdle(limitNs)` always steps the
 * runnable actor with the smallest clock (ties: spawn order) using a binary heap, O(log actors) per
 * step, and stops when none is left or the earliest clock is beyond `limitNs`. An exception in a
 * body leaves as a {@link SimActorError} naming the actor, with the original as `cause`; the actor
 * is done and the other actors can be run on. The vmm actor's clock does not move during a run (no
 * implicit join): read `actors` for the finishing times.
 *
 * **Locks.** `lock(name)` / `rwlock(name)` return the same lock for the same name. A lock is a
 * timeline served in call order (see `./lock.ts`). The approximation: the scheduler picks the
 * earliest actor, but a step is not preemptible, so an acquisition made after the step charged `d`
 * ns may be served before another actor's acquisition at a virtually earlier clock, over-stating
 * that actor's wait by at most `d`. It is exact when each step takes its locks before charging
 * (one operation per step, as a vCPU loop naturally does: yield between operations).
 * `LockStats.outOfOrder` counts acquisitions where another runnable actor was earlier, so an
 * experiment can check that it stays rare. Taking a lock you already hold is a
 * {@link ModelInvariantError}, as it is a deadlock in the kernel.
 *
 * @throws KvmError EINVAL for a seed that is not a safe integer or a cost override that is not a
 *   finite number >= 0.
 */
export function createSim(options: SimOptions = {}): Sim {
  return new SimImpl(options);
}
