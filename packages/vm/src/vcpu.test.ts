/**
 * KVM_RUN and its exits (arch/x86/kvm/x86.c vcpu_run, api.rst "The kvm_run structure"): what
 * reaches userspace, what the next run completes, and what KVM handles itself. Arch behaviour comes
 * from a tiny in-test plugin (never an arch package), passed with `openKvm({ archs })`.
 */
import { describe, expect, it } from 'vitest';
import { KvmError, defineArchPlugin, gfn as toGfn, uapi, type ArchExit, type ArchVm, type GfnRange } from '@cocokit/sdk';
import { errnoOf } from '@cocokit/sdk/testing';
import {
  isExit,
  isGuestException,
  openKvm,
  setupGuestMemory,
  step,
  type GuestProgram,
  type GuestSteps,
  type MemoryFaultExit,
  type MmioExit,
  type Vm,
  type VcpuExit,
} from './index.js';

const PAGE = 4096;
const MiB = 2 ** 20;

/** What the test reaches of the fake arch's state (its `vmApi`). */
interface FakeVmApi {
  /** gfns whose private accesses raise #VE until accepted. */
  readonly unaccepted: Set<number>;
  /** gfn → zap range: the next access to gfn is a nested fault KVM handles (zapping the range first). */
  readonly npfOnce: Map<number, GfnRange>;
  /** Calls of the guest op `ask`, and the `ctx.vcpu` each call saw. */
  readonly asks: Array<number | undefined>;
  readonly completions: ArchExit[];
}

/**
 * An SNP-like arch: the fault's `encrypted` flag says whether an access is private
 * (classifyFault), accesses can raise an exception or a nested fault (guestAccess), and its guest
 * API has an op that exits to userspace (`ask`) and one that hits a KVM_BUG_ON (`bug`). With
 * `archOptions.complete`, exits are completed by `completeExit`; otherwise the op is re-issued.
 */
const fakeEnc = defineArchPlugin({
  name: 'fake-enc',
  apiVersion: 1,
  vmTypes: ['fake-enc'],
  createVm(ctx) {
    const api: FakeVmApi = { unaccepted: new Set(), npfOnce: new Map(), asks: [], completions: [] };
    const inFlight = new Map<number, number>();
    const arch: ArchVm = {
      capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false },
      classifyFault: (f) => ({ gfn: toGfn(Math.floor(f.gpa / PAGE)), private: f.encrypted ?? true }),
      guestAccess(a) {
        const zap = api.npfOnce.get(a.gfn);
        if (zap !== undefined) {
          api.npfOnce.delete(a.gfn);
          return { kind: 'npf', fault: { gpa: a.gpa, access: a.access, encrypted: a.private }, zap };
        }
        if (a.private && api.unaccepted.has(a.gfn)) return { kind: 'exception', vector: 20, name: '#VE', gpa: a.gpa };
        return 'ok';
      },
      vmApi: api,
      guestApi: {
        /** Exits to userspace on its first call; a re-issue finds its progress and returns. */
        ask(tag: string): string {
          const vcpu = ctx.vcpu!;
          api.asks.push(ctx.vcpu);
          const n = (inFlight.get(vcpu) ?? 0) + 1;
          inFlight.set(vcpu, n);
          if (n === 1) ctx.exit({ reason: 'FAKE_EXIT', tag, vcpu });
          inFlight.delete(vcpu);
          return `reissued ${tag} after ${n} calls`;
        },
        bug(): number {
          ctx.markBugged('fake: the trusted component lost a page');
          return 0;
        },
        refuse(): number {
          throw new KvmError('EPERM', 'fake refuse', 'the trusted component says no');
        },
      },
      ...(ctx.options['complete'] === true
        ? {
            completeExit(exit: ArchExit): { readonly value: unknown } | undefined {
              api.completions.push(exit);
              // A multi-exit operation: the first completion asks userspace once more.
              if (ctx.options['twice'] === true && api.completions.length === 1) ctx.exit({ reason: 'FAKE_EXIT', tag: 'again', vcpu: ctx.vcpu });
              return { value: `completed ${String(exit['tag'])}` };
            },
          }
        : {}),
    };
    return arch;
  },
});

async function fakeVm(archOptions: Record<string, unknown> = {}) {
  const kvm = openKvm({ hostBytes: 1 << 30, archs: [fakeEnc] });
  const vm = await kvm.createVm({ type: 'fake-enc', archOptions });
  const mem = setupGuestMemory(vm, { size: MiB });
  return { kvm, vm, mem, api: vm.archApi as FakeVmApi };
}

