/**
 * The `cocokit` command line (commander): one command per experiment, whose options map onto the
 * experiment's zod schema, plus `run SCENARIO.json` to run experiments from a file. Every command
 * takes `--json`, `--trace FILE` and `--out DIR`; it writes the charts as SVG beside a markdown
 * summary and a self-contained HTML report in DIR, prints the tables (or one JSON document), and returns an exit code instead of
 * calling process.exit, so tests drive it in-process.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { z } from 'zod';
import type { Experiment, ExperimentIo, ExperimentResult } from './experiment.js';
import { formatSize } from './params.js';
import { createProgress } from './progress.js';
import { renderChartSvg } from './render/chart.js';
import { renderHtmlReport } from './render/html.js';
import { renderSummary } from './render/markdown.js';
import { renderTextTable } from './render/table.js';
import { createTraceCollector, type TraceCollector } from './trace.js';

/** Where the CLI reads and writes. */
export interface CliEnv {
  readonly stdout: { write(s: string): unknown };
  /** Progress bars draw here when it is a TTY. */
  readonly stderr: NodeJS.WriteStream | { write(s: string): unknown; isTTY?: boolean };
  /** Relative paths (--out, --trace, scenario files) resolve against this. */
  readonly cwd: string;
}

/** Options every experiment command takes. */
interface CommonOptions {
  readonly json?: boolean;
  readonly trace: string | undefined;
  readonly out: string | undefined;
}

/** What one experiment run wrote and printed (the `--json` document's shape). */
export interface RunOutput {
  readonly experiment: string;
  readonly params: Readonly<Record<string, unknown>>;
  readonly tables: ExperimentResult['tables'];
  readonly notes: readonly string[];
  readonly data: unknown;
  readonly files: { readonly summary: string; readonly report: string; readonly charts: readonly string[]; readonly trace?: string };
  /** Wall time of the run, ms (the experiment only; not rendering). */
  readonly wallMs: number;
}

/** A usage error: bad parameters or a bad scenario file (exit code 2). */
class UsageError extends Error {
  override readonly name = 'UsageError';
}

const CHART_NAME = /^[a-z0-9-]+$/;

/** Runs one experiment with raw (unvalidated) parameters and writes its files. */
async function runOne(
  exp: Experiment,
  raw: Record<string, unknown>,
  o: { outDir: string; json: boolean; command: string; env: CliEnv; traces: TraceCollector; traceLabelPrefix: string; traceFile?: string },
): Promise<{ output: RunOutput; result: ExperimentResult }> {
  const parsed = exp.schema.safeParse(raw);
  if (!parsed.success) throw new UsageError(`${exp.name}: invalid parameters\n${z.prettifyError(parsed.error)}`);
  const stderr = o.env.stderr as NodeJS.WriteStream;
  const progress = createProgress({ stream: stderr, enabled: !o.json && stderr.isTTY === true });
  const io: ExperimentIo = { progress, trace: (label) => o.traces.sinks(o.traceLabelPrefix + label) };
  const t0 = performance.now();
  let result: ExperimentResult;
  try {
    result = await exp.run(parsed.data, io);
  } finally {
    progress.stop();
  }
  const wallMs = performance.now() - t0;

  mkdirSync(o.outDir, { recursive: true });
  const chartFiles = new Map<string, string>();
  const svgs = new Map<string, string>();
  for (const c of result.charts) {
    if (!CHART_NAME.test(c.name)) throw new Error(`${exp.name}: chart name ${JSON.stringify(c.name)} is not a file stem`);
    const file = `${c.name}.svg`;
    const svg = await renderChartSvg(c);
    writeFileSync(path.join(o.outDir, file), svg);
    chartFiles.set(c.name, file);
    svgs.set(file, svg);
  }
  const summaryPath = path.join(o.outDir, 'summary.md');
  const traceRel = o.traceFile === undefined ? undefined : path.relative(o.outDir, o.traceFile);
  const summary = renderSummary(result, { command: o.command, chartFiles, ...(traceRel === undefined ? {} : { traceFile: traceRel }) });
  writeFileSync(summaryPath, summary);
  const reportPath = path.join(o.outDir, 'report.html');
  writeFileSync(reportPath, renderHtmlReport(`cocokit ${result.experiment}`, summary, svgs));
  const output: RunOutput = {
    experiment: result.experiment,
    params: result.params,
    tables: result.tables,
    notes: result.notes,
    data: result.data,
    files: { summary: summaryPath, report: reportPath, charts: [...chartFiles.values()].map((f) => path.join(o.outDir, f)), ...(o.traceFile === undefined ? {} : { trace: o.traceFile }) },
    wallMs,
  };
  return { output, result };
}

