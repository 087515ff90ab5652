import { KvmError, createSim, isKvmError, pfn as toPfn } from '@cocokit/sdk';
import type { PgOff, Pfn } from '@cocokit/sdk';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { FileProvider } from './file.js';
import { checkInvariants, createHost } from './host.js';
import type { Host } from './host.js';
import { MADV, MAP, MMAP_BASE, PROT, TASK_SIZE } from './process.js';
import { errnoOf } from '@cocokit/sdk/testing';

const RW = PROT.READ | PROT.WRITE;
const ANON = MAP.PRIVATE | MAP.ANONYMOUS;
const PAGE = 4096;

const thrown = (f: () => unknown): unknown => {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
};

/** A small guest_memfd-like file: pages allocated on first fault; private pages SIGBUS. */
/** A plain page-cache file: page `i` is allocated on its first fault and holds tag 1000 + i. */
function pageCacheFile(host: Host, nrPages: number): FileProvider & { readonly pages: ReadonlyMap<number, number> } {
  const pages = new Map<number, number>();
  return {
    pages,
    name: 'pagecache',
    nrPages,
    fault(index) {
      let p = pages.get(index);
      if (p === undefined) {
        p = host.allocPages(0, 'kernel');
        host.writeTag(p, 1000n + BigInt(index));
        pages.set(index, p);
      }
      return { pfn: toPfn(p) };
    },
  };
}

function testFile(host: Host, nrPages: number, opts: { writable?: boolean; refuseMmap?: boolean; noPin?: boolean } = {}) {
  const pages = new Map<number, number>();
  const privateIdx = new Set<number>();
  let faults = 0;
  const file: FileProvider & { pages: Map<number, number>; privateIdx: Set<number>; faults: () => number; truncate(s: number, e: number): void } = {
    name: 'testfile',
    nrPages,
    writable: opts.writable ?? true,
    pages,
    privateIdx,
    faults: () => faults,
    mmap(req) {
      if (opts.refuseMmap === true) throw new KvmError('ENODEV', 'mmap', 'no GUEST_MEMFD_FLAG_MMAP');
      if (!req.shared) throw new KvmError('EINVAL', 'mmap', 'MAP_PRIVATE is not supported');
    },
    fault(index: PgOff) {
      faults++;
      if (index >= nrPages) return { signal: 'SIGBUS', reason: 'beyond i_size' };
      if (privateIdx.has(index)) return { signal: 'SIGBUS', reason: 'page is private' };
      let p = pages.get(index);
      if (p === undefined) {
        p = host.allocPages(0, 'guest_memfd', { zero: true });
        pages.set(index, p);
      }
      return { pfn: toPfn(p) };
    },
    gupAllowed: () => opts.noPin !== true,
    truncate(s: number, e: number) {
      host.unmapFileRange(file, s, e);
      for (let i = s; i < e; i++) {
        const p = pages.get(i);
        if (p !== undefined) {
          host.freePages(p, 0);
          pages.delete(i);
        }
      }
    },
  };
  return file;
}

