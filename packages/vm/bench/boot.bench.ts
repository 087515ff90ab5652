/**
 * Seed 000's boot: OVMF flips its one or two DMA pages between private and shared on every
 * transfer, so a 1 GiB SNP guest booted in 1m43s with QEMU's discard on every conversion and
 * 1m08s with the shared discard disabled. Here: the same pattern (`firmwareBoot`, two conversions
 * per transfer, each a KVM_HC_MAP_GPA_RANGE exit handled by the Vmm helper) on a 1 GiB
 * sw-protected guest under the three conversion paths:
 *
 * - attributes + discard 'both' (QEMU: madvise(DONTNEED) on to-private, PUNCH_HOLE on to-shared);
 * - attributes + discard 'lazy' (discards queued, cancelled by the flip back, issued in batches);
 * - in place (PROPOSED-CONV-v8: one copy, nothing to discard).
 *
 * Reported per path: the virtual boot time (the Vmm result's `nowNs`, i.e. what the cost model
 * says the boot takes; the vCPU's clock starts where the VM's setup ended, so it includes the
 * setup, shown on its own line: on the attributes path QEMU's initial KVM_SET_MEMORY_ATTRIBUTES
 * over all of RAM is charged per gfn), the wall time of the simulation, and the conversions, punch
 * holes and shared discards the VMM made.
 *
 *   cd packages/vm && pnpm bench
 *   COCOKIT_BENCH_QUICK=1 pnpm bench
 *   COCOKIT_BENCH_TRANSFERS=100000 pnpm bench   (default 10000; 500 with QUICK)
 */
import { runSuite, type SuiteContext } from '@cocokit/bench';
import { openKvm, runVmm, setupGuestMemory, type ConversionPath, type DiscardPolicy } from '../src/index.js';
import { firmwareBoot } from '../src/guest/index.js';

const GiB = 2 ** 30;
const quick = process.env['COCOKIT_BENCH_QUICK'] === '1';
const transfers = Number(process.env['COCOKIT_BENCH_TRANSFERS'] ?? (quick ? 500 : 10_000));
const samples = quick ? 1 : 3;
if (!Number.isSafeInteger(transfers) || transfers <= 0) throw new Error(`COCOKIT_BENCH_TRANSFERS=${transfers} is not a positive integer`);

interface PathCase {
  readonly label: string;
  readonly path: ConversionPath;
  readonly discard?: DiscardPolicy;
}

const cases: readonly PathCase[] = [
  { label: 'attributes + punch hole (discard both)', path: 'attributes', discard: 'both' },
  { label: 'attributes + lazy discard', path: 'attributes', discard: 'lazy' },
  { label: 'in place', path: 'in-place' },
];

interface BootRun {
  readonly wallMs: number;
  /** The Vmm result's nowNs: the vCPU's clock at shutdown, which starts where the VM's setup ended. */
  readonly virtualNs: number;
  /** Virtual time of the setup before the vCPU runs (memslot, guest_memfd, initial PRIVATE attributes). */
  readonly setupNs: number;
  readonly conversions: number;
  readonly punchHoles: number;
  readonly sharedDiscards: number;
  readonly lazyBatches: number;
}

/** One boot on a fresh host: 1 GiB guest, one vCPU running the firmware's DMA flips. */
function boot(c: PathCase, n = transfers): BootRun {
  const kvm = openKvm({ hostBytes: 4 * GiB, inPlaceConversion: c.path === 'in-place' });
  const vm = kvm.createVmSync({ type: 'sw-protected' });
  setupGuestMemory(vm, { size: GiB, path: c.path });
  vm.createVcpu(0, function* (g) {
    yield* firmwareBoot(g, { dmaGpa: 0x10_0000, dmaPages: 2, transfers: n });
  });
  const setupNs = kvm.sim.now;
  const t0 = performance.now();
  const r = runVmm(vm, { path: c.path, ...(c.discard === undefined ? {} : { discard: c.discard }) });
  const wallMs = performance.now() - t0;
  if (!r.ok) throw new Error(`${c.label}: the boot failed: ${JSON.stringify(r.vcpus)}`);
  if (r.conversions !== 2 * n) throw new Error(`${c.label}: ${r.conversions} conversions, expected ${2 * n}`);
  const s = vm.stats().conversions;
  vm.destroy();
  return { wallMs, virtualNs: r.nowNs, setupNs, conversions: r.conversions, punchHoles: s.punchHoles, sharedDiscards: s.sharedDiscards, lazyBatches: s.lazyBatches };
}

const summary = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, min: s[0]!, max: s[s.length - 1]!, samples: s.length };
};
const one = (v: number) => ({ median: v, min: v, max: v, samples: 1 });

function record(s: SuiteContext, c: PathCase, runs: readonly BootRun[]): void {
  const first = runs[0]!;
  const name = (what: string) => `${c.label}: ${what}`;
  // Virtual time is deterministic (same seed, same costs): one value whatever the sample count.
  s.record({ name: name(`virtual boot time, ${transfers} transfers`), unit: 'ms (virtual)', ...summary(runs.map((r) => r.virtualNs / 1e6)) });
  s.record({ name: name('  of which VM setup (1 GiB slot, initial attributes)'), unit: 'ms (virtual)', ...one(first.setupNs / 1e6) });
  s.record({ name: name('virtual time per conversion (DMA phase)'), unit: 'ns (virtual)', ...one((first.virtualNs - first.setupNs) / first.conversions) });
  s.record({ name: name('wall time'), unit: 'ms', ...summary(runs.map((r) => r.wallMs)) });
  s.record({ name: name('wall time per conversion'), unit: 'ns/op', ...summary(runs.map((r) => (r.wallMs * 1e6) / r.conversions)) });
  s.record({ name: name('conversions'), unit: 'count', ...one(first.conversions) });
  s.record({ name: name('punch holes (fallocate)'), unit: 'count', ...one(first.punchHoles) });
  s.record({ name: name('shared discards (madvise)'), unit: 'count', ...one(first.sharedDiscards) });
  if (c.discard === 'lazy') s.record({ name: name('lazy discard batches'), unit: 'count', ...one(first.lazyBatches) });
}

await runSuite('@cocokit/vm', 'boot', (s) => {
  // A short untimed boot per path first, so the first timed path does not pay the JIT's warm-up.
  for (const c of cases) boot(c, Math.min(transfers, 500));
  for (const c of cases) {
    const runs: BootRun[] = [];
    for (let i = 0; i < samples; i++) runs.push(boot(c));
    record(s, c, runs);
  }
});
