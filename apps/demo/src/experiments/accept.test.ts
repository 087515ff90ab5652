import { describe, expect, it } from 'vitest';
import { silentIo, type ExperimentIo, type ExperimentResult } from '../experiment.js';
import { acceptExperiment, acceptSchema, type AcceptRun } from './accept.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const PAGE = 4096;
const PAGE_COUNT_1G = GiB / PAGE;

interface AcceptData {
  readonly type: string;
  readonly acceptedBytes: number;
  readonly chunks: number;
  readonly runs: readonly AcceptRun[];
}

async function run(args: Record<string, unknown>, io: ExperimentIo = silentIo): Promise<{ result: ExperimentResult; data: AcceptData; by: Map<string, AcceptRun> }> {
  const result = await acceptExperiment.run(acceptSchema.parse(args), io);
  const data = result.data as AcceptData;
  return { result, data, by: new Map(data.runs.map((r) => [r.policy, r])) };
}

/** Bytes the histogram of a sample says are mapped. */
const mappedBytes = (leaves: readonly number[]): number => leaves[0]! * PAGE + leaves[1]! * 2 * MiB + leaves[2]! * GiB;

/** Checks every run against the package statistics it was read from and against itself. */
function expectConsistent(data: AcceptData): void {
  for (const r of data.runs) {
    const first = r.samples[0]!;
    const last = r.samples.at(-1)!;
    expect(first.chunks).toBe(0);
    expect(last.chunks).toBe(data.chunks);
    expect(last.acceptedBytes).toBe(data.acceptedBytes);
    for (const s of r.samples) {
      // The histogram is the MMU's own leaf count, split by level.
      expect(s.leaves[0] + s.leaves[1] + s.leaves[2], `${r.policy} at ${s.chunks} chunks`).toBe(s.mappedLeaves);
      expect(s.hostUsedFrames).toBeLessThanOrEqual(r.peakHostUsedFrames);
      expect(s.folios).toBeLessThanOrEqual(r.peakFolios);
      expect(s.pageTablePages).toBeLessThanOrEqual(r.peakPageTablePages);
    }
    // Splits and merges only grow, and end at the file's counters.
    for (let i = 1; i < r.samples.length; i++) {
      expect(r.samples[i]!.splits).toBeGreaterThanOrEqual(r.samples[i - 1]!.splits);
      expect(r.samples[i]!.merges).toBeGreaterThanOrEqual(r.samples[i - 1]!.merges);
      expect(r.samples[i]!.nowNs).toBeGreaterThanOrEqual(r.samples[i - 1]!.nowNs);
    }
    expect([last.splits, last.merges]).toEqual([r.splits, r.merges]);
    // HugeTLB: every touched 1 GiB block is allocated whole, whatever the policy.
    expect(r.peakHostUsedFrames).toBeGreaterThanOrEqual((Math.ceil(data.acceptedBytes / GiB) * GiB) / PAGE);
    expect(r.conversions).toBe(data.chunks);
  }
}

describe('accept parameters', () => {
  it('defaults to seed 003: SNP, 8 GiB accepted in 4 MiB chunks, both policies', () => {
    expect(acceptSchema.parse({})).toEqual({
      type: 'snp',
      size: 8 * GiB,
      accept: 8 * GiB,
      chunk: 4 * MiB,
      policies: ['split-eager', 'split-on-fault'],
      pattern: 'sequential',
      touches: 2,
      samples: 64,
      seed: 1,
    });
    expect(acceptSchema.parse({ size: '1TiB', accept: '2GiB', chunk: '2m', touches: '4' })).toMatchObject({ size: 2 ** 40, accept: 2 * GiB, chunk: 2 * MiB, touches: 4 });
  });

  it.each([
    [{ size: '1536MiB' }, 'size'],
    [{ chunk: '3MiB' }, 'chunk'],
    [{ chunk: '2GiB' }, 'chunk'],
    [{ accept: '6MiB' }, 'accept'],
    [{ policies: ['split-eager', 'split-eager'] }, 'policies'],
    [{ policies: [] }, 'policies'],
    [{ policies: ['split-later'] }, 'policies'],
    [{ type: 'tdx' }, 'type'],
    [{ touches: 0 }, 'touches'],
    [{ chunk: '8KiB', touches: 3 }, 'touches'],
    [{ samples: 1 }, 'samples'],
  ])('refuses %j', (args, path) => {
    const r = acceptSchema.safeParse(args);
    expect(r.success).toBe(false);
    expect(r.error?.issues.map((i) => i.path[0])).toContain(path);
  });

  it('maps every option onto a schema key', () => {
    const keys = Object.keys(acceptSchema.parse({}));
    for (const o of acceptExperiment.options) expect(keys).toContain(o.key);
  });
});

