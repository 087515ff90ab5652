// Unit tests of the toy VM's hooks, against the sdk alone: a real Sim, the kit's test host memory,
// and a context whose translate, vcpu and exit a test controls. The whole-VM scenarios (the core
// discovering the plugin, a guest booting through runVmm) are in test/discovery.test.ts.
import { describe, expect, it } from 'vitest';
import { createSim, gfn, isKvmError, pfn, uapi, type ArchExit, type ArchGuestStep, type ArchVmContext } from '@cocokit/sdk';
import { createTestHostMemory, errnoOf } from '@cocokit/sdk/testing';
import toy, { TOY_COSTS, TOY_UNACCEPTED_VECTOR, type ToyAcceptResult } from './index.js';

/** Thrown by the test context's `exit`, as the core ends the vCPU step. */
class ExitSignal {
  readonly exit: ArchExit;
  constructor(exit: ArchExit) {
    this.exit = exit;
  }
}

const MAP_GPA_EXIT = { [uapi.KVM_CAP_EXIT_HYPERCALL]: 2 ** uapi.KVM_HC_MAP_GPA_RANGE };

/** A toy VM over a test host; `map(gfn, pfn)` plays the core's nested tables, `onVcpu` a guest operation. */
function toyVm(options: { enabledCaps?: Readonly<Record<number, number>>; archOptions?: Record<string, unknown> } = {}) {
  const sim = createSim({ seed: 1 });
  sim.costs.register(toy.name, toy.costs);
  const host = createTestHostMemory(2 ** 20);
  const tables = new Map<number, number>();
  let vcpu: number | undefined;
  const ctx: ArchVmContext<'toy'> = {
    sim,
    host,
    vmType: 'toy',
    options: options.archOptions ?? {},
    exit(e: ArchExit): never {
      throw new ExitSignal(e);
    },
    get vcpu() {
      return vcpu;
    },
    enabledCap: (cap) => options.enabledCaps?.[cap],
    markBugged: () => undefined,
    translate: (g) => {
      const p = tables.get(g);
      return p === undefined ? undefined : { pfn: pfn(p), level: 0 };
    },
  };
  const vm = toy.createVm(ctx);
  return {
    vm,
    sim,
    host,
    map: (g: number, p: number) => void tables.set(g, p),
    onVcpu<T>(id: number, f: () => T): { value: T } | { exit: ArchExit } {
      vcpu = id;
      try {
        return { value: f() };
      } catch (e) {
        if (e instanceof ExitSignal) return { exit: e.exit };
        throw e;
      } finally {
        vcpu = undefined;
      }
    },
  };
}

describe('the owned bit: gmemPrepare and gmemInvalidate', () => {
  it('owns each page of a prepared folio for its gfn, and charges toy.own once per page', () => {
    const t = toyVm();
    const before = t.sim.now;
    t.vm.gmemPrepare(pfn(0x200), gfn(0x400), 9);
    expect(t.vm.vmApi.ownedPages()).toBe(512);
    expect(t.vm.vmApi.ownerGfn(0x200 + 7)).toBe(0x400 + 7);
    expect(t.sim.now - before).toBe(512 * TOY_COSTS['toy.own'].ns);
    // Preparing again (kernels that do not track preparedness) is harmless and costs nothing.
    t.vm.gmemPrepare(pfn(0x200), gfn(0x400), 9);
    expect(t.sim.now - before).toBe(512 * TOY_COSTS['toy.own'].ns);
    t.vm.checkInvariants();
  });

  it('refuses bad folios with KvmError and changes nothing', () => {
    const t = toyVm();
    t.vm.gmemPrepare(pfn(0x10), gfn(0x10), 0);
    expect(errnoOf(() => t.vm.gmemPrepare(pfn(0x201), gfn(0x400), 9))).toBe('EINVAL');
    expect(errnoOf(() => t.vm.gmemPrepare(pfn(2 ** 20), gfn(0), 0))).toBe('EFAULT');
    expect(errnoOf(() => t.vm.gmemPrepare(pfn(-1), gfn(0), 0))).toBe('EINVAL');
    // A page already owned for another frame.
    expect(errnoOf(() => t.vm.gmemPrepare(pfn(0x10), gfn(0x11), 0))).toBe('EBUSY');
    expect(t.vm.vmApi.ownedPages()).toBe(1);
    expect(t.vm.vmApi.ownerGfn(0x10)).toBe(0x10);
  });

  it('gives invalidated pages back (acceptance with them) and ignores pages it does not own', () => {
    const t = toyVm();
    t.vm.gmemPrepare(pfn(0x200), gfn(0x400), 9);
    t.map(0x401, 0x201);
    expect(t.vm.guestApi.accept(0x401 * 4096)).toEqual({ status: 'ok' });
    t.vm.gmemInvalidate(pfn(0x100), pfn(0x202));
    expect(t.vm.vmApi.ownedPages()).toBe(510);
    expect(t.vm.vmApi.isOwned(0x201)).toBe(false);
    expect(t.vm.vmApi.isAccepted(0x401)).toBe(false);
    expect(errnoOf(() => t.vm.gmemInvalidate(pfn(5), pfn(4)))).toBe('EINVAL');
    t.vm.checkInvariants();
  });
});

