/**
 * Actors: a vCPU or a host thread, with its own virtual clock (DESIGN.md, "The simulation
 * kernel"), and the error an actor's failure becomes when it leaves the scheduler.
 */
import type { Actor, ActorState, ActorYield } from './types.js';

/** The scheduler's record of an actor. Only the sim writes its fields; the world sees {@link Actor}. */
export class SimActor implements Actor {
  readonly id: number;
  readonly name: string;
  readonly body: (() => Iterator<ActorYield>) | undefined;
  /** ns. */
  now: number;
  state: ActorState = 'runnable';
  waitedNs = 0;
  busyNs = 0;
  sleptNs = 0;
  /** Created on the first step, so a body's own setup code runs as this actor. */
  iterator: Iterator<ActorYield> | undefined = undefined;

  constructor(id: number, name: string, now: number, body: (() => Iterator<ActorYield>) | undefined) {
    this.id = id;
    this.name = name;
    this.now = now;
    this.body = body;
  }
}

/**
 * An exception thrown inside an actor's body, as it leaves {@link Sim.runUntilIdle}: the message
 * names the actor and its clock; `cause` is the original error (a {@link KvmError} stays matchable
 * with `isKvmError(e.cause, ...)`). Matched by name, like every cocokit error.
 */
export class SimActorError extends Error {
  override readonly name = 'SimActorError' as const;
  /** The failing actor's name. */
  readonly actor: string;
  readonly actorId: number;
  /** The actor's clock when it failed, ns. */
  readonly atNs: number;

  constructor(actor: Actor, cause: unknown) {
    const what = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    super(`actor '${actor.name}' (#${actor.id}) failed at ${actor.now} ns: ${what}`, { cause });
    this.actor = actor.name;
    this.actorId = actor.id;
    this.atNs = actor.now;
  }
}

/** Whether `e` is a {@link SimActorError}, by name rather than class. */
export function isSimActorError(e: unknown): e is SimActorError {
  return typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'SimActorError';
}