describe('accept on SNP (seed 003)', () => {
  it('a fully accepted 1 GiB guest: split-eager splits to 4K and maps 4K, split-on-fault keeps the folio and maps 2M', async () => {
    const ticks: number[] = [];
    const labels: string[] = [];
    const io: ExperimentIo = {
      progress: { start: (total) => void ticks.push(-total), tick: (n = 1) => void ticks.push(n), stop: () => undefined },
      trace: (label) => {
        labels.push(label);
        return [];
      },
    };
    const { result, data, by } = await run({ size: '1GiB', accept: '1GiB', samples: 9 }, io);
    expect(data.chunks).toBe(256);
    expectConsistent(data);
    expect(labels).toEqual(['snp: split-eager', 'snp: split-on-fault']);
    expect(ticks[0]).toBe(-512);
    expect(ticks.slice(1).reduce((a, b) => a + b, 0)).toBe(512);

    const eager = by.get('split-eager')!;
    const lazy = by.get('split-on-fault')!;
    // One split at the first acceptance, one merge at the last: the folio is mixed in between.
    expect([eager.splits, eager.merges]).toEqual([1, 1]);
    expect(eager.samples.slice(1, -1).every((s) => s.folios === PAGE_COUNT_1G && s.mixedBlocks === 1)).toBe(true);
    expect(eager.peakFolios).toBe(PAGE_COUNT_1G);
    // 4K RMP entries: PVALIDATE goes page by page and every page is a 4K leaf, except the last
    // chunk, prepared after the merge as whole 2M entries.
    expect(eager.samples.at(-1)!.leaves).toEqual([(GiB - 4 * MiB) / PAGE, 2, 0]);
    expect(eager.rmpAssignedPages).toBe(GiB / PAGE);

    expect([lazy.splits, lazy.merges]).toEqual([0, 0]);
    expect(lazy.peakFolios).toBe(1);
    expect(lazy.samples.every((s) => s.leaves[0] === 0 && s.leaves[2] === 0)).toBe(true);
    expect(lazy.samples.at(-1)!.leaves).toEqual([0, 512, 0]);
    expect(lazy.rmpAssignedPages).toBe(GiB / PAGE);

    for (const r of [eager, lazy]) {
      // Every accepted page is validated, so mapped: the histogram covers exactly what was accepted.
      for (const s of r.samples) expect(mappedBytes(s.leaves)).toBe(s.acceptedBytes);
    }
    // What splitting costs: faults, page tables, guest time; not memory (HugeTLB keeps the 1 GiB).
    expect(eager.faults).toBeGreaterThan(100 * lazy.faults);
    expect(eager.peakPageTablePages).toBeGreaterThan(lazy.peakPageTablePages);
    expect(eager.nowNs).toBeGreaterThan(lazy.nowNs);
    expect(eager.peakHostUsedFrames - eager.peakPageTablePages).toBe(lazy.peakHostUsedFrames - lazy.peakPageTablePages);

    const table = result.tables[0]!;
    expect(table.rows.map((row) => [row['policy'], row['splits'], row['merges'], row['leaves4k'], row['leaves2m'], row['leaves1g']])).toEqual([
      ['split-eager', 1, 1, (GiB - 4 * MiB) / PAGE, 2, 0],
      ['split-on-fault', 0, 0, 0, 512, 0],
    ]);
    expect(result.notes.join('\n')).toContain('split-on-fault');
  }, 20_000);

  it('a partly accepted guest: split-on-fault hands the arch only the accepted pages of the folio it keeps whole', async () => {
    const { data, by } = await run({ size: '2GiB', accept: '512MiB', samples: 5 });
    expectConsistent(data);
    const eager = by.get('split-eager')!;
    const lazy = by.get('split-on-fault')!;
    expect([eager.splits, eager.merges, eager.samples.at(-1)!.mixedBlocks]).toEqual([1, 0, 1]);
    expect([lazy.splits, lazy.merges, lazy.samples.at(-1)!.mixedBlocks, lazy.samples.at(-1)!.folios]).toEqual([0, 0, 1, 1]);
    // Only what was accepted is the guest's in the RMP: the rest of the 1 GiB folio stays shared.
    expect(eager.rmpAssignedPages).toBe(512 * MiB / PAGE);
    expect(lazy.rmpAssignedPages).toBe(512 * MiB / PAGE);
    expect(lazy.samples.at(-1)!.leaves).toEqual([0, 256, 0]);
    expect(eager.samples.at(-1)!.leaves).toEqual([512 * MiB / PAGE, 0, 0]);
  });

  it("the chart has one area per policy and level, over the guest's progress, summing to what was accepted", async () => {
    const { result, data } = await run({ size: '1GiB', accept: '64MiB', chunk: '16MiB', samples: 3 });
    const chart = result.charts[0]!;
    expect(chart.name).toMatch(/^[a-z0-9-]+$/);
    const spec = chart.spec as unknown as { data: { values: Array<{ policy: string; level: string; ms: number; accepted: number; mappedGiB: number }> }; encoding: Record<string, { field?: string }> };
    expect(spec.encoding['column']?.field).toBe('policy');
    expect(spec.encoding['color']?.field).toBe('level');
    expect(spec.encoding['x']?.field).toBe('accepted');
    expect(spec.encoding['y']?.field).toBe('mappedGiB');
    const series = new Set(spec.data.values.map((v) => `${v.policy}/${v.level}`));
    expect([...series].sort()).toEqual(['split-eager/1G', 'split-eager/2M', 'split-eager/4K', 'split-on-fault/1G', 'split-on-fault/2M', 'split-on-fault/4K']);
    for (const policy of ['split-eager', 'split-on-fault']) {
      const end = spec.data.values.filter((v) => v.policy === policy && v.accepted === data.acceptedBytes / GiB);
      expect(end).toHaveLength(3);
      expect(end.reduce((a, v) => a + v.mappedGiB, 0)).toBeCloseTo(64 / 1024, 9);
    }
    expect(JSON.parse(JSON.stringify(result.data))).toEqual(result.data);
  });
});

