import { describe, expect, it } from 'vitest';
import { isModelInvariantError } from '../errors.js';
import { createRingBuffer } from '../trace/ring.js';
import { createSim } from './sim.js';
import type { Lock, RwLock, Sim } from './types.js';

/** `n` actors, each running `f(i)` in a single step. */
function spawnEach(sim: Sim, n: number, f: (i: number) => void) {
  return Array.from({ length: n }, (_, i) =>
    // eslint-disable-next-line require-yield -- a one-step actor: its work is its single step
    sim.spawn(`a${i}`, function* () {
      f(i);
    }),
  );
}

describe('Lock', () => {
  it('returns the same lock for the same name', () => {
    const sim = createSim();
    expect(sim.lock('slots_lock')).toBe(sim.lock('slots_lock'));
    expect(sim.rwlock('mmu_lock')).toBe(sim.rwlock('mmu_lock'));
    expect(sim.lock('a')).not.toBe(sim.lock('b'));
    expect(sim.lock('slots_lock').name).toBe('slots_lock');
  });

  it('contention: N actors on ONE lock finish at c, 2c, ..., N·c; on N locks all at c', () => {
    const N = 8;
    const c = 250;
    const shared = createSim();
    const one = spawnEach(shared, N, () => shared.lock('L').with(() => shared.advance(c)));
    shared.runUntilIdle();
    expect(one.map((a) => a.now)).toEqual(Array.from({ length: N }, (_, i) => (i + 1) * c));
    expect(one.map((a) => a.waitedNs)).toEqual(Array.from({ length: N }, (_, i) => i * c));
    expect(Math.max(...one.map((a) => a.now))).toBe(N * c);
    expect(shared.lock('L').stats).toEqual({
      acquisitions: N,
      contended: N - 1,
      waitedNs: (c * N * (N - 1)) / 2,
      heldNs: N * c,
      outOfOrder: 0,
    });

    const distinct = createSim();
    const many = spawnEach(distinct, N, (i) => distinct.lock(`L${i}`).with(() => distinct.advance(c)));
    distinct.runUntilIdle();
    expect(many.map((a) => a.now)).toEqual(new Array(N).fill(c));
    expect(many.map((a) => a.waitedNs)).toEqual(new Array(N).fill(0));
    // the difference is exactly the serialisation: (N - 1) · c for the last one
    expect(Math.max(...one.map((a) => a.now)) - Math.max(...many.map((a) => a.now))).toBe((N - 1) * c);
  });

  it('does not wait when the lock is already free at the acquirer\'s clock', () => {
    const sim = createSim();
    const l = sim.lock('L');
    const [a] = spawnEach(sim, 1, () => {
      sim.advance(150);
      l.with(() => sim.advance(10));
    });
    l.with(() => sim.advance(100)); // vmm holds [0, 100)
    sim.runUntilIdle();
    expect(a).toMatchObject({ now: 160, waitedNs: 0 });
    expect(l.stats.contended).toBe(0);
  });

  it('releases when the critical section throws', () => {
    const sim = createSim();
    const l = sim.lock('L');
    expect(() =>
      l.with(() => {
        sim.advance(40);
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(l.stats.heldNs).toBe(40);
    expect(l.with(() => 'again')).toBe('again'); // not still held: no recursion error
    expect(l.stats.heldNs).toBe(40); // released at 40, by the vmm actor's clock
  });

  it('taking a lock one already holds is a model bug', () => {
    const sim = createSim();
    const l = sim.lock('L');
    let err: unknown;
    try {
      l.with(() => l.with(() => 0));
    } catch (e) {
      err = e;
    }
    expect(isModelInvariantError(err)).toBe(true);
    expect(err).toMatchObject({ invariant: 'sim.lock-recursion' });
    const rw = sim.rwlock('RW');
    expect(() => rw.read(() => rw.read(() => 0))).toThrow(expect.objectContaining({ invariant: 'sim.lock-recursion' }));
    expect(() => rw.read(() => rw.write(() => 0))).toThrow(expect.objectContaining({ invariant: 'sim.lock-recursion' }));
    // different locks nest fine, and the outer one is released after the failure above
    expect(l.with(() => rw.write(() => 7))).toBe(7);
  });

  it('a name is one kind of lock', () => {
    const sim = createSim();
    sim.lock('x');
    sim.rwlock('y');
    expect(() => sim.rwlock('x')).toThrow(expect.objectContaining({ invariant: 'sim.lock-kind' }));
    expect(() => sim.lock('y')).toThrow(expect.objectContaining({ invariant: 'sim.lock-kind' }));
  });

  it('counts acquisitions made while another actor was earlier (outOfOrder)', () => {
    const sim = createSim();
    const l: Lock = sim.lock('L');
    // a0 charges 100 in its step before taking the lock while a1 is still at 0: the timeline serves
    // a0 first, so a1 (virtually earlier, at 0) waits until 110 — the documented approximation.
    const [a0, a1] = spawnEach(sim, 2, (i) => {
      if (i === 0) sim.advance(100);
      l.with(() => sim.advance(10));
    });
    sim.runUntilIdle();
    expect(l.stats.outOfOrder).toBe(1);
    expect([a0!.now, a1!.now, a1!.waitedNs]).toEqual([110, 120, 110]);
  });

  it('emits sim.lock_wait spanning the wait when tracing', () => {
    const sim = createSim();
    const ring = createRingBuffer(16);
    sim.trace.attach(ring);
    spawnEach(sim, 2, () => sim.lock('L').with(() => sim.advance(30)));
    sim.runUntilIdle();
    expect(ring.filter('sim.lock_wait')).toEqual([
      { name: 'sim.lock_wait', ts: 0, dur: 30, actorId: 2, actor: 'a1', fields: { lock: 'L', mode: 'exclusive' } },
    ]);
  });
});

describe('RwLock', () => {
  const c = 100;

  it('readers overlap', () => {
    const sim = createSim();
    const rw: RwLock = sim.rwlock('mmu_lock');
    const readers = spawnEach(sim, 4, () => rw.read(() => sim.advance(c)));
    sim.runUntilIdle();
    expect(readers.map((a) => [a.now, a.waitedNs])).toEqual(new Array(4).fill([c, 0]));
    expect(rw.stats).toMatchObject({ acquisitions: 4, contended: 0, heldNs: 4 * c });
  });

  it('a writer waits for the readers, and writers serialise', () => {
    const sim = createSim();
    const rw = sim.rwlock('mmu_lock');
    const actors = spawnEach(sim, 4, (i) => (i < 2 ? rw.read(() => sim.advance(c * (i + 1))) : rw.write(() => sim.advance(c))));
    sim.runUntilIdle();
    // readers [0,100) and [0,200); writer 1 starts after the last reader; writer 2 after writer 1
    expect(actors.map((a) => a.now)).toEqual([c, 2 * c, 3 * c, 4 * c]);
    expect(actors.map((a) => a.waitedNs)).toEqual([0, 0, 2 * c, 3 * c]);
    expect(rw.stats).toMatchObject({ contended: 2, waitedNs: 5 * c });
  });

  it('readers wait for a writer, including one queued behind readers (qrwlock fairness)', () => {
    const sim = createSim();
    const rw = sim.rwlock('mmu_lock');
    const kinds = ['r', 'w', 'r', 'r'];
    const actors = spawnEach(sim, 4, (i) => (kinds[i] === 'r' ? rw.read(() => sim.advance(c)) : rw.write(() => sim.advance(c))));
    sim.runUntilIdle();
    // r0 [0,100); w waits for r0, holds [100,200); r2 and r3 queue behind w and then overlap
    expect(actors.map((a) => a.now)).toEqual([c, 2 * c, 3 * c, 3 * c]);
    expect(actors.map((a) => a.waitedNs)).toEqual([0, c, 2 * c, 2 * c]);
  });

  it('releases on throw, in both modes', () => {
    const sim = createSim();
    const rw = sim.rwlock('RW');
    expect(() => rw.write(() => { sim.advance(5); throw new Error('w'); })).toThrow('w');
    expect(() => rw.read(() => { sim.advance(5); throw new Error('r'); })).toThrow('r');
    expect(rw.write(() => sim.now)).toBe(10);
    expect(rw.stats).toMatchObject({ acquisitions: 3, heldNs: 10 });
  });
});
