// The README's examples, run as written (sizes as there), so the front page cannot rot.
import { uapi } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { isExit, openKvm, runVmm, setupGuestMemory, type GuestProgram } from './index.js';
import { firmwareBoot, touchWorkingSet } from './guest/index.js';

describe('README', () => {
  it('boots the example guest under the exit-loop helper', async () => {
    const kvm = openKvm({ hostBytes: 2 ** 32, seed: 1 });
    const vm = await kvm.createVm({ type: 'sw-protected' });
    setupGuestMemory(vm, { size: 1 << 30 });
    const boot: GuestProgram = function* (g) {
      yield* firmwareBoot(g, { dmaGpa: 0x10_0000, transfers: 256 });
      yield* touchWorkingSet(g, { gpa: 0x20_0000, size: 64 << 20, pattern: 'random', accesses: 10_000 });
    };
    vm.createVcpu(0, boot);
    const r = runVmm(vm, { path: 'attributes', discard: 'both' });
    expect(r.ok).toBe(true);
    expect(r.exits['HYPERCALL']).toBe(512);
    expect(vm.stats().conversions.punchHoles).toBe(256);
    expect(r.nowNs).toBeGreaterThan(0);
    vm.checkInvariants();
  });

  it('runs the hand-written VMM loop of the README', async () => {
    const kvm = openKvm({ hostBytes: 2 ** 32, seed: 1 });
    const vm = await kvm.createVm({ type: 'sw-protected' });
    setupGuestMemory(vm, { size: 1 << 30 });
    const boot: GuestProgram = function* (g) {
      yield* firmwareBoot(g, { dmaGpa: 0x10_0000, transfers: 4 });
    };
    const vcpu = vm.createVcpu(1, boot);
    vm.enableCap({ cap: uapi.KVM_CAP_EXIT_HYPERCALL, args: [1 << uapi.KVM_HC_MAP_GPA_RANGE] });
    let hypercalls = 0;
    for (;;) {
      const exit = vcpu.run();
      if (isExit(exit, 'HYPERCALL')) {
        const [gpa = 0, npages = 0, attrs = 0] = exit.args;
        vm.setMemoryAttributes({ address: gpa, size: npages * 4096, attributes: attrs & uapi.KVM_MAP_GPA_RANGE_ENCRYPTED ? uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE : 0 });
        exit.ret = 0;
        hypercalls++;
      } else if (exit.reason === 'SYSTEM_EVENT') break;
      else throw new Error(`unexpected exit ${exit.reason}`);
    }
    expect(hypercalls).toBe(8);
    vm.checkInvariants();
  });
});
