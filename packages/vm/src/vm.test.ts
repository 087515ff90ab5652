/**
 * The VM ioctls (Documentation/virt/kvm/api.rst §4) as the Vm models them: each refusal is the
 * kernel's errno and changes nothing; capabilities are answered per VM type; a destroyed VM is
 * EBADF.
 */
import { describe, expect, it } from 'vitest';
import { KvmError, defineArchPlugin, uapi, type Gfn } from '@cocokit/sdk';
import { errnoOf } from '@cocokit/sdk/testing';
import { MAP, PROT } from '@cocokit/host';
import { KVM_MAX_VCPU_IDS, openKvm, setupGuestMemory, type GuestProgram, type Vm } from './index.js';

const PAGE = 4096;
const MiB = 2 ** 20;

async function swVm(options: { inPlaceConversion?: boolean } = {}) {
  const kvm = openKvm({ hostBytes: 1 << 30, ...options });
  const vm = await kvm.createVm({ type: 'sw-protected' });
  return { kvm, vm };
}

/** Loads `program` on `vcpu` 0 (created on first use) and runs it to its end; returns the exits seen. */
function runToEnd(vm: Vm, program: GuestProgram): string[] {
  const v = vm.vcpu(0) ?? vm.createVcpu(0);
  vm.loadProgram(v, program);
  const reasons: string[] = [];
  for (let i = 0; i < 100; i++) {
    const e = v.run();
    reasons.push(e.reason);
    if (e.reason === 'SYSTEM_EVENT') return reasons;
    if (e.reason !== 'HLT') throw new Error(`unexpected exit ${JSON.stringify(e)}`);
  }
  throw new Error('the program did not end');
}

describe('KVM_CREATE_VCPU', () => {
  it('refuses ids outside [0, KVM_MAX_VCPU_IDS) with EINVAL and a used id with EEXIST, creating nothing', async () => {
    const { vm } = await swVm();
    const v0 = vm.createVcpu(0);
    const v4095 = vm.createVcpu(KVM_MAX_VCPU_IDS - 1);
    for (const bad of [-1, KVM_MAX_VCPU_IDS, 1.5, Number.NaN]) expect(errnoOf(() => vm.createVcpu(bad))).toBe('EINVAL');
    expect(errnoOf(() => vm.createVcpu(0))).toBe('EEXIST');
    expect(vm.vcpuList()).toEqual([v0, v4095]);
    expect(vm.vcpu(0)).toBe(v0);
    expect(vm.stats().vcpus).toBe(2);
  });

  it('a vCPU without a program refuses KVM_RUN (ENOEXEC); a program cannot be replaced while an exit waits', async () => {
    const { vm } = await swVm();
    const v = vm.createVcpu(3);
    expect(errnoOf(() => v.run())).toBe('ENOEXEC');
    vm.loadProgram(v, function* (g) {
      yield* g.halt();
    });
    expect(v.run().reason).toBe('HLT');
    expect(v.exit?.reason).toBe('HLT');
    expect(errnoOf(() => vm.loadProgram(v, function* () {}))).toBe('EBUSY');
    expect(v.run().reason).toBe('SYSTEM_EVENT');
    expect(v.exit).toBeUndefined();
  });
});

