import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { openKvm, runVmm, setupGuestMemory } from '@cocokit/vm';
import { firmwareBoot } from '@cocokit/vm/guest';
import { createCli, type RunOutput } from './cli.js';
import { defineExperiment, type Experiment } from './experiment.js';
import { byteSize, count } from './params.js';
import { createProgress } from './progress.js';
import { parseSvg, validateTraceEvents } from './test-support.js';

/** A small real experiment for the shell's tests: a sw-protected boot with a size and a transfer count. */
const toy = defineExperiment({
  name: 'toy',
  summary: 'boot a tiny guest',
  description: 'A test experiment.',
  schema: z.object({ size: byteSize.default(4 << 20), transfers: count.default(4), paths: z.array(z.enum(['a', 'b'])).default(['a', 'b']) }),
  options: [
    { flags: '--size <bytes>', key: 'size', description: 'guest size' },
    { flags: '--transfers <n>', key: 'transfers', description: 'DMA transfers' },
    { flags: '--paths <list>', key: 'paths', description: 'paths', list: true },
  ],
  async run(p, io) {
    const rows = [];
    io.progress.start(p.paths.length, 'toy');
    for (const label of p.paths) {
      const kvm = openKvm({ hostBytes: 1 << 30, trace: io.trace(label) });
      const vm = await kvm.createVm({ type: 'sw-protected' });
      setupGuestMemory(vm, { size: p.size });
      vm.createVcpu(0, function* (g) {
        yield* firmwareBoot(g, { dmaGpa: 0x10_0000, transfers: p.transfers });
      });
      const r = runVmm(vm, { discard: 'both' });
      rows.push({ config: label, conversions: r.conversions, ns: r.nowNs });
      io.progress.tick();
    }
    io.progress.stop();
    return {
      experiment: 'toy',
      params: p,
      tables: [{ title: 'Toy', columns: [{ key: 'config', header: 'config' }, { key: 'conversions', header: 'conversions' }, { key: 'ns', header: 'time', unit: 'ns' }], rows }],
      charts: [{ name: 'toy-time', title: 'Time', spec: { data: { values: rows }, mark: 'bar', encoding: { x: { field: 'config', type: 'nominal' }, y: { field: 'ns', type: 'quantitative' } } } }],
      notes: ['A note.'],
      data: { rows },
    };
  },
});

function harness(experiments: readonly Experiment[] = [toy as unknown as Experiment]) {
  let stdout = '';
  let stderr = '';
  const cwd = mkdtempSync(path.join(tmpdir(), 'cocokit-cli-'));
  const cli = createCli(experiments, { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s), isTTY: false }, cwd });
  return {
    cwd,
    run: (...argv: string[]) => cli.run(argv),
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
  };
}

