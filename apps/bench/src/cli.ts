/**
 * `pnpm bench` in a package: runs every `bench/*.bench.ts` of the current directory (or those whose
 * name contains an argument), in name order, one after the other, each in a process of its own:
 * suites sharing one process skew each other (call sites turn polymorphic, the heap carries the
 * previous suite's garbage), and benchmarks must not share the two cores with each other.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';

const dir = path.resolve('bench');
const only = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort();
if (files.length === 0) {
  console.error(`no bench/*.bench.ts${only.length ? ` matching ${only.join(', ')}` : ''} in ${process.cwd()}`);
  process.exit(1);
}
let failed = 0;
for (const f of files) {
  // process.execArgv carries tsx's loader and the @cocokit/source condition to the child.
  const r = spawnSync(process.execPath, [...process.execArgv, path.join(dir, f), ...only], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`${f} failed (exit ${r.status ?? r.signal})`);
    failed++;
  }
}
process.exit(failed === 0 ? 0 : 1);