describe('KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)', () => {
  const hypercallProgram =
    (out: number[]): GuestProgram =>
    function* (g) {
      out.push(yield* g.hypercall(uapi.KVM_HC_MAP_GPA_RANGE, 0x1000, 1, 0));
    };

  it('accepts a subset of the valid mask (1 << KVM_HC_MAP_GPA_RANGE) and refuses anything else with EINVAL, keeping the old setting', async () => {
    const { vm } = await swVm();
    const valid = 1 << uapi.KVM_HC_MAP_GPA_RANGE;
    expect(vm.checkExtension(uapi.KVM_CAP_EXIT_HYPERCALL)).toBe(valid);
    vm.enableCap({ cap: uapi.KVM_CAP_EXIT_HYPERCALL, args: [valid] });
    expect(errnoOf(() => vm.enableCap({ cap: uapi.KVM_CAP_EXIT_HYPERCALL, args: [valid | 1] }))).toBe('EINVAL');
    expect(errnoOf(() => vm.enableCap({ cap: uapi.KVM_CAP_EXIT_HYPERCALL, args: [1 << 13] }))).toBe('EINVAL');
    expect(errnoOf(() => vm.enableCap({ cap: uapi.KVM_CAP_EXIT_HYPERCALL, flags: 1, args: [valid] }))).toBe('EINVAL');
    // Still enabled: the hypercall exits.
    const v = vm.createVcpu(0, hypercallProgram([]));
    expect(v.run().reason).toBe('HYPERCALL');
  });

  it('a refused enable leaves the exit off; args[0] = 0 is valid and turns it off again', async () => {
    const { vm } = await swVm();
    expect(errnoOf(() => vm.enableCap({ cap: uapi.KVM_CAP_EXIT_HYPERCALL, args: [-1] }))).toBe('EINVAL');
    const out: number[] = [];
    expect(runToEnd(vm, hypercallProgram(out))).toEqual(['SYSTEM_EVENT']);
    vm.enableCap({ cap: uapi.KVM_CAP_EXIT_HYPERCALL, args: [1 << uapi.KVM_HC_MAP_GPA_RANGE] });
    vm.enableCap({ cap: uapi.KVM_CAP_EXIT_HYPERCALL, args: [0] });
    expect(runToEnd(vm, hypercallProgram(out))).toEqual(['SYSTEM_EVENT']);
    expect(out).toEqual([-uapi.KVM_ENOSYS, -uapi.KVM_ENOSYS]);
  });

  it('a capability the VM cannot enable is EINVAL', async () => {
    const { vm } = await swVm();
    expect(errnoOf(() => vm.enableCap({ cap: uapi.KVM_CAP_GUEST_MEMFD, args: [1] }))).toBe('EINVAL');
  });
});

describe('KVM_SET_MEMORY_ATTRIBUTES', () => {
  it("on a 'default' VM refuses PRIVATE exactly as memslot does, and changes no attribute", async () => {
    const kvm = openKvm({ hostBytes: 1 << 30 });
    const vm = await kvm.createVm();
    const req = { address: 0, size: 2 * PAGE, attributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE };
    const viaVm = errnoOf(() => vm.setMemoryAttributes(req));
    const viaMemslots = errnoOf(() => vm.memslots.setMemoryAttributes(req));
    expect(viaVm).toBe('EINVAL');
    expect(viaVm).toBe(viaMemslots);
    expect(vm.memslots.getAttributes(0)).toBe(0);
    expect(vm.memslots.getAttributes(1)).toBe(0);
    expect(vm.stats().conversions.conversions).toBe(0);
    // Attributes 0 are supported everywhere (a no-op).
    vm.setMemoryAttributes({ address: 0, size: PAGE, attributes: 0 });
  });

  it('on a sw-protected VM refuses bad ranges and flags with EINVAL and converts good ones', async () => {
    const { vm } = await swVm();
    setupGuestMemory(vm, { size: MiB });
    const P = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE;
    expect(errnoOf(() => vm.setMemoryAttributes({ address: 0x800, size: PAGE, attributes: 0 }))).toBe('EINVAL');
    expect(errnoOf(() => vm.setMemoryAttributes({ address: 0, size: 0, attributes: 0 }))).toBe('EINVAL');
    expect(errnoOf(() => vm.setMemoryAttributes({ address: 0, size: PAGE, attributes: 0, flags: 1 }))).toBe('EINVAL');
    expect(errnoOf(() => vm.setMemoryAttributes({ address: 0, size: PAGE, attributes: 1 }))).toBe('EINVAL');
    for (let g = 0; g < 4; g++) expect(vm.memslots.getAttributes(g)).toBe(P);
    vm.setMemoryAttributes({ address: PAGE, size: 2 * PAGE, attributes: 0 });
    expect([0, 1, 2, 3].map((g) => vm.memslots.getAttributes(g))).toEqual([P, 0, 0, P]);
  });
});