describe('HostProcess mmap/munmap/mprotect', () => {
  it('maps anonymous memory top-down, allocates zeroed pages on first touch', () => {
    const host = createHost({ frames: 4096 });
    const vmm = host.createProcess('vmm');
    const a = vmm.mmap({ length: 8 * PAGE, prot: RW, flags: ANON });
    expect(a).toBe(MMAP_BASE - 8 * PAGE);
    const b = vmm.mmap({ length: 1, prot: RW, flags: ANON });
    expect(b).toBe(a - PAGE); // length rounded up; next gap below
    expect(vmm.residentPages()).toBe(0);
    const r = vmm.read(a + 100, 10);
    expect(r).toEqual({ ok: true, data: new Uint8Array(10) });
    expect(vmm.residentPages()).toBe(1);
    expect(host.stats().usedByPurpose).toEqual({ anon: 1 });
    expect(vmm.write(a + PAGE - 2, new Uint8Array([1, 2, 3, 4]))).toEqual({ ok: true });
    expect(vmm.read(a + PAGE - 2, 4)).toEqual({ ok: true, data: new Uint8Array([1, 2, 3, 4]) });
    expect(vmm.residentPages()).toBe(2);
    checkInvariants(host);
  });

  it('honours a free hint, MAP_FIXED replaces, MAP_FIXED_NOREPLACE refuses with EEXIST', () => {
    const host = createHost({ frames: 4096 });
    const p = host.createProcess('p');
    expect(p.mmap({ addr: 0x100000, length: 4 * PAGE, prot: RW, flags: ANON })).toBe(0x100000);
    p.write(0x100000, new Uint8Array([7]));
    const used = host.stats().usedFrames;
    expect(p.mmap({ addr: 0x100000, length: PAGE, prot: RW, flags: ANON })).not.toBe(0x100000); // hint taken
    expect(p.mmap({ addr: 0x100000, length: PAGE, prot: PROT.READ, flags: ANON | MAP.FIXED })).toBe(0x100000);
    expect(host.stats().usedFrames).toBe(used - 1); // the old page was freed
    expect(p.read(0x100000, 1)).toEqual({ ok: true, data: new Uint8Array([0]) });
    expect(p.vmaList().filter((v) => v.start >= 0x100 && v.start < 0x104).length).toBe(2); // split at the fixed mapping
    expect(isKvmError(thrown(() => p.mmap({ addr: 0x101000, length: PAGE, prot: RW, flags: ANON | MAP.FIXED_NOREPLACE })), 'EEXIST')).toBe(true);
    checkInvariants(host);
  });

  it('refuses bad mmap calls with Linux errnos and changes nothing', () => {
    const host = createHost({ frames: 4096 });
    const p = host.createProcess('p');
    p.mmap({ addr: 0x200000, length: PAGE, prot: RW, flags: ANON | MAP.FIXED });
    const before = p.vmaList();
    const ro = testFile(host, 16, { writable: false });
    const nommap = testFile(host, 16, { refuseMmap: true });
    const cases: Array<[Parameters<typeof p.mmap>[0], string]> = [
      [{ length: 0, prot: RW, flags: ANON }, 'EINVAL'],
      [{ length: PAGE, prot: RW, flags: MAP.ANONYMOUS }, 'EINVAL'],
      [{ length: PAGE, prot: 0x10, flags: ANON }, 'EINVAL'],
      [{ addr: 0x200001, length: PAGE, prot: RW, flags: ANON | MAP.FIXED }, 'EINVAL'],
      [{ length: PAGE, prot: RW, flags: ANON, offset: 100 }, 'EINVAL'],
      [{ length: PAGE, prot: RW, flags: MAP.SHARED }, 'EBADF'],
      [{ addr: TASK_SIZE - PAGE, length: 2 * PAGE, prot: RW, flags: ANON | MAP.FIXED }, 'ENOMEM'],
      [{ length: TASK_SIZE * 2, prot: RW, flags: ANON }, 'ENOMEM'],
      [{ addr: 0x1000, length: PAGE, prot: RW, flags: ANON | MAP.FIXED }, 'EPERM'],
      [{ addr: 0x200000, length: PAGE, prot: RW, flags: MAP.SHARED | MAP.FIXED, file: ro }, 'EACCES'],
      [{ addr: 0x200000, length: PAGE, prot: RW, flags: MAP.SHARED | MAP.FIXED, file: nommap }, 'ENODEV'],
      [{ addr: 0x200000, length: PAGE, prot: RW, flags: MAP.PRIVATE | MAP.FIXED, file: testFile(host, 4) }, 'EINVAL'],
    ];
    for (const [args, errno] of cases) {
      const e = thrown(() => p.mmap(args));
      expect(isKvmError(e), `${JSON.stringify(args)} → ${String(e)}`).toBe(true);
      expect((e as KvmError).errno, JSON.stringify(args)).toBe(errno);
      expect(p.vmaList()).toEqual(before);
    }
    // A read-only file can still be mapped shared read-only, or private writable.
    expect(p.mmap({ length: PAGE, prot: PROT.READ, flags: MAP.SHARED, file: ro })).toBeGreaterThan(0);
    checkInvariants(host);
  });

  it('partial munmap splits the VMA, frees its anonymous pages, and leaves SIGSEGV behind', () => {
    const host = createHost({ frames: 4096 });
    const p = host.createProcess('p');
    const a = p.mmap({ length: 10 * PAGE, prot: RW, flags: ANON });
    expect(p.touch(a, 10 * PAGE, 'write')).toEqual({ ok: true });
    expect(host.stats().usedFrames).toBe(10);
    p.munmap(a + 3 * PAGE, 4 * PAGE);
    const vmas = p.vmaList();
    expect(vmas.map((v) => [v.start * PAGE - a, v.end * PAGE - a])).toEqual([
      [0, 3 * PAGE],
      [7 * PAGE, 10 * PAGE],
    ]);
    expect(host.stats().usedFrames).toBe(6);
    expect(p.read(a + 4 * PAGE, 1)).toMatchObject({ ok: false, signal: 'SIGSEGV', addr: a + 4 * PAGE });
    expect(p.read(a + 2 * PAGE + 4090, 10)).toMatchObject({ ok: false, signal: 'SIGSEGV', addr: a + 3 * PAGE });
    p.munmap(a, 10 * PAGE);
    expect(p.vmaList()).toEqual([]);
    expect(host.stats().usedFrames).toBe(0);
    for (const [addr, len] of [[a + 1, PAGE], [a, 0], [TASK_SIZE, PAGE]] as const) {
      expect(isKvmError(thrown(() => p.munmap(addr, len)), 'EINVAL')).toBe(true);
    }
    checkInvariants(host);
  });

  it('write to a read-only VMA is SIGSEGV; mprotect changes it, splitting; ENOMEM over holes', () => {
    const host = createHost({ frames: 4096 });
    const p = host.createProcess('p');
    const a = p.mmap({ length: 4 * PAGE, prot: PROT.READ, flags: ANON });
    expect(p.write(a, new Uint8Array(1))).toMatchObject({ ok: false, signal: 'SIGSEGV' });
    expect(p.read(a, 1).ok).toBe(true);
    p.mprotect(a + PAGE, PAGE, RW);
    expect(p.vmaList().length).toBe(3);
    expect(p.write(a + PAGE, new Uint8Array([5]))).toEqual({ ok: true });
    expect(p.write(a + 2 * PAGE, new Uint8Array([5]))).toMatchObject({ ok: false, signal: 'SIGSEGV' });
    p.mprotect(a, 4 * PAGE, PROT.NONE);
    expect(p.read(a, 1)).toMatchObject({ ok: false, signal: 'SIGSEGV', reason: expect.stringContaining('SEGV_ACCERR') });
    expect(isKvmError(thrown(() => p.mprotect(a, 5 * PAGE, RW)), 'ENOMEM')).toBe(true);
    expect(isKvmError(thrown(() => p.mprotect(a, PAGE, 0x40)), 'EINVAL')).toBe(true);
    checkInvariants(host);
  });

  it('exit unmaps everything and later calls are refused', () => {
    const host = createHost({ frames: 64 });
    const p = host.createProcess('p');
    const a = p.mmap({ length: 2 * PAGE, prot: RW, flags: ANON });
    p.touch(a, 2 * PAGE, 'write');
    p.exit();
    expect(host.stats().usedFrames).toBe(0);
    expect(host.process(p.pid)).toBeUndefined();
    expect(isKvmError(thrown(() => p.mmap({ length: PAGE, prot: RW, flags: ANON })), 'ESRCH')).toBe(true);
    expect(p.read(a, 1)).toMatchObject({ ok: false, signal: 'SIGSEGV' });
  });

  it('an out-of-memory anonymous fault is a SIGBUS value', () => {
    const host = createHost({ frames: 2 });
    const p = host.createProcess('p');
    const a = p.mmap({ length: 3 * PAGE, prot: RW, flags: ANON });
    expect(p.touch(a, 2 * PAGE, 'write')).toEqual({ ok: true });
    expect(p.touch(a + 2 * PAGE, 1, 'read')).toMatchObject({ ok: false, signal: 'SIGBUS', reason: expect.stringContaining('OOM') });
    checkInvariants(host);
  });
});