describe('cocokit CLI shell', () => {
  let h: ReturnType<typeof harness>;
  beforeEach(() => {
    h = harness();
  });
  afterEach(() => rmSync(h.cwd, { recursive: true, force: true }));

  it('lists the experiments in --help, and each command documents its options with defaults', async () => {
    expect(await h.run('--help')).toBe(0);
    expect(h.stdout).toMatch(/toy \[options\]\s+boot a tiny guest/);
    expect(h.stdout).toMatch(/run .*<scenario>/);
    expect(await h.run('toy', '--help')).toBe(0);
    expect(h.stdout).toMatch(/--size <bytes>\s+guest size \(default: 4 MiB\)/);
    expect(h.stdout).toMatch(/--transfers <n>\s+DMA transfers \(default: 4\)/);
    expect(h.stdout).toContain('--json');
    expect(h.stdout).toContain('--trace <file>');
  });

  it('--json prints the result with the parameters as validated, and writes the summary and charts', async () => {
    expect(await h.run('toy', '--json', '--size', '8M', '--transfers', '3', '--paths', 'b', '--out', 'o')).toBe(0);
    const out = JSON.parse(h.stdout) as RunOutput;
    expect(out.params).toEqual({ size: 8 << 20, transfers: 3, paths: ['b'] });
    expect(out.tables[0]?.rows).toEqual([expect.objectContaining({ config: 'b', conversions: 6 })]);
    expect(out.files.summary).toBe(path.join(h.cwd, 'o', 'summary.md'));
    const summary = readFileSync(out.files.summary, 'utf8');
    expect(summary).toContain('# cocokit toy');
    expect(summary).toContain('cocokit toy --json --size 8M');
    expect(summary).toContain('| config | conversions | time (ns) |');
    expect(summary).toContain('![Time](toy-time.svg)');
    const svg = parseSvg(readFileSync(path.join(h.cwd, 'o', 'toy-time.svg'), 'utf8'));
    expect(svg.texts).toContain('b');
    expect(svg.rects).toBeGreaterThan(0);
    expect(h.stderr).toBe('');
    // The HTML report: the same summary, tables as HTML, the chart's SVG inlined (no external file).
    expect(out.files.report).toBe(path.join(h.cwd, 'o', 'report.html'));
    const html = readFileSync(out.files.report, 'utf8');
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).toContain('<h1>cocokit toy</h1>');
    expect(html).toMatch(/<th[^>]*>config<\/th>/);
    expect(html).toMatch(/<figure role="img" aria-label="Time"><svg /);
    expect(html).not.toContain('toy-time.svg');
    const inlined = /<svg [\s\S]*<\/svg>/.exec(html)?.[0] ?? '';
    expect(parseSvg(inlined).texts).toContain('b');
  });

  it('prints tables as text by default', async () => {
    expect(await h.run('toy', '--paths', 'a,b')).toBe(0);
    expect(h.stdout).toContain('Toy');
    expect(h.stdout).toMatch(/│ a +│ +8 │/);
    expect(h.stdout).toContain(`summary: ${path.join(h.cwd, 'cocokit-out', 'toy', 'summary.md')}`);
  });

  it('refuses invalid parameters with exit code 2 and says which', async () => {
    expect(await h.run('toy', '--size', '1000')).toBe(2);
    expect(h.stderr).toContain('invalid parameters');
    expect(h.stderr).toContain('size');
    expect(await h.run('toy', '--paths', 'c')).toBe(2);
    expect(await h.run('nope')).toBe(2);
  });

  it('--trace writes a trace-event JSON with one process per configuration', async () => {
    expect(await h.run('toy', '--json', '--trace', 't/trace.json')).toBe(0);
    const trace = JSON.parse(readFileSync(path.join(h.cwd, 't', 'trace.json'), 'utf8')) as unknown;
    const { processes, events } = validateTraceEvents(trace);
    expect(processes).toEqual(['a', 'b']);
    expect(events).toBeGreaterThan(0);
    const out = JSON.parse(h.stdout) as RunOutput;
    expect(out.files.trace).toBe(path.join(h.cwd, 't', 'trace.json'));
  });

  it('runs a scenario file of several steps, each with its own outputs', async () => {
    const file = path.join(h.cwd, 'my-scenario.json');
    writeFileSync(file, JSON.stringify({ name: 'two', steps: [{ experiment: 'toy', params: { transfers: 1, paths: ['a'] } }, { experiment: 'toy', params: { size: '8MiB', paths: ['b'] }, out: 'big' }] }));
    expect(await h.run('run', 'my-scenario.json', '--json', '--trace', 'trace.json')).toBe(0);
    const out = JSON.parse(h.stdout) as { steps: RunOutput[] };
    expect(out.steps.map((s) => [s.params['transfers'], s.params['size']])).toEqual([
      [1, 4 << 20],
      [4, 8 << 20],
    ]);
    expect(out.steps[0]?.files.summary).toBe(path.join(h.cwd, 'cocokit-out', 'my-scenario', '1-toy', 'summary.md'));
    expect(out.steps[1]?.files.summary).toBe(path.join(h.cwd, 'cocokit-out', 'my-scenario', 'big', 'summary.md'));
    expect(validateTraceEvents(JSON.parse(readFileSync(path.join(h.cwd, 'trace.json'), 'utf8'))).processes).toEqual(['1. toy: a', '2. toy: b']);
  });

  it('a single-experiment scenario is accepted; a bad one is a usage error naming the problem', async () => {
    writeFileSync(path.join(h.cwd, 'one.json'), JSON.stringify({ experiment: 'toy', params: { paths: ['a'] } }));
    expect(await h.run('run', 'one.json')).toBe(0);
    expect(h.stdout).toContain('== step 1/1: toy');
    writeFileSync(path.join(h.cwd, 'bad.json'), JSON.stringify({ steps: [{ experiment: 'boot-ish' }] }));
    expect(await h.run('run', 'bad.json')).toBe(2);
    expect(h.stderr).toContain('unknown experiment "boot-ish" (known: toy)');
    writeFileSync(path.join(h.cwd, 'bad2.json'), JSON.stringify({ experiment: 'toy', params: { transfers: -1 } }));
    expect(await h.run('run', 'bad2.json')).toBe(2);
    expect(await h.run('run', 'missing.json')).toBe(2);
    expect(h.stderr).toContain('cannot read scenario missing.json');
  });

  it('an experiment that throws is exit code 1 with its message', async () => {
    const boom = defineExperiment({ name: 'boom', summary: 's', description: 'd', schema: z.object({}), options: [], run: () => Promise.reject(new Error('kaput')) });
    const b = harness([boom as unknown as Experiment]);
    expect(await b.run('boom')).toBe(1);
    expect(b.stderr).toContain('kaput');
    rmSync(b.cwd, { recursive: true, force: true });
  });
});

describe('progress', () => {
  it('draws a bar only on an enabled stream, and only once the work has run past the delay', () => {
    let t = 0;
    let written = '';
    const stream = { write: (s: string) => ((written += s), true), isTTY: true, columns: 80, cursorTo: () => true, clearLine: () => true, moveCursor: () => true, on: () => stream, removeListener: () => stream } as unknown as NodeJS.WriteStream;
    const p = createProgress({ stream, enabled: true, now: () => t });
    p.start(10, 'work');
    p.tick();
    expect(p.shown).toBe(0);
    t = 1500;
    p.tick();
    expect(p.shown).toBe(1);
    p.stop();
    expect(written).toContain('work');
    const off = createProgress({ stream, enabled: false, now: () => t });
    off.start(10, 'x');
    t = 5000;
    off.tick();
    expect(off.shown).toBe(0);
  });
});
