/**
 * Helpers for this package's tests: a TD built the way the conformance kit builds VMs, and the
 * MMU's side of KVM_PRE_FAULT_MEMORY (link every missing S-EPT level from the root down, then set
 * the leaf), since @cocokit/mmu does not exist yet. Not exported from the package entry.
 */
import { createArchTestVm, type ArchTestVm } from '@cocokit/sdk/testing';
import { gfn as toGfn, pfn as toPfn, type ArchResult, type MappingLevel, type TableLevel } from '@cocokit/sdk';
import tdx from './plugin.js';
import { SEPT_STATE } from './sept.js';
import type { TdxArchVm, TdxVmOptions } from './vm.js';

/** A test TD and what the kit built around it. */
export type TestTd = Omit<ArchTestVm, 'vm'> & { readonly vm: TdxArchVm };

/** Creates a TD with the kit's sim and host memory. */
export function createTestTd(options: TdxVmOptions = {}): TestTd {
  const t = createArchTestVm(tdx, 'tdx', { vmOptions: { ...options } });
  return { ...t, vm: t.vm as TdxArchVm };
}

/**
 * What the TDP MMU does for a private fault at `gfn` mapped at `level`: link each missing S-EPT
 * page from the root down (linkPrivateTable → SEPT.ADD), then set the leaf (setPrivateSpte →
 * premap before finalize, PAGE.AUG after). Returns the first non-ok result, or ok.
 */
export function mapPrivate(vm: TdxArchVm, gfn: number, pfn: number, level: MappingLevel = 0): ArchResult {
  const sept = vm.vmApi.module.sept;
  for (let l = sept.rootLevel; l > level; l--) {
    if (sept.state(gfn, l) === SEPT_STATE.NL_MAPPED) continue;
    const r = vm.linkPrivateTable(toGfn(gfn), l as TableLevel);
    if (r.status !== 'ok') return r;
  }
  return vm.setPrivateSpte(toGfn(gfn), level, toPfn(pfn));
}

/** Calls `f`, which must exit through `ctx.exit` (the kit's exit throws); returns the exit. */
export function expectExit(t: TestTd, f: () => unknown): Record<string, unknown> {
  const before = t.exits.length;
  try {
    f();
  } catch (e) {
    if ((e as { name?: unknown }).name !== 'ArchExitOutsideGuestError') throw e;
  }
  const exit = t.exits[before];
  if (t.exits.length !== before + 1 || !exit) throw new Error('expected exactly one exit');
  return exit as Record<string, unknown>;
}
