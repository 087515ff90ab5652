/**
 * A small guest_memfd stand-in for memslot tests: files with a size, an owner VM and an MMAP flag,
 * a per-file bindings list, and fds that are not guest_memfds (a memfd, the VM fd) — enough to
 * exercise every check of kvm_gmem_bind without @cocokit/gmem.
 */
import { KvmError, pgoff } from '@cocokit/sdk';
import type { GuestMemfdBindCheck, GuestMemfdBinder, GuestMemfdBindRequest, GuestMemfdBinding, Memslot } from '../src/index.js';

interface FakeFile {
  readonly id: number;
  readonly vm: unknown;
  readonly npages: number;
  readonly mmap: boolean;
  readonly bindings: Array<{ start: number; end: number; slot: Memslot }>;
}

export class FakeGuestMemfds implements GuestMemfdBinder {
  private readonly fds = new Map<number, FakeFile | 'other'>();
  private nextFd = 10;
  private nextId = 1;
  /** Calls made, for asserting that refused ioctls bound nothing. */
  readonly calls: string[] = [];

  /** KVM_CREATE_GUEST_MEMFD stand-in: returns the fd. */
  create(vm: unknown, npages: number, opts: { mmap?: boolean } = {}): number {
    const fd = this.nextFd++;
    this.fds.set(fd, { id: this.nextId++, vm, npages, mmap: opts.mmap ?? false, bindings: [] });
    return fd;
  }

  /** dup(2): a second fd for the same file. */
  dup(fd: number): number {
    const f = this.fds.get(fd);
    if (f === undefined) throw new Error(`fd ${fd} not open`);
    const n = this.nextFd++;
    this.fds.set(n, f);
    return n;
  }

  /** An fd that is open but not a guest_memfd (memfd, VM fd, /dev/kvm). */
  openOther(): number {
    const fd = this.nextFd++;
    this.fds.set(fd, 'other');
    return fd;
  }

  bindingsOf(fd: number): ReadonlyArray<{ start: number; end: number; slot: Memslot }> {
    const f = this.fds.get(fd);
    return f === undefined || f === 'other' ? [] : f.bindings;
  }

  checkBind(req: GuestMemfdBindRequest): GuestMemfdBindCheck {
    this.calls.push(`checkBind(${req.fd})`);
    const f = this.fds.get(req.fd);
    if (f === undefined) throw new KvmError('EBADF', 'kvm_gmem_bind', `fd ${req.fd} is not open`);
    if (f === 'other') throw new KvmError('EINVAL', 'kvm_gmem_bind', `fd ${req.fd} is not a guest_memfd`);
    if (f.vm !== req.vm) throw new KvmError('EINVAL', 'kvm_gmem_bind', 'guest_memfd belongs to another VM');
    if (req.offset + req.npages > f.npages) throw new KvmError('EINVAL', 'kvm_gmem_bind', 'range outside the file');
    if (f.bindings.some((b) => b.start < req.offset + req.npages && req.offset < b.end)) {
      throw new KvmError('EINVAL', 'kvm_gmem_bind', 'range already bound');
    }
    return { file: f, gmemOnly: f.mmap };
  }

  bind(req: GuestMemfdBindRequest, slot: Memslot): GuestMemfdBinding {
    this.calls.push(`bind(${req.fd})`);
    const f = this.fds.get(req.fd) as FakeFile;
    f.bindings.push({ start: req.offset, end: req.offset + req.npages, slot });
    return { file: f, pgoff: pgoff(req.offset), npages: req.npages };
  }

  unbind(binding: GuestMemfdBinding, slot: Memslot): void {
    this.calls.push('unbind');
    const f = binding.file as FakeFile;
    const i = f.bindings.findIndex((b) => b.slot === slot);
    if (i >= 0) f.bindings.splice(i, 1);
  }
}
