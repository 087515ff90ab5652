/**
 * `NumberRangeMap`: a `RangeMap` for number values (the operations the hot per-frame maps
 * use), stored in typed arrays. A run costs 24 bytes (start, end, value as float64s)
 * plus the chunk's slack, instead of a run object, a boxed number and a B+ tree slot (~120 bytes
 * measured): guest_memfd keeps one run per non-coalescing folio and two per isolated conversion,
 * so these are the model's largest structures at 1 TiB, and the 4 KiB conversion path is bound by
 * their lookups.
 *
 * Runs are sorted, disjoint, non-empty and coalesced (two touching runs never hold the same value),
 * kept in chunks of at most `CHUNK` (256) runs. A change rewrites the runs touching its range: in
 * place inside one chunk when they fit, else by rebuilding the chunks it spans.
 * Values are numbers compared with `===` (no NaN).
 */
import { KvmError, ModelInvariantError } from './errors.js';

/** Runs per chunk: lookups binary-search the chunk list, then one chunk. */
const CHUNK = 256;
const NO_END = Number.MAX_SAFE_INTEGER;

interface Chunk {
  n: number;
  /** Arrays grow by doubling up to CHUNK, so a map of a few runs stays small. */
  s: Float64Array;
  e: Float64Array;
  v: Float64Array;
}

/** One run, as {@link NumberRangeMap} hands it out (a fresh object). */
export interface NumberRun {
  readonly start: number;
  readonly end: number;
  readonly value: number;
}

// Scratch for the (at most three) runs a change writes, shared by every map: a change runs no
// foreign code, so it is never re-entered.
const OS = new Float64Array(4);
const OE = new Float64Array(4);
const OV = new Float64Array(4);

/** EINVAL unless `x` is a frame number, as `RangeMap` answers for a NaN, fractional or negative key. */
function checkFrame(op: string, x: number): void {
  if (!Number.isSafeInteger(x) || x < 0) throw new KvmError('EINVAL', op, `frame ${x} is not a non-negative safe integer`);
}

function newChunk(capacity: number): Chunk {
  return { n: 0, s: new Float64Array(capacity), e: new Float64Array(capacity), v: new Float64Array(capacity) };
}

function grow(c: Chunk, need: number): void {
  let cap = c.s.length;
  while (cap < need) cap *= 2;
  cap = Math.min(cap, CHUNK);
  for (const k of ['s', 'e', 'v'] as const) {
    const a = new Float64Array(cap);
    a.set(c[k].subarray(0, c.n));
    c[k] = a;
  }
}

/** Half-open frame ranges → numbers, coalesced, in typed arrays. */
export class NumberRangeMap {
  private chunks: Chunk[] = [];
  /**
   * The last chunk of a map that went empty, kept for the next insert: maps that empty and refill
   * all the time (a buddy allocator's free list of one order) would otherwise allocate three typed
   * arrays per refill.
   */
  private spare: Chunk | undefined;
  /** First start of each chunk, for the top-level search (contiguous, so it stays in cache). */
  private firsts: number[] = [];
  private count_ = 0;
  /** Result of `locate`: chunk and position of the last run starting at or before a frame (-1, -1 if none). */
  private lk = -1;
  private lp = -1;
  /** The last `locate` (frame, answer) and the change count it is valid for: a conversion looks its start up twice. */
  private memoX = Number.NaN;
  private memoK = -1;
  private memoP = -1;
  private memoVersion = -1;
  private version = 0;

  /** Runs stored. */
  get runCount(): number {
    return this.count_;
  }

  /** Sets `lk`/`lp` to the last run with start <= x. */
  private locate(x: number): void {
    if (x === this.memoX && this.version === this.memoVersion) {
      this.lk = this.memoK;
      this.lp = this.memoP;
      return;
    }
    this.locateUncached(x);
    this.memoX = x;
    this.memoK = this.lk;
    this.memoP = this.lp;
    this.memoVersion = this.version;
  }

