import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { runSuite } from './suite.js';
import { workspaceRoot } from './workspace.js';

describe('runSuite', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-test-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('times tasks per operation, keeps recorded figures, and writes the JSON the issue asks for', async () => {
    vi.stubEnv('COCOKIT_BENCH_QUICK', '1');
    const log = vi.spyOn(console, 'log').mockImplementation(() => {});
    const table = vi.spyOn(console, 'table').mockImplementation(() => {});
    let x = 0;
    const report = await runSuite(
      '@cocokit/example',
      'unit',
      (s) => {
        s.add('sum 100', () => {
          for (let i = 0; i < 100; i++) x += i;
        }, { opsPerCall: 100, time: 20 });
        s.record({ name: 'bytes per run', unit: 'bytes', median: 48, min: 48, max: 48, samples: 1 });
      },
      { outDir: dir },
    );
    log.mockRestore();
    table.mockRestore();
    vi.unstubAllEnvs();
    expect(x).toBeGreaterThan(0);
    expect(report.results.map((r) => r.name)).toEqual(['bytes per run', 'sum 100']);
    const timed = report.results[1]!;
    expect(timed.unit).toBe('ns/op');
    expect(timed.samples).toBeGreaterThan(0);
    expect(timed.min).toBeLessThanOrEqual(timed.median);
    expect(timed.median).toBeLessThanOrEqual(timed.max);
    const written = JSON.parse(readFileSync(path.join(dir, 'example.unit.json'), 'utf8'));
    expect(written.machine.cores).toBeGreaterThan(0);
    expect(written.command).toBe('pnpm --filter @cocokit/example bench');
    expect(Object.keys(written.results[0]).sort()).toEqual(['max', 'median', 'min', 'name', 'samples', 'unit']);
  });
});

describe('workspaceRoot', () => {
  it('finds the directory holding pnpm-workspace.yaml', () => {
    const root = workspaceRoot(import.meta.dirname);
    expect(readFileSync(path.join(root, 'pnpm-workspace.yaml'), 'utf8')).toContain('packages/*');
  });
});
