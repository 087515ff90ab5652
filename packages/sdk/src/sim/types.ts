/**
 * The simulation kernel's seams (DESIGN.md, "The simulation kernel"; CONTRACTS.md). Operations are
 * synchronous; the scheduler sets the current actor and every operation charges its cost to it, so
 * callers never pass clocks around. State changes are immediate; only the clocks move.
 */
import type { TraceBus } from '../trace/types.js';

/**
 * Names of costs. Packages and plugins declare theirs by augmenting {@link CostNames}, so a typo in
 * `sim.charge('gmem.fallocte')` fails to compile:
 *
 * ```ts
 * declare module '@cocokit/sdk' { interface CostNames { 'gmem.fallocate_page': true } }
 * ```
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface CostNames {}
/** A registered cost name, or any string when no package has declared one. */
export type CostName = [keyof CostNames] extends [never] ? string : keyof CostNames & string;

/** A cost default: nanoseconds, and where the number comes from. */
export interface CostDef {
  /** Nanoseconds per unit. */
  readonly ns: number;
  /** A paper, a mailing-list measurement, or a measurement of real KVM on a named machine. */
  readonly source: string;
  /** What one unit is, when not obvious ("per 4 KiB page"). */
  readonly unit?: string;
}

/** A cost as the model holds it: its default, who registered it, and the user's override. */
export interface CostEntry extends CostDef {
  readonly name: string;
  /** The package or plugin that registered it. */
  readonly owner: string;
  /** The default before any override. */
  readonly defaultNs: number;
  readonly overridden: boolean;
}

/** The table of named costs (ns). */
export interface CostModel {
  /** ns per unit of `name`; throws EINVAL for a name nobody registered. */
  get(name: CostName): number;
  has(name: string): boolean;
  /** Registers defaults under `owner`; re-registering the same name with another default is EEXIST. */
  register(owner: string, defaults: Readonly<Record<string, CostDef>>): void;
  /** User overrides; an unknown name is EINVAL (a typo must not silently do nothing). */
  override(values: Readonly<Record<string, number>>): void;
  /** Every entry, sorted by name. */
  entries(): CostEntry[];
  /**
   * Overrides given before their name was registered (`createSim({ costs })`) that still match
   * nothing, sorted. Non-empty once setup is done means a typo: a harness should refuse it.
   */
  pendingOverrides(): string[];
}

/** A seeded pseudo-random source; runs are reproducible from the seed. */
export interface Rng {
  readonly seed: number;
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [min, max). */
  int(min: number, max: number): number;
  /** true with probability `p`. */
  chance(p: number): boolean;
  /** An independent stream derived from this one's seed and `label` (same label, same stream). */
  fork(label: string): Rng;
}

/** Where an actor is. */
export type ActorState = 'runnable' | 'sleeping' | 'done';

/** A vCPU or a host thread, with its own clock. */
export interface Actor {
  readonly id: number;
  readonly name: string;
  /** This actor's clock, ns. */
  readonly now: number;
  readonly state: ActorState;
  /** Time spent waiting for locks, ns. */
  readonly waitedNs: number;
  /** Time charged for work, ns. */
  readonly busyNs: number;
  /** Time spent in `{ sleep }` yields, ns. A clock is its start plus busy, waited and slept time. */
  readonly sleptNs: number;
}

/** Statistics a lock keeps. */
export interface LockStats {
  readonly acquisitions: number;
  /** Acquisitions that had to wait. */
  readonly contended: number;
  /** Total virtual time actors spent waiting, ns. */
  readonly waitedNs: number;
  /**
   * Total virtual time the lock was held, ns (for a rwlock, summed over holders: overlapping
   * readers each count).
   */
  readonly heldNs: number;
  /**
   * Acquisitions made while another runnable actor's clock was earlier than the acquirer's. The
   * timeline serves acquisitions in call order, so such an acquisition may have made a later
   * (virtually earlier) one wait; a large share here means the steps are too coarse (see
   * `createSim`, "Locks").
   */
  readonly outOfOrder: number;
}

/** An exclusive lock whose contention shows up as waiting time. */
export interface Lock {
  readonly name: string;
  /** Waits (in virtual time) until the lock is free, holds it while `f` runs, then releases. */
  with<T>(f: () => T): T;
  readonly stats: LockStats;
}

/** A reader-writer lock: shared readers, an exclusive writer (e.g. mmu_lock). */
export interface RwLock {
  readonly name: string;
  read<T>(f: () => T): T;
  write<T>(f: () => T): T;
  readonly stats: LockStats;
}

/** What an actor's body may yield to the scheduler between steps. */
export type ActorYield = undefined | { readonly sleep: number };

/** The simulation kernel one VM (or one experiment) runs in. */
export interface Sim {
  /** ns, the current actor's clock. */
  readonly now: number;
  /** Set by the scheduler; a default `vmm` actor outside any run. */
  readonly current: Actor;
  /** current.now += costs.get(cost) * units. */
  charge(cost: CostName, units?: number): void;
  /** Moves the current actor's clock by `ns` of work that has no named cost. */
  advance(ns: number): void;
  /** The exclusive lock called `name` (created on first use). */
  lock(name: string): Lock;
  /** The reader-writer lock called `name` (created on first use). */
  rwlock(name: string): RwLock;
  /** A vCPU or host thread: `body` runs a step per `next()`, in clock order with the others. */
  spawn(name: string, body: () => Iterator<ActorYield>): Actor;
  /** Steps the runnable actor with the smallest clock until none is left (or past `limitNs`). */
  runUntilIdle(limitNs?: number): void;
  /** Every actor spawned so far, the default one first. */
  readonly actors: readonly Actor[];
  readonly costs: CostModel;
  readonly rng: Rng;
  readonly trace: TraceBus;
}