async function swVm() {
  const kvm = openKvm({ hostBytes: 1 << 30 });
  const vm = await kvm.createVm({ type: 'sw-protected' });
  const mem = setupGuestMemory(vm, { size: MiB });
  return { kvm, vm, mem };
}

/** A guest arch call as one action (the fake type declares no typed guest API). */
function arch<R>(op: string, ...args: unknown[]): GuestSteps<R> {
  return step<R>({ kind: 'arch', op, args });
}

/** The host page the shared root maps `gfn` to. */
function pfnOf(vm: Vm, gfn: number): number {
  const leaf = vm.mmu.lookup(gfn);
  if (leaf === undefined) throw new Error(`gfn ${gfn} is not mapped`);
  return leaf.pfn + (gfn - leaf.gfn);
}

describe('KVM_EXIT_MEMORY_FAULT on an arch that classifies faults by the encrypted flag', () => {
  it('exits with EFAULT, gpa, size and flags from the access; running again after userspace converts completes it', async () => {
    const { kvm, vm, api } = await fakeVm();
    expect(api.unaccepted.size).toBe(0);
    const seen: unknown[] = [];
    const v = vm.createVcpu(0, function* (g) {
      // Memory starts private; a shared (unencrypted) access to it is a mismatch.
      seen.push(yield* g.write(3 * PAGE + 8, new Uint8Array([0xaa, 0xbb]), { shared: true }));
      // Now page 3 is shared; an encrypted access to it is a mismatch the other way.
      seen.push(yield* g.read(3 * PAGE + 8, 2));
      seen.push(yield* g.read(3 * PAGE + 8, 2, { shared: true }));
    });

    const toShared = v.run();
    expect(toShared).toEqual({
      reason: 'MEMORY_FAULT',
      exitReason: uapi.KVM_EXIT_MEMORY_FAULT,
      errno: 'EFAULT',
      memoryFault: { gpa: 3 * PAGE, size: PAGE, flags: 0 },
    } satisfies MemoryFaultExit);
    expect(v.exit).toBe(toShared);
    // Running again without converting faults again: KVM never silently retries a mismatch.
    expect(v.run()).toEqual(toShared);
    vm.convert({ gpa: 3 * PAGE, size: PAGE, toPrivate: false, path: 'attributes' });

    const toPrivate = v.run();
    expect(isExit(toPrivate, 'MEMORY_FAULT')).toBe(true);
    const mf = toPrivate as MemoryFaultExit;
    expect(mf.errno).toBe('EFAULT');
    expect(mf.memoryFault).toEqual({ gpa: 3 * PAGE, size: PAGE, flags: uapi.KVM_MEMORY_EXIT_FLAG_PRIVATE });
    vm.convert({ gpa: 3 * PAGE, size: PAGE, toPrivate: true, path: 'attributes' });

    const third = v.run();
    // The shared read after converting back to private faults again (flags 0); convert once more.
    expect((third as MemoryFaultExit).memoryFault.flags).toBe(0);
    vm.convert({ gpa: 3 * PAGE, size: PAGE, toPrivate: false, path: 'attributes' });
    expect(v.run().reason).toBe('SYSTEM_EVENT');
    // The write landed; the private read saw the private copy (never written: zeros); the shared
    // read saw the shared copy the write made (no discard policy: both copies kept).
    expect(seen).toEqual([undefined, new Uint8Array([0, 0]), new Uint8Array([0xaa, 0xbb])]);
    expect(vm.stats().exits['MEMORY_FAULT']).toBe(4);
    expect(v.exits.get('MEMORY_FAULT')).toBe(4);
    vm.checkInvariants();
    kvm.checkInvariants();
  });
});