describe('KVM_CREATE_GUEST_MEMFD', () => {
  const { GUEST_MEMFD_FLAG_MMAP: MMAP, GUEST_MEMFD_FLAG_INIT_SHARED: INIT_SHARED } = uapi;

  it('accepts the flags KVM_CAP_GUEST_MEMFD_FLAGS reports for the VM type and refuses the rest with EINVAL', async () => {
    const cases = [
      { type: 'default', inPlaceConversion: false, flags: MMAP | INIT_SHARED },
      { type: 'sw-protected', inPlaceConversion: false, flags: MMAP },
      // PROPOSED-CONV-v8: with in-place conversion INIT_SHARED becomes legal for VMs with private memory.
      { type: 'sw-protected', inPlaceConversion: true, flags: MMAP | INIT_SHARED },
    ] as const;
    for (const c of cases) {
      const kvm = openKvm({ hostBytes: 1 << 30, inPlaceConversion: c.inPlaceConversion });
      const vm = await kvm.createVm({ type: c.type });
      expect(vm.checkExtension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS), `${c.type} ${c.inPlaceConversion}`).toBe(c.flags);
      for (const f of [0, MMAP, INIT_SHARED, MMAP | INIT_SHARED, 1 << 8]) {
        const ok = (f & ~c.flags) === 0;
        const before = vm.gmem.liveFiles().length;
        const errno = errnoOf(() => vm.createGuestMemfd({ size: MiB, flags: f }));
        expect(errno, `${c.type} inPlace=${c.inPlaceConversion} flags=${f}`).toBe(ok ? undefined : 'EINVAL');
        expect(vm.gmem.liveFiles().length).toBe(before + (ok ? 1 : 0));
      }
    }
  });

  it('refuses a size that is zero, negative or unaligned', async () => {
    const { vm } = await swVm();
    for (const size of [0, -PAGE, PAGE + 1, 2n ** 63n]) expect(errnoOf(() => vm.createGuestMemfd({ size }))).toBe('EINVAL');
    expect(vm.gmem.liveFiles()).toEqual([]);
  });

  it('the file has no read or write method (EINVAL), and is found again by its fd', async () => {
    const { vm } = await swVm();
    const f = vm.createGuestMemfd({ size: MiB });
    expect(errnoOf(() => f.read())).toBe('EINVAL');
    expect(errnoOf(() => f.write())).toBe('EINVAL');
    expect(f.size).toBe(MiB);
    expect(vm.guestMemfd(f.fd)?.file).toBe(f.file);
    f.close();
    expect(vm.guestMemfd(f.fd)).toBeUndefined();
  });
});