  private locateUncached(x: number): void {
    const fs = this.firsts;
    let lo = 0;
    let hi = fs.length - 1;
    if (hi < 0 || fs[0]! > x) {
      this.lk = -1;
      this.lp = -1;
      return;
    }
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (fs[mid]! <= x) lo = mid;
      else hi = mid - 1;
    }
    const c = this.chunks[lo]!;
    const s = c.s;
    let a = 0;
    let b = c.n - 1;
    while (a < b) {
      const mid = (a + b + 1) >>> 1;
      if (s[mid]! <= x) a = mid;
      else b = mid - 1;
    }
    this.lk = lo;
    this.lp = a;
  }

  /** The value at `x`, or `undefined`. */
  get(x: number): number | undefined {
    checkFrame('NumberRangeMap.get', x);
    this.locate(x);
    if (this.lk < 0) return undefined;
    const c = this.chunks[this.lk]!;
    return c.e[this.lp]! > x ? c.v[this.lp] : undefined;
  }

  /** Whether `x` has a value. */
  has(x: number): boolean {
    return this.get(x) !== undefined;
  }

  /** The (unclipped) run holding `x`, or `undefined`. */
  runAt(x: number): NumberRun | undefined {
    checkFrame('NumberRangeMap.runAt', x);
    this.locate(x);
    if (this.lk < 0) return undefined;
    const c = this.chunks[this.lk]!;
    const p = this.lp;
    return c.e[p]! > x ? { start: c.s[p]!, end: c.e[p]!, value: c.v[p]! } : undefined;
  }

  /** End of the run holding `x`, or -1; its value is left in `valueAtLast` (a lookup without allocation). */
  endOfRunAt(x: number): number {
    checkFrame('NumberRangeMap.endOfRunAt', x);
    this.locate(x);
    if (this.lk < 0) return -1;
    const c = this.chunks[this.lk]!;
    const p = this.lp;
    if (c.e[p]! <= x) return -1;
    this.valueAtLast = c.v[p]!;
    return c.e[p]!;
  }

  /** The value of the run `endOfRunAt` last found. */
  valueAtLast = 0;

  /** The run with the highest start, or `undefined`. */
  lastRun(): NumberRun | undefined {
    const c = this.chunks[this.chunks.length - 1];
    if (c === undefined) return undefined;
    const p = c.n - 1;
    return { start: c.s[p]!, end: c.e[p]!, value: c.v[p]! };
  }

  /** Sets `[start, end)` to `value` (`undefined` clears). */
  set(start: number, end: number, value: number | undefined): void {
    // As RangeMap.set: a malformed range is EINVAL before anything changes; an empty one is a no-op.
    if (!(start >= 0 && end >= start) || !Number.isSafeInteger(start) || !Number.isSafeInteger(end)) {
      throw new KvmError('EINVAL', 'NumberRangeMap.set', `[${start}, ${end}) is not a range of frames`);
    }
    if (start === end) return;
    // The runs touching [start, end]: from the last run starting before `start` (if it reaches
    // `start`) to the last run starting at or before `end`.
    const cs = this.chunks;
    this.locate(start);
    const k0 = this.lk;
    const p0 = this.lp;
    let ka = k0;
    let pa = p0;
    if (ka < 0) {
      ka = 0;
      pa = 0;
    } else if (cs[ka]!.s[pa] === start) {
      // The run before it touches `start` when it ends there.
      const pk = pa > 0 ? ka : ka - 1;
      const pp = pa > 0 ? pa - 1 : pk >= 0 ? cs[pk]!.n - 1 : -1;
      if (pk >= 0 && cs[pk]!.e[pp] === start) {
        ka = pk;
        pa = pp;
      }
    } else if (cs[ka]!.e[pa]! < start) {
      pa++;
      if (pa === cs[ka]!.n) {
        ka++;
        pa = 0;
      }
    }
    // The last run starting at or before `end`: a few steps forward from the run at `start`
    // (a small range), else a lookup of its own.
    let kb = -1;
    let pb = -1;
    if (k0 >= 0) {
      const c = cs[k0]!;
      let p = p0;
      let steps = 0;
      while (p + 1 < c.n && c.s[p + 1]! <= end && steps < 8) {
        p++;
        steps++;
      }
      if (steps < 8 && (p + 1 < c.n || k0 + 1 >= cs.length || this.firsts[k0 + 1]! > end)) {
        kb = k0;
        pb = p;
      }
    }
    if (kb < 0) {
      this.locate(end);
      kb = this.lk;
      pb = this.lp;
    }
    // Affected runs: (ka, pa) .. (kb, pb) inclusive; empty when (ka, pa) is after (kb, pb).
    const empty = kb < 0 || ka > kb || (ka === kb && pa > pb) || ka >= this.chunks.length;
    // Build the replacement: heads of runs before `start`, the new run, tails after `end`.
    let k = 0;
    const os = OS;
    const oe = OE;
    const ov = OV;
    let firstS = 0;
    let firstE = 0;
    let firstV = 0;
    let lastS = 0;
    let lastE = 0;
    let lastV = 0;
    if (!empty) {
      const ca = this.chunks[ka]!;
      firstS = ca.s[pa]!;
      firstE = ca.e[pa]!;
      firstV = ca.v[pa]!;
      const cb = this.chunks[kb]!;
      lastS = cb.s[pb]!;
      lastE = cb.e[pb]!;
      lastV = cb.v[pb]!;
      if (firstS < start) {
        os[k] = firstS;
        oe[k] = firstE < start ? firstE : start;
        ov[k++] = firstV;
      }
    }
    if (value !== undefined) {
      os[k] = start;
      oe[k] = end;
      ov[k++] = value;
    }
    if (!empty && lastE > end) {
      os[k] = lastS > end ? lastS : end;
      oe[k] = lastE;
      ov[k++] = lastV;
    }
    // Coalesce touching equal runs.
    let m = 0;
    for (let i = 0; i < k; i++) {
      if (m > 0 && oe[m - 1] === os[i] && ov[m - 1] === ov[i]) {
        oe[m - 1] = oe[i]!;
      } else {
        os[m] = os[i]!;
        oe[m] = oe[i]!;
        ov[m++] = ov[i]!;
      }
    }
    if (empty) {
      // Nothing touches the range: insert before the first run starting after `start`.
      this.insertAt(this.insertionPoint(start), m);
      return;
    }
    this.replaceRange(ka, pa, kb, pb, m);
  }

  /** Clears `[start, end)`. */
  clear(start: number, end: number): void {
    this.set(start, end, undefined);
  }

  /** Removes every run. */
  clearAll(): void {
    const last = this.chunks[0];
    if (last !== undefined) this.spare = last;
    this.chunks = [];
    this.firsts = [];
    this.count_ = 0;
    this.version++;
  }

  /** Where a run starting at `x` goes when no run touches it: [chunk, pos]. */
  private insertionPoint(x: number): [number, number] {
    this.locate(x);
    if (this.lk < 0) return [0, 0];
    return [this.lk, this.lp + 1];
  }

  private insertAt(at: readonly [number, number], m: number): void {
    if (m === 0) return;
    if (this.chunks.length === 0) {
      const c = this.spare ?? newChunk(4);
      this.spare = undefined;
      c.n = 0;
      this.chunks.push(c);
      this.firsts.push(0);
    }
    let [k, p] = at;
    if (k >= this.chunks.length) {
      k = this.chunks.length - 1;
      p = this.chunks[k]!.n;
    }
    this.replaceRange(k, p, k, p - 1, m);
  }

  /** Replaces runs (ka, pa) .. (kb, pb) inclusive (possibly none: pb = pa - 1 in one chunk) by the m scratch runs. */
  private replaceRange(ka: number, pa: number, kb: number, pb: number, m: number): void {
    this.version++;
    const cs = this.chunks;
    if (ka === kb) {
      const c = cs[ka]!;
      const removed = pb - pa + 1;
      const n2 = c.n - removed + m;
      if (n2 === 0) {
        // The chunk empties: drop it from the index and keep it for the next insert.
        cs.splice(ka, 1);
        this.firsts.splice(ka, 1);
        this.spare = c;
        this.count_ -= removed;
        return;
      }
      if (n2 <= CHUNK) {
        if (n2 > c.s.length) grow(c, n2);
        // In place: shift the tail, write the new runs.
        const from = pb + 1;
        const to = pa + m;
        if (from !== to && from < c.n) {
          c.s.copyWithin(to, from, c.n);
          c.e.copyWithin(to, from, c.n);
          c.v.copyWithin(to, from, c.n);
        }
        for (let i = 0; i < m; i++) {
          c.s[pa + i] = OS[i]!;
          c.e[pa + i] = OE[i]!;
          c.v[pa + i] = OV[i]!;
        }
        c.n = n2;
        this.firsts[ka] = c.s[0]!;
        this.count_ += m - removed;
        return;
      }
    }
    // Rebuild chunks ka..kb: their runs before (ka, pa), the new runs, their runs after (kb, pb).
    const s: number[] = [];
    const e: number[] = [];
    const v: number[] = [];
    const ca = cs[ka]!;
    for (let i = 0; i < pa; i++) {
      s.push(ca.s[i]!);
      e.push(ca.e[i]!);
      v.push(ca.v[i]!);
    }
    for (let i = 0; i < m; i++) {
      s.push(OS[i]!);
      e.push(OE[i]!);
      v.push(OV[i]!);
    }
    const cb = cs[kb]!;
    for (let i = pb + 1; i < cb.n; i++) {
      s.push(cb.s[i]!);
      e.push(cb.e[i]!);
      v.push(cb.v[i]!);
    }
    let before = 0;
    for (let k = ka; k <= kb; k++) before += cs[k]!.n;
    const fresh: Chunk[] = [];
    // Even chunks with room left (a full chunk split in two halves), so inserts stay in place.
    const per = Math.ceil(s.length / Math.ceil(s.length / (CHUNK - CHUNK / 8)));
    for (let i = 0; i < s.length; i += per) {
      const n = Math.min(per, s.length - i);
      let cap = 4;
      while (cap < 2 * n && cap < CHUNK) cap *= 2;
      const c = newChunk(cap);
      for (let j = 0; j < n; j++) {
        c.s[j] = s[i + j]!;
        c.e[j] = e[i + j]!;
        c.v[j] = v[i + j]!;
      }
      c.n = n;
      fresh.push(c);
    }
    if (fresh.length === 0 && cs.length === kb - ka + 1) this.spare = cs[ka];
    cs.splice(ka, kb - ka + 1, ...fresh);
    this.firsts.splice(ka, kb - ka + 1, ...fresh.map((c) => c.s[0]!));
    this.count_ += s.length - before;
  }

  /** Applies `f` to every piece of `[start, end)` (gaps as `undefined`), as `RangeMap.update`. */
  update(start: number, end: number, f: (old: number | undefined) => number | undefined): void {
    const ps: number[] = [];
    const pe: number[] = [];
    const pv: Array<number | undefined> = [];
    let cursor = start;
    for (const r of this.runs(start, end)) {
      if (r.start > cursor) {
        ps.push(cursor);
        pe.push(r.start);
        pv.push(f(undefined));
      }
      ps.push(r.start);
      pe.push(r.end);
      pv.push(f(r.value));
      cursor = r.end;
    }
    if (cursor < end) {
      ps.push(cursor);
      pe.push(end);
      pv.push(f(undefined));
    }
    for (let i = 0; i < ps.length; i++) this.set(ps[i]!, pe[i]!, pv[i]);
  }

  /** The runs intersecting `[start, end)`, clipped, in order; safe against changes during iteration. */
  *runs(start = 0, end: number = NO_END): IterableIterator<NumberRun> {
    let cursor = start;
    while (cursor < end) {
      this.locate(cursor);
      let k = this.lk;
      let p = this.lp;
      if (k < 0) {
        k = 0;
        p = 0;
      } else if (this.chunks[k]!.e[p]! <= cursor) {
        p++;
      }
      if (k < this.chunks.length && p >= this.chunks[k]!.n) {
        k++;
        p = 0;
      }
      const c = this.chunks[k];
      if (c === undefined) return;
      const rs = c.s[p]!;
      if (rs >= end) return;
      const re = c.e[p]!;
      const s = rs < cursor ? cursor : rs;
      const e = re > end ? end : re;
      const v = c.v[p]!;
      cursor = e;
      yield { start: s, end: e, value: v };
    }
  }

  /** Frames of `[start, end)` with a value (matching `predicate`). */
  count(start: number, end: number, predicate?: (v: number) => boolean): number {
    let n = 0;
    for (const r of this.runs(start, end)) if (predicate === undefined || predicate(r.value)) n += r.end - r.start;
    return n;
  }

  /** The first frame of `[start, end)` with a value (matching `predicate`), or `undefined`. */
  firstWith(start: number, end: number, predicate?: (v: number) => boolean): number | undefined {
    for (const r of this.runs(start, end)) if (predicate === undefined || predicate(r.value)) return r.start;
    return undefined;
  }

  /** The first frame of `[start, end)` without a value, or `undefined`. */
  firstWithout(start: number, end: number): number | undefined {
    let cursor = start;
    for (const r of this.runs(start, end)) {
      if (r.start > cursor) return cursor;
      cursor = r.end;
    }
    return cursor < end ? cursor : undefined;
  }

  /** Whether every frame of `[start, end)` holds `value` (`undefined`: none has a value). */
  isUniform(start: number, end: number, value: number | undefined): boolean {
    if (start >= end) return true;
    if (value === undefined) {
      // The last run starting before `end` decides: runs are sorted and disjoint.
      this.locate(end - 1);
      return this.lk < 0 || this.chunks[this.lk]!.e[this.lp]! <= start;
    }
    const e = this.endOfRunAt(start);
    return e >= end && this.valueAtLast === value;
  }

  /** Sorted, disjoint, non-empty, coalesced runs; chunk counts add up. */
  checkInvariants(): void {
    const fail = (d: string): never => {
      throw new ModelInvariantError('sdk.number-range-map', d);
    };
    let n = 0;
    let prevE = -1;
    let prevV = Number.NaN;
    if (this.firsts.length !== this.chunks.length) fail(`${this.firsts.length} chunk starts for ${this.chunks.length} chunks`);
    for (const [k, c] of this.chunks.entries()) {
      if (c.n <= 0 || c.n > CHUNK) fail(`chunk holds ${c.n} runs`);
      if (this.firsts[k] !== c.s[0]) fail(`chunk ${k} starts at ${c.s[0]}, its index says ${this.firsts[k]}`);
      for (let i = 0; i < c.n; i++) {
        const s = c.s[i]!;
        const e = c.e[i]!;
        if (!(s < e)) fail(`run [${s}, ${e}) is empty`);
        if (s < prevE) fail(`run at ${s} overlaps the previous one ending at ${prevE}`);
        if (s === prevE && c.v[i] === prevV) fail(`runs at ${s} are not coalesced`);
        prevE = e;
        prevV = c.v[i]!;
        n++;
      }
    }
    if (n !== this.count_) fail(`${n} runs, counter says ${this.count_}`);
  }
}

