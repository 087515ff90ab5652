/**
 * `pnpm run demo`: a short tour of @cocokit/sdk and @cocokit/host. Prints what each step saw and
 * writes a trace that opens in https://ui.perfetto.dev.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { tour } from './tour.js';

// pnpm runs this in apps/quickstart; paths are the invoker's (INIT_CWD), usually the repo root.
const cwd = process.env['INIT_CWD'] ?? process.cwd();
const out = path.resolve(cwd, process.argv[2] ?? 'out');
const r = tour();
console.log('cocokit quickstart\n');
for (const [step, what] of r.steps) console.log(`  ${step.padEnd(11)} ${what}`);
console.log(`\ntrace events:\n${r.eventCounts}`);
mkdirSync(out, { recursive: true });
const file = path.join(out, 'quickstart.trace.json');
writeFileSync(file, JSON.stringify(r.trace));
console.log(`\nwrote ${path.relative(cwd, file)} (open it in https://ui.perfetto.dev)`);
