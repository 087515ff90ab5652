import { describe, expect, it } from 'vitest';
import { errnoOf } from '@cocokit/sdk/testing';
import { createRingBuffer, uapi } from '@cocokit/sdk';
import { MAP, PROT } from '@cocokit/host';
import { recorder, setup, slotAt } from './test-helpers.js';

const { GUEST_MEMFD_FLAG_MMAP: MMAP, GUEST_MEMFD_FLAG_INIT_SHARED: SHARED, FALLOC_FL_KEEP_SIZE: KEEP, FALLOC_FL_PUNCH_HOLE: PUNCH } = uapi;
const P = 4096;

describe('file operations', () => {
  it('test_file_read_write: read/write EINVAL, pread/pwrite/lseek ESPIPE, ftruncate EINVAL', () => {
    const f = setup().vm.createGuestMemfd({ size: 4 * P });
    expect(errnoOf(() => f.read())).toBe('EINVAL');
    expect(errnoOf(() => f.write())).toBe('EINVAL');
    expect(errnoOf(() => f.pread())).toBe('ESPIPE');
    expect(errnoOf(() => f.pwrite())).toBe('ESPIPE');
    expect(errnoOf(() => f.lseek())).toBe('ESPIPE');
    expect(errnoOf(() => f.ftruncate())).toBe('EINVAL');
  });

  it('test_file_size: st_size, st_blksize; st_blocks stays 0 after allocation [PROBE]', () => {
    const f = setup().vm.createGuestMemfd({ size: 4 * P });
    f.fallocate(KEEP, 0, 4 * P);
    expect(f.fstat()).toMatchObject({ st_size: 4 * P, st_blksize: P, st_blocks: 0 });
  });
});

describe('fallocate', () => {
  it('test_fallocate: the selftest sequence', () => {
    const { vm, host } = setup();
    const total = 4 * P;
    const f = vm.createGuestMemfd({ size: total });
    f.fallocate(KEEP, 0, total);
    expect(f.allocatedPages).toBe(4);
    expect(errnoOf(() => f.fallocate(KEEP | PUNCH, P - 1, P))).toBe('EINVAL');
    expect(errnoOf(() => f.fallocate(KEEP, total, P))).toBe('EINVAL');
    expect(errnoOf(() => f.fallocate(KEEP, total + P, P))).toBe('EINVAL');
    f.fallocate(KEEP | PUNCH, total, P);
    f.fallocate(KEEP | PUNCH, total + P, P);
    expect(errnoOf(() => f.fallocate(KEEP | PUNCH, P, P - 1))).toBe('EINVAL');
    f.fallocate(KEEP | PUNCH, P, P);
    expect(f.allocatedPages).toBe(3);
    f.fallocate(KEEP, P, P);
    expect(f.allocatedPages).toBe(4);
    expect(host.buddy.usedBy('guest_memfd')).toBe(4);
    vm.checkInvariants();
  });

  it('test_invalid_punch_hole: every unaligned offset/len is EINVAL', () => {
    const f = setup().vm.createGuestMemfd({ size: 4 * P });
    for (const [o, l] of [[0, 1], [0, P - 1], [0, P + 1], [1, 1], [1, P - 1], [1, P], [1, P + 1], [P, 1], [P, P - 1], [P, P + 1]] as const) {
      expect(errnoOf(() => f.fallocate(KEEP | PUNCH, o, l))).toBe('EINVAL');
    }
  });

  it('modes: len <= 0 and negative offset EINVAL first [PROBE]; no KEEP_SIZE, PUNCH alone, ZERO_RANGE EOPNOTSUPP', () => {
    const f = setup().vm.createGuestMemfd({ size: 4 * P });
    expect(errnoOf(() => f.fallocate(0, 0, 0))).toBe('EINVAL');
    expect(errnoOf(() => f.fallocate(KEEP | PUNCH, -P, P))).toBe('EINVAL');
    expect(errnoOf(() => f.fallocate(0, 0, P))).toBe('EOPNOTSUPP');
    expect(errnoOf(() => f.fallocate(PUNCH, 1, 1))).toBe('EOPNOTSUPP');
    expect(errnoOf(() => f.fallocate(KEEP | uapi.FALLOC_FL_ZERO_RANGE, 1, 1))).toBe('EOPNOTSUPP');
    expect(errnoOf(() => f.fallocate(KEEP | PUNCH | uapi.FALLOC_FL_ZERO_RANGE, 1, 1))).toBe('EOPNOTSUPP');
    expect(f.allocatedPages).toBe(0);
  });

  it('memory follows allocated folios: ENOMEM frees what the call allocated', () => {
    const { vm, host } = setup();
    const f = vm.createGuestMemfd({ size: 2 ** 40 });
    const free = host.buddy.stats().freeFrames;
    expect(errnoOf(() => f.fallocate(KEEP, 0, (free + 1) * P))).toBe('ENOMEM');
    expect(f.allocatedPages).toBe(0);
    expect(host.buddy.usedBy('guest_memfd')).toBe(0);
  });

  it('punch hole invalidates every bound slot with the filter of the range, then frees', () => {
    const { vm } = setup();
    const rec = recorder();
    vm.subscribe(rec);
    const f = vm.createGuestMemfd({ size: 16 * P, flags: MMAP | SHARED });
    const s1 = slotAt(0x100, 8);
    const s2 = slotAt(0x900, 8);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 8 }, s1);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 8, npages: 8 }, s2);
    f.fallocate(KEEP, 0, 16 * P);
    f.fallocate(KEEP | PUNCH, 6 * P, 4 * P);
    expect(rec.begins.map((r) => [r.slot, r.start, r.end, r.filter, r.reason])).toEqual([
      [s1, 0x106, 0x108, 'shared', 'punch_hole'],
      [s2, 0x900, 0x902, 'shared', 'punch_hole'],
    ]);
    expect(rec.ends).toHaveLength(2);
    expect(f.allocatedPages).toBe(12);
    const priv = vm.createGuestMemfd({ size: 4 * P });
    vm.binder.bind({ fd: priv.fd, vm: vm.vmToken, offset: 0, npages: 4 }, slotAt(0x2000, 4));
    priv.fallocate(KEEP | PUNCH, 0, 4 * P);
    expect(rec.begins.at(-1)?.filter).toBe('private');
  });
});

