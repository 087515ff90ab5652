/**
 * Errors as the kernel reports them: an errno name (the API), its numeric value, the operation that
 * refused, and a reason a person can act on (documentation). Matched by `name`/`errno`, never by
 * `instanceof`, so two copies of the sdk in one process still agree (tRPC's habit).
 */

/** Linux errno values (asm-generic/errno-base.h, errno.h; x86-64). */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  EINVAL: 22,
  ENOTTY: 25,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  ERANGE: 34,
  ENOSYS: 38,
  EOVERFLOW: 75,
  EOPNOTSUPP: 95,
  EHWPOISON: 133,
  /** Kernel-internal (include/linux/errno.h); leaks to userspace from a few KVM paths. */
  ENOTSUPP: 524,
} as const;

/** An errno name, as the kernel's headers spell it. */
export type Errno = keyof typeof ERRNO;

/** Optional data a refusal carries back to the caller (e.g. `error_offset` of an EAGAIN conversion). */
export type KvmErrorData = Readonly<Record<string, unknown>>;

/**
 * A refusal the kernel would return as `-errno`. A refused operation changes no state.
 *
 * @example
 * throw new KvmError('EINVAL', 'KVM_SET_USER_MEMORY_REGION2', 'guest_phys_addr is not page aligned');
 */
export class KvmError extends Error {
  override readonly name = 'KvmError' as const;
  /** The errno name, e.g. `'EINVAL'`. This is the API: match on it. */
  readonly errno: Errno;
  /** The numeric errno, e.g. 22. */
  readonly errnoValue: number;
  /** The operation that refused, named after the ioctl or kernel function it models. */
  readonly op: string;
  /** One line a person can act on. */
  readonly reason: string;
  /** Values the kernel hands back with the error (copied-out struct fields). */
  readonly data: KvmErrorData | undefined;

  constructor(errno: Errno, op: string, reason: string, data?: KvmErrorData) {
    super(`${op}: ${errno}: ${reason}`);
    this.errno = errno;
    this.errnoValue = ERRNO[errno];
    this.op = op;
    this.reason = reason;
    this.data = data;
  }
}

/** Whether `e` is a {@link KvmError} (optionally with the given errno), by name rather than class. */
export function isKvmError(e: unknown, errno?: Errno): e is KvmError {
  if (typeof e !== 'object' || e === null) return false;
  const candidate = e as { name?: unknown; errno?: unknown };
  if (candidate.name !== 'KvmError' || typeof candidate.errno !== 'string') return false;
  return errno === undefined || candidate.errno === errno;
}

/**
 * A broken invariant inside the model: a bug in cocokit, never a refusal. No input may reach one.
 */
export class ModelInvariantError extends Error {
  override readonly name = 'ModelInvariantError' as const;
  /** Which invariant broke, e.g. `'host.pfn-free-and-used'`. */
  readonly invariant: string;

  constructor(invariant: string, detail: string) {
    super(`model invariant ${invariant} broken: ${detail}`);
    this.invariant = invariant;
  }
}

/** Whether `e` is a {@link ModelInvariantError}, by name rather than class. */
export function isModelInvariantError(e: unknown): e is ModelInvariantError {
  return typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'ModelInvariantError';
}

/** Throws a {@link ModelInvariantError} unless `condition` holds. */
export function invariant(condition: unknown, name: string, detail: () => string): asserts condition {
  if (!condition) throw new ModelInvariantError(name, detail());
}
