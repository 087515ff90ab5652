/**
 * @cocokit/demo: the `cocokit` CLI's experiments as a library — run them from code, render their
 * results, or build your own command line around them.
 */
export { createCli } from './cli.js';
export type { CliEnv, RunOutput, Scenario } from './cli.js';
export { defineExperiment, silentIo } from './experiment.js';
export type { Experiment, ExperimentIo, ExperimentOption, ExperimentResult, Progress, ResultChart, ResultColumn, ResultTable } from './experiment.js';
export { acceptExperiment, bootExperiment, directmapExperiment, experiments, launchExperiment } from './experiments/index.js';
export { byteSize, count, formatSize, parseSize } from './params.js';
export { renderChartSvg } from './render/chart.js';
export { renderHtmlReport } from './render/html.js';
export { renderSummary } from './render/markdown.js';
export { renderMarkdownTable, renderTextTable } from './render/table.js';
export { createTraceCollector } from './trace.js';
export type { TraceCollector } from './trace.js';
