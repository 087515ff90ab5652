// Every real command through the CLI, small: the JSON agrees with the tables, the SVGs parse and
// draw the expected series, and the trace is valid trace-event JSON with a process per configuration.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createCli, type RunOutput } from './cli.js';
import { experiments } from './experiments/index.js';
import { parseSvg, validateTraceEvents } from './test-support.js';

const cwd = mkdtempSync(path.join(tmpdir(), 'cocokit-commands-'));
afterAll(() => rmSync(cwd, { recursive: true, force: true }));

async function cocokit(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const cli = createCli(experiments, { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s), isTTY: false }, cwd });
  const code = await cli.run(argv);
  return { code, stdout, stderr };
}

async function runJson(name: string, ...args: string[]): Promise<{ out: RunOutput; svgs: Map<string, ReturnType<typeof parseSvg>>; trace: ReturnType<typeof validateTraceEvents> }> {
  const r = await cocokit(name, '--json', '--out', name, '--trace', `${name}.trace.json`, ...args);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  const out = JSON.parse(r.stdout) as RunOutput;
  const svgs = new Map(out.files.charts.map((f) => [path.basename(f, '.svg'), parseSvg(readFileSync(f, 'utf8'))]));
  const trace = validateTraceEvents(JSON.parse(readFileSync(path.join(cwd, `${name}.trace.json`), 'utf8')));
  const summary = readFileSync(out.files.summary, 'utf8');
  for (const t of out.tables) expect(summary).toContain(`## ${t.title}`);
  for (const f of out.files.charts) expect(summary).toContain(`](${path.basename(f)})`);
  return { out, svgs, trace };
}

const column = (out: RunOutput, table: number, key: string): unknown[] => (out.tables[table]?.rows ?? []).map((r) => r[key]);

describe('cocokit commands, small', () => {
  it('--help lists every experiment and run', async () => {
    const r = await cocokit('--help');
    for (const e of experiments) expect(r.stdout).toContain(`${e.name} [options]`);
    expect(r.stdout).toContain('run [options] <scenario>');
  });

  it('boot: one bar per configuration, the ordering of seed 000, one traced process per configuration', async () => {
    const { out, svgs, trace } = await runJson('boot', '--type', 'sw-protected', '--size', '64MiB', '--transfers', '200', '--working-set', '4MiB', '--configs', 'both,private-only,no-conversion');
    const data = out.data as { runs: Array<{ id: string; label: string; bootNs: number; conversions: number }> };
    expect(data.runs.map((r) => r.id)).toEqual(['both', 'private-only', 'no-conversion']);
    expect(column(out, 0, 'conversions')).toEqual(data.runs.map((r) => r.conversions));
    const [both, privateOnly, none] = data.runs.map((r) => r.bootNs);
    expect(both).toBeGreaterThan(privateOnly ?? Infinity);
    expect(privateOnly).toBeGreaterThan(none ?? Infinity);
    const svg = svgs.get('boot-time');
    expect(svg?.rects).toBeGreaterThan(0);
    for (const r of data.runs) expect(svg?.texts.join('\n')).toContain(r.label.slice(0, 12));
    expect(trace.processes).toHaveLength(3);
    expect(trace.events).toBeGreaterThan(0);
  });

  it('accept: both policies, a mapping-level series per level', async () => {
    const { out, svgs, trace } = await runJson('accept', '--type', 'sw-protected', '--size', '1GiB', '--accept', '64MiB', '--samples', '4');
    const data = out.data as { runs: Array<{ policy: string }> };
    expect(data.runs.map((r) => r.policy)).toEqual(['split-eager', 'split-on-fault']);
    const svg = svgs.get('accept-levels');
    expect(svg?.texts).toEqual(expect.arrayContaining(['4K', '2M', '1G', 'split-eager', 'split-on-fault']));
    expect(trace.processes).toHaveLength(2);
  });

  it('launch: the measurement repeats for the same image and changes with one byte', async () => {
    const { out, svgs } = await runJson('launch', '--image-size', '64KiB', '--memory', '4MiB', '--no-refusals');
    const data = out.data as { types: Array<{ type: string; reproducible: boolean; flipChanges: boolean }> };
    expect(data.types.map((t) => [t.type, t.reproducible, t.flipChanges])).toEqual([
      ['tdx', true, true],
      ['tdx-seed-001', true, true],
      ['snp', true, true],
    ]);
    expect(svgs.get('launch-steps')?.texts).toEqual(expect.arrayContaining(['tdx', 'tdx-seed-001', 'snp']));
  });

  it('directmap: remaps only with NO_DIRECT_MAP, one per KVM read of guest memory plus the kvm-clock cache', async () => {
    const { out, svgs, trace } = await runJson('directmap', '--mmio', '20');
    const data = out.data as { runs: Array<{ config: string; mmioExits: number; kvmReadGuest: number; remaps: { total: number; kvmClock: number } }> };
    expect(data.runs.map((r) => r.config)).toEqual(['direct-map', 'no-direct-map', 'no-direct-map-shared']);
    const [on, off] = [data.runs[0], data.runs[1]];
    expect(on?.mmioExits).toBe(20);
    expect(on?.remaps.total).toBe(0);
    expect(off?.remaps.total).toBe((off?.kvmReadGuest ?? NaN) + 1);
    expect(off?.remaps.kvmClock).toBe(1);
    expect(svgs.get('directmap-remaps')?.texts).toEqual(expect.arrayContaining(['instruction fetch', 'page-table walk']));
    expect(svgs.has('directmap-time')).toBe(true);
    expect(trace.processes).toHaveLength(3);
  });

  it('run: a scenario with two experiments', async () => {
    writeFileSync(path.join(cwd, 'two.json'), JSON.stringify({ steps: [{ experiment: 'directmap', params: { mmio: 10, configs: ['direct-map'] } }, { experiment: 'launch', params: { types: ['snp'], imageSize: '16KiB', memory: '1MiB', refusals: false } }] }));
    const r = await cocokit('run', 'two.json', '--json');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { steps: RunOutput[] };
    expect(out.steps.map((s) => s.experiment)).toEqual(['directmap', 'launch']);
  });
});
