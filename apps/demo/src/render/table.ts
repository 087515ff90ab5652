/**
 * Tables for the terminal (cli-table3: box drawing, alignment, colour-free so logs stay clean) and
 * for the markdown summary (GitHub pipe tables).
 */
import Table from 'cli-table3';
import type { ResultTable } from '../experiment.js';

const header = (c: { header: string; unit?: string }): string => (c.unit === undefined ? c.header : `${c.header} (${c.unit})`);

/** Formats a cell: integers with thousands separators, fractions to 3 significant decimals. */
export function formatCell(v: string | number | undefined): string {
  if (v === undefined) return '';
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return v.toLocaleString('en-US');
  return v.toLocaleString('en-US', { maximumFractionDigits: Math.abs(v) >= 100 ? 1 : 3 });
}

/** A table as terminal text. */
export function renderTextTable(t: ResultTable): string {
  const table = new Table({
    head: t.columns.map(header),
    style: { head: [], border: [] },
    // No rule between body rows: the tables are read as columns of numbers.
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
    colAligns: t.columns.map((c) => (t.rows.some((r) => typeof r[c.key] === 'number') ? 'right' : 'left')),
  });
  for (const row of t.rows) table.push(t.columns.map((c) => formatCell(row[c.key])));
  return `${t.title}\n${table.toString()}`;
}

/** A table as GitHub-flavoured markdown. */
export function renderMarkdownTable(t: ResultTable): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|');
  const numeric = t.columns.map((c) => t.rows.some((r) => typeof r[c.key] === 'number'));
  const lines = [
    `| ${t.columns.map((c) => esc(header(c))).join(' | ')} |`,
    `| ${numeric.map((n) => (n ? '---:' : '---')).join(' | ')} |`,
    ...t.rows.map((r) => `| ${t.columns.map((c) => esc(formatCell(r[c.key]))).join(' | ')} |`),
  ];
  return lines.join('\n');
}
