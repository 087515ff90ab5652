/**
 * A benchmark suite: tinybench for timed tasks, plus measurements a suite records itself (memory,
 * a derived figure). Every suite prints a table and writes its results as JSON under the
 * workspace's bench-results/ so figures can be compared across commits.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Bench } from 'tinybench';
import { currentCommit, machineInfo, type MachineInfo } from './machine.js';
import { workspaceRoot } from './workspace.js';

/** One figure, as written to JSON. */
export interface BenchResult {
  readonly name: string;
  /** e.g. `'ns/op'`, `'bytes'`, `'ns'`. */
  readonly unit: string;
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly samples: number;
}

/** The file a suite writes. */
export interface BenchReport {
  readonly package: string;
  readonly suite: string;
  readonly date: string;
  readonly commit: string | undefined;
  readonly machine: MachineInfo;
  /** How to run it again. */
  readonly command: string;
  readonly results: readonly BenchResult[];
}

export interface TaskOptions {
  /** Operations one call of `fn` performs; results are reported per operation. */
  readonly opsPerCall?: number;
  /** Runs once before the task's iterations (not timed). */
  readonly beforeAll?: () => void;
  /** Runs before each iteration (not timed). */
  readonly beforeEach?: () => void;
  /** Minimum time to sample, ms (default 500; 100 with COCOKIT_BENCH_QUICK=1). */
  readonly time?: number;
}

export interface SuiteContext {
  /** A timed task: `fn` is called repeatedly; its latency (divided by opsPerCall) is reported in ns/op. */
  add(name: string, fn: () => unknown, options?: TaskOptions): void;
  /** A figure the suite measured itself. */
  record(result: BenchResult): void;
}

const quick = () => process.env['COCOKIT_BENCH_QUICK'] === '1';

/**
 * Defines and runs a suite: `define` adds tasks and may record figures; then the timed tasks run,
 * the table is printed and the JSON written to `bench-results/<package>.<suite>.json`.
 */
export async function runSuite(
  packageName: string,
  suite: string,
  define: (s: SuiteContext) => void | Promise<void>,
  options: { readonly outDir?: string } = {},
): Promise<BenchReport> {
  const results: BenchResult[] = [];
  const timed: Array<{ name: string; fn: () => unknown; options: TaskOptions }> = [];
  const ctx: SuiteContext = {
    add: (name, fn, options = {}) => void timed.push({ name, fn, options }),
    record: (r) => void results.push(r),
  };
  await define(ctx);

  for (const t of timed) {
    const bench = new Bench({
      name: t.name,
      time: t.options.time ?? (quick() ? 100 : 500),
      warmupTime: quick() ? 20 : 100,
      retainSamples: false,
    });
    const hooks: { beforeAll?: () => void; beforeEach?: () => void } = {};
    if (t.options.beforeAll) hooks.beforeAll = t.options.beforeAll;
    if (t.options.beforeEach) hooks.beforeEach = t.options.beforeEach;
    bench.add(t.name, t.fn, hooks);
    await bench.run();
    const task = bench.tasks[0];
    const r = task?.result;
    if (!r || r.state !== 'completed') {
      throw new Error(`benchmark ${t.name} did not complete (${r?.state ?? 'no result'})`);
    }
    const per = 1e6 / (t.options.opsPerCall ?? 1); // tinybench reports ms
    results.push({
      name: t.name,
      unit: 'ns/op',
      median: r.latency.p50 * per,
      min: r.latency.min * per,
      max: r.latency.max * per,
      samples: r.latency.samplesCount,
    });
  }

  const root = workspaceRoot(process.cwd());
  const report: BenchReport = {
    package: packageName,
    suite,
    date: new Date().toISOString(),
    commit: currentCommit(root),
    machine: machineInfo(),
    command: `pnpm --filter ${packageName} bench`,
    results,
  };
  printReport(report);
  const dir = options.outDir ?? path.join(root, 'bench-results');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${packageName.replace(/^@cocokit\//, '')}.${suite}.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`wrote ${path.relative(process.cwd(), file)}`);
  return report;
}

const fmt = (n: number): string =>
  n >= 1e6 ? n.toExponential(3) : n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(2) : n.toPrecision(3);

/** Prints a report as a table. */
export function printReport(report: BenchReport): void {
  const m = report.machine;
  console.log(`\n${report.package} · ${report.suite}  (${m.cpu}, ${m.cores} cores, node ${m.node})`);
  console.table(
    report.results.map((r) => ({
      name: r.name,
      unit: r.unit,
      median: fmt(r.median),
      min: fmt(r.min),
      max: fmt(r.max),
      samples: r.samples,
    })),
  );
}
