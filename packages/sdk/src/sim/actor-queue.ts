/**
 * The scheduler's run queue: a binary min-heap (Williams 1964; CLRS ch. 6) of actors ordered by
 * (clock, id). Ids are given in spawn order, so equal clocks resolve to the earlier-spawned actor
 * and every run is reproducible. push/pop/replaceTop are O(log n); peek is O(1).
 */

/** What the queue orders by. */
export interface Queued {
  readonly id: number;
  readonly now: number;
}

const before = (x: Queued, y: Queued): boolean => x.now < y.now || (x.now === y.now && x.id < y.id);

/** A min-heap of actors by (now, id). */
export class ActorQueue<T extends Queued> {
  private readonly heap: T[] = [];

  get size(): number {
    return this.heap.length;
  }

  /** The earliest actor, or undefined when empty. */
  peek(): T | undefined {
    return this.heap[0];
  }

  /**
   * The earliest clock among the entries other than the top: the top's two children. Lets the
   * running actor (kept at the top during its step) learn whether anyone else is behind it.
   */
  secondNow(): number {
    const h = this.heap;
    const l = h[1];
    const r = h[2];
    if (l === undefined) return Infinity;
    if (r === undefined) return l.now;
    return l.now < r.now ? l.now : r.now;
  }

  push(item: T): void {
    const h = this.heap;
    h.push(item);
    this.siftUp(h.length - 1);
  }

  /** Removes and returns the earliest actor. */
  pop(): T | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last !== undefined) {
      h[0] = last;
      this.siftDown(0);
    }
    return top;
  }

  /** Restores order after the top's key grew (one sift instead of a pop and a push). */
  topChanged(): void {
    this.siftDown(0);
  }

  /** Every entry, in no particular order. */
  items(): readonly T[] {
    return this.heap;
  }

  private siftUp(i: number): void {
    const h = this.heap;
    const item = h[i] as T;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = h[p] as T;
      if (!before(item, parent)) break;
      h[i] = parent;
      i = p;
    }
    h[i] = item;
  }

  private siftDown(i: number): void {
    const h = this.heap;
    const n = h.length;
    const item = h[i] as T;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      let c = l;
      if (r < n && before(h[r] as T, h[l] as T)) c = r;
      const child = h[c] as T;
      if (!before(child, item)) break;
      h[i] = child;
      i = c;
    }
    h[i] = item;
  }
}
