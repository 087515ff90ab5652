/**
 * Locks in virtual time (CONTRACTS.md, "The simulation kernel"). A lock is a timeline: acquiring at
 * clock t starts at max(t, the time the lock is free); the holder's clock runs through the critical
 * section; release sets the free time. The wait is charged to the acquirer's clock and `waitedNs`
 * and to the lock's statistics, which is how contention becomes visible in scaling experiments.
 *
 * Acquisitions are served in call order. The scheduler calls actors in clock order, so this is the
 * virtual-time order as long as an actor takes a lock before it has charged much in the same step;
 * `LockStats.outOfOrder` counts the acquisitions where that did not hold (see `createSim`).
 */
import { ModelInvariantError } from '../errors.js';
import type { TraceBus } from '../trace/types.js';
import type { SimActor } from './actor.js';
import type { Lock, LockStats, RwLock } from './types.js';

/** What a lock needs from the sim that owns it. */
export interface LockHost {
  /** The actor that is acquiring. */
  readonly current: SimActor;
  /** The earliest clock of any other runnable actor (Infinity when none). */
  othersEarliest(): number;
  /** Locks currently held, so the sim can refuse to start a run inside a critical section. */
  held: number;
  readonly trace: TraceBus;
}

/** The mode a lock is taken in, as trace events report it. */
export type LockMode = 'exclusive' | 'read' | 'write';

class MutableStats implements LockStats {
  acquisitions = 0;
  contended = 0;
  waitedNs = 0;
  heldNs = 0;
  outOfOrder = 0;
}

/** Shared acquire/release bookkeeping of both lock kinds. */
abstract class TimelineLock {
  readonly stats = new MutableStats();
  /** The actor inside a critical section of this lock. Only the running actor can be one. */
  protected holder: SimActor | null = null;

  readonly name: string;
  protected readonly host: LockHost;

  constructor(name: string, host: LockHost) {
    this.name = name;
    this.host = host;
  }

  /** Runs `f` as `a`, starting no earlier than `freeAt`; returns the release time via `release`. */
  protected hold<T>(mode: LockMode, freeAt: number, f: () => T, release: (at: number) => void): T {
    const host = this.host;
    const a = host.current;
    if (this.holder === a) {
      // Recursive acquisition deadlocks a spinlock, and a recursive read_lock deadlocks a qrwlock
      // once a writer queues between the two: in the kernel this is a bug, so it is one here.
      throw new ModelInvariantError('sim.lock-recursion', `actor '${a.name}' takes ${this.name} (${mode}) while holding it`);
    }
    const t = a.now;
    const stats = this.stats;
    stats.acquisitions++;
    if (t > host.othersEarliest()) stats.outOfOrder++;
    let start = t;
    if (freeAt > t) {
      start = freeAt;
      const wait = freeAt - t;
      a.now = freeAt;
      a.waitedNs += wait;
      stats.contended++;
      stats.waitedNs += wait;
      if (host.trace.enabled) host.trace.emit('sim.lock_wait', { lock: this.name, mode }, wait);
    }
    this.holder = a;
    host.held++;
    try {
      return f();
    } finally {
      this.holder = null;
      host.held--;
      stats.heldNs += a.now - start;
      release(a.now);
    }
  }
}

/** An exclusive lock (a spinlock or mutex): one holder at a time, FIFO in virtual time. */
export class SimLock extends TimelineLock implements Lock {
  /** When the last reservation ends, ns. */
  private freeAt = 0;
  private readonly setFree = (at: number): void => {
    this.freeAt = at;
  };

  with<T>(f: () => T): T {
    return this.hold('exclusive', this.freeAt, f, this.setFree);
  }
}

/**
 * A reader-writer lock with the fairness of the kernel's queued rwlock (kernel/locking/qrwlock.c,
 * which x86's mmu_lock is): readers share, and a reader arriving while a writer waits queues behind
 * that writer rather than starving it. So a reader starts after the last writer's release; a writer
 * starts after the last writer's and the last reader's release.
 */
export class SimRwLock extends TimelineLock implements RwLock {
  private writerFreeAt = 0;
  private readersFreeAt = 0;
  private readonly readerReleased = (at: number): void => {
    if (at > this.readersFreeAt) this.readersFreeAt = at;
  };
  private readonly writerReleased = (at: number): void => {
    this.writerFreeAt = at;
  };

  read<T>(f: () => T): T {
    return this.hold('read', this.writerFreeAt, f, this.readerReleased);
  }

  write<T>(f: () => T): T {
    const w = this.writerFreeAt;
    const r = this.readersFreeAt;
    return this.hold('write', w > r ? w : r, f, this.writerReleased);
  }
}
