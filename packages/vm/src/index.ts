/**
 * @cocokit/vm: the composition root — `openKvm()`, VMs and vCPUs behind an ioctl-shaped API, guest
 * programs and their exits, the conversion engine, the minimal VMM exit loop, VM-type plugin
 * resolution and VM extensions.
 */
export { BUILTIN_VM_TYPES, Kvm, openKvm } from './kvm.js';
export type { BuiltinVmType, CreateVmOptions, KvmOptions } from './kvm.js';
export { KVM_MAX_VCPU_IDS, Vm, VmGuestMemfd } from './vm.js';
export { Vcpu } from './vcpu.js';
export type { VcpuStatsSink } from './vcpu.js';
export { CORE_EXIT_REASONS, isExit } from './exits.js';
export type { HltExit, HypercallExit, MemoryFaultExit, MmioExit, RunErrorExit, SystemEventExit, VcpuExit } from './exits.js';
export { createGuestContext, isGuestException, step } from './guest-program.js';
export { GfnToPfnCache, KernelAccess, PVCLOCK_VCPU_TIME_INFO_SIZE } from './kernel-access.js';
export type { KernelAccessStats } from './kernel-access.js';
export type {
  ComputeAction,
  GuestAccessOptions,
  GuestAction,
  GuestArchSteps,
  GuestContext,
  GuestInsn,
  GuestProgram,
  GuestReadResult,
  GuestSteps,
  GuestWriteResult,
  HaltAction,
  HypercallAction,
  ReadAction,
  WriteAction,
  WrmsrAction,
} from './guest-program.js';
export { ConversionEngine } from './conversion.js';
export type { ConversionOutcome, ConversionPath, ConversionRequest, ConversionStats, DiscardPolicy } from './conversion.js';
export { Vmm, runVmm } from './vmm.js';
export type { ExitDisposition, VcpuOutcome, VmmOptions, VmmRunResult } from './vmm.js';
export { setupGuestMemory } from './memory.js';
export type { GuestMemory, GuestMemoryOptions } from './memory.js';
export type { ExtensionContext, ExtensionInstance, VmExtension, VmExtensionApis } from './extensions.js';
export type { VmStats } from './stats.js';
export { VM_COSTS, VM_COST_OWNER, registerVmCosts } from './costs.js';
