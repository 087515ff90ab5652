/** Shared set-up for gmem's tests (not exported from the package). */
import { createSim, gfn } from '@cocokit/sdk';
import type { Gfn } from '@cocokit/sdk';
import { createHost } from '@cocokit/host';
import { createGmemVm } from './gmem-vm.js';
import type { GmemVmOptions } from './gmem-vm.js';
import type { GmemInvalidateRange, GmemInvalidationListener, GmemSlotView } from './invalidation.js';

export const MiB = 2 ** 20;

/** A sim, a 4 GiB host, a VMM process and a GmemVm with `options`. */
export function setup(options: Omit<GmemVmOptions, 'host'> = {}) {
  const sim = createSim();
  const host = createHost({ bytes: 4 * 2 ** 30, sim });
  const vm = createGmemVm({ host, sim, ...options });
  const vmm = host.createProcess('vmm');
  return { sim, host, vm, vmm };
}

/** A listener recording every begin/end. */
export function recorder(): GmemInvalidationListener & { begins: GmemInvalidateRange[]; ends: GmemInvalidateRange[] } {
  const begins: GmemInvalidateRange[] = [];
  const ends: GmemInvalidateRange[] = [];
  return { begins, ends, invalidateBegin: (r) => void begins.push(r), invalidateEnd: (r) => void ends.push(r) };
}

/** A memslot stand-in: gfns [base, base + npages). */
export const slotAt = (base: number, npages: number): GmemSlotView & { id: number } => ({ baseGfn: gfn(base) as Gfn, npages, id: base });
