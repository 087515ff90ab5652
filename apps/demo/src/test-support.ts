/**
 * Checks the tests share: an SVG parses as XML and what it draws, and a trace is valid for the
 * Trace Event Format (the JSON Object Format Perfetto and chrome://tracing import).
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { z } from 'zod';

/** What an SVG holds, for assertions: every text node and the number of rect/path marks. */
export interface ParsedSvg {
  readonly width: number;
  readonly height: number;
  readonly texts: readonly string[];
  readonly rects: number;
  readonly paths: number;
}

/** Parses an SVG document (throws if it is not well-formed XML with an `<svg>` root). */
export function parseSvg(svg: string): ParsedSvg {
  const valid = XMLValidator.validate(svg);
  if (valid !== true) throw new Error(`SVG is not well-formed: ${valid.err.msg} at line ${valid.err.line}`);
  const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@' }).parse(svg) as { svg?: Record<string, unknown> };
  if (doc.svg === undefined) throw new Error('no <svg> root');
  const texts: string[] = [];
  let rects = 0;
  let paths = 0;
  const walk = (node: unknown, tag: string): void => {
    if (Array.isArray(node)) {
      for (const n of node) walk(n, tag);
      return;
    }
    if (tag === 'rect') rects++;
    if (tag === 'path') paths++;
    if (tag === 'text' || tag === 'tspan') {
      const t = typeof node === 'object' && node !== null ? (node as Record<string, unknown>)['#text'] : node;
      if (t !== undefined) texts.push(String(t));
    }
    if (typeof node !== 'object' || node === null) return;
    for (const [k, v] of Object.entries(node)) if (!k.startsWith('@') && k !== '#text') walk(v, k);
  };
  walk(doc.svg, 'svg');
  return { width: Number(doc.svg['@width']), height: Number(doc.svg['@height']), texts, rects, paths };
}

const meta = z.object({ ph: z.literal('M'), name: z.enum(['process_name', 'thread_name', 'thread_sort_index']), pid: z.number().int(), tid: z.number().int(), ts: z.number(), args: z.record(z.string(), z.unknown()) });
const complete = z.object({ ph: z.literal('X'), name: z.string(), cat: z.string(), pid: z.number().int().positive(), tid: z.number().int().positive(), ts: z.number().nonnegative(), dur: z.number().nonnegative(), args: z.record(z.string(), z.unknown()) });
const instant = z.object({ ph: z.literal('i'), s: z.literal('t'), name: z.string(), cat: z.string(), pid: z.number().int().positive(), tid: z.number().int().positive(), ts: z.number().nonnegative(), args: z.record(z.string(), z.unknown()) });
const traceFile = z.object({ traceEvents: z.array(z.union([meta, complete, instant])), displayTimeUnit: z.enum(['ms', 'ns']) });

/**
 * Validates a trace against the Trace Event Format's JSON Object Format as the exporter uses it
 * (metadata, Complete and thread Instant events) and returns the process names by pid and the
 * number of non-metadata events.
 */
export function validateTraceEvents(json: unknown): { processes: string[]; events: number } {
  const t = traceFile.parse(json);
  const names = new Map<number, string>();
  let events = 0;
  for (const e of t.traceEvents) {
    if (e.ph === 'M') {
      if (e.name === 'process_name') names.set(e.pid, String(e.args['name']));
    } else {
      events++;
      if (!names.has(e.pid)) throw new Error(`event ${e.name} in pid ${e.pid} before its process_name`);
    }
  }
  return { processes: [...names].sort(([a], [b]) => a - b).map(([, n]) => n), events };
}