describe('in-place conversion is the module parameter of PROPOSED-CONV-v8', () => {
  it('with openKvm({ inPlaceConversion }) off, every in-place entry point is ENOTTY and nothing changes', async () => {
    const { kvm, vm } = await swVm();
    expect(kvm.checkExtension(uapi.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES)).toBe(0);
    expect(vm.checkExtension(uapi.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES)).toBe(0);
    const mem = setupGuestMemory(vm, { size: MiB });
    const f = mem.file!;
    const P = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE;
    expect(errnoOf(() => f.setMemoryAttributes2({ offset: 0, size: PAGE, attributes: 0 }))).toBe('ENOTTY');
    expect(errnoOf(() => f.setMemoryAttributes2({ offset: 0, size: PAGE, attributes: P }))).toBe('ENOTTY');
    expect(errnoOf(() => f.convertShared({ offset: 0, size: PAGE }))).toBe('ENOTTY');
    expect(errnoOf(() => f.convertPrivate({ offset: 0, size: PAGE }))).toBe('ENOTTY');
    expect(errnoOf(() => vm.convert({ gpa: 0, size: PAGE, toPrivate: false, path: 'in-place' }))).toBe('ENOTTY');
    expect(f.file.shareability(0)).toBe('guest');
    expect(vm.memslots.getAttributes(0)).toBe(P);
    expect(vm.stats().conversions.conversions).toBe(1); // setupGuestMemory's initial PRIVATE
  });

  it('with it on, KVM_SET_MEMORY_ATTRIBUTES2 on the file converts in place', async () => {
    const { kvm, vm } = await swVm({ inPlaceConversion: true });
    expect(kvm.checkExtension(uapi.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES)).toBe(uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE);
    expect(vm.checkExtension(uapi.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES)).toBe(uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE);
    const mem = setupGuestMemory(vm, { size: MiB, path: 'in-place' });
    const f = mem.file!;
    f.setMemoryAttributes2({ offset: PAGE, size: PAGE, attributes: 0 });
    expect([0, 1, 2].map((i) => f.file.shareability(i))).toEqual(['guest', 'all', 'guest']);
    f.setMemoryAttributes2({ offset: PAGE, size: PAGE, attributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE });
    expect(f.file.shareability(1)).toBe('guest');
    // The first generation's ioctls (PROPOSED-CONV-v2) are a proposal of their own.
    expect(errnoOf(() => f.convertShared({ offset: 0, size: PAGE }))).toBe('ENOTTY');
    vm.checkInvariants();
  });

  it('PROPOSED-CONV-v2 KVM_GMEM_CONVERT_SHARED/PRIVATE work when that proposal is enabled', async () => {
    const kvm = openKvm({ hostBytes: 1 << 30 });
    const vm = await kvm.createVm({ type: 'sw-protected', proposals: { gmemConvert: true } });
    const f = vm.createGuestMemfd({ size: MiB, flags: uapi.GUEST_MEMFD_FLAG_MMAP });
    expect(f.convertShared({ offset: 2 * PAGE, size: 2 * PAGE })).toBe(0);
    expect([1, 2, 3, 4].map((i) => f.file.shareability(i))).toEqual(['guest', 'all', 'all', 'guest']);
    expect(f.convertPrivate({ offset: 2 * PAGE, size: PAGE })).toBe(0);
    expect(f.file.shareability(2)).toBe('guest');
    expect(errnoOf(() => f.convertPrivate({ offset: 0, size: PAGE, error_offset: 1 }))).toBe('EINVAL');
  });
});

describe('KVM_CHECK_EXTENSION', () => {
  it('answers per VM type on the VM and system-wide on /dev/kvm', async () => {
    const kvm = openKvm({ hostBytes: 1 << 30 });
    const def = await kvm.createVm();
    const sw = await kvm.createVm({ type: 'sw-protected' });
    const P = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE;
    const rows: Array<[number, number, number, number]> = [
      // cap, /dev/kvm, default VM, sw-protected VM
      [uapi.KVM_CAP_MEMORY_ATTRIBUTES, P, 0, P],
      [uapi.KVM_CAP_GUEST_MEMFD, 1, 1, 1],
      [uapi.KVM_CAP_GUEST_MEMFD_FLAGS, 3, 3, uapi.GUEST_MEMFD_FLAG_MMAP],
      [uapi.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES, 0, 0, 0],
      [uapi.KVM_CAP_USER_MEMORY2, 1, 1, 1],
      [uapi.KVM_CAP_MEMORY_FAULT_INFO, 1, 1, 1],
      [uapi.KVM_CAP_PRE_FAULT_MEMORY, 1, 1, 1],
      [uapi.KVM_CAP_MULTI_ADDRESS_SPACE, 2, 2, 1],
      [uapi.KVM_CAP_NR_MEMSLOTS, uapi.KVM_USER_MEM_SLOTS, uapi.KVM_USER_MEM_SLOTS, uapi.KVM_USER_MEM_SLOTS],
      [uapi.KVM_CAP_EXIT_HYPERCALL, 1 << 12, 1 << 12, 1 << 12],
      [999_999, 0, 0, 0],
    ];
    for (const [cap, sys, d, s] of rows) {
      expect([kvm.checkExtension(cap), def.checkExtension(cap), sw.checkExtension(cap)], `cap ${cap}`).toEqual([sys, d, s]);
    }
    expect(kvm.checkExtension(uapi.KVM_CAP_VM_TYPES)).toBe((1 << uapi.KVM_X86_DEFAULT_VM) | (1 << uapi.KVM_X86_SW_PROTECTED_VM));
    expect(kvm.knownTypes()).toEqual(expect.arrayContaining(['default', 'sw-protected']));
  });

  it('with in-place conversion on, the VM with private memory reports the guest_memfd attributes capability', async () => {
    const kvm = openKvm({ hostBytes: 1 << 30, inPlaceConversion: true });
    const def = await kvm.createVm();
    const sw = await kvm.createVm({ type: 'sw-protected' });
    expect(def.checkExtension(uapi.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES)).toBe(0);
    expect(sw.checkExtension(uapi.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES)).toBe(uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE);
    expect(sw.checkExtension(uapi.KVM_CAP_GUEST_MEMFD_FLAGS)).toBe(uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED);
  });

  it('a type that needs a plugin is refused by createVmSync with EINVAL, and no VM remains', () => {
    const kvm = openKvm({ hostBytes: 1 << 30 });
    expect(errnoOf(() => kvm.createVmSync({ type: 'no-such-arch' }))).toBe('EINVAL');
    expect(kvm.vmList()).toEqual([]);
  });
});