describe('File mappings', () => {
  it('faults ask the file, mapping takes a reference, SIGBUS comes from the file', () => {
    const host = createHost({ frames: 4096 });
    const f = testFile(host, 8);
    const p = host.createProcess('vmm');
    const a = p.mmap({ length: 16 * PAGE, prot: RW, flags: MAP.SHARED, file: f, offset: 2 * PAGE });
    expect(p.write(a, new Uint8Array([42]))).toEqual({ ok: true });
    const pg = f.pages.get(2)!;
    expect(host.readBytes(toPfn(pg), 0, 1)).toEqual(new Uint8Array([42]));
    expect(host.refcount(pg)).toBe(2); // the file's allocation reference + the mapping
    expect(f.faults()).toBe(1);
    p.read(a, 1);
    expect(f.faults()).toBe(1); // mapped: no second fault
    f.privateIdx.add(3);
    expect(p.read(a + PAGE, 1)).toMatchObject({ ok: false, signal: 'SIGBUS', addr: a + PAGE, reason: 'page is private' });
    expect(p.read(a + 6 * PAGE, 1)).toMatchObject({ ok: false, signal: 'SIGBUS', reason: 'beyond i_size' });
    expect(host.mappingsOf(f)).toBe(1);
    checkInvariants(host);
  });

  it('unmapFileRange zaps every process mapping the range, so the next access faults again', () => {
    const host = createHost({ frames: 4096 });
    const f = testFile(host, 8);
    const p1 = host.createProcess('vmm');
    const p2 = host.createProcess('helper');
    const a1 = p1.mmap({ length: 8 * PAGE, prot: RW, flags: MAP.SHARED, file: f });
    const a2 = p2.mmap({ length: 4 * PAGE, prot: PROT.READ, flags: MAP.SHARED, file: f, offset: 4 * PAGE });
    p1.touch(a1, 8 * PAGE, 'write');
    p2.touch(a2, 4 * PAGE, 'read');
    const pg5 = f.pages.get(5)!;
    expect(host.refcount(pg5)).toBe(3);
    expect(host.unmapFileRange(f, 4, 6)).toBe(4);
    expect(host.refcount(pg5)).toBe(1);
    expect(p1.pfnAt(a1 + 5 * PAGE)).toBeUndefined();
    expect(p1.pfnAt(a1 + 3 * PAGE)).toBeDefined();
    // The file converts 5 to private: the next host access faults to the file and gets SIGBUS.
    f.privateIdx.add(5);
    expect(p2.read(a2 + PAGE, 1)).toMatchObject({ ok: false, signal: 'SIGBUS' });
    // Truncation: zap then free; a later touch faults in a fresh zero page.
    p1.write(a1 + 7 * PAGE, new Uint8Array([9]));
    f.truncate(7, 8);
    expect(p1.read(a1 + 7 * PAGE, 1)).toEqual({ ok: true, data: new Uint8Array([0]) });
    checkInvariants(host);
    // Unmapping a VMA removes it from the reverse map.
    p2.munmap(a2, 4 * PAGE);
    expect(host.mappingsOf(f)).toBe(1);
    p1.munmap(a1 + 2 * PAGE, PAGE);
    expect(host.mappingsOf(f)).toBe(2);
    checkInvariants(host);
  });

  it('private file mappings copy on write', () => {
    const host = createHost({ frames: 4096 });
    const f = pageCacheFile(host, 4);
    const p = host.createProcess('p');
    const a = p.mmap({ length: 4 * PAGE, prot: RW, flags: MAP.PRIVATE, file: f });
    p.read(a, 1);
    const filePfn = p.pfnAt(a)!;
    expect(filePfn).toBe(f.pages.get(0));
    p.write(a + 8, new Uint8Array([1]));
    const copy = p.pfnAt(a)!;
    expect(copy).not.toBe(filePfn);
    expect(host.tagAt(filePfn)).toBe(1000n); // the file page is untouched
    expect(host.refcount(filePfn)).toBe(1); // the mapping's reference moved to the copy
    expect(host.buddy.blockOf(copy)?.purpose).toBe('anon');
    // A first write fault without a prior read also copies.
    p.write(a + PAGE, new Uint8Array([2]));
    expect(host.tagAt(f.pages.get(1)!)).toBe(1001n);
    // Zapping the file range keeps COW copies (they are anonymous).
    host.unmapFileRange(f, 0, 4);
    expect(p.pfnAt(a)).toBe(copy);
    checkInvariants(host);
    p.exit();
    expect(host.stats().usedByPurpose).toEqual({ kernel: 2 });
    checkInvariants(host);
  });

  it('MAP_POPULATE faults everything in at mmap time', () => {
    const host = createHost({ frames: 64 });
    const f = testFile(host, 4);
    const p = host.createProcess('p');
    p.mmap({ length: 4 * PAGE, prot: RW, flags: MAP.SHARED | MAP.POPULATE, file: f });
    expect(f.pages.size).toBe(4);
    p.mmap({ length: 2 * PAGE, prot: RW, flags: ANON | MAP.POPULATE });
    expect(host.stats().usedByPurpose).toEqual({ guest_memfd: 4, anon: 2 });
  });
});

