/** The short markdown summary written beside the charts. */
import type { ExperimentResult } from '../experiment.js';
import { renderMarkdownTable } from './table.js';

/** Options of {@link renderSummary}. */
export interface SummaryOptions {
  /** The command line that produced the result, shown so the run can be repeated. */
  readonly command: string;
  /** Chart files, relative to the summary, by chart name. */
  readonly chartFiles: ReadonlyMap<string, string>;
  readonly traceFile?: string;
}

/** A summary: title, the command, parameters, tables, charts (as images) and notes. */
export function renderSummary(r: ExperimentResult, o: SummaryOptions): string {
  const out: string[] = [`# cocokit ${r.experiment}`, '', '```sh', o.command, '```', ''];
  const params = Object.entries(r.params);
  if (params.length > 0) {
    out.push('Parameters: ' + params.map(([k, v]) => `\`${k}\` = \`${JSON.stringify(v)}\``).join(', ') + '.', '');
  }
  for (const t of r.tables) out.push(`## ${t.title}`, '', renderMarkdownTable(t), '');
  for (const c of r.charts) {
    const file = o.chartFiles.get(c.name);
    if (file !== undefined) out.push(`![${c.title}](${file})`, '');
  }
  if (r.notes.length > 0) out.push('## Notes', '', ...r.notes.flatMap((n) => [n, '']));
  if (o.traceFile !== undefined) out.push(`Trace: \`${o.traceFile}\` (open in https://ui.perfetto.dev).`, '');
  return out.join('\n');
}
