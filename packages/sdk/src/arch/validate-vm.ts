/**
 * The well-formedness rules of what a plugin's `createVm` returns, in one place: the core refuses
 * an ArchVm that breaks them (`@cocokit/vm`, E_PLUGIN_CREATE_VM) and the conformance kit's
 * `create-vm` and `capabilities` checks fail a plugin for them, with the same words.
 */
import type { ArchVm } from './contract.js';

/** The hooks of {@link ArchVm}, which must be functions when present. */
export const ARCH_VM_HOOKS = [
  'classifyFault',
  'gmemPrepare',
  'gmemInvalidate',
  'maxMappingLevel',
  'populate',
  'linkPrivateTable',
  'setPrivateSpte',
  'removePrivateSpte',
  'splitPrivateSpte',
  'hostAccess',
  'beforeConvert',
  'afterConvert',
  'finalize',
  'checkInvariants',
  'guestAccess',
  'completeExit',
  'memoryRequest',
  'destroy',
] as const;

/**
 * What is wrong with the shape of `vm`, or `undefined`: an object with a capabilities object,
 * every hook present a function, `vmApi`/`guestApi` objects, a `guestKernel` with its three members.
 */
export function archVmShapeProblem(vm: unknown): string | undefined {
  if (typeof vm !== 'object' || vm === null) return `createVm returned ${String(vm)}, not an object`;
  const a = vm as Record<string, unknown>;
  if (typeof a['capabilities'] !== 'object' || a['capabilities'] === null) return 'the VM has no capabilities object';
  for (const hook of ARCH_VM_HOOKS) {
    if (a[hook] !== undefined && typeof a[hook] !== 'function') return `hook ${hook} is ${typeof a[hook]}, not a function (leave it out for "nothing to do")`;
  }
  for (const api of ['vmApi', 'guestApi'] as const) {
    if (a[api] !== undefined && (typeof a[api] !== 'object' || a[api] === null)) return `${api} is ${String(a[api])}, not an object`;
  }
  const k = a['guestKernel'];
  if (k !== undefined) {
    if (typeof k !== 'object' || k === null) return `guestKernel is ${String(k)}, not an object`;
    for (const m of ['convert', 'accept', 'isUnaccepted'] as const) {
      if (typeof (k as Record<string, unknown>)[m] !== 'function') return `guestKernel.${m} is not a function`;
    }
  }
  return undefined;
}

/**
 * What is wrong with `vm.capabilities`, or `undefined`: well-formed fields, consistent with each
 * other and with the hooks present (a mirror root needs its table hooks, a measurement `finalize`).
 * Expects a VM that passed {@link archVmShapeProblem}.
 */
export function archCapabilitiesProblem(vm: ArchVm): string | undefined {
  const c = vm.capabilities;
  for (const flag of ['privateMem', 'privateByDefault', 'mirrorRoot', 'inPlaceConversion'] as const) {
    if (typeof c[flag] !== 'boolean') return `${flag} is ${String(c[flag])}, not a boolean`;
  }
  if (c.maxPrivateLevel !== 0 && c.maxPrivateLevel !== 1 && c.maxPrivateLevel !== 2) {
    return `maxPrivateLevel is ${String(c.maxPrivateLevel)}; it must be 0 (4K), 1 (2M) or 2 (1G)`;
  }
  if (c.privateByDefault && !c.privateMem) return 'privateByDefault without privateMem';
  if (c.sharedGpaBit !== undefined && (!Number.isInteger(c.sharedGpaBit) || c.sharedGpaBit < 1 || c.sharedGpaBit > 51)) {
    return `sharedGpaBit is ${c.sharedGpaBit}; a GPA bit is an integer in 1..51`;
  }
  if (c.sharedGpaBit !== undefined && !c.privateMem) return 'sharedGpaBit without privateMem';
  if (c.privateRootLevel !== undefined && ![1, 2, 3, 4].includes(c.privateRootLevel)) {
    return `privateRootLevel is ${String(c.privateRootLevel)}; a table level is 1, 2, 3 or 4`;
  }
  if (c.privateRootLevel !== undefined && !c.mirrorRoot) return 'privateRootLevel without mirrorRoot';
  if (c.preFaultAllowed !== undefined && typeof c.preFaultAllowed !== 'boolean') return `preFaultAllowed is ${String(c.preFaultAllowed)}, not a boolean`;
  if (c.mirrorRoot) {
    const missing = (['linkPrivateTable', 'setPrivateSpte', 'removePrivateSpte'] as const).filter((h) => !vm[h]);
    if (missing.length) return `mirrorRoot is set but ${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} missing`;
  }
  if (c.measurement !== undefined) {
    if (typeof c.measurement !== 'string' || c.measurement === '') return 'measurement must be a non-empty string';
    if (!vm.finalize) return `measurement '${c.measurement}' is declared but there is no finalize hook`;
  }
  return undefined;
}

/** {@link archVmShapeProblem}, then {@link archCapabilitiesProblem}: what the core checks before using an ArchVm. */
export function archVmProblem(vm: unknown): string | undefined {
  return archVmShapeProblem(vm) ?? archCapabilitiesProblem(vm as ArchVm);
}
