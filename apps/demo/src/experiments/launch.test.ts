import { LaunchDigest } from '@cocokit/arch-snp';
import { Mrtd, TDX_EXTENDMR_CHUNKSIZE } from '@cocokit/arch-tdx';
import { describe, expect, it } from 'vitest';
import { silentIo, type ExperimentIo } from '../experiment.js';
import { LAUNCH_STEPS, launchExperiment, launchImage, launchSchema, type LaunchData, type LaunchParams } from './launch.js';

const PAGE = 4096;
const IMAGE_PAGES = 16;
const GPA = 0x10_0000;
const FLIP = 5 * PAGE + 1234;

const small = (extra: Record<string, unknown> = {}): LaunchParams =>
  launchSchema.parse({ imageSize: IMAGE_PAGES * PAGE, memory: '4MiB', gpa: GPA, flipByte: FLIP, ...extra });

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

/** MRTD of `image` at `gpa` as the TDX module would compute it: per page PAGE.ADD, then 16 × MR.EXTEND. */
function expectedMrtd(image: Uint8Array, gpa: number): string {
  const m = new Mrtd();
  for (let off = 0; off < image.length; off += PAGE) {
    m.pageAdd(gpa + off);
    for (let c = 0; c < PAGE; c += TDX_EXTENDMR_CHUNKSIZE) m.mrExtend(gpa + off + c, image.subarray(off + c, off + c + TDX_EXTENDMR_CHUNKSIZE));
  }
  return hex(m.finalize());
}

/** The SNP launch digest of `image` at `gpa`: one NORMAL PAGE_INFO per page, no VMSA. */
function expectedLaunchDigest(image: Uint8Array, gpa: number): string {
  const d = new LaunchDigest();
  for (let off = 0; off < image.length; off += PAGE) d.update('normal', gpa + off, image.subarray(off, off + PAGE));
  return hex(d.digest);
}

