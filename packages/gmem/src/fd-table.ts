/**
 * A process's file descriptors, as far as guest_memfd cares: which number names which open file.
 * `KVM_SET_USER_MEMORY_REGION2` names the file by fd, so the binder resolves it here (no fd →
 * EBADF; an fd that is not a guest_memfd → EINVAL). Several VMs made by one VMM share a table.
 */
import { KvmError } from '@cocokit/sdk';

/** What an fd refers to: a guest_memfd file, or some other file (the VM fd, a memfd, /dev/kvm). */
export type FdTarget = { readonly kind: 'guest_memfd'; readonly file: object } | { readonly kind: 'other'; readonly name: string };

/** Open files by fd number, lowest free number first as open(2) hands them out. */
export class FdTable {
  private readonly fds = new Map<number, FdTarget>();
  /** Starts after stdin/stdout/stderr and the /dev/kvm and VM fds a VMM holds. */
  private readonly first: number;

  /** An empty table whose first fd is `first` (default 3). */
  constructor(first = 3) {
    this.first = first;
  }

  /** Installs `target` at the lowest free fd and returns it. */
  install(target: FdTarget): number {
    let fd = this.first;
    while (this.fds.has(fd)) fd++;
    this.fds.set(fd, target);
    return fd;
  }

  /** Opens a file that is not a guest_memfd (for tests of EINVAL on such fds). */
  openOther(name: string): number {
    return this.install({ kind: 'other', name });
  }

  /** What `fd` refers to, or `undefined` when it is not open. */
  get(fd: number): FdTarget | undefined {
    return this.fds.get(fd);
  }

  /** dup(2): a new fd for the same open file. EBADF when `fd` is not open. */
  dup(fd: number): number {
    const t = this.fds.get(fd);
    if (t === undefined) throw new KvmError('EBADF', 'dup', `fd ${fd} is not open`);
    return this.install(t);
  }

  /** Forgets `fd`; EBADF when it is not open. Returns what it referred to. */
  remove(fd: number): FdTarget {
    const t = this.fds.get(fd);
    if (t === undefined) throw new KvmError('EBADF', 'close', `fd ${fd} is not open`);
    this.fds.delete(fd);
    return t;
  }

  /** How many fds refer to `file`. */
  countOf(file: object): number {
    let n = 0;
    for (const t of this.fds.values()) if (t.kind === 'guest_memfd' && t.file === file) n++;
    return n;
  }
}