describe('a destroyed VM', () => {
  it('refuses every VM ioctl with EBADF and leaves the host as it was before the VM', async () => {
    const kvm = openKvm({ hostBytes: 1 << 30 });
    const baseline = kvm.host.stats().usedFrames;
    const vm = await kvm.createVm({ type: 'sw-protected' });
    const mem = setupGuestMemory(vm, { size: MiB });
    runToEnd(vm, function* (g) {
      for (let i = 0; i < 8; i++) yield* g.write(i * PAGE, BigInt(i + 1));
    });
    expect(vm.stats().memory.guestMemfdPages).toBe(8);
    vm.destroy();
    vm.destroy(); // idempotent
    expect(kvm.vmList()).toEqual([]);
    const calls: Array<[string, () => unknown]> = [
      ['createVcpu', () => vm.createVcpu(1)],
      ['enableCap', () => vm.enableCap({ cap: uapi.KVM_CAP_EXIT_HYPERCALL, args: [0] })],
      ['setUserMemoryRegion2', () => vm.setUserMemoryRegion2({ slot: 1, flags: 0, guest_phys_addr: 1 << 30, memory_size: PAGE, userspace_addr: 0 })],
      ['createGuestMemfd', () => vm.createGuestMemfd({ size: PAGE })],
      ['setMemoryAttributes', () => vm.setMemoryAttributes({ address: 0, size: PAGE, attributes: 0 })],
      ['convert', () => vm.convert({ gpa: 0, size: PAGE, toPrivate: false, path: 'attributes' })],
      ['preFaultMemory', () => vm.preFaultMemory({ gpa: 0, size: PAGE })],
      ['getDirtyLog', () => vm.getDirtyLog({ slot: mem.slot })],
      ['clearDirtyLog', () => vm.clearDirtyLog({ slot: mem.slot, first_page: 0, num_pages: 64, dirty_bitmap: new Uint8Array(8) })],
      ['finalize', () => vm.finalize()],
    ];
    for (const [name, call] of calls) expect(errnoOf(call), name).toBe('EBADF');
    expect(kvm.host.stats().usedFrames).toBe(baseline);
    kvm.checkInvariants();
  });
});

