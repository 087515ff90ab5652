/**
 * KVM_PRE_FAULT_MEMORY (kvm_main.c kvm_vcpu_pre_fault_memory, x86 kvm_arch_vcpu_pre_fault_memory
 * → kvm_tdp_map_page): maps `[gpa, gpa + size)` ahead of time, one fault's worth per step,
 * advancing `gpa`/`size` in the caller's struct as the kernel copies it back.
 */
import { KvmError, isKvmError, toByteCount, type Errno, type KvmPreFaultMemory } from '@cocokit/sdk';
import { beginClassified, finishFault } from './fault.js';
import type { Mmu } from './mmu.js';
import { ENTRY_SPAN } from './page-table.js';

const OP = 'KVM_PRE_FAULT_MEMORY';
const PAGE = 4096;

/** Options of {@link preFaultMemory}. */
export interface PreFaultOptions {
  /** signal_pending(current): checked before each step (and each retry); true → EINTR. */
  readonly signalPending?: () => boolean;
  /**
   * Internal retries of one step (RET_PF_RETRY loops in kvm_tdp_map_page until a signal arrives);
   * past this bound the model reports EINTR as if one had. Default 1000.
   */
  readonly maxRetries?: number;
}

/**
 * Validates like the kernel (flags ≠ 0, unaligned gpa or size, size 0 or wrap → EINVAL), then maps
 * step by step. Each step is a read fault whose private/shared kind follows the gfn's current
 * attribute, without the Accessed bit. Returns 0 when at least one page was processed (`range`
 * shows what is left), else throws the first step's error: EOPNOTSUPP when pre-faulting is not
 * allowed now, ENOENT for a gfn in no memslot (the fault would emulate MMIO), EAGAIN while the
 * slot is being deleted or moved, the fault's errno for private/shared problems (EFAULT,
 * EHWPOISON...), EINTR for a pending signal, EIO when the VM is dead.
 */
export function preFaultMemory(mmu: Mmu, range: KvmPreFaultMemory, options: PreFaultOptions = {}): number {
  const flags = range.flags ?? 0;
  if (typeof flags === 'bigint' ? flags !== 0n : flags !== 0) throw new KvmError('EINVAL', OP, 'flags must be 0');
  const gpa0 = toByteCount(range.gpa, OP, 'gpa');
  const size0 = toByteCount(range.size, OP, 'size');
  if (gpa0 % PAGE !== 0 || size0 % PAGE !== 0) throw new KvmError('EINVAL', OP, 'gpa and size must be page aligned');
  if (size0 === 0 || gpa0 + size0 > 2 ** 52) throw new KvmError('EINVAL', OP, 'size is 0 or gpa + size wraps');
  let gpa = gpa0;
  let size = size0;
  let first: { errno: Errno; reason: string } | undefined;
  const maxRetries = options.maxRetries ?? 1000;
  while (size > 0) {
    // kvm_arch_vcpu_pre_fault_memory: the ioctl's own gate, checked before each step; the step
    // itself (kvm_tdp_map_page) has none, which is what lets populate map before it opens.
    const r = mmu.options.preFaultAllowed !== undefined && !mmu.options.preFaultAllowed() ? NOT_ALLOWED : step(mmu, gpa, options, maxRetries);
    if (typeof r !== 'number') {
      first = r;
      break;
    }
    const advance = Math.min(size, r - gpa);
    gpa += advance;
    size -= advance;
  }
  const progressed = size !== size0;
  if (progressed) {
    range.gpa = typeof range.gpa === 'bigint' ? BigInt(gpa) : gpa;
    range.size = typeof range.size === 'bigint' ? BigInt(size) : size;
    return 0;
  }
  throw new KvmError(first!.errno, OP, first!.reason);
}

const NOT_ALLOWED = { errno: 'EOPNOTSUPP', reason: 'pre-faulting is not allowed for this VM now' } as const;

/**
 * kvm_tdp_map_page (arch/x86/kvm/mmu/mmu.c) on its own: maps the page-aligned `gpa` as one
 * pre-fault step does, with no pre_fault_allowed gate (that belongs to the ioctl). What
 * tdx_gmem_post_populate calls to map a page it is populating. Returns the byte address where the
 * mapping that now covers `gpa` ends; throws the step's error as a {@link KvmError} of `op`.
 */
export function tdpMapPage(mmu: Mmu, gpa: number, op: string, options: PreFaultOptions = {}): number {
  const r = step(mmu, gpa, options, options.maxRetries ?? 1000);
  if (typeof r !== 'number') throw new KvmError(r.errno, op, r.reason);
  return r;
}

/** One kvm_tdp_map_page: returns the byte address where the mapping that now covers `gpa` ends, or an error. */
function step(mmu: Mmu, gpa: number, options: PreFaultOptions, maxRetries: number): number | { errno: Errno; reason: string } {
  const gfn = Math.floor(gpa / PAGE);
  for (let attempt = 0; ; attempt++) {
    if (options.signalPending?.() === true || attempt > maxRetries) return { errno: 'EINTR', reason: 'a signal is pending' };
    const slot = mmu.memslots.lookup(gfn, mmu.asId);
    const isPrivate = mmu.isPrivateGfn(gfn, slot);
    let out;
    try {
      const p = beginClassified(mmu, { gpa, gfn, access: 'read', private: isPrivate, prefault: true });
      out = p.kind === 'pending' ? finishFault(mmu, p) : p;
    } catch (e) {
      if (isKvmError(e)) return { errno: e.errno, reason: e.reason };
      throw e;
    }
    switch (out.kind) {
      case 'mapped': {
        const span = ENTRY_SPAN[out.level];
        return (gfn - (gfn % span) + span) * PAGE;
      }
      case 'retry':
        // A memslot being deleted or moved: -EAGAIN to userspace (6.18, commit 3ccbf6f47098).
        if (out.reason === 'invalid-slot') return { errno: 'EAGAIN', reason: `gpa 0x${gpa.toString(16)} is in a memslot being deleted or moved` };
        continue;
      case 'exit': {
        const e = out.exit;
        if (e.reason === 'MMIO') return { errno: 'ENOENT', reason: `gpa 0x${gpa.toString(16)} is in no memslot` };
        const errno = (e as { errno?: Errno }).errno ?? 'EFAULT';
        return { errno, reason: `gpa 0x${gpa.toString(16)}: ${e.reason}` };
      }
      case 'error':
        return { errno: out.errno, reason: out.reason };
    }
  }
}
