/**
 * A statistics sink: how many of each event, and log2 histograms of durations and of chosen
 * numeric fields. Power-of-two buckets (as in the kernel's BPF `hist()` / bpftrace `hist()`) cost
 * one `clz32` per sample, keep a bounded size for any range of values from 1 ns to hours, and are
 * exact enough to read latency distributions that span orders of magnitude.
 */
import type { TraceEvent, TraceSink } from './types.js';

/** One bucket of a {@link Histogram}: samples in [lo, hi). */
export interface HistogramBucket {
  readonly lo: number;
  readonly hi: number;
  readonly count: number;
}

/** A log2 histogram: bucket 0 holds values below 1, bucket k holds [2^(k-1), 2^k). */
export interface Histogram {
  readonly count: number;
  readonly sum: number;
  readonly min: number;
  readonly max: number;
  readonly mean: number;
  /** Non-empty buckets, ascending. */
  readonly buckets: readonly HistogramBucket[];
  /**
   * An upper bound of the q-quantile (0 <= q <= 1): the top of the bucket holding it, capped by
   * `max`. Within a factor of two of the exact value, by construction.
   */
  quantile(q: number): number;
}

/** Options of {@link createCounters}. */
export interface CountersOptions {
  /** Keep a histogram of `dur` for every event name that has a duration. Default true. */
  readonly durations?: boolean;
  /** Numeric fields to histogram, per event name: `{ 'gmem.punch_hole': ['npages'] }`. */
  readonly fields?: Readonly<Record<string, readonly string[]>>;
}

/** The counters sink. */
export interface Counters extends TraceSink {
  /** Events seen in all. */
  readonly total: number;
  /** Events called `name` seen. */
  count(name: string): number;
  /** Count per event name, sorted by name. */
  counts(): Array<readonly [name: string, count: number]>;
  /** The histogram of `field` of `name`, or of its durations when `field` is omitted; undefined if nothing was recorded. */
  histogram(name: string, field?: string): Histogram | undefined;
  /** A readable table: one line per event name, one indented line per histogram. */
  summary(): string;
  reset(): void;
}

class Log2Histogram implements Histogram {
  count = 0;
  sum = 0;
  min = Infinity;
  max = -Infinity;
  private readonly bins: number[] = [];

  add(v: number): void {
    this.count++;
    this.sum += v;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
    let k: number;
    if (v < 1) k = 0;
    else if (v < 4294967296) k = 32 - Math.clz32(v); // floor(log2 v) + 1, for v >= 1
    else k = Math.floor(Math.log2(v)) + 1;
    while (this.bins.length <= k) this.bins.push(0);
    this.bins[k] = (this.bins[k] as number) + 1;
  }

  get mean(): number {
    return this.count === 0 ? 0 : this.sum / this.count;
  }

  get buckets(): HistogramBucket[] {
    const out: HistogramBucket[] = [];
    this.bins.forEach((count, k) => {
      if (count > 0) out.push({ lo: k === 0 ? -Infinity : 2 ** (k - 1), hi: 2 ** k, count });
    });
    return out;
  }

  quantile(q: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.max(1, Math.ceil(Math.min(Math.max(q, 0), 1) * this.count));
    let seen = 0;
    for (let k = 0; k < this.bins.length; k++) {
      seen += this.bins[k] as number;
      if (seen >= rank) return Math.min(2 ** k, this.max);
    }
    return this.max;
  }
}

const DUR = '\0dur';

const fmt = (n: number): string => (Number.isInteger(n) ? String(n) : n.toFixed(1));

/**
 * A counters sink: `sim.trace.attach(createCounters({ fields: { 'mmu.fault': ['level'] } }))`.
 */
export function createCounters(options: CountersOptions = {}): Counters {
  const durations = options.durations ?? true;
  const wanted = new Map(Object.entries(options.fields ?? {}));
  let total = 0;
  const counts = new Map<string, number>();
  const hists = new Map<string, Map<string, Log2Histogram>>();

  const hist = (name: string, key: string): Log2Histogram => {
    let byKey = hists.get(name);
    if (byKey === undefined) hists.set(name, (byKey = new Map()));
    let h = byKey.get(key);
    if (h === undefined) byKey.set(key, (h = new Log2Histogram()));
    return h;
  };

  return {
    get total() {
      return total;
    },
    event(e: TraceEvent): void {
      total++;
      counts.set(e.name, (counts.get(e.name) ?? 0) + 1);
      if (durations && e.dur > 0) hist(e.name, DUR).add(e.dur);
      const fields = wanted.get(e.name);
      if (fields !== undefined) {
        for (const f of fields) {
          const v = (e.fields as Record<string, unknown>)[f];
          if (typeof v === 'number' && Number.isFinite(v)) hist(e.name, f).add(v);
        }
      }
    },
    count: (name) => counts.get(name) ?? 0,
    counts: () => [...counts.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    histogram: (name, field) => hists.get(name)?.get(field ?? DUR),
    summary(): string {
      const rows = [...counts.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const width = Math.max(5, ...rows.map(([n]) => n.length));
      const lines = [`${'event'.padEnd(width)}  count   (${total} events)`];
      for (const [name, n] of rows) {
        lines.push(`${name.padEnd(width)}  ${n}`);
        for (const [key, h] of hists.get(name) ?? []) {
          const label = key === DUR ? 'dur ns' : key;
          lines.push(
            `${''.padEnd(width)}    ${label}: n=${h.count} mean=${fmt(h.mean)} min=${fmt(h.min)} ` +
              `p50<=${fmt(h.quantile(0.5))} p99<=${fmt(h.quantile(0.99))} max=${fmt(h.max)}`,
          );
        }
      }
      return lines.join('\n');
    },
    reset(): void {
      total = 0;
      counts.clear();
      hists.clear();
    },
  };
}
