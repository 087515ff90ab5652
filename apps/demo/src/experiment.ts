/**
 * What one `cocokit` command is: an experiment with typed parameters (a zod schema, shared by the
 * command line and by `cocokit run SCENARIO.json`), a run function that drives the packages, and a
 * result made of tables, vega-lite charts, notes and raw data. Experiments never print or write
 * files: the CLI renders their result (text table, SVG, markdown, JSON, Perfetto trace), which is
 * what lets the tests check the numbers instead of scraping output.
 */
import type { TraceSink } from '@cocokit/sdk';
import type { TopLevelSpec } from 'vega-lite';
import type { z } from 'zod';

/** Progress of work longer than a second; a no-op under --json or without a TTY. */
export interface Progress {
  /** Starts (or restarts) a bar of `total` units labelled `label`. */
  start(total: number, label: string): void;
  /** Advances the current bar by `n` units (default 1). */
  tick(n?: number): void;
  /** Ends the current bar. */
  stop(): void;
}

/** What the CLI hands an experiment. */
export interface ExperimentIo {
  readonly progress: Progress;
  /**
   * Trace sinks for one configuration the experiment runs (one VM, usually), to pass to
   * `openKvm({ trace })`: empty unless `--trace` was given. Each label becomes one process in the
   * Perfetto trace, so the configurations of a comparison sit one above another.
   */
  trace(label: string): TraceSink[];
}

/** One column of a {@link ResultTable}. */
export interface ResultColumn {
  readonly key: string;
  readonly header: string;
  /** Shown after the header, e.g. `ms`, `MiB`. */
  readonly unit?: string;
}

/** A table: one row per configuration, cells are numbers or short strings. */
export interface ResultTable {
  readonly title: string;
  readonly columns: readonly ResultColumn[];
  readonly rows: ReadonlyArray<Readonly<Record<string, string | number>>>;
}

/** A chart, rendered to `<name>.svg` by vega's headless renderer. Data must be inline (`data.values`). */
export interface ResultChart {
  /** File stem: `[a-z0-9-]+`. */
  readonly name: string;
  readonly title: string;
  readonly spec: TopLevelSpec;
}

/** What an experiment produced. */
export interface ExperimentResult {
  readonly experiment: string;
  /** The parameters after defaults, as run. */
  readonly params: Readonly<Record<string, unknown>>;
  readonly tables: readonly ResultTable[];
  readonly charts: readonly ResultChart[];
  /** Markdown paragraphs for the summary: what the numbers show and which cost-model entries drive them. */
  readonly notes: readonly string[];
  /** Everything measured, JSON-serializable (what `--json` prints under `data`). */
  readonly data: unknown;
}

/** A command-line option mapped onto a key of the experiment's parameters. */
export interface ExperimentOption {
  /** commander flags, e.g. `--size <bytes>` or `--no-huge`. */
  readonly flags: string;
  /** The parameter it sets. */
  readonly key: string;
  readonly description: string;
  /** For list options (`--paths <a,b>`): split on commas before validation. */
  readonly list?: boolean;
}

/** One experiment: the unit the CLI turns into a command and `cocokit run` into a scenario step. */
export interface Experiment<S extends z.ZodType = z.ZodType> {
  /** Command name: `boot`, `accept`, `launch`, `directmap`. */
  readonly name: string;
  /** One line for `cocokit --help`. */
  readonly summary: string;
  /** A paragraph for `cocokit <name> --help`: which seed, what it compares. */
  readonly description: string;
  /** Parameters with defaults that finish in under a minute; sizes accept `1GiB`-style strings. */
  readonly schema: S;
  readonly options: readonly ExperimentOption[];
  run(params: z.output<S>, io: ExperimentIo): Promise<ExperimentResult>;
}

/** Defines an experiment with its parameter type inferred from the schema. */
export function defineExperiment<S extends z.ZodType>(e: Experiment<S>): Experiment<S> {
  return e;
}

/** An {@link ExperimentIo} that shows nothing and records nothing (tests, --json). */
export const silentIo: ExperimentIo = {
  progress: { start() {}, tick() {}, stop() {} },
  trace: () => [],
};
