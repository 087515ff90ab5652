/**
 * KVM's own accesses to guest memory (seed 002): kvm_read_guest / kvm_write_guest through the
 * VMM's hva or guest_memfd, the emulator's instruction fetch on MMIO, and gfn_to_pfn_caches with
 * kvm-clock on top — and what each costs the direct map when guest_memfd is NO_DIRECT_MAP.
 */
import { describe, expect, it } from 'vitest';
import { uapi } from '@cocokit/sdk';
import { errnoOf } from '@cocokit/sdk/testing';
import { isGuestException, openKvm, setupGuestMemory, type GuestProgram, type Vm } from './index.js';

const PAGE = 4096;
const RAM = 64 * PAGE;
const MMIO = 0x1000_0000;

/**
 * A default VM whose RAM is a guest_memfd (GMEM_ONLY: MMAP | INIT_SHARED), with or without
 * NO_DIRECT_MAP, loaded by the VMM through its mapping (so every page is allocated, zeroed and,
 * with NO_DIRECT_MAP, out of the direct map before a test counts).
 */
async function gmemVm(noDirectMap: boolean): Promise<Vm> {
  const kvm = openKvm({ hostBytes: 1 << 28 });
  const vm = await kvm.createVm({ type: 'default', proposals: { noDirectMap } });
  const mem = setupGuestMemory(vm, { size: RAM, path: 'in-place', fileFlags: noDirectMap ? uapi.GUEST_MEMFD_FLAG_NO_DIRECT_MAP : 0 });
  expect(vm.process.touch(mem.hva, RAM, 'write').ok).toBe(true);
  return vm;
}

function tempRemaps(vm: Vm): number {
  return vm.host.directMapStats().tempRemaps;
}