describe('host access', () => {
  it('refuses host writes to owned pages with a SIGBUS, and allows reads and other pages', () => {
    const t = toyVm();
    t.vm.gmemPrepare(pfn(0x30), gfn(0), 0);
    expect(t.vm.hostAccess(pfn(0x30), true)).toMatchObject({ signal: 'SIGBUS', kind: 'stage2' });
    expect(t.vm.hostAccess(pfn(0x30), false)).toBe('ok');
    expect(t.vm.hostAccess(pfn(0x31), true)).toBe('ok');
    t.vm.gmemInvalidate(pfn(0x30), pfn(0x31));
    expect(t.vm.hostAccess(pfn(0x30), true)).toBe('ok');
  });
});

describe('acceptance', () => {
  const access = (g: number, isPrivate: boolean) =>
    ({ gpa: g * 4096, gfn: gfn(g), access: 'read', private: isPrivate, pfn: pfn(0x50), level: 0, vcpu: 0 }) as const;

  it('says why a page cannot be accepted: not mapped, not private, not an address', () => {
    const t = toyVm();
    expect(t.vm.guestApi.accept(0x7000)).toEqual({ status: 'not-mapped' });
    t.map(7, 0x50); // mapped, but to a page the guest does not own: shared memory
    expect(t.vm.guestApi.accept(0x7000)).toEqual({ status: 'not-private' });
    expect(t.vm.guestApi.accept(0x7001).status).toBe('invalid');
    t.vm.gmemPrepare(pfn(0x50), gfn(7), 0);
    expect(t.vm.guestApi.accept(0x7000)).toEqual({ status: 'ok' });
    expect(t.vm.vmApi.isAccepted(7)).toBe(true);
  });

  it('raises #VE for a private access to an unaccepted page, and nothing once accepted or shared', () => {
    const t = toyVm();
    const ve = t.vm.guestAccess(access(7, true));
    expect(ve).toEqual({ kind: 'exception', vector: TOY_UNACCEPTED_VECTOR, name: '#VE', gpa: 0x7000 });
    expect(t.vm.guestKernel.isUnaccepted(ve as never)).toBe(true);
    expect(t.vm.guestAccess(access(7, false))).toBe('ok');
    t.map(7, 0x50);
    t.vm.gmemPrepare(pfn(0x50), gfn(7), 0);
    t.vm.guestApi.accept(0x7000);
    expect(t.vm.guestAccess(access(7, true))).toBe('ok');
  });

  it('forgets acceptance of frames converted to shared, not of frames converted to private', () => {
    const t = toyVm();
    t.map(7, 0x50);
    t.vm.gmemPrepare(pfn(0x50), gfn(7), 0);
    t.vm.guestApi.accept(0x7000);
    t.vm.beforeConvert({ start: gfn(0), end: gfn(8) }, true);
    expect(t.vm.vmApi.isAccepted(7)).toBe(true);
    t.vm.beforeConvert({ start: gfn(7), end: gfn(8) }, false);
    expect(t.vm.vmApi.isAccepted(7)).toBe(false);
    t.vm.checkInvariants();
  });
});

