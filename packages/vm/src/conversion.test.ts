/**
 * The conversion engine: both paths (VM attributes, guest_memfd in place), each discard policy's
 * effect on host memory (guest_memfd pages vs the VMM's anonymous pages), the arch's veto, and the
 * in-place path's coverage rule.
 */
import { describe, expect, it } from 'vitest';
import { KvmError, defineArchPlugin, uapi, type ArchVm, type GfnRange } from '@cocokit/sdk';
import { errnoOf } from '@cocokit/sdk/testing';
import { MAP, PROT } from '@cocokit/host';
import { Vmm, openKvm, setupGuestMemory, type DiscardPolicy, type GuestProgram, type Vm } from './index.js';

const PAGE = 4096;
const MiB = 2 ** 20;
const PRIVATE = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE;

/** Runs `program` on vCPU 0 to its end (no exit but SYSTEM_EVENT expected). */
function guest(vm: Vm, program: GuestProgram): void {
  const v = vm.vcpu(0) ?? vm.createVcpu(0);
  vm.loadProgram(v, program);
  const e = v.run();
  if (e.reason !== 'SYSTEM_EVENT') throw new Error(`unexpected exit ${JSON.stringify(e)}`);
}

const write = (vm: Vm, page: number, byte: number) =>
  guest(vm, function* (g) {
    yield* g.write(page * PAGE, new Uint8Array([byte]));
  });

function read(vm: Vm, page: number): number {
  let out = -1;
  guest(vm, function* (g) {
    const r = yield* g.read(page * PAGE, 1);
    if (r instanceof Uint8Array) out = r[0]!;
  });
  return out;
}

const memory = (vm: Vm) => {
  const m = vm.stats().memory;
  return { gmem: m.guestMemfdPages, anon: m.sharedAnonPages };
};

async function attributesVm() {
  const kvm = openKvm({ hostBytes: 1 << 30 });
  const vm = await kvm.createVm({ type: 'sw-protected' });
  const mem = setupGuestMemory(vm, { size: 4 * MiB });
  return { kvm, vm, mem };
}