describe('kvm_read_guest / kvm_write_guest', () => {
  it('read what the VMM wrote through an hva-backed slot, and write back', async () => {
    const vm = await openKvm({ hostBytes: 1 << 28 }).createVm({ type: 'default' });
    const mem = setupGuestMemory(vm, { size: RAM });
    vm.process.write(mem.hva + 0x2ff8, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    // Crossing a page: kvm_read_guest_page twice.
    expect([...vm.kernelAccess.readGuest(0x2ff8, 10)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    vm.kernelAccess.writeGuest(0x5000, new Uint8Array([0xaa]));
    const r = vm.process.read(mem.hva + 0x5000, 1);
    expect(r.ok && r.data !== undefined ? [...r.data] : r).toEqual([0xaa]);
    expect(vm.kernelAccess.stats()).toMatchObject({ reads: 2, writes: 1, bytesRead: 10, bytesWritten: 1, gmemAccesses: 0, tempRemaps: 0 });
  });

  it('a gpa without a memslot is EFAULT; a malformed range EINVAL', async () => {
    const vm = await gmemVm(false);
    expect(errnoOf(() => vm.kernelAccess.readGuest(MMIO, 8))).toBe('EFAULT');
    expect(errnoOf(() => vm.kernelAccess.readGuest(-8, 8))).toBe('EINVAL');
    expect(errnoOf(() => vm.kernelAccess.writeGuest(0, new Uint8Array(0)))).toBe('EINVAL');
  });

  it('reach a GMEM_ONLY slot through the file: no remap with the direct map, one per page access without it', async () => {
    for (const ndm of [false, true]) {
      const vm = await gmemVm(ndm);
      vm.kernelAccess.writeGuest(0x3000, new Uint8Array([7, 8]));
      const before = tempRemaps(vm);
      expect([...vm.kernelAccess.readGuest(0x3000, 2)]).toEqual([7, 8]);
      expect([...vm.kernelAccess.readGuest(0x3ffc, 8)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
      const s = vm.kernelAccess.stats();
      expect(s.gmemAccesses).toBe(4);
      // Three page accesses after the write: remap → access → unmap each, under NO_DIRECT_MAP.
      expect(tempRemaps(vm) - before).toBe(ndm ? 3 : 0);
      expect(s.tempRemaps).toBe(ndm ? 4 : 0);
      expect(vm.host.directMapStats().bytesExposed).toBeGreaterThanOrEqual(ndm ? 4 * PAGE : 0);
      expect(s.pagesExposed).toBe(ndm ? 2 : 0);
      expect(vm.host.directMapStats().tempMappedNow).toBe(0);
      vm.checkInvariants();
    }
  });

  it('a partial kvm_write_guest into guest_memfd keeps the rest of the page, in one remap', async () => {
    const vm = await gmemVm(true);
    vm.kernelAccess.writeGuest(0x4000, new Uint8Array([1, 2, 3, 4]));
    const before = tempRemaps(vm);
    vm.kernelAccess.writeGuest(0x4002, new Uint8Array([9]));
    expect(tempRemaps(vm) - before).toBe(1);
    expect([...vm.kernelAccess.readGuest(0x4000, 4)]).toEqual([1, 2, 9, 4]);
  });
});

describe('MMIO emulation fetches the instruction', () => {
  const walk = [0x1000, 0x2000, 0x3000, 0x4000].map((p) => p + 8);
  const program =
    (n: number, withInsn: boolean): GuestProgram =>
      function* (g) {
        for (let i = 0; i < n; i++) {
          yield* g.read(MMIO, 4, withInsn ? { insn: { gpa: 0x8000 + 16 * i, walk } } : {});
          yield* g.write(MMIO + 4, new Uint8Array([i]), withInsn ? { insn: { gpa: 0x8ffa, walk } } : {});
        }
      };

  it('walks the guest page tables and reads the instruction: five kvm_read_guest per exit, each a remap under NO_DIRECT_MAP', async () => {
    for (const ndm of [false, true]) {
      const vm = await gmemVm(ndm);
      // The guest's page tables and code are in memory already (the VMM loaded the image).
      for (const p of [0x1000, 0x2000, 0x3000, 0x4000, 0x8000]) vm.kernelAccess.writeGuest(p, new Uint8Array([1]));
      const before = tempRemaps(vm);
      const exposedBefore = vm.host.directMapStats().exposureNs;
      const t0 = vm.sim.now;
      const vcpu = vm.createVcpu(0, program(3, true));
      let mmio = 0;
      for (let e = vcpu.run(); e.reason !== 'SYSTEM_EVENT'; e = vcpu.run()) {
        expect(e.reason).toBe('MMIO');
        mmio++;
      }
      expect(mmio).toBe(6);
      const s = vm.kernelAccess.stats();
      expect(s.emulations).toBe(6);
      expect(s.walkReads).toBe(24);
      // The fetch at 0x8ffa stops at the page's end (__do_insn_fetch_bytes): 6 bytes, not 15.
      expect(s.bytesRead).toBe(24 * 8 + 3 * 15 + 3 * 6);
      expect(tempRemaps(vm) - before).toBe(ndm ? 30 : 0);
      const dm = vm.host.directMapStats();
      expect(dm.tempMappedNow).toBe(0);
      // Each remap is exposed from its PTE write to the end of its unmap's shootdown, one at a time.
      if (ndm) expect(dm.exposureNs - exposedBefore).toBeGreaterThanOrEqual(30 * 3000);
      if (ndm) expect(dm.exposureNs - exposedBefore).toBeLessThanOrEqual(vm.sim.now - t0);
    }
  });

  it('without an instruction nothing is fetched (SVM decode assists)', async () => {
    const vm = await gmemVm(true);
    const vcpu = vm.createVcpu(0, program(2, false));
    while (vcpu.run().reason !== 'SYSTEM_EVENT');
    expect(vm.kernelAccess.stats().emulations).toBe(0);
  });

  it('a fetch from a gpa with no memslot is an emulation failure', async () => {
    const vm = await gmemVm(false);
    const vcpu = vm.createVcpu(0, function* (g) {
      yield* g.read(MMIO, 4, { insn: { gpa: MMIO + PAGE } });
    });
    const e = vcpu.run();
    expect(e.reason).toBe('RUN_ERROR');
    expect(e.reason === 'RUN_ERROR' ? e.errno : undefined).toBe('EFAULT');
    expect(() => vm.createVcpu(1, function* (g) { yield* g.read(MMIO, 4, { insn: { gpa: 0, walk: [3] } }); }).run()).toThrow(/8-byte aligned/);
  });
});

describe('gfn_to_pfn_cache and kvm-clock', () => {
  it('holds a gmem page in the direct map until deactivated; punch hole invalidates, refresh remaps', async () => {
    const vm = await gmemVm(true);
    const gpc = vm.kernelAccess.gpcInit();
    expect(errnoOf(() => gpc.refresh())).toBe('EINVAL');
    expect(errnoOf(() => gpc.activate(0x6ff0, 32))).toBe('EINVAL');
    const before = tempRemaps(vm);
    gpc.activate(0x6000, 32);
    expect(gpc.check()).toBe(true);
    const pfn = gpc.pfn!;
    expect(vm.host.isDirectMapped(pfn)).toBe(true);
    // A kvm_read_guest of the held page needs no remap.
    vm.kernelAccess.readGuest(0x6000, 8);
    expect(tempRemaps(vm) - before).toBe(1);
    // A refresh onto the same page keeps it mapped: no new remap.
    gpc.refresh();
    expect(tempRemaps(vm) - before).toBe(1);
    vm.guestMemfd(vm.memslots.slot(0, 0)!.gmem!.fd)!.fallocate(uapi.FALLOC_FL_PUNCH_HOLE | uapi.FALLOC_FL_KEEP_SIZE, 6 * PAGE, PAGE);
    expect(gpc.check()).toBe(false);
    gpc.refresh();
    expect(gpc.check()).toBe(true);
    // The hole is filled with a new folio, zeroed before it leaves the direct map (no remap): the
    // cache's restoration is the one remap.
    expect(tempRemaps(vm) - before).toBe(2);
    expect(vm.kernelAccess.stats()).toMatchObject({ gpcActivations: 1, gpcRefreshes: 3, gpcRemaps: 2 });
    gpc.deactivate();
    expect(gpc.active).toBe(false);
    expect(vm.host.directMapStats().tempMappedNow).toBe(0);
    vm.checkInvariants();
  });

  it('a memslot change makes the check fail (the generation)', async () => {
    const vm = await openKvm({ hostBytes: 1 << 28 }).createVm({ type: 'default' });
    setupGuestMemory(vm, { size: RAM });
    const gpc = vm.kernelAccess.gpcInit();
    gpc.activate(0x1000, 8);
    expect(gpc.check()).toBe(true);
    setupGuestMemory(vm, { gpa: RAM, size: RAM, slot: 1 });
    expect(gpc.check()).toBe(false);
    gpc.refresh();
    expect(gpc.check()).toBe(true);
  });

  it('an hva-backed cache is invalidated by the mmu notifier', async () => {
    const vm = await openKvm({ hostBytes: 1 << 28 }).createVm({ type: 'default' });
    const mem = setupGuestMemory(vm, { size: RAM });
    const gpc = vm.kernelAccess.gpcInit();
    gpc.activate(0x1000, 8);
    expect(gpc.check()).toBe(true);
    vm.process.madvise(mem.hva + 0x1000, PAGE, 4 /* MADV_DONTNEED */);
    expect(gpc.check()).toBe(false);
  });

  it('the guest enables kvm-clock with WRMSR: one long-term remap, an update per KVM_RUN, written through the cache', async () => {
    const vm = await gmemVm(true);
    const clock = 0x7000;
    const before = tempRemaps(vm);
    const vcpu = vm.createVcpu(0, function* (g) {
      expect(yield* g.wrmsr(uapi.MSR_KVM_SYSTEM_TIME_NEW, clock + 1)).toBeUndefined();
      yield* g.halt();
      yield* g.halt();
      const gp = yield* g.wrmsr(0x1234, 0);
      expect(isGuestException(gp) && gp.name).toBe('#GP');
      yield* g.wrmsr(uapi.MSR_KVM_SYSTEM_TIME_NEW, 0);
    });
    expect(vcpu.run().reason).toBe('HLT');
    expect(vm.host.directMapStats().tempMappedNow).toBe(1);
    expect(vcpu.run().reason).toBe('HLT');
    expect(vcpu.run().reason).toBe('SYSTEM_EVENT');
    const s = vm.kernelAccess.stats();
    // The enabling WRMSR's update, then one per later KVM_RUN entry while enabled (2).
    expect(s.clockUpdates).toBe(3);
    expect(s.gpcWrites).toBe(9);
    expect(s.gpcRemaps).toBe(1);
    expect(tempRemaps(vm) - before).toBe(1);
    expect(vm.host.directMapStats().tempMappedNow).toBe(0);
    // version even (an update is complete), system_time written.
    const info = vm.kernelAccess.readGuest(clock, 24);
    const view = new DataView(info.buffer);
    expect(view.getUint32(0, true)).toBe(6);
    expect(view.getBigUint64(16, true)).toBeGreaterThan(0n);
  });

  it('VM destruction deactivates the caches', async () => {
    const vm = await gmemVm(true);
    vm.kernelAccess.gpcInit().activate(0x1000, 8);
    expect(vm.host.directMapStats().tempMappedNow).toBe(1);
    vm.destroy();
    expect(vm.host.directMapStats().tempMappedNow).toBe(0);
  });
});