/** A {@link NumberRangeMap} over a few named values (stored as their index in `values`). */
export class EnumRangeMap<V> {
  private readonly m = new NumberRangeMap();
  private readonly values: readonly V[];

  constructor(values: readonly V[]) {
    this.values = values;
  }

  private code(v: V): number {
    const i = this.values.indexOf(v);
    if (i < 0) throw new ModelInvariantError('sdk.enum-range-map', `value ${String(v)} is not one of the map's`);
    return i;
  }

  get runCount(): number {
    return this.m.runCount;
  }

  get(x: number): V | undefined {
    const c = this.m.get(x);
    return c === undefined ? undefined : this.values[c];
  }

  /** The value of every frame of `[start, end)` when they all hold the same one, else `undefined` (one lookup, no allocation). */
  uniformValue(start: number, end: number): V | undefined {
    const e = this.m.endOfRunAt(start);
    return e >= end ? this.values[this.m.valueAtLast] : undefined;
  }

  runAt(x: number): { start: number; end: number; value: V } | undefined {
    const r = this.m.runAt(x);
    return r === undefined ? undefined : { start: r.start, end: r.end, value: this.values[r.value]! };
  }

  lastRun(): { start: number; end: number; value: V } | undefined {
    const r = this.m.lastRun();
    return r === undefined ? undefined : { start: r.start, end: r.end, value: this.values[r.value]! };
  }

  set(start: number, end: number, value: V | undefined): void {
    this.m.set(start, end, value === undefined ? undefined : this.code(value));
  }

  *runs(start = 0, end: number = NO_END): IterableIterator<{ start: number; end: number; value: V }> {
    for (const r of this.m.runs(start, end)) yield { start: r.start, end: r.end, value: this.values[r.value]! };
  }

  count(start: number, end: number, predicate?: (v: V) => boolean): number {
    return this.m.count(start, end, predicate === undefined ? undefined : (c) => predicate(this.values[c]!));
  }

  firstWithout(start: number, end: number): number | undefined {
    return this.m.firstWithout(start, end);
  }

  isUniform(start: number, end: number, value: V | undefined): boolean {
    return this.m.isUniform(start, end, value === undefined ? undefined : this.values.indexOf(value));
  }

  checkInvariants(): void {
    this.m.checkInvariants();
  }
}