describe('FileProvider.release: the last mapping of a file going', () => {
  function counted(host: Host) {
    const f = testFile(host, 64);
    let releases = 0;
    let mappedAtRelease = -1;
    const file = Object.assign(f, {
      release() {
        releases++;
        mappedAtRelease = host.mappingsOf(file);
      },
    });
    return { file, releases: () => releases, mappedAtRelease: () => mappedAtRelease };
  }

  it('fires once, after the last munmap, not on the VMA splits before it', () => {
    const host = createHost({ frames: 4096 });
    const { file, releases, mappedAtRelease } = counted(host);
    const p = host.createProcess('vmm');
    const a = p.mmap({ length: 16 * PAGE, prot: RW, flags: MAP.SHARED, file });
    p.touch(a, 16 * PAGE, 'write');
    p.mprotect(a + 4 * PAGE, 4 * PAGE, PROT.READ); // splits into three VMAs
    p.munmap(a + 6 * PAGE, 4 * PAGE); // punches a hole through two of them
    expect(host.mappingsOf(file)).toBe(3);
    p.munmap(a, 6 * PAGE);
    p.munmap(a + 12 * PAGE, 2 * PAGE); // splits the last VMA: still mapped
    expect(releases()).toBe(0);
    checkInvariants(host);
    p.munmap(a, 16 * PAGE);
    expect(releases()).toBe(1);
    expect(mappedAtRelease()).toBe(0);
    p.munmap(a, 16 * PAGE); // nothing mapped: no second call
    expect(releases()).toBe(1);
    checkInvariants(host);
  });

  it('counts mappings across processes; exit drops a process\'s mappings', () => {
    const host = createHost({ frames: 4096 });
    const { file, releases } = counted(host);
    const p1 = host.createProcess('vmm');
    const p2 = host.createProcess('helper');
    const a1 = p1.mmap({ length: 8 * PAGE, prot: RW, flags: MAP.SHARED, file });
    p2.mmap({ length: 8 * PAGE, prot: RW, flags: MAP.SHARED, file });
    p1.munmap(a1, 8 * PAGE);
    expect(releases()).toBe(0);
    p2.exit();
    expect(releases()).toBe(1);
    // Mapped again and unmapped again: released again.
    const a3 = p1.mmap({ length: 4 * PAGE, prot: RW, flags: MAP.SHARED, file });
    p1.exit();
    expect(releases()).toBe(2);
    expect(a3).toBeGreaterThan(0);
    checkInvariants(host);
  });

  it('MAP_FIXED over the last mapping: released when replaced by something else, not when replaced by the same file', () => {
    const host = createHost({ frames: 4096 });
    const { file, releases } = counted(host);
    const p = host.createProcess('vmm');
    const a = p.mmap({ length: 8 * PAGE, prot: RW, flags: MAP.SHARED, file });
    p.mmap({ addr: a, length: 8 * PAGE, prot: PROT.READ, flags: MAP.SHARED | MAP.FIXED, file, offset: 8 * PAGE });
    expect(releases()).toBe(0);
    expect(host.mappingsOf(file)).toBe(1);
    p.mmap({ addr: a + 2 * PAGE, length: 2 * PAGE, prot: RW, flags: ANON | MAP.FIXED });
    expect(releases()).toBe(0); // two pieces of the file's mapping remain
    p.mmap({ addr: a, length: 8 * PAGE, prot: RW, flags: ANON | MAP.FIXED });
    expect(releases()).toBe(1);
    expect(host.mappingsOf(file)).toBe(0);
    checkInvariants(host);
  });

  it('a refused mmap or munmap of anonymous memory never calls it', () => {
    const host = createHost({ frames: 4096 });
    const { file, releases } = counted(host);
    const p = host.createProcess('vmm');
    expect(() => p.mmap({ length: PAGE, prot: RW, flags: MAP.PRIVATE, file })).toThrow();
    const a = p.mmap({ length: 4 * PAGE, prot: RW, flags: ANON });
    p.munmap(a, 4 * PAGE);
    expect(releases()).toBe(0);
  });
});