describe('KVM_EXIT_HYPERCALL (KVM_HC_MAP_GPA_RANGE)', () => {
  const program =
    (out: number[]): GuestProgram =>
    function* (g) {
      out.push(yield* g.hypercall(uapi.KVM_HC_MAP_GPA_RANGE, 4 * PAGE, 2, uapi.KVM_MAP_GPA_RANGE_DECRYPTED));
      out.push(yield* g.hypercall(uapi.KVM_HC_MAP_GPA_RANGE, 4 * PAGE + 1, 2, 0)); // unaligned gpa
      out.push(yield* g.hypercall(uapi.KVM_HC_MAP_GPA_RANGE, 4 * PAGE, 0, 0)); // no pages
      out.push(yield* g.hypercall(99, 1, 2, 3)); // unknown hypercall
    };

  it('without KVM_CAP_EXIT_HYPERCALL the guest gets -KVM_ENOSYS and userspace sees nothing', async () => {
    const { vm } = await swVm();
    const out: number[] = [];
    const v = vm.createVcpu(0, program(out));
    expect(v.run().reason).toBe('SYSTEM_EVENT');
    expect(out).toEqual([-1000, -1000, -1000, -1000]);
    expect(vm.stats().vcpu.hypercalls).toBe(4);
  });

  it('with the cap it exits with nr and args; the ret userspace writes is what the guest gets; KVM refuses bad args itself', async () => {
    const { vm } = await swVm();
    vm.enableCap({ cap: uapi.KVM_CAP_EXIT_HYPERCALL, args: [1 << uapi.KVM_HC_MAP_GPA_RANGE] });
    const out: number[] = [];
    const v = vm.createVcpu(0, program(out));
    const e = v.run();
    expect(e).toMatchObject({ reason: 'HYPERCALL', exitReason: uapi.KVM_EXIT_HYPERCALL, nr: uapi.KVM_HC_MAP_GPA_RANGE, ret: 0 });
    if (!isExit(e, 'HYPERCALL')) throw new Error(e.reason);
    expect(e.args.slice(0, 3)).toEqual([4 * PAGE, 2, 0]);
    e.ret = 7;
    expect(v.run().reason).toBe('SYSTEM_EVENT');
    expect(out).toEqual([7, -uapi.KVM_EINVAL, -uapi.KVM_EINVAL, -uapi.KVM_ENOSYS]);
    // KVM itself changes nothing: the pages are still private.
    expect(vm.memslots.getAttributes(4)).toBe(uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE);
  });
});

describe('KVM_EXIT_MMIO', () => {
  it('a read of a gpa no memslot backs exits; the bytes userspace fills are what the guest reads', async () => {
    const { vm } = await swVm();
    const mmio = 0x1000_0000 + 0x10;
    const got: unknown[] = [];
    const v = vm.createVcpu(0, function* (g) {
      got.push(yield* g.read(mmio, 4));
      got.push(yield* g.write(mmio, new Uint8Array([5, 6])));
    });
    const r = v.run() as MmioExit;
    expect(r).toMatchObject({ reason: 'MMIO', exitReason: uapi.KVM_EXIT_MMIO, phys: mmio, len: 4, isWrite: false });
    r.data.set([0xde, 0xad, 0xbe, 0xef]);
    const w = v.run() as MmioExit;
    expect(w).toMatchObject({ reason: 'MMIO', phys: mmio, len: 2, isWrite: true });
    expect(w.data).toEqual(new Uint8Array([5, 6]));
    expect(v.run().reason).toBe('SYSTEM_EVENT');
    expect(got).toEqual([new Uint8Array([0xde, 0xad, 0xbe, 0xef]), undefined]);
    expect(vm.stats().exits['MMIO']).toBe(2);
  });
});

describe('KVM_EXIT_HLT and KVM_EXIT_SYSTEM_EVENT', () => {
  it('HLT exits and the program goes on; the program returning is SYSTEM_EVENT(SHUTDOWN) on this and every later run', async () => {
    const { vm } = await swVm();
    const trail: string[] = [];
    const v = vm.createVcpu(0, function* (g) {
      trail.push('a');
      yield* g.halt();
      trail.push('b');
      yield* g.compute(500);
      trail.push('c');
    });
    expect(v.run()).toEqual({ reason: 'HLT', exitReason: uapi.KVM_EXIT_HLT });
    expect(trail).toEqual(['a']);
    expect(v.done).toBe(false);
    const before = vm.sim.now;
    const end = v.run();
    expect(end).toEqual({ reason: 'SYSTEM_EVENT', exitReason: uapi.KVM_EXIT_SYSTEM_EVENT, type: uapi.KVM_SYSTEM_EVENT_SHUTDOWN });
    expect(vm.sim.now - before).toBeGreaterThanOrEqual(500);
    expect(v.done).toBe(true);
    for (let i = 0; i < 3; i++) expect(v.run()).toEqual(end);
    expect(trail).toEqual(['a', 'b', 'c']);
    expect(v.exits.get('SYSTEM_EVENT')).toBe(4);
  });

  it('a bad guest action is refused as EINVAL: compute with a negative duration, an access crossing a page', async () => {
    const { vm } = await swVm();
    const v = vm.createVcpu(0, function* (g) {
      yield* g.compute(-1);
    });
    expect(errnoOf(() => v.run())).toBe('EINVAL');
    const w = vm.createVcpu(1, function* (g) {
      yield* g.read(PAGE - 4, 8);
    });
    expect(errnoOf(() => w.run())).toBe('EINVAL');
  });
});

