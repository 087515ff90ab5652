/**
 * The tour itself, as a function returning what it saw, so the test can check every figure the
 * command prints. Each step uses one public piece of @cocokit/sdk or @cocokit/host.
 */
import { MAP, PROT, createHost } from '@cocokit/host';
import {
  PAGE_SIZE,
  RangeMap,
  createCounters,
  createSim,
  createTraceEventRecorder,
  isKvmError,
  toChromeTraceJson,
  uapi,
} from '@cocokit/sdk';
import type { ChromeTrace } from '@cocokit/sdk';

export interface TourResult {
  /** Step name → one line of what happened. */
  readonly steps: ReadonlyArray<readonly [string, string]>;
  /** vCPU finish times (virtual ns) with one shared lock and with a lock each. */
  readonly contention: { readonly shared: readonly number[]; readonly distinct: readonly number[] };
  readonly attributeRuns: number;
  readonly trace: ChromeTrace;
  readonly eventCounts: string;
}

const GiB = 2 ** 30;
const TiB = 2 ** 40;

export function tour(): TourResult {
  const steps: Array<[string, string]> = [];
  const sim = createSim({ seed: 1 });
  const counters = createCounters();
  const recorder = createTraceEventRecorder();
  sim.trace.attach(counters);
  sim.trace.attach(recorder);

  // A 1 TiB host: nothing proportional to its size is allocated.
  const host = createHost({ bytes: TiB, sim });
  const runs = host.stats().modelRuns;
  steps.push(['host', `1 TiB of frames, ${runs} run${runs === 1 ? '' : 's'} of model state`]);

  // The VMM's own memory: anonymous, faulted in on first touch; outside any VMA is SIGSEGV.
  const vmm = host.createProcess('vmm');
  const shared = vmm.mmap({ length: 64 << 20, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
  vmm.write(shared, new TextEncoder().encode('hello from the VMM'));
  const back = vmm.read(shared, 18);
  const outside = vmm.read(shared + (64 << 20), 1);
  steps.push([
    'process',
    `wrote and read back "${back.ok && back.data ? new TextDecoder().decode(back.data) : '?'}"; ` +
      `a read past the mapping gets ${outside.ok ? 'nothing' : outside.signal}`,
  ]);

  // Guest memory folios out of the direct map (seed 002), with one temporary restoration.
  const folio = host.allocPages(9, 'guest_memfd', { zero: true });
  host.removeFromDirectMap(folio, folio + 512);
  const mapping = host.tempMap(folio);
  sim.advance(5_000); // the kernel reads the page for 5 µs
  mapping.unmap();
  const dm = host.directMapStats();
  steps.push([
    'direct map',
    `2 MiB folio removed; ${dm.tempRemaps} temporary remap exposed ${dm.bytesExposed} bytes for ${dm.exposureNs} ns`,
  ]);

  // A refusal: more than the host has. Nothing changes.
  const before = host.stats().usedFrames;
  try {
    for (let i = 0; i < 1025; i++) host.allocPages(18, 'guest_memfd');
  } catch (e) {
    steps.push(['refusal', isKvmError(e, 'ENOMEM') ? `ENOMEM after ${(host.stats().usedFrames - before) / 262144} GiB folios` : String(e)]);
  }

  // Memory attributes of a 1 TiB guest as a RangeMap: all private is one run; a 2 MiB shared
  // window (attributes 0, so no entry) in the middle leaves two private runs around it.
  const attributes = new RangeMap<number>();
  attributes.set(0, TiB / PAGE_SIZE, uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE);
  attributes.clear(GiB / PAGE_SIZE, GiB / PAGE_SIZE + 512);
  steps.push(['RangeMap', `1 TiB private with one 2 MiB shared hole: ${attributes.runCount} private runs`]);

  // Four vCPUs each fault in 256 pages of their own, one page per step, under a lock: one
  // shared lock serialises them, a lock each lets them run side by side.
  const run = (lockName: (i: number) => string): number[] => {
    const s = createSim({ seed: 2 });
    const h = createHost({ bytes: 64 * GiB, sim: s });
    const p = h.createProcess('guest');
    const base = p.mmap({ length: 4 << 20, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
    const vcpus = [0, 1, 2, 3].map((i) =>
      s.spawn(`vcpu${i}`, function* () {
        for (let page = 0; page < 256; page++) {
          s.lock(lockName(i)).with(() => p.touch(base + (i * 256 + page) * PAGE_SIZE, PAGE_SIZE, 'write'));
          yield;
        }
      }),
    );
    s.runUntilIdle();
    return vcpus.map((v) => v.now);
  };
  const contention = { shared: run(() => 'mmu_lock'), distinct: run((i) => `lock${i}`) };
  steps.push([
    'contention',
    `4 vCPUs × 256 faults: one lock ends at ${Math.max(...contention.shared)} ns, a lock each at ${Math.max(...contention.distinct)} ns`,
  ]);

  host.checkInvariants();
  return {
    steps,
    contention,
    attributeRuns: attributes.runCount,
    trace: toChromeTraceJson(recorder.events),
    eventCounts: counters.summary(),
  };
}