describe('host mmap', () => {
  it('mmap refusals in the kernel order [PROBE]: PROT_EXEC EPERM, no MMAP ENODEV, MAP_PRIVATE EINVAL', () => {
    const { vm, vmm } = setup();
    const plain = vm.createGuestMemfd({ size: 4 * P });
    const m = vm.createGuestMemfd({ size: 4 * P, flags: MMAP });
    expect(errnoOf(() => vmm.mmap({ length: P, prot: PROT.READ | PROT.EXEC, flags: MAP.SHARED, file: plain }))).toBe('EPERM');
    expect(errnoOf(() => vmm.mmap({ length: P, prot: PROT.READ, flags: MAP.PRIVATE, file: plain }))).toBe('ENODEV');
    // test_mmap_not_supported
    expect(errnoOf(() => vmm.mmap({ length: 4 * P, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: plain }))).toBe('ENODEV');
    // test_mmap_cow
    expect(errnoOf(() => vmm.mmap({ length: 4 * P, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE, file: m }))).toBe('EINVAL');
  });

  it('test_mmap_supported: write all, punch first page reads zero, rest kept, rewrite', () => {
    const { vm, vmm } = setup();
    const total = 4 * P;
    const f = vm.createGuestMemfd({ size: total, flags: MMAP | SHARED });
    const a = vmm.mmap({ length: total, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    expect(vmm.write(a, new Uint8Array(total).fill(0xaa)).ok).toBe(true);
    f.fallocate(KEEP | PUNCH, 0, P);
    const r = vmm.read(a, total);
    expect(r.ok && r.data?.subarray(0, P).every((b) => b === 0)).toBe(true);
    expect(r.ok && r.data?.subarray(P).every((b) => b === 0xaa)).toBe(true);
    vmm.write(a, new Uint8Array(P).fill(0xaa));
    const r2 = vmm.read(a, total);
    expect(r2.ok && r2.data?.every((b) => b === 0xaa)).toBe(true);
    vm.checkInvariants();
  });

  it('test_fault_overflow: SIGBUS past EOF, data before it kept', () => {
    const { vm, vmm } = setup();
    const total = 4 * P;
    const f = vm.createGuestMemfd({ size: total, flags: MMAP | SHARED });
    const a = vmm.mmap({ length: 4 * total, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    const w = vmm.write(a, new Uint8Array(4 * total).fill(0xaa));
    expect(w).toMatchObject({ ok: false, signal: 'SIGBUS', addr: a + total });
    expect(vmm.read(a + total, 1)).toMatchObject({ ok: false, signal: 'SIGBUS' });
    const r = vmm.read(a, total);
    expect(r.ok && r.data?.every((b) => b === 0xaa)).toBe(true);
  });

  it('test_fault_private: MMAP without INIT_SHARED faults SIGBUS everywhere', () => {
    const { vm, vmm } = setup();
    const f = vm.createGuestMemfd({ size: 4 * P, flags: MMAP });
    const a = vmm.mmap({ length: 4 * P, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    expect(vmm.write(a, new Uint8Array(1))).toMatchObject({ ok: false, signal: 'SIGBUS' });
    expect(f.allocatedPages).toBe(0);
  });

  it('host references are tracked per folio and survive punch until unpinned', () => {
    const { vm, vmm, host } = setup();
    const f = vm.createGuestMemfd({ size: 4 * P, flags: MMAP | SHARED });
    const a = vmm.mmap({ length: 4 * P, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    const [p] = vmm.gup(a, 1, { longterm: true, write: true });
    expect(host.refcount(p!)).toBe(3); // allocation + PTE + pin
    f.fallocate(KEEP | PUNCH, 0, P);
    expect(host.refcount(p!)).toBe(1); // the pin keeps the freed page
    vmm.unpin([p!], { longterm: true });
    expect(host.isInUse(p!)).toBe(false);
    vm.checkInvariants();
    host.checkInvariants();
  });

  it('closing the fd while mapped keeps the file alive until unmapped [PROBE]', () => {
    const { vm, vmm, host } = setup();
    const f = vm.createGuestMemfd({ size: 2 * P, flags: MMAP | SHARED });
    const a = vmm.mmap({ length: 2 * P, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    vmm.write(a, new Uint8Array([5]));
    f.close();
    expect(errnoOf(() => f.fstat())).toBe('EBADF');
    expect(vmm.read(a, 1)).toMatchObject({ ok: true, data: new Uint8Array([5]) });
    expect(f.alive).toBe(true);
    vmm.munmap(a, 2 * P);
    expect(f.alive).toBe(false);
    expect(host.buddy.usedBy('guest_memfd')).toBe(0);
  });

  it('release is exact: the last munmap frees the pages at once, however the VMA was split', () => {
    const { vm, vmm, host } = setup();
    const f = vm.createGuestMemfd({ size: 8 * P, flags: MMAP | SHARED });
    const slot = slotAt(0, 8);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 8 }, slot);
    const a = vmm.mmap({ length: 8 * P, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    for (let i = 0; i < 8; i++) vmm.write(a + i * P, new Uint8Array([i + 1]));
    vm.checkInvariants();
    host.checkInvariants();
    f.close();
    vm.checkInvariants();
    host.checkInvariants();
    // Still readable through the mapping; a new mmap needs an fd.
    expect(vmm.read(a + 3 * P, 1)).toMatchObject({ ok: true, data: new Uint8Array([4]) });
    expect(errnoOf(() => vmm.mmap({ length: P, prot: PROT.READ, flags: MAP.SHARED, file: f }))).toBe('EBADF');
    expect(vm.liveFiles()).toContain(f);
    expect(host.buddy.usedBy('guest_memfd')).toBe(8);
    vmm.mprotect(a + 2 * P, 2 * P, PROT.READ); // three VMAs
    vmm.munmap(a, 3 * P);
    expect(f.alive).toBe(true);
    expect(vmm.read(a + 5 * P, 1)).toMatchObject({ ok: true, data: new Uint8Array([6]) });
    vm.checkInvariants();
    host.checkInvariants();
    vmm.munmap(a + 3 * P, 5 * P);
    expect(f.alive).toBe(false);
    expect(vm.liveFiles()).not.toContain(f);
    expect(host.buddy.usedBy('guest_memfd')).toBe(0);
    expect(errnoOf(() => vm.getPfn(slot, 0))).toBe('EFAULT');
    vm.checkInvariants();
    host.checkInvariants();
  });

  it('process exit drops the last mapping of a closed file and releases it', () => {
    const { vm, host } = setup();
    const helper = host.createProcess('helper');
    const f = vm.createGuestMemfd({ size: 4 * P, flags: MMAP | SHARED });
    const a = helper.mmap({ length: 4 * P, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
    helper.touch(a, 4 * P, 'write');
    f.close();
    expect(host.buddy.usedBy('guest_memfd')).toBe(4);
    helper.exit();
    expect(f.alive).toBe(false);
    expect(host.buddy.usedBy('guest_memfd')).toBe(0);
    vm.checkInvariants();
    host.checkInvariants();
  });
});

describe('bindings and get_pfn', () => {
  it('checkBind: EBADF for no fd, EINVAL for a non-guest_memfd fd, another VM, out of range, overlap', () => {
    const { vm, host } = setup();
    const f = vm.createGuestMemfd({ size: 16 * P });
    const other = vm.fdTable.openOther('memfd');
    const req = { fd: f.fd, vm: vm.vmToken, offset: 0, npages: 8 };
    expect(errnoOf(() => vm.binder.checkBind({ ...req, fd: 99 }))).toBe('EBADF');
    expect(errnoOf(() => vm.binder.checkBind({ ...req, fd: other }))).toBe('EINVAL');
    expect(errnoOf(() => vm.binder.checkBind({ ...req, vm: {} }))).toBe('EINVAL');
    expect(errnoOf(() => vm.binder.checkBind({ ...req, offset: 9 }))).toBe('EINVAL');
    expect(vm.binder.checkBind(req)).toEqual({ file: f, gmemOnly: false });
    vm.binder.bind(req, slotAt(0, 8));
    expect(errnoOf(() => vm.binder.checkBind({ ...req, offset: 7, npages: 2 }))).toBe('EINVAL');
    expect(vm.binder.checkBind({ ...req, offset: 8 }).file).toBe(f);
    void host;
  });

  it('getPfn allocates, zeroes and prepares private pages once (6.18 tracking); EFAULT unbound', () => {
    const prepared: number[] = [];
    const { vm, host } = setup({ privateMem: true, arch: { gmemPrepare: (p) => void prepared.push(p) } });
    const f = vm.createGuestMemfd({ size: 8 * P });
    const slot = slotAt(0x1000, 8);
    expect(errnoOf(() => vm.getPfn(slot, 0x1000))).toBe('EFAULT');
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 8 }, slot);
    const a = vm.getPfn(slot, 0x1003);
    expect(a).toMatchObject({ maxOrder: 0, prepared: false, isPrivate: true });
    expect(host.isZero(a.pfn, a.pfn + 1)).toBe(true);
    expect(vm.getPfn(slot, 0x1003)).toMatchObject({ pfn: a.pfn, prepared: true });
    expect(prepared).toEqual([a.pfn]);
  });

  it('getPfn on a fresh 4K page: the hook runs before the folio is marked prepared; without a hook the same state and trace', () => {
    // With a hook, the folio is in the page cache, uptodate and not yet prepared while it runs.
    const seen: unknown[] = [];
    const hooked = setup({ privateMem: true, arch: { gmemPrepare: () => void seen.push(f1.folioAt(3)) } });
    const f1 = hooked.vm.createGuestMemfd({ size: 8 * P });
    const s1 = slotAt(0, 8);
    hooked.vm.binder.bind({ fd: f1.fd, vm: hooked.vm.vmToken, offset: 0, npages: 8 }, s1);
    const a = hooked.vm.getPfn(s1, 3);
    expect(seen).toEqual([{ pfn: a.pfn, order: 0, index: 3, uptodate: true, prepared: false }]);
    // Without one, preparing is the flag alone (written with the insertion): same answers, folio
    // state, trace and virtual time as with a hook that does nothing (file names aside: inodes differ).
    const run = (arch: { gmemPrepare?: () => void }) => {
      const { vm, sim } = setup({ privateMem: true, arch });
      const ring = createRingBuffer(64);
      sim.trace.attach(ring);
      const f = vm.createGuestMemfd({ size: 8 * P });
      const slot = slotAt(0, 8);
      vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 8 }, slot);
      const got = [vm.getPfn(slot, 3), vm.getPfn(slot, 3), vm.getPfn(slot, 4)];
      return { got, folio: f.folioAt(3), runs: f.folioRuns(), events: ring.events().map((e) => [e.name, e.ts, { ...e.fields, file: 'f' }]) };
    };
    const bare = run({});
    expect(bare).toEqual(run({ gmemPrepare: () => undefined }));
    expect(bare.got.map((g) => g.prepared)).toEqual([false, true, false]);
    expect(bare.folio).toMatchObject({ uptodate: true, prepared: true });
    expect(bare.events.map((e) => e[0]).filter((n) => n !== 'host.alloc')).toEqual(['gmem.create', 'gmem.bind', 'gmem.alloc', 'gmem.prepare', 'gmem.alloc', 'gmem.prepare']);
  });

  it('getPfn follows binding changes: a range unbound and bound to another slot answers for the new slot only', () => {
    const { vm } = setup({ privateMem: true });
    const f = vm.createGuestMemfd({ size: 8 * P });
    const a = slotAt(0, 8);
    const b = slotAt(0x100, 8);
    const ba = vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 8 }, a);
    const pfn = vm.getPfn(a, 2).pfn;
    vm.binder.unbind(ba, a);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 8 }, b);
    expect(vm.getPfn(b, 0x102).pfn).toBe(pfn);
    expect(errnoOf(() => f.getPfn(a, 2, 0))).toBe('EIO');
    expect(errnoOf(() => f.getPfn(b, 0x102 + 0.5, 0))).toBe('EINVAL');
  });

  it('post-6.18 (no preparation tracking): prepare runs on every get_pfn', () => {
    let n = 0;
    const { vm } = setup({ privateMem: true, preparedTracking: false, arch: { gmemPrepare: () => void n++ } });
    const f = vm.createGuestMemfd({ size: 8 * P });
    const slot = slotAt(0, 8);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 8 }, slot);
    vm.getPfn(slot, 1);
    vm.getPfn(slot, 1);
    expect(n).toBe(2);
  });

  it('release with bound slots: slices invalidated (both), slots stay, get_pfn EFAULT, unbind is a no-op', () => {
    const { vm, host } = setup();
    const rec = recorder();
    vm.subscribe(rec);
    const f = vm.createGuestMemfd({ size: 8 * P });
    const slot = slotAt(0, 8);
    const b = vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 8 }, slot);
    vm.getPfn(slot, 2);
    f.close();
    expect(rec.begins.at(-1)).toMatchObject({ filter: 'both', reason: 'release', start: 0, end: 8 });
    expect(errnoOf(() => vm.getPfn(slot, 2))).toBe('EFAULT');
    vm.binder.unbind(b, slot);
    expect(host.buddy.usedBy('guest_memfd')).toBe(0);
  });

  it('memory failure: not truncated, get_pfn EHWPOISON, punch clears it', () => {
    const { vm } = setup();
    const f = vm.createGuestMemfd({ size: 4 * P });
    const slot = slotAt(0, 4);
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: 4 }, slot);
    vm.getPfn(slot, 1);
    f.memoryFailure(1);
    expect(f.allocatedPages).toBe(1);
    expect(errnoOf(() => vm.getPfn(slot, 1))).toBe('EHWPOISON');
    f.fallocate(KEEP | PUNCH, P, P);
    expect(vm.getPfn(slot, 1).prepared).toBe(false);
  });
});