describe('share / unshare: KVM_HC_MAP_GPA_RANGE exits, completed by completeExit', () => {
  it('returns -KVM_ENOSYS without KVM_CAP_EXIT_HYPERCALL, -KVM_EINVAL for a bad range, and never exits then', () => {
    expect(toyVm().onVcpu(0, () => toyVm().vm.guestApi.share(0x1000, 0x1000))).toEqual({ value: -uapi.KVM_ENOSYS });
    const t = toyVm({ enabledCaps: MAP_GPA_EXIT });
    expect(t.onVcpu(0, () => t.vm.guestApi.share(0x1001, 0x1000))).toEqual({ value: -uapi.KVM_EINVAL });
    expect(t.onVcpu(0, () => t.vm.guestApi.share(0x1000, 0))).toEqual({ value: -uapi.KVM_EINVAL });
  });

  it('exits with the kernel exit shape, and hands the guest what userspace wrote in ret', () => {
    const t = toyVm({ enabledCaps: MAP_GPA_EXIT });
    const r = t.onVcpu(3, () => t.vm.guestApi.share(0x10_0000, 0x2000));
    expect(r).toEqual({
      exit: {
        reason: 'HYPERCALL',
        exitReason: uapi.KVM_EXIT_HYPERCALL,
        nr: uapi.KVM_HC_MAP_GPA_RANGE,
        args: [0x10_0000, 2, uapi.KVM_MAP_GPA_RANGE_DECRYPTED | uapi.KVM_MAP_GPA_RANGE_PAGE_SZ_4K, 0, 0, 0],
        ret: 0,
      },
    });
    const exit = (r as { exit: ArchExit & { ret: number } }).exit;
    // Not this vCPU's exit, or not the toy's: the core's business.
    expect(t.vm.completeExit(exit, 0)).toBeUndefined();
    expect(t.vm.completeExit({ ...exit }, 3)).toBeUndefined();
    exit.ret = 1; // userspace failed the conversion
    expect(t.vm.completeExit(exit, 3)).toEqual({ value: 1 });
    // Completed once: a second completion is not the toy's.
    expect(t.vm.completeExit(exit, 3)).toBeUndefined();
    const u = t.onVcpu(3, () => t.vm.guestApi.unshare(0x10_0000, 0x1000));
    expect((u as { exit: ArchExit }).exit['args']).toEqual([0x10_0000, 1, uapi.KVM_MAP_GPA_RANGE_ENCRYPTED, 0, 0, 0]);
  });
});

describe('the guest kernel', () => {
  /** Runs a guest-kernel operation, answering each step with `answer`; returns the steps and the outcome. */
  function drive(gen: Generator<ArchGuestStep, unknown, unknown>, answer: (s: ArchGuestStep) => unknown) {
    const steps: ArchGuestStep[] = [];
    let r = gen.next();
    while (r.done !== true) {
      steps.push(r.value);
      r = gen.next(answer(r.value));
    }
    return { steps, outcome: r.value };
  }

  it('converts to private with unshare, then accepts each page, letting KVM fault in what is not mapped', () => {
    const t = toyVm();
    const mapped = new Set<number>([0x3000]);
    const { steps, outcome } = drive(t.vm.guestKernel.convert(0x2000, 0x2000, true), (s): unknown => {
      if (s.kind === 'npf') return void mapped.add(s.fault.gpa);
      if (s.op === 'unshare') return 0;
      return (mapped.has(s.args[0] as number) ? { status: 'ok' } : { status: 'not-mapped' }) satisfies ToyAcceptResult;
    });
    expect(outcome).toEqual({ ok: true });
    expect(steps.map((s) => (s.kind === 'npf' ? `npf ${s.fault.gpa}` : `${s.op} ${s.args[0]}`))).toEqual([
      `unshare ${0x2000}`,
      `accept ${0x2000}`,
      `npf ${0x2000}`,
      `accept ${0x2000}`,
      `accept ${0x3000}`,
    ]);
  });

  it('reports a refused conversion and a page that never becomes private', () => {
    const t = toyVm();
    expect(drive(t.vm.guestKernel.convert(0x2000, 0x1000, false), () => 1).outcome).toMatchObject({ ok: false });
    expect(drive(t.vm.guestKernel.accept(0x2000, 0x1000), () => ({ status: 'not-private' })).outcome).toMatchObject({ ok: false });
    expect(drive(t.vm.guestKernel.accept(0x2000, 0x1000), (s) => (s.kind === 'npf' ? undefined : { status: 'not-mapped' })).outcome).toMatchObject({
      ok: false,
    });
    expect(drive(t.vm.guestKernel.accept(0x2001, 0x1000), () => undefined).outcome).toMatchObject({ ok: false });
  });
});

describe('createVm', () => {
  it('refuses options it does not know, with a KvmError', () => {
    let e: unknown;
    try {
      toyVm({ archOptions: { colour: 'blue' } });
    } catch (err) {
      e = err;
    }
    expect(isKvmError(e, 'EINVAL')).toBe(true);
    expect((e as Error).message).toContain('colour');
  });

  it('gives back everything it still owns on destroy', () => {
    const t = toyVm();
    t.vm.gmemPrepare(pfn(0), gfn(0), 9);
    t.vm.destroy?.();
    expect(t.vm.vmApi.ownedPages()).toBe(0);
  });
});
