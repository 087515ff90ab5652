/**
 * The simulation's seeded random source. Runs must be reproducible from one seed, and workloads
 * draw millions of numbers, so the generator is small, fast and statistically sound:
 *
 * - **sfc32**, Chris Doty-Humphrey's "Small Fast Counting" generator from PractRand (public
 *   domain; passes PractRand to 2^40+ bytes and BigCrush). Four 32-bit words of state, only
 *   32-bit adds, shifts and xors, so it stays in V8's Smi/int32 fast paths. The 32-bit counter
 *   word guarantees a period of at least 2^32 from any seed.
 * - **splitmix32** expands a seed into the state: a Weyl sequence (golden-ratio increment) through
 *   an integer finaliser with constants from Chris Wellons' hash-prospector, so nearby seeds give
 *   unrelated states. As PractRand's own seeding does, the first outputs are discarded.
 * - **FNV-1a** (Fowler–Noll–Vo, 32-bit) hashes a {@link Rng.fork} label, so a stream is a pure
 *   function of (seed, label) and forking never consumes numbers from the parent.
 */
import { KvmError } from '../errors.js';
import type { Rng } from './types.js';

const TWO_32 = 4294967296;
const TWO_53 = 9007199254740992;

/** One step of splitmix32 on `state`; returns the mixed value (unsigned). */
function splitmix32(state: number): number {
  let z = (state + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
  z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
  return (z ^ (z >>> 15)) >>> 0;
}

/** FNV-1a over the UTF-16 code units of `s` (offset basis 2166136261, prime 16777619). */
function fnv1a32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  }
  return h >>> 0;
}

/** Folds a safe-integer seed (which may exceed 32 bits) into 32 bits without losing either half. */
function fold(seed: number): number {
  const lo = seed >>> 0;
  const hi = Math.floor(seed / TWO_32) >>> 0;
  return splitmix32(lo ^ splitmix32(hi));
}

class Sfc32Rng implements Rng {
  readonly seed: number;
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    this.seed = seed;
    const s = fold(seed);
    this.a = splitmix32(s);
    this.b = splitmix32(s + 1);
    this.c = splitmix32(s + 2);
    this.d = 1;
    // PractRand's sfc32::seed runs 12 rounds before the first output; do the same.
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** The next 32 random bits, unsigned. */
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  next(): number {
    return this.u32() / TWO_32;
  }

  int(min: number, max: number): number {
    if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || min >= max || max - min > TWO_53) {
      throw new KvmError('EINVAL', 'rng.int', `[${min}, ${max}) is not a non-empty range of safe integers`);
    }
    const span = max - min;
    // Rejection sampling keeps every value exactly equally likely: `floor(next() * span)` would
    // favour some values by up to a factor of two when span is near 2^32.
    if (span <= TWO_32) {
      const limit = TWO_32 - (TWO_32 % span);
      for (;;) {
        const r = this.u32();
        if (r < limit) return min + (r % span);
      }
    }
    const limit = TWO_53 - (TWO_53 % span);
    for (;;) {
      const r = (this.u32() >>> 11) * TWO_32 + this.u32(); // 21 + 32 = 53 bits, exact in a double
      if (r < limit) return min + (r % span);
    }
  }

  chance(p: number): boolean {
    if (!(p >= 0 && p <= 1)) throw new KvmError('EINVAL', 'rng.chance', `probability ${p} is not in [0, 1]`);
    return this.next() < p;
  }

  fork(label: string): Rng {
    return new Sfc32Rng(splitmix32(fold(this.seed) ^ fnv1a32(label)));
  }
}

/**
 * A seeded {@link Rng} (sfc32 seeded through splitmix32). The same seed always gives the same
 * sequence, on every platform.
 *
 * @param seed any safe integer (negative and above 2^32 included); anything else is EINVAL.
 */
export function createRng(seed: number): Rng {
  if (!Number.isSafeInteger(seed)) {
    throw new KvmError('EINVAL', 'createRng', `seed ${seed} is not a safe integer`);
  }
  return new Sfc32Rng(seed);
}
