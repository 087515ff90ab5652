import { describe, expect, it } from 'vitest';
import { silentIo, type ExperimentResult } from '../experiment.js';
import { BOOT_CONFIGURATIONS, bootExperiment, type BootRun } from './boot.js';

const MiB = 2 ** 20;
/** Small enough for a fast test, big enough that every configuration converts many times. */
const small = { size: 16 * MiB, transfers: 64, workingSet: 4 * MiB };

const runsOf = (r: ExperimentResult): Map<string, BootRun> => new Map((r.data as { runs: BootRun[] }).runs.map((run) => [run.id, run]));

async function boot(params: Record<string, unknown>): Promise<{ result: ExperimentResult; runs: Map<string, BootRun> }> {
  const result = await bootExperiment.run(bootExperiment.schema.parse(params), silentIo);
  return { result, runs: runsOf(result) };
}

describe('cocokit boot: parameters', () => {
  it('defaults to a 1 GiB SNP guest, 10 000 transfers over two DMA pages, every configuration', () => {
    const p = bootExperiment.schema.parse({});
    expect(p).toEqual({ type: 'snp', size: 2 ** 30, transfers: 10_000, dmaPages: 2, workingSet: 64 * MiB, configurations: [...BOOT_CONFIGURATIONS], seed: 0 });
    // Command-line values arrive as strings.
    expect(bootExperiment.schema.parse({ size: '512MiB', transfers: '10', dmaPages: '1', type: 'tdx' })).toMatchObject({ size: 512 * MiB, transfers: 10, dmaPages: 1, type: 'tdx' });
  });

  it('refuses a bad size, a working set that does not fit, no transfers, an unknown type or configuration', () => {
    for (const bad of [{ size: 'lots' }, { size: 4097 }, { size: '4MiB' }, { transfers: 0 }, { dmaPages: 3 }, { type: 'sev' }, { configurations: ['discard-all'] }]) {
      expect(bootExperiment.schema.safeParse(bad).success, JSON.stringify(bad)).toBe(false);
    }
    const r = bootExperiment.schema.safeParse({ size: '8MiB', workingSet: '8MiB' });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.path).toEqual(['workingSet']);
  });

  it('maps every option onto a key of the schema', () => {
    const keys = Object.keys(bootExperiment.schema.parse({}));
    for (const o of bootExperiment.options) expect(keys).toContain(o.key);
  });
});

describe('cocokit boot: a small sw-protected boot', async () => {
  const { result, runs } = await boot({ ...small, type: 'sw-protected' });
  const get = (id: string): BootRun => {
    const r = runs.get(id);
    if (r === undefined) throw new Error(`no run ${id}`);
    return r;
  };

  it('runs every configuration, each making two conversions per transfer', () => {
    expect([...runs.keys()]).toEqual([...BOOT_CONFIGURATIONS]);
    for (const id of ['both', 'private-only', 'lazy', 'none', 'in-place']) {
      expect(get(id).applicable).toBe(true);
      expect(get(id).conversions, id).toBe(2 * small.transfers);
      expect(get(id).exits['HYPERCALL'], id).toBe(2 * small.transfers);
    }
    // The baseline shares each DMA page once and takes it back once.
    expect(get('no-conversion').conversions).toBe(4);
  });

  it('discards as each policy says', () => {
    expect(get('both')).toMatchObject({ punchHoles: small.transfers, sharedDiscards: small.transfers });
    expect(get('private-only')).toMatchObject({ punchHoles: small.transfers, sharedDiscards: 0 });
    expect(get('none')).toMatchObject({ punchHoles: 0, sharedDiscards: 0 });
    expect(get('in-place')).toMatchObject({ punchHoles: 0, sharedDiscards: 0 });
    // Lazy: every flip back cancels the queued discard; the batch threshold is never reached.
    expect(get('lazy')).toMatchObject({ punchHoles: 0, sharedDiscards: 0, lazyBatches: 0 });
    expect(get('lazy').lazyCancelledPages).toBeGreaterThan(0);
  });

  it('shows the double allocation only for the policies that keep both copies', () => {
    for (const id of ['both', 'in-place']) expect(get(id).doubleAllocatedPages, id).toBe(0);
    // The baseline's VMM discards nothing either.
    for (const id of ['none', 'lazy', 'no-conversion']) expect(get(id).doubleAllocatedPages, id).toBe(2);
    // No shared discard keeps the shared copies, but the hole punched on to-shared took the
    // private ones, and this guest does not touch the DMA pages privately again.
    expect(get('private-only')).toMatchObject({ doubleAllocatedPages: 0, sharedAnonPages: 2 });
    // The peak is the host's high-water mark: at least what is in use at the end, and the two
    // extra shared pages show in it.
    for (const r of runs.values()) expect(r.peakHostUsedFrames).toBeGreaterThanOrEqual(r.hostUsedFrames);
    expect(get('none').peakHostUsedFrames).toBeGreaterThanOrEqual(get('both').peakHostUsedFrames + 2);
    expect(get('none').sharedAnonPages).toBe(2);
    expect(get('both').sharedAnonPages).toBe(0);
  });

  it("reproduces seed 000's direction: punch hole > no shared discard > no conversion cost", () => {
    expect(get('both').bootNs).toBeGreaterThan(get('private-only').bootNs);
    expect(get('private-only').bootNs).toBeGreaterThan(get('none').bootNs);
    expect(get('none').bootNs).toBeGreaterThan(get('no-conversion').bootNs);
    // The ledger accounts for all of the virtual time (one vCPU, nothing waits on a lock).
    for (const r of runs.values()) {
      const charged = Object.values(r.costNs).reduce((a, b) => a + b, 0);
      expect(charged, r.id).toBeCloseTo(r.bootNs, 3);
    }
    // The shared discard's gap is the madvise syscalls, among others.
    expect(get('both').costNs['vm.discard_syscall']! - (get('private-only').costNs['vm.discard_syscall'] ?? 0)).toBeGreaterThan(0);
  });

  it('returns a table, a cost table, a stacked bar chart with the expected series, and notes', () => {
    const [table, costs] = result.tables;
    expect(table?.rows.map((r) => r['configuration'])).toEqual([...runs.values()].map((r) => r.label));
    expect(table?.columns.map((c) => c.key)).toEqual(['configuration', 'path', 'boot', 'setup', 'conversions', 'noops', 'zaps', 'punchHoles', 'sharedDiscards', 'peak', 'double']);
    expect(costs?.rows.length).toBeGreaterThan(0);
    expect(result.charts).toHaveLength(1);
    const chart = result.charts[0]!;
    expect(chart.name).toMatch(/^[a-z0-9-]+$/);
    const spec = chart.spec as { data: { values: Array<{ configuration: string; costs: string; ms: number }> }; encoding: Record<string, { field: string }> };
    expect(spec.encoding['color']?.field).toBe('costs');
    const values = spec.data.values;
    expect(new Set(values.map((v) => v.configuration))).toEqual(new Set([...runs.values()].map((r) => r.label)));
    expect(new Set(values.map((v) => v.costs))).toEqual(new Set(['vm', 'host', 'gmem', 'mmu', 'memslot']));
    // Each bar adds up to its configuration's boot time.
    for (const r of runs.values()) {
      const sum = values.filter((v) => v.configuration === r.label).reduce((a, v) => a + v.ms, 0);
      expect(sum).toBeCloseTo(r.bootNs / 1e6, 1);
    }
    expect(result.notes.join('\n')).toMatch(/direction holds/);
    expect(JSON.parse(JSON.stringify(result.data))).toEqual(result.data);
  });
});

