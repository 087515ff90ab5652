import { describe, expect, it } from 'vitest';
import { createRng } from './rng.js';
import { ActorQueue } from './actor-queue.js';

interface Item {
  id: number;
  now: number;
}

describe('ActorQueue', () => {
  it('pops by clock, ties by id', () => {
    const q = new ActorQueue<Item>();
    expect(q.peek()).toBeUndefined();
    expect(q.pop()).toBeUndefined();
    expect(q.secondNow()).toBe(Infinity);
    for (const [id, now] of [
      [3, 10],
      [1, 10],
      [2, 5],
      [0, 20],
    ] as const) q.push({ id, now });
    expect(q.size).toBe(4);
    expect(q.secondNow()).toBe(10);
    const out: number[] = [];
    for (let x = q.pop(); x !== undefined; x = q.pop()) out.push(x.id);
    expect(out).toEqual([2, 1, 3, 0]);
  });

  it('matches a sort under random pushes, pops and top updates', () => {
    const rng = createRng(1);
    const q = new ActorQueue<Item>();
    const ref: Item[] = [];
    let id = 0;
    const key = (a: Item, b: Item) => a.now - b.now || a.id - b.id;
    for (let step = 0; step < 5000; step++) {
      const op = rng.int(0, 3);
      if (op === 0 || ref.length === 0) {
        const it = { id: id++, now: rng.int(0, 50) };
        q.push(it);
        ref.push(it);
      } else if (op === 1) {
        ref.sort(key);
        expect(q.pop()).toBe(ref.shift());
      } else {
        const top = q.peek()!;
        top.now += rng.int(0, 20);
        q.topChanged();
      }
      ref.sort(key);
      expect(q.peek()).toBe(ref[0]);
      expect(q.items()).toHaveLength(ref.length);
    }
  });
});
