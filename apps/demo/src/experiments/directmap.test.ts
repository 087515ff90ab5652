import { describe, expect, it } from 'vitest';
import { silentIo } from '../experiment.js';
import { DIRECTMAP_CONFIGS, REMAP_SERIES, TIME_SERIES, directmapExperiment, directmapSchema, type DirectmapData, type DirectmapParams, type DirectmapRun } from './directmap.js';

const PAGE = 4096;

const small = (extra: Record<string, unknown> = {}): DirectmapParams => directmapSchema.parse({ mmio: 40, sites: 3, accesses: 2, computeNs: 5000, memory: '8MiB', workingSet: '256KiB', ...extra });

async function run(extra: Record<string, unknown> = {}): Promise<{ data: DirectmapData; byConfig: Map<string, DirectmapRun> }> {
  const r = await directmapExperiment.run(small(extra), silentIo);
  const data = r.data as DirectmapData;
  return { data, byConfig: new Map(data.runs.map((x) => [x.config, x])) };
}

describe('directmap', () => {
  it('remaps nothing with the direct map; under NO_DIRECT_MAP, (levels + 1) per MMIO exit and one long-term for kvm-clock', async () => {
    const { data, byConfig } = await run();
    expect(data.runs.map((r) => r.config)).toEqual([...DIRECTMAP_CONFIGS]);
    expect(data.readsPerEmulation).toBe(5);
    for (const r of data.runs) {
      expect(r.mmioExits).toBe(40);
      expect(r.emulations).toBe(40);
      expect(r.walkReads).toBe(40 * 4);
      expect(r.kvmReadGuest).toBe(40 * 5);
      // The enabling WRMSR, each KVM_RUN after an MMIO exit, the one after the final HLT.
      expect(r.clockUpdates).toBe(40 + 2);
    }
    const dm = byConfig.get('direct-map')!;
    expect(dm.remaps).toEqual({ instructionFetch: 0, pageTableWalk: 0, kvmClock: 0, total: 0 });
    expect([dm.pagesExposed, dm.bytesExposed, dm.exposureNs.temporary, dm.exposureNs.longTerm, dm.shootdowns]).toEqual([0, 0, 0, 0, 0]);

    const ndm = byConfig.get('no-direct-map')!;
    expect(ndm.remaps).toEqual({ instructionFetch: 40, pageTableWalk: 160, kvmClock: 1, total: 40 * 5 + 1 });
    // The host's direct map counted exactly KVM's remaps: nothing else touched it during the run.
    expect(ndm.bytesExposed).toBe(ndm.remaps.total * PAGE);
    expect(ndm.shootdowns).toBe(ndm.remaps.total);
    // 4 page-table pages (one per level: the sites share them), 3 code pages, the kvm-clock page.
    expect(ndm.pagesExposed).toBe(4 + 3 + 1);
    expect(ndm.directMappedGuestPages).toBe(0);

    const shared = byConfig.get('no-direct-map-shared')!;
    // Only the instruction fetch remains: it cannot be shared ahead of time.
    expect(shared.remaps).toEqual({ instructionFetch: 40, pageTableWalk: 0, kvmClock: 0, total: 40 });
    expect(shared.pagesExposed).toBe(3);
    expect(shared.exposureNs.longTerm).toBe(0);
    expect(shared.directMappedGuestPages).toBe(16);
  });

  it('keeps exposure inside the run: temporary remaps short, the cache nearly the whole run; NO_DIRECT_MAP costs time per exit', async () => {
    const { data, byConfig } = await run();
    for (const r of data.runs) {
      expect(r.runNs).toBeGreaterThan(0);
      expect(r.exposureNs.temporary).toBeLessThanOrEqual(r.runNs);
      expect(r.exposureNs.longTerm).toBeLessThanOrEqual(r.runNs);
    }
    const ndm = byConfig.get('no-direct-map')!;
    expect(ndm.exposureNs.temporary).toBeGreaterThan(0);
    expect(ndm.exposureNs.longTerm).toBeGreaterThan(0.9 * ndm.runNs);
    const [dm, shared] = [byConfig.get('direct-map')!, byConfig.get('no-direct-map-shared')!];
    expect(dm.runNs).toBeLessThan(shared.runNs);
    expect(shared.runNs).toBeLessThan(ndm.runNs);
    expect(JSON.parse(JSON.stringify(data))).toEqual(data);
  });

  it('walks five levels with LA57 and runs only the configurations asked for', async () => {
    const { data } = await run({ levels: '5', configs: ['no-direct-map'] });
    const [r] = data.runs;
    expect(data.runs).toHaveLength(1);
    expect(r?.walkReads).toBe(40 * 5);
    expect(r?.remaps.total).toBe(40 * 6 + 1);
    expect(r?.pagesExposed).toBe(5 + 3 + 1);
  });

  it('returns tables and charts with one row and one bar per configuration and series', async () => {
    const r = await directmapExperiment.run(small(), silentIo);
    expect(r.experiment).toBe('directmap');
    expect(r.tables.map((t) => t.rows.length)).toEqual([3, 3]);
    expect(r.tables[0]?.rows.map((x) => x['config'])).toEqual([...DIRECTMAP_CONFIGS]);
    expect(r.charts.map((c) => c.name)).toEqual(['directmap-remaps', 'directmap-time']);
    for (const [chart, series, field] of [
      [r.charts[0], REMAP_SERIES, 'cause'],
      [r.charts[1], TIME_SERIES, 'series'],
    ] as const) {
      const values = (chart?.spec.data as { values: Array<Record<string, unknown>> }).values;
      expect(values).toHaveLength(3 * series.length);
      expect(new Set(values.map((v) => v[field]))).toEqual(new Set(series));
      expect(new Set(values.map((v) => v['config']))).toEqual(new Set(DIRECTMAP_CONFIGS));
    }
    expect(r.notes.length).toBeGreaterThanOrEqual(3);
    expect(r.notes.join(' ')).toContain('kvm_read_guest');
  });

  it('validates its parameters', () => {
    const d = directmapSchema.parse({});
    expect(d).toMatchObject({ configs: [...DIRECTMAP_CONFIGS], mmio: 1000, sites: 4, levels: 4, accesses: 8, computeNs: 20_000, memory: 64 * 2 ** 20, workingSet: 4 * 2 ** 20 });
    expect(directmapSchema.parse({ mmio: '12', levels: '5', memory: '16MiB' })).toMatchObject({ mmio: 12, levels: 5, memory: 16 * 2 ** 20 });
    expect(directmapSchema.safeParse({ mmio: 0 }).success).toBe(false);
    expect(directmapSchema.safeParse({ levels: 3 }).success).toBe(false);
    expect(directmapSchema.safeParse({ sites: 65 }).success).toBe(false);
    expect(directmapSchema.safeParse({ configs: ['no-direct-map', 'no-direct-map'] }).success).toBe(false);
    expect(directmapSchema.safeParse({ configs: ['bogus'] }).success).toBe(false);
    expect(directmapSchema.safeParse({ memory: '4MiB', workingSet: '4MiB' }).success).toBe(false);
    expect(directmapSchema.safeParse({ memory: '1000' }).success).toBe(false);
    // Every option maps onto a key of the schema.
    const keys = Object.keys(d);
    for (const o of directmapExperiment.options) expect(keys).toContain(o.key);
  });
});