describe('KVM_RUN on a dead VM', () => {
  it('once the arch calls ctx.markBugged, every run is RUN_ERROR EIO and the VM ioctls fail with EIO', async () => {
    const { vm } = await fakeVm();
    const v = vm.createVcpu(0, function* () {
      yield* arch<number>('bug');
      throw new Error('the guest must not run on');
    });
    const e = v.run();
    expect(e).toMatchObject({ reason: 'RUN_ERROR', errno: 'EIO' });
    expect(v.run()).toMatchObject({ reason: 'RUN_ERROR', errno: 'EIO' });
    expect(vm.deadReason).toBe('fake: the trusted component lost a page');
    expect(errnoOf(() => vm.createGuestMemfd({ size: PAGE }))).toBe('EIO');
    expect(errnoOf(() => vm.createVcpu(1))).toBe('EIO');
    expect(errnoOf(() => vm.setMemoryAttributes({ address: 0, size: PAGE, attributes: 0 }))).toBe('EIO');
  });

  it('a guest operation the arch refuses is a RUN_ERROR with its errno, and the operation is tried again on the next run', async () => {
    const { vm } = await fakeVm();
    const v = vm.createVcpu(0, function* () {
      yield* arch<number>('refuse');
    });
    expect(v.run()).toMatchObject({ reason: 'RUN_ERROR', errno: 'EPERM' });
    expect(v.run()).toMatchObject({ reason: 'RUN_ERROR', errno: 'EPERM' });
    expect(vm.deadReason).toBeUndefined();
  });

  it('an op the arch does not have is ENOSYS', async () => {
    const { vm } = await fakeVm();
    const v = vm.createVcpu(0, function* () {
      yield* arch<number>('nope');
    });
    expect(errnoOf(() => v.run())).toBe('ENOSYS');
  });
});

describe('arch guest calls that exit to userspace (ctx.exit)', () => {
  it('without completeExit the call is re-issued on the next run and finds its progress', async () => {
    const { vm, api } = await fakeVm();
    const got: string[] = [];
    const v = vm.createVcpu(5, function* () {
      got.push(yield* arch<string>('ask', 'x'));
    });
    const e = v.run();
    expect(e).toEqual({ reason: 'FAKE_EXIT', tag: 'x', vcpu: 5 });
    expect(v.run().reason).toBe('SYSTEM_EVENT');
    expect(got).toEqual(['reissued x after 2 calls']);
    // ctx.vcpu was the calling vCPU during both calls.
    expect(api.asks).toEqual([5, 5]);
    expect(vm.stats().vcpu.archCalls).toBe(2);
  });

  it('with completeExit, its value is what the call returns and the call is not re-issued', async () => {
    const { vm, api } = await fakeVm({ complete: true });
    const got: string[] = [];
    const v = vm.createVcpu(0, function* () {
      got.push(yield* arch<string>('ask', 'y'));
    });
    const e = v.run();
    expect(e.reason).toBe('FAKE_EXIT');
    expect(v.run().reason).toBe('SYSTEM_EVENT');
    expect(got).toEqual(['completed y']);
    expect(api.asks).toEqual([0]);
    expect(api.completions).toEqual([e]);
  });

  it('completeExit may exit again (a multi-exit operation); the value comes from the last completion', async () => {
    const { vm, api } = await fakeVm({ complete: true, twice: true });
    const got: string[] = [];
    const v = vm.createVcpu(0, function* () {
      got.push(yield* arch<string>('ask', 'z'));
    });
    expect(v.run()).toMatchObject({ reason: 'FAKE_EXIT', tag: 'z' });
    expect(v.run()).toMatchObject({ reason: 'FAKE_EXIT', tag: 'again' });
    expect(v.run().reason).toBe('SYSTEM_EVENT');
    expect(got).toEqual(['completed again']);
    expect(api.completions.map((c) => c['tag'])).toEqual(['z', 'again']);
  });
});

