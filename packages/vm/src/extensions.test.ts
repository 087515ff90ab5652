/**
 * VM extensions (DESIGN.md, "VM extensions"): a test extension modelled on KVM Userfault claims a
 * memslot flag, keeps per-slot state, intercepts faults (its own exit; a 4K-only cap), adds a
 * capability and an API typed by augmentation, all without the vm package knowing it.
 */
import { describe, expect, expectTypeOf, it } from 'vitest';
import { uapi, type Gfn } from '@cocokit/sdk';
import { errnoOf } from '@cocokit/sdk/testing';
import { MAP, PROT } from '@cocokit/host';
import type { Memslot, MemslotChange } from '@cocokit/memslot';
import { Vmm, openKvm, runVmm, setupGuestMemory, type GuestProgram, type VmExtension, type VcpuExit } from './index.js';

const PAGE = 4096;
const MiB = 2 ** 20;
const KVM_MEM_TRAP = 1 << 3;
const KVM_CAP_TRAP = 900;

/** The per-slot state of the test extension. */
interface TrapSlotState {
  readonly serial: number;
  readonly trapped: Set<number>;
}

/** The API the test extension adds, as `vm.extension('trap')`. */
interface TrapApi {
  /** Traps `gfn`: the next fault there exits with TRAP_EXIT (while the slot has KVM_MEM_TRAP). */
  trap(slot: Memslot, gfn: number): void;
  release(slot: Memslot, gfn: number): void;
  state(slot: Memslot): TrapSlotState | undefined;
  /** Cap every mapping at 4K while on. */
  small: boolean;
  readonly changes: MemslotChange['kind'][];
}

declare module '@cocokit/vm' {
  interface VmExtensionApis {
    trap: TrapApi;
  }
}

/** A userfault-like extension: a memslot flag, a bitmap of trapped gfns per slot, an exit, a cap. */
function trapExtension(): VmExtension<TrapApi> {
  return {
    name: 'trap',
    memslotFlags: [{ bit: KVM_MEM_TRAP, name: 'KVM_MEM_TRAP', allowedOnGuestMemfd: true }],
    capabilities: { [KVM_CAP_TRAP]: 1 },
    exitReasons: ['TRAP_EXIT'],
    setup(ctx) {
      let serial = 0;
      const state = (slot: Memslot) => ctx.slotState(slot) as TrapSlotState | undefined;
      const api: TrapApi = {
        trap: (slot, gfn) => void state(slot)!.trapped.add(gfn),
        release: (slot, gfn) => void state(slot)!.trapped.delete(gfn),
        state,
        small: false,
        changes: [],
      };
      return {
        api,
        createSlotState: (): TrapSlotState => ({ serial: serial++, trapped: new Set() }),
        onSlotChange: (change) => void api.changes.push(change.kind),
        beforeMap(f) {
          if ((f.slot.flags & KVM_MEM_TRAP) !== 0 && state(f.slot)?.trapped.has(f.gfn) === true) {
            return { exit: { reason: 'TRAP_EXIT', gpa: f.gfn * PAGE, private: f.private } };
          }
          return api.small ? { maxLevel: 0 } : 'continue';
        },
      };
    },
  };
}

async function vmWith(extensions: VmExtension[]) {
  const kvm = openKvm({ hostBytes: 1 << 30 });
  const vm = await kvm.createVm({ type: 'sw-protected', extensions });
  return { kvm, vm };
}