describe('the attributes path and the discard policies', () => {
  const P = 10;
  const expectations: Record<Exclude<DiscardPolicy, 'lazy'>, { afterToShared: number; afterToPrivate: number }> = {
    // QEMU: to shared punches the guest_memfd page, to private drops the shared copy.
    both: { afterToShared: 0, afterToPrivate: 0 },
    // Seed 000's "disable shared discard": only the punch.
    'private-only': { afterToShared: 0, afterToPrivate: 1 },
    // Both copies stay: the double allocation.
    none: { afterToShared: 1, afterToPrivate: 1 },
  };
  for (const [policy, want] of Object.entries(expectations) as Array<[Exclude<DiscardPolicy, 'lazy'>, (typeof expectations)['both']]>) {
    it(`'${policy}': guest_memfd pages ${want.afterToShared === 0 ? 'punched' : 'kept'} on to-shared, shared copy ${want.afterToPrivate === 0 ? 'dropped' : 'kept'} on to-private`, async () => {
      const { kvm, vm } = await attributesVm();
      write(vm, P, 0x11);
      expect(memory(vm)).toEqual({ gmem: 1, anon: 0 });

      vm.convert({ gpa: P * PAGE, size: PAGE, toPrivate: false, path: 'attributes', discard: policy });
      expect(vm.memslots.getAttributes(P)).toBe(0);
      expect(vm.mmu.lookup(P)).toBeUndefined();
      expect(memory(vm)).toEqual({ gmem: want.afterToShared, anon: 0 });
      expect(read(vm, P)).toBe(0); // the shared copy is a fresh anonymous page
      write(vm, P, 0x22);
      expect(memory(vm)).toEqual({ gmem: want.afterToShared, anon: 1 });

      vm.convert({ gpa: P * PAGE, size: PAGE, toPrivate: true, path: 'attributes', discard: policy });
      expect(vm.memslots.getAttributes(P)).toBe(PRIVATE);
      expect(memory(vm)).toEqual({ gmem: want.afterToShared, anon: want.afterToPrivate });
      // The private copy survived only if it was not punched.
      expect(read(vm, P)).toBe(want.afterToShared === 1 ? 0x11 : 0);

      const s = vm.stats().conversions;
      expect(s.punchHoles).toBe(want.afterToShared === 0 ? 1 : 0);
      expect(s.punchedPages).toBe(want.afterToShared === 0 ? 1 : 0);
      expect(s.sharedDiscards).toBe(want.afterToPrivate === 0 ? 1 : 0);
      expect(s.sharedDiscardedPages).toBe(want.afterToPrivate === 0 ? 1 : 0);
      expect(s).toMatchObject({ toShared: 1, toPrivate: 2, conversions: 3, refused: 0 });
      vm.checkInvariants();
      kvm.checkInvariants();
    });
  }

  it("'lazy': discards are queued, a flip back cancels the queued one, flushDiscards issues the rest", async () => {
    const { vm } = await attributesVm();
    write(vm, P, 0x11);
    vm.convert({ gpa: P * PAGE, size: PAGE, toPrivate: false, path: 'attributes', discard: 'lazy' });
    // The punch of the private copy waits in the queue.
    expect(memory(vm)).toEqual({ gmem: 1, anon: 0 });
    expect(vm.stats().conversions.pendingDiscardPages).toBe(1);
    write(vm, P, 0x22);
    vm.convert({ gpa: P * PAGE, size: PAGE, toPrivate: true, path: 'attributes', discard: 'lazy' });
    // The flip back took the punch out of the queue and queued the drop of the shared copy.
    expect(vm.stats().conversions).toMatchObject({ lazyQueuedPages: 2, lazyCancelledPages: 1, lazyBatches: 0, pendingDiscardPages: 1, punchHoles: 0 });
    expect(memory(vm)).toEqual({ gmem: 1, anon: 1 });
    expect(read(vm, P)).toBe(0x11);

    const vmm = new Vmm(vm, { discard: 'lazy' });
    expect(vmm.flushDiscards()).toBe(1);
    expect(memory(vm)).toEqual({ gmem: 1, anon: 0 });
    expect(vm.stats().conversions).toMatchObject({ lazyBatches: 1, pendingDiscardPages: 0, sharedDiscards: 1, punchHoles: 0 });
    expect(vm.conversions.flushDiscards()).toBe(0);
    expect(read(vm, P)).toBe(0x11);
    vm.checkInvariants();
  });

  it("'lazy': the queue is flushed once a batch (512 pages) is pending", async () => {
    const { vm } = await attributesVm();
    const base = 512; // [2 MiB, 4 MiB)
    guest(vm, function* (g) {
      for (let i = 0; i < 512; i++) yield* g.write((base + i) * PAGE, BigInt(i));
    });
    expect(memory(vm).gmem).toBe(512);
    vm.convert({ gpa: base * PAGE, size: 256 * PAGE, toPrivate: false, path: 'attributes', discard: 'lazy' });
    expect(vm.stats().conversions).toMatchObject({ pendingDiscardPages: 256, lazyBatches: 0 });
    expect(memory(vm).gmem).toBe(512);
    vm.convert({ gpa: (base + 256) * PAGE, size: 256 * PAGE, toPrivate: false, path: 'attributes', discard: 'lazy' });
    expect(vm.stats().conversions).toMatchObject({ pendingDiscardPages: 0, lazyBatches: 1, punchedPages: 512 });
    expect(memory(vm).gmem).toBe(0);
    vm.checkInvariants();
  });

  it('refuses a range that is empty or not page aligned (EINVAL) and counts the refusal', async () => {
    const { vm } = await attributesVm();
    for (const [gpa, size] of [
      [0, 0],
      [0x800, PAGE],
      [0, PAGE + 1],
      [-PAGE, PAGE],
    ] as const) {
      expect(errnoOf(() => vm.convert({ gpa, size, toPrivate: false, path: 'attributes', discard: 'both' }))).toBe('EINVAL');
    }
    expect(vm.stats().conversions).toMatchObject({ refused: 4, conversions: 1 });
    expect(vm.memslots.getAttributes(0)).toBe(PRIVATE);
  });

  it('a range beyond every memslot converts (attributes are per gfn) and discards nothing', async () => {
    const { vm } = await attributesVm();
    vm.convert({ gpa: 64 * MiB, size: 2 * PAGE, toPrivate: true, path: 'attributes', discard: 'both' });
    expect(vm.memslots.getAttributes((64 * MiB) / PAGE)).toBe(PRIVATE);
    expect(vm.stats().conversions).toMatchObject({ punchHoles: 0, sharedDiscards: 0 });
  });
});

