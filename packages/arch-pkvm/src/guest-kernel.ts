/**
 * The guest OS's pKVM memory-encryption code (the `guestKernel` of the contract), after Linux
 * drivers/virt/coco/pkvm-guest/arm-pkvm-guest.c (pkvm_set_memory_encrypted / _decrypted →
 * __set_memory_range) behind arch/arm64/mm/mem_encrypt.c (set_memory_encrypted /
 * set_memory_decrypted): one MEM_SHARE or MEM_UNSHARE hypercall per protection granule, stopping
 * at the first that fails. It is guest code: it keeps no plugin state and only yields calls of the
 * plugin's guest API, which the core runs on the vCPU.
 *
 * When EL2 finds nothing mapped at the IPA it has the host fault the page in (pkvm_memshare_call
 * turns -EFAULT into a data abort for the host) and the guest's HVC is issued again: the guest
 * API returns that as a `GuestNpf`, which this code yields for the core to resolve before
 * re-issuing the call.
 *
 * pKVM has no acceptance: a protected guest's memory is donated on its first fault, so `accept`
 * has nothing to do and no exception means "unaccepted".
 */
import { KvmError, type ArchGuestCall, type ArchGuestKernel, type ArchGuestOutcome, type ArchGuestStep, type GuestNpf } from '@cocokit/sdk';
import { PKVM_GRANULE, SMCCC_RET } from './constants.js';

const OK: ArchGuestOutcome = Object.freeze({ ok: true });

/** How many times one granule's MEM_SHARE may send the host to fault the page in before the guest gives up. */
export const PKVM_SHARE_FAULT_LIMIT = 4;

type GuestOp<T> = Generator<ArchGuestStep, T, unknown>;

/** The pKVM guest kernel: a plain object of generator functions. */
export const pkvmGuestKernel: ArchGuestKernel = {
  convert(gpa, size, toPrivate) {
    const [start, end] = range(gpa, size, toPrivate ? 'set_memory_encrypted' : 'set_memory_decrypted');
    return setMemoryRange(start, end, toPrivate ? 'memUnshare' : 'memShare');
  },
  accept(gpa, size) {
    range(gpa, size, 'accept_memory');
    return nothingToAccept();
  },
  isUnaccepted: () => false,
};

/** Checks the range eagerly (a generator would only throw at its first step): `[start, end)` in bytes. */
function range(gpa: number, size: number, op: string): [number, number] {
  if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa % PKVM_GRANULE !== 0) throw new KvmError('EINVAL', op, `gpa ${gpa} is not granule-aligned`);
  if (!Number.isSafeInteger(size) || size < 0 || size % PKVM_GRANULE !== 0) throw new KvmError('EINVAL', op, `size ${size} is not a whole number of granules`);
  if (!Number.isSafeInteger(gpa + size)) throw new KvmError('EINVAL', op, `[${gpa}, ${gpa} + ${size}) is beyond the address space`);
  return [gpa, gpa + size];
}

// eslint-disable-next-line require-yield -- an operation with no steps is still a generator
function* nothingToAccept(): GuestOp<ArchGuestOutcome> {
  return OK;
}

/** __set_memory_range: one hypercall per granule; a failure is WARNed and reported (-EPERM in Linux). */
function* setMemoryRange(start: number, end: number, op: 'memShare' | 'memUnshare'): GuestOp<ArchGuestOutcome> {
  for (let ipa = start; ipa < end; ipa += PKVM_GRANULE) {
    let faults = 0;
    for (;;) {
      const r = yield call(op, ipa);
      if (isNpf(r)) {
        if (++faults > PKVM_SHARE_FAULT_LIMIT) return { ok: false, reason: `${op} of ipa 0x${ipa.toString(16)}: the host never mapped the page` };
        yield r;
        continue;
      }
      if (r !== SMCCC_RET.SUCCESS) return { ok: false, reason: `${op === 'memShare' ? 'MEM_SHARE' : 'MEM_UNSHARE'} of ipa 0x${ipa.toString(16)} returned ${String(r)}` };
      break;
    }
  }
  return OK;
}

function isNpf(r: unknown): r is GuestNpf {
  return typeof r === 'object' && r !== null && (r as { kind?: unknown }).kind === 'npf';
}

function call(op: 'memShare' | 'memUnshare', ipa: number): ArchGuestCall {
  return { kind: 'arch', op, args: [ipa, 0, 0] };
}