describe('a memslot flag claimed by an extension', () => {
  it('is accepted only on VMs created with the extension', async () => {
    const region = (hva: number) => ({ slot: 0, flags: KVM_MEM_TRAP, guest_phys_addr: 0, memory_size: MiB, userspace_addr: hva });
    const plain = await vmWith([]);
    const hva0 = plain.vm.process.mmap({ length: MiB, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
    expect(errnoOf(() => plain.vm.setUserMemoryRegion2(region(hva0)))).toBe('EINVAL');
    expect(plain.vm.memslots.slots()).toEqual([]);

    const { vm } = await vmWith([trapExtension()]);
    const hva = vm.process.mmap({ length: MiB, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
    vm.setUserMemoryRegion2(region(hva));
    expect(vm.memslots.slot(0, 0)?.flags).toBe(KVM_MEM_TRAP);
    // A bit nobody claimed is still refused.
    expect(errnoOf(() => vm.setUserMemoryRegion2({ ...region(hva), slot: 1, guest_phys_addr: MiB, flags: 1 << 5 }))).toBe('EINVAL');
  });

  it('refuses two extensions with one name, and a flag bit already taken', async () => {
    const kvm = openKvm({ hostBytes: 1 << 30 });
    expect(errnoOf(() => kvm.createVmSync({ type: 'sw-protected', extensions: [trapExtension(), trapExtension()] }))).toBe('EEXIST');
    const clash: VmExtension = { name: 'clash', memslotFlags: [{ bit: uapi.KVM_MEM_READONLY, name: 'X', allowedOnGuestMemfd: false }], setup: () => ({}) };
    expect(errnoOf(() => kvm.createVmSync({ type: 'sw-protected', extensions: [clash] }))).toBe('EEXIST');
    expect(kvm.vmList()).toEqual([]);
  });
});

describe('per-slot state', () => {
  it('is created with the slot, kept across flags-only changes, made anew on a move, dropped with the slot', async () => {
    const { vm } = await vmWith([trapExtension()]);
    const api = vm.extension('trap');
    const hva = vm.process.mmap({ length: MiB, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
    const region = { slot: 3, flags: 0, guest_phys_addr: 0, memory_size: MiB, userspace_addr: hva };
    vm.setUserMemoryRegion2(region);
    const first = api.state(vm.memslots.slot(0, 3)!);
    expect(first).toEqual({ serial: 0, trapped: new Set() });
    api.trap(vm.memslots.slot(0, 3)!, 7);

    vm.setUserMemoryRegion2({ ...region, flags: KVM_MEM_TRAP });
    vm.setUserMemoryRegion2({ ...region, flags: KVM_MEM_TRAP | uapi.KVM_MEM_LOG_DIRTY_PAGES });
    const kept = api.state(vm.memslots.slot(0, 3)!);
    expect(kept).toBe(first);
    expect(kept?.trapped.has(7)).toBe(true);

    vm.setUserMemoryRegion2({ ...region, flags: KVM_MEM_TRAP, guest_phys_addr: 4 * MiB });
    const moved = api.state(vm.memslots.slot(0, 3)!);
    expect(moved?.serial).toBe(1);
    expect(moved?.trapped.size).toBe(0);

    vm.setUserMemoryRegion2({ ...region, memory_size: 0, guest_phys_addr: 4 * MiB });
    expect(vm.memslots.slot(0, 3)).toBeUndefined();
    expect(api.changes).toEqual(['create', 'flags', 'flags', 'move', 'delete']);
  });
});

describe('fault interception (beforeMap)', () => {
  async function trappedGuest() {
    const { kvm, vm } = await vmWith([trapExtension()]);
    const mem = setupGuestMemory(vm, { size: MiB, slotFlags: KVM_MEM_TRAP });
    const slot = vm.memslots.slot(0, mem.slot)!;
    const api = vm.extension('trap');
    api.trap(slot, 9);
    const got: unknown[] = [];
    const program: GuestProgram = function* (g) {
      yield* g.write(8 * PAGE, 8n);
      yield* g.write(9 * PAGE, 9n);
      got.push(yield* g.read(9 * PAGE, 1));
    };
    return { kvm, vm, slot, api, got, program };
  }

  it("an exit with the extension's own reason is what vcpu.run() returns; the access completes once userspace resolves it", async () => {
    const { vm, slot, api, got, program } = await trappedGuest();
    const v = vm.createVcpu(0, program);
    const e: VcpuExit = v.run();
    expect(e).toEqual({ reason: 'TRAP_EXIT', gpa: 9 * PAGE, private: true });
    expect(vm.mmu.lookup(9)).toBeUndefined();
    expect(v.run()).toEqual(e); // still trapped: the access faults again
    api.release(slot, 9);
    expect(v.run().reason).toBe('SYSTEM_EVENT');
    expect(got).toEqual([new Uint8Array([9])]);
    expect(vm.host.tagAt(vm.mmu.lookup(9)!.pfn)).toBe(9n);
    expect(vm.stats().exits['TRAP_EXIT']).toBe(2);
    expect(vm.mmu.stats.exits.extension).toBe(2);
  });

  it('the Vmm helper reports the exit as unhandled unless onExit handles it', async () => {
    {
      const { vm, program } = await trappedGuest();
      vm.createVcpu(0, program);
      const r = runVmm(vm);
      expect(r.ok).toBe(false);
      expect(r.vcpus[0]).toMatchObject({ state: 'error' });
      expect(r.vcpus[0]?.error).toMatch(/TRAP_EXIT.*not handled/);
      expect(r.exits['TRAP_EXIT']).toBe(1);
    }
    {
      const { vm, slot, api, got, program } = await trappedGuest();
      vm.createVcpu(0, program);
      const handled: number[] = [];
      const r = new Vmm(vm, {
        onExit(_vcpu, exit) {
          if (exit.reason !== 'TRAP_EXIT') return 'unhandled';
          const gpa = exit['gpa'] as number;
          handled.push(gpa);
          api.release(slot, gpa / PAGE);
          return 'continue';
        },
      }).run();
      expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
      expect(handled).toEqual([9 * PAGE]);
      expect(got).toEqual([new Uint8Array([9])]);
    }
  });

  it('{ maxLevel: 0 } forces 4K mappings where the VM would map 2M', async () => {
    const huge = async (small: boolean) => {
      const kvm = openKvm({ hostBytes: 1 << 30 });
      const vm = await kvm.createVm({ type: 'sw-protected', proposals: { hugetlb: true }, extensions: [trapExtension()] });
      vm.extension('trap').small = small;
      setupGuestMemory(vm, { size: 4 * MiB, fileFlags: uapi.GUEST_MEMFD_FLAG_HUGETLB | uapi.GUEST_MEMFD_HUGE_2MB });
      const v = vm.createVcpu(0, function* (g) {
        yield* g.write(512 * PAGE + 3 * PAGE, 1n);
        yield* g.write(512 * PAGE + 4 * PAGE, 2n);
      });
      expect(v.run().reason).toBe('SYSTEM_EVENT');
      vm.checkInvariants();
      return { level: vm.mmu.lookup(512 + 3)!.level, faults: vm.mmu.stats.faults.private };
    };
    expect(await huge(false)).toEqual({ level: 1, faults: 1 });
    expect(await huge(true)).toEqual({ level: 0, faults: 2 });
  });
});

describe('capabilities and the typed API', () => {
  it("adds a capability KVM_CHECK_EXTENSION on the VM answers, and only on the VM that has the extension", async () => {
    const { vm } = await vmWith([trapExtension()]);
    const plain = await vmWith([]);
    expect(vm.checkExtension(KVM_CAP_TRAP)).toBe(1);
    expect(plain.vm.checkExtension(KVM_CAP_TRAP)).toBe(0);
    // The built-in answers are unchanged.
    expect(vm.checkExtension(uapi.KVM_CAP_MEMORY_ATTRIBUTES)).toBe(uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE);
  });

  it('vm.extension(name) is typed through the VmExtensionApis augmentation; an unknown name is ENOENT', async () => {
    const { vm } = await vmWith([trapExtension()]);
    const api = vm.extension('trap');
    expectTypeOf(api).toEqualTypeOf<TrapApi>();
    expectTypeOf(() => vm.extension('something-else')).returns.toBeUnknown();
    expect(typeof api.trap).toBe('function');
    expect(errnoOf(() => vm.extension('something-else'))).toBe('ENOENT');
  });

  it("the extension's invariants run with the VM's", async () => {
    let checks = 0;
    const ext: VmExtension = { name: 'inv', setup: () => ({ checkInvariants: () => void checks++ }) };
    const { kvm, vm } = await vmWith([ext]);
    vm.checkInvariants();
    kvm.checkInvariants();
    expect(checks).toBe(2);
    // Typed view of the gfn brand the fault hook sees.
    expectTypeOf<Parameters<NonNullable<ReturnType<VmExtension['setup']>['beforeMap']>>[0]['gfn']>().toEqualTypeOf<Gfn>();
  });
});
