/**
 * `pnpm bench` in a package: runs every `bench/*.bench.ts` of the current directory, in name order,
 * one after the other (benchmarks must not share the two cores with each other).
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const dir = path.resolve('bench');
const only = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort();
if (files.length === 0) {
  console.error(`no bench/*.bench.ts in ${process.cwd()}`);
  process.exit(1);
}
for (const f of files) {
  await import(pathToFileURL(path.join(dir, f)).href);
}
