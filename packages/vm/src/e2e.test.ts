import { describe, expect, it } from 'vitest';
import { openKvm, runVmm, setupGuestMemory, type ConversionPath, type DiscardPolicy, type GuestProgram } from './index.js';
import { firmwareBoot, touchWorkingSet } from './guest/index.js';

const MiB = 2 ** 20;

/** Seed 000's boot: the firmware flips its DMA pages on every transfer, then the OS touches its memory. */
const bootThenWork: GuestProgram = function* (g) {
  yield* firmwareBoot(g, { dmaGpa: 0x10_0000, transfers: 16 });
  yield* touchWorkingSet(g, { gpa: 0x20_0000, size: 4 * MiB, accesses: 2048, pattern: 'random' });
};

const cases: Array<{ path: ConversionPath; discard?: DiscardPolicy }> = [
  { path: 'attributes', discard: 'both' },
  { path: 'attributes', discard: 'lazy' },
  { path: 'in-place' },
];

describe('end to end: sw-protected', () => {
  for (const c of cases) {
    it(`boots with the firmware pattern and runs a workload (${c.path}${c.discard ? `, discard ${c.discard}` : ''})`, async () => {
      const kvm = openKvm({ hostBytes: 1 << 30, inPlaceConversion: c.path === 'in-place' });
      const vm = await kvm.createVm({ type: 'sw-protected' });
      setupGuestMemory(vm, { size: 16 * MiB, path: c.path });
      vm.createVcpu(0, bootThenWork);
      const r = runVmm(vm, { path: c.path, ...(c.discard ? { discard: c.discard } : {}) });
      expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
      // 16 transfers × 2 conversions, each one KVM_HC_MAP_GPA_RANGE exit handled by the helper.
      expect(r.exits['HYPERCALL']).toBe(32);
      expect(r.conversions).toBe(32);
      expect(vm.stats().conversions.conversions).toBe(32 + (c.path === 'attributes' ? 1 : 0));
      vm.checkInvariants();
      kvm.checkInvariants();
    });
  }
});