describe('the in-place path', () => {
  async function inPlaceVm() {
    const kvm = openKvm({ hostBytes: 1 << 30, inPlaceConversion: true });
    const vm = await kvm.createVm({ type: 'sw-protected' });
    const mem = setupGuestMemory(vm, { size: 4 * MiB, path: 'in-place' });
    return { kvm, vm, mem };
  }

  it('keeps one copy: the page the guest wrote privately is the page the host sees once shared, and nothing is discarded', async () => {
    const { kvm, vm, mem } = await inPlaceVm();
    const f = mem.file!.file;
    write(vm, 10, 0x5a);
    expect(memory(vm).gmem).toBe(1);
    expect(vm.process.read(mem.hva + 10 * PAGE, 1).ok).toBe(false); // private: SIGBUS
    vm.convert({ gpa: 10 * PAGE, size: PAGE, toPrivate: false, path: 'in-place' });
    expect(f.shareability(10)).toBe('all');
    expect(vm.process.read(mem.hva + 10 * PAGE, 1)).toEqual({ ok: true, data: new Uint8Array([0x5a]) });
    expect(read(vm, 10)).toBe(0x5a);
    write(vm, 10, 0x6b);
    vm.convert({ gpa: 10 * PAGE, size: PAGE, toPrivate: true, path: 'in-place' });
    expect(f.shareability(10)).toBe('guest');
    expect(vm.process.read(mem.hva + 10 * PAGE, 1).ok).toBe(false);
    expect(read(vm, 10)).toBe(0x6b);
    expect(memory(vm).gmem).toBe(1);
    expect(vm.stats().conversions).toMatchObject({ conversions: 2, punchHoles: 0, sharedDiscards: 0, pendingDiscardPages: 0 });
    // The VM attributes are not where shareability lives on this path.
    expect(vm.memslots.getAttributes(10)).toBe(0);
    vm.checkInvariants();
    kvm.checkInvariants();
  });

  it('refuses (EINVAL, nothing changed) a range not covered by guest_memfd memslots', async () => {
    const { vm, mem } = await inPlaceVm();
    const f = mem.file!.file;
    // A second, hva-backed slot above the guest_memfd one, and a hole above that.
    const hva = vm.process.mmap({ length: MiB, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
    vm.setUserMemoryRegion2({ slot: 1, flags: 0, guest_phys_addr: 4 * MiB, memory_size: MiB, userspace_addr: hva });
    const last = (4 * MiB) / PAGE - 1;
    const cases = [
      { gpa: last * PAGE, size: 2 * PAGE }, // runs into the hva slot
      { gpa: 4 * MiB, size: PAGE }, // inside the hva slot
      { gpa: 16 * MiB, size: PAGE }, // no memslot at all
    ];
    for (const c of cases) expect(errnoOf(() => vm.convert({ ...c, toPrivate: false, path: 'in-place' })), JSON.stringify(c)).toBe('EINVAL');
    expect(f.shareability(last)).toBe('guest');
    expect(vm.stats().conversions).toMatchObject({ conversions: 0, refused: 3 });
    // The covered part alone converts.
    vm.convert({ gpa: last * PAGE, size: PAGE, toPrivate: false, path: 'in-place' });
    expect(f.shareability(last)).toBe('all');
  });

  it('the Vmm helper refuses a discard policy on the in-place path', async () => {
    const { vm } = await inPlaceVm();
    expect(errnoOf(() => new Vmm(vm, { path: 'in-place', discard: 'both' }))).toBe('EINVAL');
    expect(new Vmm(vm, { path: 'in-place' }).discard).toBe('none');
  });
});

describe("the arch's beforeConvert/afterConvert around both paths", () => {
  interface ConvApi {
    readonly locked: Set<number>;
    readonly log: string[];
  }
  const fakeConv = defineArchPlugin({
    name: 'fake-conv',
    apiVersion: 1,
    vmTypes: ['fake-conv'],
    createVm() {
      const api: ConvApi = { locked: new Set(), log: [] };
      const fmt = (r: GfnRange, toPrivate: boolean) => `[${r.start},${r.end})→${toPrivate ? 'private' : 'shared'}`;
      const arch: ArchVm = {
        capabilities: { privateMem: true, privateByDefault: false, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: true },
        beforeConvert(r, toPrivate) {
          api.log.push(`before ${fmt(r, toPrivate)}`);
          for (let g = r.start; g < r.end; g++) if (api.locked.has(g)) throw new KvmError('EPERM', 'fake beforeConvert', `gfn ${g} is locked by the trusted component`);
        },
        afterConvert(r, toPrivate) {
          api.log.push(`after ${fmt(r, toPrivate)}`);
        },
        vmApi: api,
      };
      return arch;
    },
  });

  async function convVm(path: 'attributes' | 'in-place') {
    const kvm = openKvm({ hostBytes: 1 << 30, archs: [fakeConv], inPlaceConversion: path === 'in-place' });
    const vm = await kvm.createVm({ type: 'fake-conv' });
    const mem = setupGuestMemory(vm, { size: MiB, path, private: true });
    const api = vm.archApi as ConvApi;
    api.log.length = 0;
    return { kvm, vm, mem, api };
  }

  it('attributes path: a refusal leaves attributes, mappings, host memory and counters as they were', async () => {
    const { vm, api } = await convVm('attributes');
    write(vm, 4, 0x44);
    write(vm, 5, 0x55);
    api.locked.add(5);
    const before = { memory: memory(vm), leaves: vm.mmu.mappedLeaves, conversions: vm.stats().conversions.conversions };
    expect(errnoOf(() => vm.convert({ gpa: 4 * PAGE, size: 2 * PAGE, toPrivate: false, path: 'attributes', discard: 'both' }))).toBe('EPERM');
    expect(errnoOf(() => vm.setMemoryAttributes({ address: 5 * PAGE, size: PAGE, attributes: 0 }))).toBe('EPERM');
    expect([4, 5].map((g) => vm.memslots.getAttributes(g))).toEqual([PRIVATE, PRIVATE]);
    expect({ memory: memory(vm), leaves: vm.mmu.mappedLeaves, conversions: vm.stats().conversions.conversions }).toEqual(before);
    expect(vm.mmu.lookup(4)).toBeDefined();
    expect(vm.stats().conversions.refused).toBe(2);
    expect(api.log).toEqual(['before [4,6)→shared', 'before [5,6)→shared']);
    expect(read(vm, 5)).toBe(0x55);

    api.locked.clear();
    api.log.length = 0;
    vm.convert({ gpa: 4 * PAGE, size: 2 * PAGE, toPrivate: false, path: 'attributes', discard: 'both' });
    expect(api.log).toEqual(['before [4,6)→shared', 'after [4,6)→shared']);
    expect(memory(vm).gmem).toBe(0);
    vm.checkInvariants();
  });

  it('in-place path: a refusal leaves shareability, mappings and host memory as they were', async () => {
    const { vm, mem, api } = await convVm('in-place');
    const f = mem.file!;
    write(vm, 4, 0x44);
    api.locked.add(4);
    const leaves = vm.mmu.mappedLeaves;
    expect(errnoOf(() => vm.convert({ gpa: 4 * PAGE, size: PAGE, toPrivate: false, path: 'in-place' }))).toBe('EPERM');
    expect(errnoOf(() => f.setMemoryAttributes2({ offset: 4 * PAGE, size: PAGE, attributes: 0 }))).toBe('EPERM');
    expect(f.file.shareability(4)).toBe('guest');
    expect(vm.mmu.mappedLeaves).toBe(leaves);
    expect(memory(vm).gmem).toBe(1);
    expect(read(vm, 4)).toBe(0x44);

    api.locked.clear();
    api.log.length = 0;
    f.setMemoryAttributes2({ offset: 4 * PAGE, size: 2 * PAGE, attributes: 0 });
    expect(api.log).toEqual(['before [4,6)→shared', 'after [4,6)→shared']);
    expect(f.file.shareability(5)).toBe('all');
    vm.checkInvariants();
  });
});

describe('refusals before the arch hook, and requests with nothing to do', () => {
  const fakeLog = defineArchPlugin({
    name: 'fake-log',
    apiVersion: 1,
    vmTypes: ['fake-log'],
    createVm() {
      const log: string[] = [];
      const arch: ArchVm = {
        capabilities: { privateMem: true, privateByDefault: false, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: true },
        beforeConvert: (r, toPrivate) => void log.push(`before [${r.start},${r.end})→${toPrivate ? 'private' : 'shared'}`),
        afterConvert: (r, toPrivate) => void log.push(`after [${r.start},${r.end})→${toPrivate ? 'private' : 'shared'}`),
        vmApi: { log },
      };
      return arch;
    },
  });

  async function logVm(path: 'attributes' | 'in-place') {
    const kvm = openKvm({ hostBytes: 1 << 30, archs: [fakeLog], inPlaceConversion: path === 'in-place' });
    const vm = await kvm.createVm({ type: 'fake-log' });
    const mem = setupGuestMemory(vm, { size: MiB, path, private: true });
    const log = (vm.archApi as { log: string[] }).log;
    log.length = 0;
    return { kvm, vm, mem, log };
  }

  it('in place: EAGAIN for a pinned page comes before beforeConvert; nothing changes, error_offset is copied back', async () => {
    const { kvm, vm, mem, log } = await logVm('in-place');
    const f = mem.file!;
    vm.convert({ gpa: 4 * PAGE, size: 4 * PAGE, toPrivate: false, path: 'in-place' });
    // The host writes page 6 through its mapping and pins it (a DMA buffer).
    expect(vm.process.write(mem.hva + 6 * PAGE, new Uint8Array([0x66])).ok).toBe(true);
    const [pfn] = vm.process.gup(mem.hva + 6 * PAGE, 1, { longterm: true });
    log.length = 0;
    const before = { stats: vm.stats().conversions, share: f.file.shareabilityRuns(), leaves: vm.mmu.mappedLeaves, mapped: vm.process.pfnAt(mem.hva + 6 * PAGE) };
    expect(errnoOf(() => vm.convert({ gpa: 4 * PAGE, size: 4 * PAGE, toPrivate: true, path: 'in-place' }))).toBe('EAGAIN');
    const req = { offset: 4 * PAGE, size: 4 * PAGE, attributes: PRIVATE, error_offset: 0 };
    expect(errnoOf(() => f.setMemoryAttributes2(req))).toBe('EAGAIN');
    expect(req.error_offset).toBe(6 * PAGE);
    expect(log).toEqual([]);
    // Not even the host's mappings were zapped: the validate-only check counts them out instead.
    expect({ stats: { ...vm.stats().conversions, refused: before.stats.refused }, share: f.file.shareabilityRuns(), leaves: vm.mmu.mappedLeaves, mapped: vm.process.pfnAt(mem.hva + 6 * PAGE) }).toEqual(before);
    expect(vm.stats().conversions.refused).toBe(before.stats.refused + 1);

    // Unpinned, the mapping alone does not block: the kernel unmaps it before its refcount check.
    vm.process.unpin([pfn!], { longterm: true });
    vm.convert({ gpa: 4 * PAGE, size: 4 * PAGE, toPrivate: true, path: 'in-place' });
    expect(log).toEqual(['before [4,8)→private', 'after [4,8)→private']);
    expect(f.file.shareability(6)).toBe('guest');
    expect(vm.process.pfnAt(mem.hva + 6 * PAGE)).toBeUndefined();
    expect(read(vm, 6)).toBe(0x66);
    vm.checkInvariants();
    kvm.checkInvariants();
  });

  it('in place: a request with a bad range (EINVAL) runs no hook', async () => {
    const { mem, log } = await logVm('in-place');
    const f = mem.file!;
    expect(errnoOf(() => f.setMemoryAttributes2({ offset: 4 * PAGE, size: 2 * MiB, attributes: 0 }))).toBe('EINVAL');
    expect(errnoOf(() => f.setMemoryAttributes2({ offset: 4 * PAGE, size: PAGE, attributes: 0, flags: 1 }))).toBe('EINVAL');
    expect(errnoOf(() => f.convertShared({ offset: MiB, size: PAGE }))).toBe('ENOTTY');
    expect(log).toEqual([]);
    expect(f.file.shareability(4)).toBe('guest');
  });

  it('attributes path with in-place conversion on: PRIVATE is EINVAL before any hook (KVM_CAP_MEMORY_ATTRIBUTES is 0)', async () => {
    const kvm = openKvm({ hostBytes: 1 << 30, archs: [fakeLog], inPlaceConversion: true });
    const vm = await kvm.createVm({ type: 'fake-log' });
    const mem = setupGuestMemory(vm, { size: MiB, path: 'attributes' });
    const log = (vm.archApi as { log: string[] }).log;
    // The initial private state is the file's (no INIT_SHARED), not the VM's attributes.
    expect(mem.file!.file.shareability(0)).toBe('guest');
    expect(log).toEqual([]);
    expect(errnoOf(() => vm.convert({ gpa: 0, size: PAGE, toPrivate: true, path: 'attributes' }))).toBe('EINVAL');
    expect(errnoOf(() => vm.setMemoryAttributes({ address: 0, size: PAGE, attributes: PRIVATE }))).toBe('EINVAL');
    expect(log).toEqual([]);
    expect(vm.memslots.getAttributes(0)).toBe(0);
    expect(vm.stats().conversions).toMatchObject({ conversions: 0, noopConversions: 0, refused: 2 });
  });

  for (const path of ['attributes', 'in-place'] as const) {
    it(`${path}: converting a range already in the target state runs no hook, zaps nothing and counts as a no-op`, async () => {
      const { vm, log } = await logVm(path);
      write(vm, 4, 0x44);
      const leaves = vm.mmu.mappedLeaves;
      const zaps = vm.stats().mmu.zaps;
      // setupGuestMemory's initial KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) on the attributes path.
      const c0 = path === 'attributes' ? 1 : 0;
      const p0 = path === 'attributes' ? MiB / PAGE : 0;
      const outcome = vm.convert({ gpa: 4 * PAGE, size: 4 * PAGE, toPrivate: true, path });
      expect(outcome).toBe('noop');
      expect(log).toEqual([]);
      expect(vm.mmu.mappedLeaves).toBe(leaves);
      expect(vm.stats().mmu.zaps).toBe(zaps);
      expect(vm.stats().conversions).toMatchObject({ conversions: c0, noopConversions: 1, pagesConverted: p0, refused: 0 });
      expect(read(vm, 4)).toBe(0x44);
      // A range only partly in the target state is one conversion of the whole request, as the
      // kernel's "nothing to do" test is per ioctl.
      expect(vm.convert({ gpa: 4 * PAGE, size: PAGE, toPrivate: false, path })).toBe('converted');
      log.length = 0;
      expect(vm.convert({ gpa: 4 * PAGE, size: 2 * PAGE, toPrivate: false, path })).toBe('converted');
      expect(log).toEqual(['before [4,6)→shared', 'after [4,6)→shared']);
      expect(vm.stats().conversions).toMatchObject({ conversions: c0 + 2, noopConversions: 1, pagesConverted: p0 + 3 });
      vm.checkInvariants();
    });
  }

  it('the file ioctl: a request with nothing to do returns without the arch hooks', async () => {
    const { vm, mem, log } = await logVm('in-place');
    mem.file!.setMemoryAttributes2({ offset: 0, size: MiB, attributes: PRIVATE });
    expect(log).toEqual([]);
    expect(mem.file!.file.shareability(0)).toBe('guest');
    vm.checkInvariants();
  });
});

describe('KVM_CAP_MEMORY_ATTRIBUTES with in-place conversion (PROPOSED-CONV-v8 kvm_supported_vm_mem_attributes)', () => {
  for (const inPlaceConversion of [false, true]) {
    it(`reports ${inPlaceConversion ? '0' : 'PRIVATE'} on /dev/kvm and the VM, and KVM_SET_MEMORY_ATTRIBUTES accepts exactly that (inPlaceConversion ${inPlaceConversion})`, async () => {
      const kvm = openKvm({ hostBytes: 1 << 30, inPlaceConversion });
      const vm = await kvm.createVm({ type: 'sw-protected' });
      const want = inPlaceConversion ? 0 : PRIVATE;
      expect(kvm.checkExtension(uapi.KVM_CAP_MEMORY_ATTRIBUTES)).toBe(want);
      expect(vm.checkExtension(uapi.KVM_CAP_MEMORY_ATTRIBUTES)).toBe(want);
      // guest_memfd reports it instead.
      expect(vm.checkExtension(uapi.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES)).toBe(inPlaceConversion ? PRIVATE : 0);
      const err = errnoOf(() => vm.setMemoryAttributes({ address: 0, size: PAGE, attributes: PRIVATE }));
      expect(err).toBe(inPlaceConversion ? 'EINVAL' : undefined);
      expect(vm.memslots.getAttributes(0)).toBe(want);
      // Clearing (attributes 0) is still accepted.
      vm.setMemoryAttributes({ address: 0, size: PAGE, attributes: 0 });
      expect(vm.memslots.getAttributes(0)).toBe(0);
    });
  }
});