describe('accept on sw-protected', () => {
  it('the guest converts each chunk; once a block is whole again the next fault maps it at 1G under either policy', async () => {
    const { data, by } = await run({ type: 'sw-protected', size: '2GiB', accept: '2GiB', chunk: '64MiB', samples: 9 });
    expectConsistent(data);
    const eager = by.get('split-eager')!;
    const lazy = by.get('split-on-fault')!;
    expect([eager.splits, eager.merges]).toEqual([2, 2]);
    expect([lazy.splits, lazy.merges]).toEqual([0, 0]);
    expect(eager.rmpAssignedPages).toBeUndefined();
    // Mid-block: 4K leaves under split-eager, 2M under split-on-fault (2 touches per chunk).
    const mid = (r: AcceptRun) => r.samples.find((s) => s.chunks > 0 && s.chunks < 16)!;
    expect(mid(eager).leaves[0]).toBeGreaterThan(0);
    expect(mid(eager).leaves[1]).toBe(0);
    expect(mid(lazy).leaves[0]).toBe(0);
    expect(mid(lazy).leaves[1]).toBeGreaterThan(0);
    expect(eager.samples.at(-1)!.leaves).toEqual([0, 0, 2]);
    expect(lazy.samples.at(-1)!.leaves).toEqual([0, 0, 2]);
  });

  it('the random pattern is reproducible from the seed', async () => {
    const args = { type: 'sw-protected', size: '1GiB', accept: '256MiB', chunk: '16MiB', pattern: 'random', policies: ['split-on-fault'], samples: 4 };
    const a = (await run(args)).data.runs[0]!.samples;
    const b = (await run(args)).data.runs[0]!.samples;
    expect(a).toEqual(b);
    const c = (await run({ ...args, seed: 2 })).data.runs[0]!.samples;
    expect(c.at(-1)!.leaves).toEqual(a.at(-1)!.leaves);
  });
});