describe('KVM_PRE_FAULT_MEMORY', () => {
  it('maps a range ahead of the guest, advancing gpa and size; the guest then takes no fault', async () => {
    const { vm } = await swVm();
    setupGuestMemory(vm, { size: MiB });
    const range = { gpa: 16 * PAGE, size: 16 * PAGE };
    expect(vm.preFaultMemory(range)).toBe(0);
    expect(range).toEqual({ gpa: 32 * PAGE, size: 0 });
    expect(vm.stats().memory.guestMemfdPages).toBe(16);
    for (let g = 16; g < 32; g++) expect(vm.mmu.lookup(g)).toBeDefined();
    const faults = { ...vm.stats().mmu.faults };
    runToEnd(vm, function* (g) {
      for (let i = 16; i < 32; i++) yield* g.read(i * PAGE);
    });
    expect(vm.stats().mmu.faults).toEqual(faults);
    vm.checkInvariants();
  });

  it('stops at the end of the memslot with the rest left in size; ENOENT with no progress; EINVAL for bad arguments', async () => {
    const { vm } = await swVm();
    setupGuestMemory(vm, { size: MiB });
    const straddle = { gpa: MiB - 2 * PAGE, size: 4 * PAGE };
    expect(vm.preFaultMemory(straddle)).toBe(0);
    expect(straddle).toEqual({ gpa: MiB, size: 2 * PAGE });
    const mapped = vm.mmu.mappedLeaves;
    expect(errnoOf(() => vm.preFaultMemory(straddle))).toBe('ENOENT');
    expect(errnoOf(() => vm.preFaultMemory({ gpa: 0, size: PAGE, flags: 1 }))).toBe('EINVAL');
    expect(errnoOf(() => vm.preFaultMemory({ gpa: 0x800, size: PAGE }))).toBe('EINVAL');
    expect(errnoOf(() => vm.preFaultMemory({ gpa: 0, size: 0 }))).toBe('EINVAL');
    expect(vm.mmu.mappedLeaves).toBe(mapped);
  });
});