describe('GUP', () => {
  it('pins raise refcounts; unpin drops them; a pinned anonymous page outlives munmap', () => {
    const host = createHost({ frames: 4096 });
    const p = host.createProcess('p');
    const a = p.mmap({ length: 4 * PAGE, prot: RW, flags: ANON });
    const pfns = p.gup(a + 10, 2, { write: true, longterm: true });
    expect(pfns).toHaveLength(2);
    expect(host.refcount(pfns[0]!)).toBe(2);
    expect(host.pinCount(pfns[0]!)).toBe(1);
    p.munmap(a, 4 * PAGE);
    expect(host.refcount(pfns[0]!)).toBe(1);
    expect(host.stats().pendingFreeFrames).toBe(2);
    checkInvariants(host);
    p.unpin(pfns, { longterm: true });
    expect(host.stats().usedFrames).toBe(0);
    checkInvariants(host);
  });

  it('short-term get_user_pages raises the refcount but not the pin count', () => {
    const host = createHost({ frames: 64 });
    const p = host.createProcess('p');
    const a = p.mmap({ length: PAGE, prot: RW, flags: ANON });
    const [pg] = p.gup(a, 1) as [Pfn];
    expect(host.refcount(pg)).toBe(2);
    expect(host.pinCount(pg)).toBe(0);
    p.unpin([pg]);
    expect(host.refcount(pg)).toBe(1);
  });

  it('EFAULT outside VMAs, on permission, on a file refusing pins, on a SIGBUS page; nothing pinned', () => {
    const host = createHost({ frames: 4096 });
    const p = host.createProcess('p');
    const ro = p.mmap({ length: 2 * PAGE, prot: PROT.READ, flags: ANON });
    const f = testFile(host, 4, { noPin: true });
    const g = testFile(host, 4);
    g.privateIdx.add(1);
    const fa = p.mmap({ length: 4 * PAGE, prot: RW, flags: MAP.SHARED, file: f });
    const ga = p.mmap({ length: 4 * PAGE, prot: RW, flags: MAP.SHARED, file: g });
    for (const [addr, n, opts] of [
      [ro - 10 * PAGE, 1, {}],
      [ro, 1, { write: true }],
      [ro, 3, {}],
      [fa, 1, { longterm: true }],
      [ga, 2, { longterm: true }],
    ] as const) {
      expect(isKvmError(thrown(() => p.gup(addr, n, opts)), 'EFAULT')).toBe(true);
    }
    expect(isKvmError(thrown(() => p.gup(ro, 0)), 'EINVAL')).toBe(true);
    // Page 0 of g was faulted in before page 1 failed, but holds no pin.
    const pg0 = g.pages.get(0)!;
    expect(host.pinCount(pg0)).toBe(0);
    expect(host.refcount(pg0)).toBe(2); // file + mapping
    checkInvariants(host);
  });
});