describe('launch', () => {
  it('measures the image on both types: the same image gives the same measurement, one flipped byte another', async () => {
    const r = await launchExperiment.run(small(), silentIo);
    const data = r.data as LaunchData;
    expect(data.types.map((t) => t.type)).toEqual(['tdx', 'tdx-seed-001', 'snp']);
    expect(data.image).toEqual({ size: IMAGE_PAGES * PAGE, pages: IMAGE_PAGES, gpa: GPA, flipByte: FLIP });

    const image = launchImage(IMAGE_PAGES * PAGE);
    const flipped = image.slice();
    flipped[FLIP] = (flipped[FLIP] ?? 0) ^ 1;
    const expected = {
      tdx: [expectedMrtd(image, GPA), expectedMrtd(flipped, GPA)],
      // The measurement does not depend on who maps: seed 001's flow gives upstream's MRTD.
      'tdx-seed-001': [expectedMrtd(image, GPA), expectedMrtd(flipped, GPA)],
      snp: [expectedLaunchDigest(image, GPA), expectedLaunchDigest(flipped, GPA)],
    };
    for (const t of data.types) {
      expect(t.original.measurement).toMatch(/^[0-9a-f]{96}$/);
      expect(t.again.measurement).toBe(t.original.measurement);
      expect(t.flipped.measurement).not.toBe(t.original.measurement);
      expect([t.reproducible, t.flipChanges]).toEqual([true, true]);
      // Exactly the image's pages at their GPAs, in order, went into the measurement.
      expect([t.original.measurement, t.flipped.measurement]).toEqual(expected[t.type]);
    }
    expect(data.types.map((t) => t.original.measurementKind)).toEqual(['mrtd', 'mrtd', 'snp-launch-digest']);
    expect(JSON.parse(JSON.stringify(data))).toEqual(data);
  });

  it('times each step in virtual time: positive, summing to the total, the same on every run', async () => {
    const data = (await launchExperiment.run(small(), silentIo)).data as LaunchData;
    const [tdx, seed, snp] = data.types;
    expect(seed?.original.steps.map((s) => s.step)).toEqual([...LAUNCH_STEPS]);
    // Upstream INIT_MEM_REGION and SNP_LAUNCH_UPDATE allocate through kvm_gmem_populate: no pre-fault step.
    expect(tdx?.original.steps.map((s) => s.step)).toEqual(LAUNCH_STEPS.filter((s) => s !== 'prefault'));
    expect(snp?.original.steps.map((s) => s.step)).toEqual(LAUNCH_STEPS.filter((s) => s !== 'prefault'));
    // The same work in both TDX flows, split differently over the steps.
    expect(tdx?.original.steps).not.toEqual(seed?.original.steps);
    for (const t of data.types) {
      for (const run of [t.original, t.again, t.flipped]) {
        for (const s of run.steps) expect(s.ns, `${t.type} ${s.step}`).toBeGreaterThan(0);
        expect(run.steps.reduce((n, s) => n + s.ns, 0)).toBe(run.totalNs);
      }
      expect(t.again.steps).toEqual(t.original.steps);
      const populate = t.original.steps.find((s) => s.step === 'populate')?.ns ?? 0;
      expect(populate).toBeGreaterThan(t.original.totalNs / 2);
    }
  });

  it('counts what the plugins counted: pre-faulted, added and measured pages', async () => {
    const r = await launchExperiment.run(small({ refusals: false }), silentIo);
    const [tdx, seed, snp] = (r.data as LaunchData).types;
    // Upstream INIT_MEM_REGION maps, PAGE.ADDs and measures each page; seed 001's pre-fault premaps
    // every page first. The S-EPT path for 64 KiB under one 2 MiB region is one table per level
    // below the root (3).
    expect(tdx?.original.counts).toEqual({ prefaultedPages: 0, septTables: 3, populatedPages: IMAGE_PAGES, measureUpdates: IMAGE_PAGES * 16, privatePages: IMAGE_PAGES });
    expect(seed?.original.counts).toEqual({ prefaultedPages: IMAGE_PAGES, septTables: 3, populatedPages: IMAGE_PAGES, measureUpdates: IMAGE_PAGES * 16, privatePages: IMAGE_PAGES });
    expect(snp?.original.counts).toEqual({ prefaultedPages: 0, septTables: 0, populatedPages: IMAGE_PAGES, measureUpdates: IMAGE_PAGES, privatePages: IMAGE_PAGES });

    const [steps, measurements, counts, ...rest] = r.tables;
    expect(rest).toEqual([]);
    expect(steps?.rows.filter((row) => row['step'] === 'total').map((row) => row['pages'])).toEqual([IMAGE_PAGES, IMAGE_PAGES, IMAGE_PAGES]);
    expect(steps?.rows.filter((row) => row['step'] === 'populate + measure').map((row) => row['pages'])).toEqual([IMAGE_PAGES, IMAGE_PAGES, IMAGE_PAGES]);
    expect(measurements?.rows.map((row) => row['same'])).toEqual(['—', 'yes', 'no', '—', 'yes', 'no', '—', 'yes', 'no']);
    expect(counts?.rows).toHaveLength(3);
  });

  it('shows the refusals with the errno each plugin returns', async () => {
    const r = await launchExperiment.run(small(), silentIo);
    const refusals = (r.data as LaunchData).refusals;
    expect(refusals.map((x) => [x.type, x.op, x.errno])).toEqual([
      // Upstream: pre_fault_allowed is false until tdx_td_finalize.
      ['tdx', 'KVM_PRE_FAULT_MEMORY', 'EOPNOTSUPP'],
      // kvm_gmem_populate: the page is prepared already.
      ['tdx', 'KVM_TDX_INIT_MEM_REGION', 'EEXIST'],
      // kvm_gmem_populate: the gfn is not private in the memory attributes.
      ['tdx', 'KVM_TDX_INIT_MEM_REGION', 'EINVAL'],
      ['tdx', 'KVM_TDX_INIT_MEM_REGION', 'EINVAL'],
      // Seed 001: "Return an error" for a region KVM_PRE_FAULT_MEMORY did not map.
      ['tdx-seed-001', 'KVM_TDX_INIT_MEM_REGION', 'ENOENT'],
      // The pre-fault prepared the folio; 6.18's guest_memfd will not populate a prepared page.
      ['tdx-seed-001', 'kvm_gmem_populate', 'EEXIST'],
      ['tdx-seed-001', 'KVM_TDX_FINALIZE_VM', 'EINVAL'],
      ['tdx-seed-001', 'KVM_TDX_INIT_MEM_REGION', 'EINVAL'],
      // pre_fault_allowed stays false on SNP until SNP_LAUNCH_FINISH.
      ['snp', 'KVM_PRE_FAULT_MEMORY', 'EOPNOTSUPP'],
      // kvm_gmem_populate wants KVM_MEMORY_ATTRIBUTE_PRIVATE on every gfn.
      ['snp', 'kvm_gmem_populate', 'EINVAL'],
      ['snp', 'KVM_SEV_SNP_LAUNCH_UPDATE', 'EINVAL'],
    ]);
    expect(r.tables.at(-1)?.title).toBe('Refusals');
    expect(r.tables.at(-1)?.rows).toHaveLength(refusals.length);
  });

  it('charts the step times per type, stacked', async () => {
    const r = await launchExperiment.run(small({ refusals: false }), silentIo);
    expect(r.charts).toHaveLength(1);
    const chart = r.charts[0];
    expect(chart?.name).toMatch(/^[a-z0-9-]+$/);
    const spec = chart?.spec as { data: { values: Array<{ type: string; step: string; us: number }> }; encoding: Record<string, { field?: string }> };
    const series = spec.data.values;
    expect(series.filter((v) => v.type === 'tdx').map((v) => v.step)).toEqual(['create VM', 'memory setup', 'populate + measure', 'finalize']);
    expect(series.filter((v) => v.type === 'tdx-seed-001').map((v) => v.step)).toEqual(['create VM', 'memory setup', 'pre-fault', 'populate + measure', 'finalize']);
    expect(series.filter((v) => v.type === 'snp').map((v) => v.step)).toEqual(['create VM', 'memory setup', 'populate + measure', 'finalize']);
    expect(series.every((v) => v.us > 0)).toBe(true);
    expect([spec.encoding['x']?.field, spec.encoding['y']?.field, spec.encoding['color']?.field]).toEqual(['type', 'us', 'step']);
  });

  it('runs one type alone, reporting progress and a trace label per configuration', async () => {
    const calls: string[] = [];
    const io: ExperimentIo = {
      progress: { start: (n, label) => calls.push(`start ${n} ${label}`), tick: () => calls.push('tick'), stop: () => calls.push('stop') },
      trace: (label) => {
        calls.push(`trace ${label}`);
        return [];
      },
    };
    const r = await launchExperiment.run(small({ types: ['snp'] }), io);
    expect((r.data as LaunchData).types.map((t) => t.type)).toEqual(['snp']);
    expect(calls).toEqual([
      'start 4 launch',
      'trace snp: image',
      'tick',
      'trace snp: same image',
      'tick',
      `trace snp: byte ${FLIP} flipped`,
      'tick',
      'trace snp: refusals',
      'tick',
      'stop',
    ]);
  });

  describe('parameters', () => {
    it('defaults to both types, a 4 MiB image in 64 MiB, flipping the middle byte', async () => {
      const p = launchSchema.parse({});
      expect(p).toEqual({ types: ['tdx', 'tdx-seed-001', 'snp'], imageSize: 4 * 2 ** 20, memory: 64 * 2 ** 20, gpa: 0, refusals: true });
      expect(launchExperiment.options.map((o) => o.key).sort()).toEqual(Object.keys({ ...p, flipByte: 0 }).sort());
      const r = await launchExperiment.run(launchSchema.parse({ imageSize: '8KiB', memory: '2MiB', types: ['tdx'], refusals: false }), silentIo);
      expect(r.params['flipByte']).toBe(PAGE);
    });

    it('takes sizes and numbers as the command line gives them', () => {
      expect(launchSchema.parse({ imageSize: '64KiB', memory: '1M', gpa: '0x10000', flipByte: '4097' })).toMatchObject({ imageSize: 65536, memory: 2 ** 20, gpa: 2 ** 16, flipByte: 4097 });
      expect(launchSchema.parse({ gpa: '1MiB' }).gpa).toBe(2 ** 20);
    });

    it.each([
      [{ types: [] }, 'types'],
      [{ types: ['tdx', 'tdx'] }, 'types'],
      [{ types: ['pkvm'] }, 'types'],
      [{ imageSize: 3000 }, 'imageSize'],
      [{ imageSize: '8MiB', memory: '4MiB' }, 'imageSize'],
      [{ gpa: 100 }, 'gpa'],
      [{ gpa: '1.5KiB' }, 'gpa'],
      [{ gpa: '62MiB' }, 'imageSize'],
      [{ imageSize: '8KiB', flipByte: 8192 }, 'flipByte'],
      [{ flipByte: -1 }, 'flipByte'],
    ])('refuses %j', (input, key) => {
      const r = launchSchema.safeParse(input);
      expect(r.success).toBe(false);
      expect(r.error?.issues.map((i) => i.path[0])).toContain(key);
    });
  });
});
