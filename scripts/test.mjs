// Runs every package's tests (the root vitest config's projects) and ends with one plain line,
// "tests: N passed, N failed[, N skipped]", which CI reads. vitest's own summary stays above it.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const dir = mkdtempSync(path.join(tmpdir(), 'cocokit-vitest-'));
const out = path.join(dir, 'results.json');
const args = ['vitest', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${out}`, ...process.argv.slice(2)];
const run = spawnSync('pnpm', ['exec', ...args], { stdio: 'inherit' });

let summary;
try {
  const r = JSON.parse(readFileSync(out, 'utf8'));
  summary = { passed: r.numPassedTests, failed: r.numFailedTests + (r.numRuntimeErrorTestSuites ?? 0), skipped: r.numPendingTests + r.numTodoTests };
} catch {
  summary = undefined;
}
rmSync(dir, { recursive: true, force: true });

if (!summary) {
  console.log('tests: 0 passed, 1 failed');
  process.exit(run.status || 1);
}
const skipped = summary.skipped ? `, ${summary.skipped} skipped` : '';
console.log(`tests: ${summary.passed} passed, ${summary.failed} failed${skipped}`);
process.exit(run.status ?? 1);