describe('arch host-access hook', () => {
  it('a refusal becomes the fault value of the access; the mapping stays', () => {
    const host = createHost({ frames: 64 });
    const f = testFile(host, 4);
    const p = host.createProcess('vmm');
    const a = p.mmap({ length: 4 * PAGE, prot: RW, flags: MAP.SHARED, file: f });
    p.touch(a, 4 * PAGE, 'read');
    const guestOwned = f.pages.get(2)!;
    const off = host.addHostAccessCheck((pg, write) =>
      pg === guestOwned && write ? { signal: 'SIGBUS', kind: 'rmp', reason: 'RMP violation: page is guest-owned' } : 'ok',
    );
    expect(p.write(a + 2 * PAGE + 1, new Uint8Array([1]))).toEqual({
      ok: false,
      signal: 'SIGBUS',
      addr: a + 2 * PAGE + 1,
      reason: 'RMP violation: page is guest-owned',
      kind: 'rmp',
    });
    expect(host.readBytes(toPfn(guestOwned), 1, 1)).toEqual(new Uint8Array([0])); // nothing written
    expect(p.read(a + 2 * PAGE, 1).ok).toBe(true);
    off();
    expect(p.write(a + 2 * PAGE, new Uint8Array([1]))).toEqual({ ok: true });
  });
});

