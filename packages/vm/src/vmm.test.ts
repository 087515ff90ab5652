// The Vmm helper and an arch's own memory requests (ArchVm.memoryRequest): a pKVM-like arch whose
// guest asks to share, unshare and give back pages through hypercalls the VMM must understand
// without knowing the arch.
import { describe, expect, it } from 'vitest';
import { defineArchPlugin, uapi, type ArchExit, type ArchMemoryRequest } from '@cocokit/sdk';
import { openKvm, runVmm, setupGuestMemory, step, type GuestSteps } from './index.js';

const PAGE = 4096;
const MiB = 2 ** 20;
const SHARE = 0x100;
const UNSHARE = 0x101;
const GIVE_BACK = 0x102;

interface HypercallExit extends ArchExit {
  readonly reason: 'HYPERCALL';
  readonly nr: number;
  readonly args: readonly number[];
  ret: number;
}

const isHypercall = (e: ArchExit): e is HypercallExit => e.reason === 'HYPERCALL' && typeof (e as { nr?: unknown }).nr === 'number';

/** An arch whose guest memory calls exit to userspace as KVM_EXIT_HYPERCALL with the call's number. */
const mem = defineArchPlugin({
  name: 'vmm-mem',
  apiVersion: 1,
  vmTypes: ['vmm-mem'],
  createVm(ctx) {
    const call = (nr: number, gpa: number): number => {
      const exit: HypercallExit = { reason: 'HYPERCALL', exitReason: uapi.KVM_EXIT_HYPERCALL, nr, args: [gpa, 0, 0, 0, 0, 0], ret: 0, flags: 0 } as HypercallExit;
      return ctx.exit(exit);
    };
    return {
      capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false },
      guestApi: {
        share: (gpa: number) => call(SHARE, gpa),
        unshare: (gpa: number) => call(UNSHARE, gpa),
        giveBack: (gpa: number) => call(GIVE_BACK, gpa),
        other: (gpa: number) => call(0x999, gpa),
      },
      // The guest's call returns what userspace wrote into `ret`.
      completeExit: (exit) => (isHypercall(exit) ? { value: exit.ret } : undefined),
      memoryRequest(exit): ArchMemoryRequest | undefined {
        if (!isHypercall(exit)) return undefined;
        const gpa = exit.args[0] ?? 0;
        if (exit.nr === SHARE) return { op: 'convert', gpa, size: PAGE, toPrivate: false };
        if (exit.nr === UNSHARE) return { op: 'convert', gpa, size: PAGE, toPrivate: true };
        if (exit.nr === GIVE_BACK) return { op: 'discard', gpa, size: PAGE };
        return undefined;
      },
    };
  },
});

const arch = (op: string, gpa: number): GuestSteps<number> => step<number>({ kind: 'arch', op, args: [gpa] });

describe('Vmm: an arch memory request', () => {
  it('converts and discards as the arch reads its exits, and answers the guest in ret', async () => {
    const vm = await openKvm({ archs: [mem], hostBytes: 1 << 30 }).createVm({ type: 'vmm-mem' });
    setupGuestMemory(vm, { size: MiB });
    const answers: number[] = [];
    vm.createVcpu(0, function* (g) {
      yield* g.write(0x1000, 7n);
      answers.push(yield* arch('share', 0x2000));
      yield* g.write(0x2000, 9n, { shared: true });
      answers.push(yield* arch('unshare', 0x2000));
      answers.push(yield* arch('giveBack', 0x1000));
    });
    const r = runVmm(vm);
    expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
    expect(answers).toEqual([0, 0, 0]);
    expect(r.exits['HYPERCALL']).toBe(3);
    expect([r.conversions, r.discards, r.discardedPages]).toEqual([2, 1, 1]);
    expect(vm.memslots.getAttributes(2)).toBe(uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE);
    // The page given back is out of guest_memfd; it stays private in the VM's attributes.
    expect(vm.memslots.getAttributes(1)).toBe(uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE);
    expect(vm.stats().memory.guestMemfdPages).toBe(0);
    vm.checkInvariants();
  });

  it('answers 1 for a request it cannot carry out and lets the vCPU go on; exits the arch does not claim still stop the loop', async () => {
    const vm = await openKvm({ archs: [mem], hostBytes: 1 << 30 }).createVm({ type: 'vmm-mem' });
    setupGuestMemory(vm, { size: MiB });
    const answers: number[] = [];
    vm.createVcpu(0, function* () {
      // Not page aligned: KVM_SET_MEMORY_ATTRIBUTES refuses (EINVAL) and the VMM tells the guest.
      answers.push(yield* arch('share', 0x3001));
      // Nothing backs a gpa outside every memslot: the discard frees nothing and succeeds.
      answers.push(yield* arch('giveBack', 64 * MiB));
      answers.push(yield* arch('share', 0x3000));
    });
    const r = runVmm(vm);
    expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
    expect(answers).toEqual([1, 0, 0]);
    expect([r.conversions, r.discards, r.discardedPages]).toEqual([1, 1, 0]);
    const unclaimed = await openKvm({ archs: [mem], hostBytes: 1 << 30 }).createVm({ type: 'vmm-mem' });
    setupGuestMemory(unclaimed, { size: MiB });
    unclaimed.createVcpu(0, function* () {
      yield* arch('other', 0);
    });
    const stopped = runVmm(unclaimed);
    expect(stopped.ok).toBe(false);
    expect(stopped.exits['HYPERCALL']).toBe(1);
    expect(stopped.vcpus[0]?.error).toMatch(/not handled|HYPERCALL/);
  });
});