describe('cocokit boot: confidential types', () => {
  it('reports in-place conversion on TDX as not applicable, and boots the rest', async () => {
    const { result, runs } = await boot({ ...small, transfers: 16, type: 'tdx', configurations: ['both', 'in-place', 'no-conversion'] });
    expect(runs.get('in-place')).toMatchObject({ applicable: false });
    expect(runs.get('in-place')?.reason).toMatch(/in-place/);
    expect(result.tables[0]?.rows[1]?.['boot']).toBe('n/a');
    expect(runs.get('both')?.conversions).toBe(32);
    expect(runs.get('both')!.bootNs).toBeGreaterThan(runs.get('no-conversion')!.bootNs);
    expect(result.notes.join('\n')).toMatch(/not applicable/);
  });

  it('boots SNP through its launch, accepting as it goes', async () => {
    const { runs } = await boot({ ...small, transfers: 16, type: 'snp', configurations: ['both', 'private-only', 'no-conversion'] });
    const both = runs.get('both')!;
    // SNP's acceptance is a page-state change request too, for memory already private: the ioctl
    // has nothing to do, so the flips alone convert and the acceptance requests are no-ops.
    expect(both.conversions).toBe(32);
    expect(both.noopConversions).toBeGreaterThan(0);
    expect(both.costNs['snp.pvalidate']).toBeGreaterThan(0);
    // PVALIDATE after each flip back faults the punched private page in again: both copies.
    expect(runs.get('private-only')?.doubleAllocatedPages).toBe(2);
    expect(both.bootNs).toBeGreaterThan(runs.get('private-only')!.bootNs);
    expect(runs.get('private-only')!.bootNs).toBeGreaterThan(runs.get('no-conversion')!.bootNs);
  });

  it("boots pKVM, whose MEM_SHARE/MEM_UNSHARE the VMM reads through the arch's memoryRequest", async () => {
    const { runs } = await boot({ ...small, transfers: 16, type: 'pkvm', configurations: ['both', 'private-only', 'in-place', 'no-conversion'] });
    const both = runs.get('both')!;
    // No acceptance on pKVM: the flips are the only requests, none of them a no-op.
    expect([both.conversions, both.noopConversions]).toEqual([32, 0]);
    expect(Object.keys(both.costNs).some((k) => k.startsWith('pkvm.'))).toBe(true);
    expect(runs.get('in-place')?.applicable).toBe(true);
    // Nothing touches a DMA page after it flips back to private (no PVALIDATE as on SNP), so the
    // punched private copy is not faulted in again: no double allocation even without shared discard.
    expect(runs.get('private-only')?.doubleAllocatedPages).toBe(0);
    expect(both.bootNs).toBeGreaterThan(runs.get('private-only')!.bootNs);
    expect(runs.get('private-only')!.bootNs).toBeGreaterThan(runs.get('no-conversion')!.bootNs);
  });
});