describe('costs and traces of faults', () => {
  it('charges a fault, an allocation and a zeroing for an anonymous first touch', () => {
    const sim = createSim();
    const host = createHost({ frames: 64, sim });
    const p = host.createProcess('p');
    const a = p.mmap({ length: PAGE, prot: RW, flags: ANON });
    const t0 = sim.now;
    p.touch(a, 1, 'write');
    expect(sim.now - t0).toBe(sim.costs.get('host.page_fault') + sim.costs.get('host.page_alloc') + sim.costs.get('host.page_zero'));
    const t1 = sim.now;
    p.touch(a, 1, 'write');
    expect(sim.now).toBe(t1); // mapped already
  });
});

describe('process properties', () => {
  it('random mmap/munmap/touch/gup/zap sequences keep the host invariants', () => {
    type Op =
      | { k: 'mmap'; pages: number; file: boolean }
      | { k: 'munmap'; i: number; off: number; pages: number }
      | { k: 'touch'; i: number; off: number; write: boolean }
      | { k: 'gup'; i: number; off: number }
      | { k: 'unpin' }
      | { k: 'zap'; s: number; n: number }
      | { k: 'trunc'; s: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      fc.record({ k: fc.constant('mmap' as const), pages: fc.integer({ min: 1, max: 8 }), file: fc.boolean() }),
      fc.record({ k: fc.constant('munmap' as const), i: fc.nat(), off: fc.nat(8), pages: fc.integer({ min: 1, max: 4 }) }),
      fc.record({ k: fc.constant('touch' as const), i: fc.nat(), off: fc.nat(8), write: fc.boolean() }),
      fc.record({ k: fc.constant('gup' as const), i: fc.nat(), off: fc.nat(8) }),
      fc.record({ k: fc.constant('unpin' as const) }),
      fc.record({ k: fc.constant('zap' as const), s: fc.nat(8), n: fc.integer({ min: 1, max: 8 }) }),
      fc.record({ k: fc.constant('trunc' as const), s: fc.nat(7) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const host = createHost({ frames: 128 });
        const f = testFile(host, 8);
        const p = host.createProcess('p');
        const maps: number[] = [];
        const pins: Pfn[] = [];
        for (const o of ops) {
          if (o.k === 'mmap') {
            maps.push(p.mmap({ length: o.pages * PAGE, prot: RW, flags: o.file ? MAP.SHARED : ANON, ...(o.file ? { file: f } : {}) }));
          } else if (o.k === 'unpin') {
            const pg = pins.pop();
            if (pg !== undefined) p.unpin([pg], { longterm: true });
          } else if (o.k === 'zap') {
            host.unmapFileRange(f, o.s, o.s + o.n);
          } else if (o.k === 'trunc') {
            const pg = f.pages.get(o.s);
            // Like guest_memfd, refuse to free a page someone still holds (the model would defer it).
            if (pg !== undefined) f.truncate(o.s, o.s + 1);
          } else if (maps.length > 0) {
            const base = maps[o.i % maps.length]! + o.off * PAGE;
            if (o.k === 'munmap') p.munmap(base, o.pages * PAGE);
            else if (o.k === 'touch') {
              const r = p.touch(base, 1, o.write ? 'write' : 'read');
              if (!r.ok) expect(['SIGSEGV', 'SIGBUS']).toContain(r.signal);
            } else {
              try {
                pins.push(...p.gup(base, 1, { longterm: true }));
              } catch (e) {
                expect(isKvmError(e, 'EFAULT')).toBe(true);
              }
            }
          }
          checkInvariants(host);
        }
        while (pins.length > 0) p.unpin([pins.pop()!], { longterm: true });
        p.exit();
        f.truncate(0, 8);
        checkInvariants(host);
        expect(host.stats().usedFrames).toBe(0);
      }),
      { numRuns: 150 },
    );
  });
});