function printText(env: CliEnv, out: RunOutput): void {
  const lines: string[] = [];
  for (const t of out.tables) lines.push(renderTextTable(t), '');
  lines.push(`wall time ${(out.wallMs / 1000).toFixed(2)} s`);
  lines.push(`summary: ${out.files.summary}`);
  lines.push(`report:  ${out.files.report}`);
  for (const c of out.files.charts) lines.push(`chart:   ${c}`);
  if (out.files.trace !== undefined) lines.push(`trace:   ${out.files.trace} (open in https://ui.perfetto.dev)`);
  env.stdout.write(lines.join('\n') + '\n');
}

function writeTrace(traces: TraceCollector, file: string): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(traces.toChromeTrace()));
}

/** The default shown in --help for one parameter (sizes as `1 GiB`). */
function defaultText(v: unknown): string | undefined {
  if (v === undefined) return undefined;
  // Whole MiB are sizes in every experiment (counts and nanoseconds never land on 2^20 multiples).
  if (typeof v === 'number' && v >= 2 ** 20 && v % 2 ** 20 === 0) return formatSize(v);
  return Array.isArray(v) ? v.join(',') : String(v);
}

/** A scenario file: one experiment, or a list of steps. */
const scenarioStep = z.object({
  experiment: z.string(),
  params: z.record(z.string(), z.unknown()).default({}),
  /** Output directory of this step (relative to the scenario's). */
  out: z.string().optional(),
});
const scenarioSchema = z.union([
  scenarioStep,
  z.object({ name: z.string().optional(), description: z.string().optional(), steps: z.array(scenarioStep).min(1) }),
]);

/** The scenario file format, for users writing their own (`cocokit run FILE`). */
export type Scenario = z.input<typeof scenarioSchema>;

/**
 * Builds the program. `run(argv)` parses `argv` (without `node` and the script) and returns the
 * exit code: 0 done, 1 an experiment failed, 2 a usage error.
 */