describe('KVM_GET_DIRTY_LOG through the VM', () => {
  it('reports the pages the guest wrote, clears and write-protects them, and logs the next write again', async () => {
    const kvm = openKvm({ hostBytes: 1 << 30 });
    const vm = await kvm.createVm();
    const hva = vm.process.mmap({ length: MiB, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
    vm.setUserMemoryRegion2({ slot: 2, flags: uapi.KVM_MEM_LOG_DIRTY_PAGES, guest_phys_addr: 0, memory_size: MiB, userspace_addr: hva });
    const bits = (log: Uint8Array) => [...log.keys()].flatMap((byte) => [0, 1, 2, 3, 4, 5, 6, 7].filter((b) => (log[byte]! & (1 << b)) !== 0).map((b) => byte * 8 + b));

    runToEnd(vm, function* (g) {
      yield* g.write(1 * PAGE, new Uint8Array([1]));
      yield* g.write(3 * PAGE, new Uint8Array([3]));
      yield* g.read(5 * PAGE); // reads are not logged
      yield* g.write(70 * PAGE, 70n);
    });
    const first = vm.getDirtyLog({ slot: 2 });
    expect(first.length).toBe(MiB / PAGE / 8);
    expect(bits(first)).toEqual([1, 3, 70]);
    expect(bits(vm.getDirtyLog({ slot: 2 }))).toEqual([]);

    runToEnd(vm, function* (g) {
      yield* g.write(3 * PAGE + 8, new Uint8Array([4]));
    });
    const into = new Uint8Array(MiB / PAGE / 8);
    expect(vm.getDirtyLog({ slot: 2, dirty_bitmap: into })).toBe(into);
    expect(bits(into)).toEqual([3]);
    // The bytes are where the guest put them.
    expect(vm.process.read(hva + 3 * PAGE, 9)).toEqual({ ok: true, data: new Uint8Array([3, 0, 0, 0, 0, 0, 0, 0, 4]) });
    vm.checkInvariants();
  });

  it('ENOENT for a missing slot or one without logging (every guest_memfd slot), EFAULT for a short buffer', async () => {
    const { vm } = await swVm();
    const mem = setupGuestMemory(vm, { size: MiB });
    expect(errnoOf(() => vm.getDirtyLog({ slot: mem.slot }))).toBe('ENOENT');
    expect(errnoOf(() => vm.getDirtyLog({ slot: 7 }))).toBe('ENOENT');
    const kvm = openKvm({ hostBytes: 1 << 30 });
    const def = await kvm.createVm();
    const hva = def.process.mmap({ length: MiB, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
    def.setUserMemoryRegion2({ slot: 0, flags: uapi.KVM_MEM_LOG_DIRTY_PAGES, guest_phys_addr: 0, memory_size: MiB, userspace_addr: hva });
    expect(errnoOf(() => def.getDirtyLog({ slot: 0, dirty_bitmap: new Uint8Array(4) }))).toBe('EFAULT');
  });
});

describe('KVM_PRE_FAULT_MEMORY and kvm->arch.pre_fault_allowed', () => {
  /** An arch in SNP's shape: pre-faulting is forbidden at creation and allowed by a successful finalize. */
  const late = defineArchPlugin({
    name: 'late-prefault',
    apiVersion: 1,
    vmTypes: ['late-prefault'],
    createVm(ctx) {
      let finished = false;
      return {
        capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false, preFaultAllowed: false },
        finalize() {
          if (finished) throw new KvmError('EINVAL', 'finalize', 'already finalized');
          finished = true;
          ctx.allowPreFault?.();
          return undefined;
        },
      };
    },
  });

  it('is EOPNOTSUPP, after the argument checks and with nothing changed, until the arch allows it; then it maps', async () => {
    const kvm = openKvm({ archs: [late], hostBytes: 1 << 30 });
    const vm = await kvm.createVm({ type: 'late-prefault' });
    setupGuestMemory(vm, { size: MiB });
    const used = vm.host.stats().usedFrames;
    const range = { gpa: 0, size: 4 * PAGE };
    expect(vm.preFaultAllowed).toBe(false);
    expect(errnoOf(() => vm.preFaultMemory({ gpa: 0, size: 0 }))).toBe('EINVAL');
    expect(errnoOf(() => vm.preFaultMemory(range))).toBe('EOPNOTSUPP');
    expect(range).toEqual({ gpa: 0, size: 4 * PAGE });
    expect([vm.mmu.mappedLeaves, vm.stats().memory.guestMemfdPages, vm.host.stats().usedFrames]).toEqual([0, 0, used]);
    vm.finalize();
    expect(vm.preFaultAllowed).toBe(true);
    expect(vm.preFaultMemory(range)).toBe(0);
    expect(range).toEqual({ gpa: 4 * PAGE, size: 0 });
    expect(vm.stats().memory.guestMemfdPages).toBe(4);
    vm.checkInvariants();
  });

  it('is allowed from creation for the built-in types (kvm_arch_init_vm)', async () => {
    for (const type of ['default', 'sw-protected']) {
      const vm = await openKvm({ hostBytes: 1 << 30 }).createVm({ type });
      setupGuestMemory(vm, { size: MiB });
      expect(vm.preFaultAllowed, type).toBe(true);
      expect(vm.preFaultMemory({ gpa: 0, size: PAGE }), type).toBe(0);
    }
  });
});

describe('ArchVmContext.gmemPopulate and mapPrivatePfn (a launch that maps as it populates, as upstream TDX)', () => {
  // An arch that forbids KVM_PRE_FAULT_MEMORY and maps each page from its post_populate hook.
  const seen: Array<[number, number]> = [];
  const launcher = defineArchPlugin({
    name: 'map-on-populate',
    apiVersion: 1,
    vmTypes: ['map-on-populate'],
    createVm(ctx) {
      return {
        capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false, preFaultAllowed: false },
        populate(gfn, pfn) {
          seen.push([gfn, pfn]);
          ctx.mapPrivatePfn?.(gfn, pfn);
        },
        vmApi: { initMemRegion: (gfn: number, npages: number) => ctx.gmemPopulate?.(gfn as Gfn, npages, new Array<null>(npages).fill(null), 'init') },
      };
    },
  });

  it('populates through the memslot and gmem, and maps each page although pre-fault is forbidden', async () => {
    seen.length = 0;
    const vm = await openKvm({ archs: [launcher], hostBytes: 1 << 30 }).createVm({ type: 'map-on-populate' });
    setupGuestMemory(vm, { size: MiB });
    const api = vm.archApi as { initMemRegion(gfn: number, npages: number): number };
    expect(errnoOf(() => vm.preFaultMemory({ gpa: 0, size: PAGE }))).toBe('EOPNOTSUPP');
    expect(api.initMemRegion(4, 3)).toBe(3);
    expect(seen.map(([g]) => g)).toEqual([4, 5, 6]);
    // No mirror root: private leaves are in the one root.
    for (const [g, p] of seen) expect(vm.mmu.lookup(g)?.pfn).toBe(p);
    expect(vm.mmu.mappedLeaves).toBe(3);
    vm.checkInvariants();
  });

  it('refuses a page already populated (EEXIST), a gfn outside every memslot or shared (EINVAL), and maps nothing then', async () => {
    seen.length = 0;
    const vm = await openKvm({ archs: [launcher], hostBytes: 1 << 30 }).createVm({ type: 'map-on-populate' });
    setupGuestMemory(vm, { size: MiB });
    const api = vm.archApi as { initMemRegion(gfn: number, npages: number): number };
    api.initMemRegion(0, 1);
    expect(errnoOf(() => api.initMemRegion(0, 1))).toBe('EEXIST');
    expect(errnoOf(() => api.initMemRegion(MiB / PAGE, 1))).toBe('EINVAL');
    vm.setMemoryAttributes({ address: 8 * PAGE, size: PAGE, attributes: 0 });
    expect(errnoOf(() => api.initMemRegion(8, 1))).toBe('EINVAL');
    expect([seen.length, vm.mmu.mappedLeaves, vm.stats().memory.guestMemfdPages]).toEqual([1, 1, 1]);
    vm.checkInvariants();
  });
});

describe('kvm_gmem_populate (vm.gmem.populate) and the memory attributes', () => {
  it('refuses a gfn that is not PRIVATE in the VM attributes with EINVAL, changing nothing; private gfns populate', async () => {
    const { vm } = await swVm();
    setupGuestMemory(vm, { size: MiB, private: false });
    const slot = vm.memslots.lookup(0);
    if (slot === undefined) throw new Error('no memslot at gfn 0');
    const calls: number[] = [];
    const callback = (g: Gfn) => void calls.push(g);
    const used = vm.host.stats().usedFrames;
    expect(errnoOf(() => vm.gmem.populate({ slot, gfn: 0, npages: 4, callback }))).toBe('EINVAL');
    expect([calls, vm.stats().memory.guestMemfdPages, vm.host.stats().usedFrames]).toEqual([[], 0, used]);
    vm.setMemoryAttributes({ address: 0, size: 2 * PAGE, attributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE });
    // The loop stops at the first shared gfn and reports the pages done.
    expect(vm.gmem.populate({ slot, gfn: 0, npages: 4, callback })).toBe(2);
    expect(calls).toEqual([0, 1]);
    vm.checkInvariants();
  });

  it('in place, the file\'s shareability decides', async () => {
    const { vm } = await swVm({ inPlaceConversion: true });
    setupGuestMemory(vm, { size: MiB, path: 'in-place', private: false });
    const slot = vm.memslots.lookup(0);
    if (slot === undefined) throw new Error('no memslot at gfn 0');
    const callback = () => undefined;
    expect(errnoOf(() => vm.gmem.populate({ slot, gfn: 0, npages: 1, callback }))).toBe('EINVAL');
    vm.convert({ gpa: 0, size: 2 * PAGE, toPrivate: true, path: 'in-place' });
    expect(vm.gmem.populate({ slot, gfn: 0, npages: 4, callback })).toBe(2);
    vm.checkInvariants();
  });
});