describe('mmu notifiers (secondary MMUs such as KVM)', () => {
  const recorder = () => {
    const calls: string[] = [];
    return {
      calls,
      notifier: {
        invalidateRangeStart: (s: number, e: number) => calls.push(`start ${s / PAGE} ${e / PAGE}`),
        invalidateRangeEnd: (s: number, e: number) => calls.push(`end ${s / PAGE} ${e / PAGE}`),
      },
    };
  };

  it('hear of munmap and exit around the zap, with the mapped byte range, and not when nothing was mapped', () => {
    const host = createHost({ frames: 4096 });
    const p = host.createProcess('vmm');
    const a = p.mmap({ length: 8 * PAGE, prot: RW, flags: ANON });
    const r = recorder();
    const off = p.addMmuNotifier(r.notifier);
    p.munmap(a, PAGE); // nothing faulted in yet: no PTE changes, no notification
    expect(r.calls).toEqual([]);
    p.touch(a + 2 * PAGE, 2 * PAGE, 'write');
    const seen: boolean[] = [];
    p.addMmuNotifier({ invalidateRangeStart: () => seen.push(p.pfnAt(a + 2 * PAGE) !== undefined), invalidateRangeEnd: () => seen.push(p.pfnAt(a + 2 * PAGE) !== undefined) });
    p.munmap(a + 2 * PAGE, 4 * PAGE);
    const h = a / PAGE;
    expect(r.calls).toEqual([`start ${h + 2} ${h + 4}`, `end ${h + 2} ${h + 4}`]);
    expect(seen).toEqual([true, false]); // start before the PTEs go, end after
    off();
    p.touch(a + 6 * PAGE, PAGE, 'write');
    p.exit();
    expect(r.calls).toHaveLength(2);
    checkInvariants(host);
  });

  it('hear of a copy-on-write break replacing a mapped file page, and of mprotect over mapped pages', () => {
    const host = createHost({ frames: 4096 });
    const f = pageCacheFile(host, 4);
    const p = host.createProcess('vmm');
    const a = p.mmap({ length: 4 * PAGE, prot: RW, flags: MAP.PRIVATE, file: f });
    p.touch(a, PAGE, 'read'); // the file page, mapped read-only into the private mapping
    const r = recorder();
    p.addMmuNotifier(r.notifier);
    const before = p.pfnAt(a);
    p.touch(a, PAGE, 'write'); // CoW: the PTE now points at a private copy
    expect(p.pfnAt(a)).not.toBe(before);
    const h = a / PAGE;
    expect(r.calls).toEqual([`start ${h} ${h + 1}`, `end ${h} ${h + 1}`]);
    p.mprotect(a, 4 * PAGE, PROT.READ);
    expect(r.calls.slice(2)).toEqual([`start ${h} ${h + 4}`, `end ${h} ${h + 4}`]);
    p.mprotect(a, 4 * PAGE, PROT.READ); // no change of protection: nothing to tell
    expect(r.calls).toHaveLength(4);
    checkInvariants(host);
  });
});

describe('madvise(MADV_DONTNEED)', () => {
  it('frees anonymous pages, keeps the VMA, and later reads see zeros', () => {
    const host = createHost({ bytes: 64 * 2 ** 20 });
    const p = host.createProcess('vmm');
    const addr = p.mmap({ length: 4 * 4096, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
    expect(p.write(addr + 4096, new Uint8Array([7, 7, 7])).ok).toBe(true);
    const used = host.stats().usedByPurpose['anon'] ?? 0;
    expect(used).toBe(1);
    expect(p.madvise(addr, 4 * 4096, MADV.DONTNEED)).toBe(1);
    expect(host.stats().usedByPurpose['anon'] ?? 0).toBe(0);
    expect(p.vmaList()).toHaveLength(1);
    const r = p.read(addr + 4096, 3);
    expect(r.ok && Array.from(r.data ?? [])).toEqual([0, 0, 0]);
  });

  it('refuses unknown advice and unmapped ranges without changing anything', () => {
    const host = createHost({ bytes: 64 * 2 ** 20 });
    const p = host.createProcess('vmm');
    const addr = p.mmap({ length: 4096, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
    p.touch(addr, 4096, 'write');
    expect(errnoOf(() => p.madvise(addr, 4096, 99))).toBe('EINVAL');
    expect(errnoOf(() => p.madvise(addr, 2 * 4096, MADV.DONTNEED))).toBe('ENOMEM');
    expect(host.stats().usedByPurpose['anon']).toBe(1);
  });
});