export function createCli(experiments: readonly Experiment[], env: CliEnv): { program: Command; run(argv: readonly string[]): Promise<number> } {
  const byName = new Map(experiments.map((e) => [e.name, e]));
  const program = new Command('cocokit');
  let exitCode = 0;
  let argvText = '';
  program
    .description("Reproduce the guest_memfd experiments of the KVM mailing-list threads cocokit comes from, in virtual time")
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeOut: (s) => env.stdout.write(s), writeErr: (s) => env.stderr.write(s) });

  const addCommon = (cmd: Command, outHelp: string): Command =>
    cmd
      .option('--json', 'print one JSON document (parameters, tables, data, files) instead of tables; no progress bar')
      .option('--trace <file>', 'write a Perfetto / Chrome trace-event JSON of every configuration run')
      .option('--out <dir>', outHelp);

  const fail = (e: unknown): void => {
    if (e instanceof UsageError) {
      env.stderr.write(`error: ${e.message}\n`);
      exitCode = 2;
    } else {
      env.stderr.write(`error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      exitCode = 1;
    }
  };

  for (const exp of experiments) {
    const defaults = exp.schema.safeParse({});
    const defaultValues = (defaults.success ? defaults.data : {}) as Record<string, unknown>;
    const cmd = program.command(exp.name).summary(exp.summary).description(`${exp.summary}\n\n${exp.description}`);
    const attr = new Map<string, { key: string; list: boolean }>();
    for (const opt of exp.options) {
      const shown = defaultText(defaultValues[opt.key]);
      // The default goes into the text: a commander default would be passed on as if the user gave it.
      const withDefault = shown === undefined || opt.flags.startsWith('--no-') ? opt.description : `${opt.description} (default: ${shown})`;
      const option = new Option(opt.flags, withDefault);
      cmd.addOption(option);
      attr.set(option.attributeName(), { key: opt.key, list: opt.list === true });
    }
    addCommon(cmd, `directory for summary.md and the SVG charts (default: cocokit-out/${exp.name})`);
    cmd.action(async (opts: Record<string, unknown>) => {
      const common = opts as unknown as CommonOptions;
      const raw: Record<string, unknown> = {};
      for (const [a, { key, list }] of attr) {
        const v = opts[a];
        if (v === undefined) continue;
        raw[key] = list && typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter((s) => s !== '') : v;
      }
      const traces = createTraceCollector(common.trace !== undefined);
      const traceFile = common.trace === undefined ? undefined : path.resolve(env.cwd, common.trace);
      try {
        const { output } = await runOne(exp, raw, {
          outDir: path.resolve(env.cwd, common.out ?? path.join('cocokit-out', exp.name)),
          json: common.json === true,
          command: `cocokit ${argvText}`,
          env,
          traces,
          traceLabelPrefix: '',
          ...(traceFile === undefined ? {} : { traceFile }),
        });
        if (traceFile !== undefined) writeTrace(traces, traceFile);
        if (common.json === true) env.stdout.write(JSON.stringify(output, null, 2) + '\n');
        else printText(env, output);
      } catch (e) {
        fail(e);
      }
    });
  }

  const runCmd = program
    .command('run')
    .argument('<scenario>', 'a JSON file: { "experiment": "boot", "params": { ... } } or { "name": ..., "steps": [ { "experiment", "params", "out"? }, ... ] }')
    .summary('run experiments from a scenario file')
    .description(
      `Run one or more experiments from a JSON scenario file, with the same parameters as the commands (sizes as "1GiB" or bytes). Experiments: ${experiments.map((e) => e.name).join(', ')}.`,
    );
  addCommon(runCmd, 'directory for the steps\' outputs (default: cocokit-out/<scenario file name>)');
  runCmd.action(async (file: string, opts: CommonOptions) => {
    try {
      const scenarioPath = path.resolve(env.cwd, file);
      let json: unknown;
      try {
        json = JSON.parse(readFileSync(scenarioPath, 'utf8'));
      } catch (e) {
        throw new UsageError(`cannot read scenario ${file}: ${(e as Error).message}`);
      }
      const parsed = scenarioSchema.safeParse(json);
      if (!parsed.success) throw new UsageError(`scenario ${file}:\n${z.prettifyError(parsed.error)}`);
      const steps = 'steps' in parsed.data ? parsed.data.steps : [parsed.data];
      for (const s of steps) {
        if (!byName.has(s.experiment)) throw new UsageError(`scenario ${file}: unknown experiment ${JSON.stringify(s.experiment)} (known: ${[...byName.keys()].join(', ')})`);
      }
      const base = path.resolve(env.cwd, opts.out ?? path.join('cocokit-out', path.basename(file, path.extname(file))));
      const traces = createTraceCollector(opts.trace !== undefined);
      const traceFile = opts.trace === undefined ? undefined : path.resolve(env.cwd, opts.trace);
      const outputs: RunOutput[] = [];
      for (const [i, s] of steps.entries()) {
        const exp = byName.get(s.experiment) as Experiment;
        const stepDir = path.resolve(base, s.out ?? (steps.length === 1 ? '.' : `${i + 1}-${s.experiment}`));
        const { output } = await runOne(exp, s.params, {
          outDir: stepDir,
          json: opts.json === true,
          command: `cocokit ${argvText}`,
          env,
          traces,
          traceLabelPrefix: steps.length === 1 ? '' : `${i + 1}. ${s.experiment}: `,
          ...(traceFile === undefined ? {} : { traceFile }),
        });
        outputs.push(output);
        if (opts.json !== true) {
          env.stdout.write(`== step ${i + 1}/${steps.length}: ${s.experiment}\n`);
          printText(env, output);
        }
      }
      if (traceFile !== undefined) writeTrace(traces, traceFile);
      if (opts.json === true) env.stdout.write(JSON.stringify({ scenario: scenarioPath, steps: outputs }, null, 2) + '\n');
    } catch (e) {
      fail(e);
    }
  });

  return {
    program,
    async run(argv) {
      exitCode = 0;
      argvText = argv.join(' ');
      if (argv.length === 0) {
        program.outputHelp();
        return 0;
      }
      try {
        await program.parseAsync([...argv], { from: 'user' });
      } catch (e) {
        if (e instanceof CommanderError) {
          // --help and --version end here with code 0; usage errors were already printed.
          return e.exitCode === 0 ? 0 : 2;
        }
        throw e;
      }
      return exitCode;
    },
  };
}