describe('guestAccess: what the hardware checks beyond the nested tables', () => {
  it('an exception is delivered to the guest program as the access result, with no exit', async () => {
    const { vm, api } = await fakeVm();
    api.unaccepted.add(5);
    const got: unknown[] = [];
    const v = vm.createVcpu(0, function* (g) {
      got.push(yield* g.read(5 * PAGE, 8));
      got.push(yield* g.write(5 * PAGE, 9n));
      api.unaccepted.delete(5);
      got.push(yield* g.write(5 * PAGE, 9n));
    });
    expect(v.run().reason).toBe('SYSTEM_EVENT');
    expect(isGuestException(got[0])).toBe(true);
    expect(got[0]).toEqual({ kind: 'exception', vector: 20, name: '#VE', gpa: 5 * PAGE });
    expect(got[1]).toEqual(got[0]);
    expect(got[2]).toBeUndefined();
    expect(vm.stats().vcpu.exceptions).toBe(2);
    expect(vm.host.tagAt(pfnOf(vm, 5))).toBe(9n);
  });

  it('a nested fault with a zap range is handled by KVM without an exit: the range is zapped and the access completes', async () => {
    const { vm, api } = await fakeVm();
    const got: unknown[] = [];
    const v = vm.createVcpu(0, function* (g) {
      yield* g.write(6 * PAGE, new Uint8Array([6]));
      yield* g.write(7 * PAGE, new Uint8Array([7]));
      yield* g.halt();
      got.push(yield* g.read(7 * PAGE, 1));
    });
    expect(v.run().reason).toBe('HLT');
    const pfn7 = pfnOf(vm, 7);
    api.npfOnce.set(7, { start: toGfn(6), end: toGfn(8) });
    const zaps = vm.stats().mmu.zaps;
    expect(v.run().reason).toBe('SYSTEM_EVENT');
    expect(got).toEqual([new Uint8Array([7])]);
    expect(vm.stats().vcpu.npfs).toBe(1);
    expect(vm.stats().mmu.zaps).toBeGreaterThan(zaps);
    expect(vm.mmu.lookup(6)).toBeUndefined();
    expect(pfnOf(vm, 7)).toBe(pfn7);
    expect(Object.keys(vm.stats().exits)).toEqual(['HLT', 'SYSTEM_EVENT']);
    vm.checkInvariants();
  });
});

describe('guest accesses hit host page contents', () => {
  it('bytes and tags the guest writes are in the host page, and host writes are what the guest reads', async () => {
    const { vm, mem } = await swVm();
    vm.enableCap({ cap: uapi.KVM_CAP_EXIT_HYPERCALL, args: [1 << uapi.KVM_HC_MAP_GPA_RANGE] });
    const got: unknown[] = [];
    const v = vm.createVcpu(0, function* (g) {
      yield* g.write(2 * PAGE + 16, new Uint8Array([1, 2, 3, 4]));
      yield* g.write(3 * PAGE, 0x1234_5678_9abc_def0n);
      yield* g.halt();
      got.push(yield* g.read(2 * PAGE + 16, 4));
      got.push(yield* g.read(2 * PAGE + 100, 3));
      // A shared page lives in the VMM's anonymous memory.
      yield* g.convert(4 * PAGE, PAGE, false);
      yield* g.write(4 * PAGE + 8, new Uint8Array([0x44, 0x55]));
    });
    expect(v.run().reason).toBe('HLT');
    const pfn2 = pfnOf(vm, 2);
    expect(vm.host.readBytes(pfn2, 16, 4)).toEqual(new Uint8Array([1, 2, 3, 4]));
    expect(vm.host.tagAt(pfnOf(vm, 3))).toBe(0x1234_5678_9abc_def0n);
    vm.host.writeBytes(pfn2, 100, new Uint8Array([7, 8, 9]));
    let e: VcpuExit = v.run();
    expect(e.reason).toBe('HYPERCALL');
    vm.convert({ gpa: 4 * PAGE, size: PAGE, toPrivate: false, path: 'attributes' });
    e = v.run();
    expect(e.reason).toBe('SYSTEM_EVENT');
    expect(got).toEqual([new Uint8Array([1, 2, 3, 4]), new Uint8Array([7, 8, 9])]);
    expect(vm.process.read(mem.hva + 4 * PAGE + 8, 2)).toEqual({ ok: true, data: new Uint8Array([0x44, 0x55]) });
    // The private pages are guest_memfd's, the shared one the VMM's.
    expect(vm.stats().memory.guestMemfdPages).toBe(2);
    expect(vm.stats().memory.sharedAnonPages).toBe(1);
    vm.checkInvariants();
  });
});
