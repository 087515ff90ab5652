/**
 * `openKvm()`: the model's /dev/kvm — one host (physical memory, the simulation kernel, its costs
 * and trace) on which VMs are created, with KVM_CHECK_EXTENSION answered like the kernel for what
 * is modelled and VM types resolved to arch plugins at run time (DESIGN.md, "Discovery").
 */
import {
  ArchPluginError,
  archVmProblem,
  KvmError,
  createSim,
  defaultArchRegistry,
  uapi,
  validateArchPlugin,
  type ArchCapabilities,
  type ArchImporter,
  type ArchPlugin,
  type ArchRegistry,
  type Sim,
  type TraceSink,
} from '@cocokit/sdk';
import { createHost, type Host } from '@cocokit/host';
import type { GmemProposals, HugeFolioPolicy } from '@cocokit/gmem';
import type { HugepageRecovery } from '@cocokit/mmu';
import { registerVmCosts } from './costs.js';
import type { VmExtension } from './extensions.js';
import { Vm } from './vm.js';

/** The VM types built into the vm package; every other type comes from a plugin. */
export const BUILTIN_VM_TYPES = ['default', 'sw-protected'] as const;
export type BuiltinVmType = (typeof BUILTIN_VM_TYPES)[number];

/** KVM_CREATE_VM machine type numbers of the x86 types the model knows (KVM_X86_*_VM). */
const KVM_TYPE_NUMBERS: Readonly<Record<string, number>> = {
  default: uapi.KVM_X86_DEFAULT_VM,
  'sw-protected': uapi.KVM_X86_SW_PROTECTED_VM,
  sev: uapi.KVM_X86_SEV_VM,
  'sev-es': uapi.KVM_X86_SEV_ES_VM,
  snp: uapi.KVM_X86_SNP_VM,
  tdx: uapi.KVM_X86_TDX_VM,
};

const BUILTIN_CAPABILITIES: Readonly<Record<BuiltinVmType, ArchCapabilities>> = {
  default: { privateMem: false, privateByDefault: false, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false },
  // KVM_X86_SW_PROTECTED_VM: private memory through attributes, no hardware protection.
  'sw-protected': { privateMem: true, privateByDefault: false, maxPrivateLevel: 2, mirrorRoot: false, inPlaceConversion: true },
};

/** Options of {@link openKvm}. */
export interface KvmOptions {
  /** Host physical memory, bytes. Default 64 GiB (nothing proportional to it is allocated). */
  readonly hostBytes?: number;
  /** Cost overrides, ns, by name (any package's or plugin's; an unknown name is refused at createVm). */
  readonly costs?: Readonly<Record<string, number>>;
  /** Seed of the simulation's random streams. Default 0. */
  readonly seed?: number;
  /** Trace sinks to attach (counters, a ring, a Perfetto recorder). */
  readonly trace?: readonly TraceSink[];
  /**
   * The kvm module parameter of PROPOSED-CONV-v8 (`gmem_in_place_conversion`): guest_memfd
   * in-place conversion (KVM_SET_MEMORY_ATTRIBUTES2 and INIT_SHARED for CoCo VMs). Off (default)
   * behaves exactly as 6.18.
   */
  readonly inPlaceConversion?: boolean;
  /** Plugins passed as objects: looked at before the registry and before any import. */
  readonly archs?: readonly ArchPlugin[];
  /** The registry to resolve other types in. Default: the sdk's process-wide one (`registerArch`). */
  readonly registry?: ArchRegistry;
  /** How plugin packages are imported (default `import()`); see the sdk's `ResolveArchOptions`. */
  readonly importer?: ArchImporter;
}

/** Options of {@link Kvm.createVm}. */
export interface CreateVmOptions<T extends string = string> {
  /** The VM type. Default `'default'`. */
  readonly type?: T;
  readonly extensions?: readonly VmExtension[];
  /** Options for the arch plugin (its `ctx.options`), validated by the plugin. */
  readonly archOptions?: Readonly<Record<string, unknown>>;
  /** guest_memfd proposals to enable beyond the module parameter (all off: 6.18). */
  readonly proposals?: Partial<GmemProposals>;
  /** Seed 003's huge-folio policy (default `'split-eager'`). */
  readonly hugePolicy?: HugeFolioPolicy;
  /** Hugepage recovery after a range becomes uniform (default `'on-fault'`). */
  readonly hugepageRecovery?: HugepageRecovery;
}

/** Opens the model's /dev/kvm. */
export function openKvm(options: KvmOptions = {}): Kvm {
  return new Kvm(options);
}

/** The model's /dev/kvm: a host and its VMs. */
export class Kvm {
  readonly sim: Sim;
  readonly host: Host;
  readonly options: KvmOptions;
  private readonly vms = new Set<Vm>();
  private nextVmId = 0;

  /** Use {@link openKvm}. */
  constructor(options: KvmOptions) {
    this.options = options;
    this.sim = createSim({ seed: options.seed ?? 0, ...(options.costs === undefined ? {} : { costs: options.costs }) });
    for (const sink of options.trace ?? []) this.sim.trace.attach(sink);
    this.host = createHost({ bytes: options.hostBytes ?? 64 * 2 ** 30, sim: this.sim });
    registerVmCosts(this.sim);
    for (const p of options.archs ?? []) validateArchPlugin(p, 'openKvm({ archs })');
  }

  /**
   * KVM_CHECK_EXTENSION on /dev/kvm: the system-wide answers (VM-dependent capabilities are asked
   * on the VM). KVM_CAP_VM_TYPES lists the types KVM_CREATE_VM accepts: the built-in ones plus
   * plugins already passed or registered (an installed but unresolved plugin is not known yet).
   */
  checkExtension(cap: number): number {
    switch (cap) {
      case uapi.KVM_CAP_VM_TYPES: {
        let mask = 0;
        for (const t of this.knownTypes()) {
          const n = KVM_TYPE_NUMBERS[t];
          if (n !== undefined) mask |= 1 << n;
        }
        return mask;
      }
      case uapi.KVM_CAP_GUEST_MEMFD:
      case uapi.KVM_CAP_USER_MEMORY2:
      case uapi.KVM_CAP_PRE_FAULT_MEMORY:
      case uapi.KVM_CAP_READONLY_MEM:
      case uapi.KVM_CAP_MEMORY_FAULT_INFO:
        return 1;
      case uapi.KVM_CAP_GUEST_MEMFD_FLAGS:
        // On /dev/kvm the answer is the default VM's (kvm_vm_ioctl_check_extension_generic with kvm = NULL).
        return uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED;
      case uapi.KVM_CAP_MEMORY_ATTRIBUTES:
        // kvm_supported_vm_mem_attributes(NULL): PRIVATE when the host supports any private-memory
        // VM type, but 0 with gmem_in_place_conversion on (PROPOSED-CONV-v8: guest_memfd owns
        // shareability; KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES reports PRIVATE instead).
        return this.options.inPlaceConversion === true ? 0 : uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE;
      case uapi.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES:
        return this.options.inPlaceConversion === true ? uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE : 0;
      case uapi.KVM_CAP_EXIT_HYPERCALL:
        return 1 << uapi.KVM_HC_MAP_GPA_RANGE;
      case uapi.KVM_CAP_NR_MEMSLOTS:
        return uapi.KVM_USER_MEM_SLOTS;
      case uapi.KVM_CAP_MULTI_ADDRESS_SPACE:
        return 2;
      default:
        return 0;
    }
  }

  /** The VM types known without importing anything: built-in, passed, registered. */
  knownTypes(): string[] {
    const types = new Set<string>(BUILTIN_VM_TYPES);
    for (const p of this.options.archs ?? []) for (const t of p.vmTypes) types.add(t);
    const reg = this.options.registry ?? defaultArchRegistry;
    for (const t of reg.types()) types.add(t);
    return [...types].sort();
  }

  /**
   * KVM_CREATE_VM. The type is built in, one of `archs`, or resolved through the registry and
   * discovery (an ArchPluginError naming every place looked when none serves it). A plugin whose
   * `createVm` throws gives ArchPluginError `E_PLUGIN_CREATE_VM` with the cause, and nothing of the
   * VM remains.
   */
  async createVm<T extends string = 'default'>(options: CreateVmOptions<T> = {}): Promise<Vm<T>> {
    const type = (options.type ?? 'default') as T;
    const plugin = BUILTIN_VM_TYPES.includes(type as BuiltinVmType) ? undefined : await this.resolve(type);
    return this.createVmWith(type, plugin, options);
  }

  /**
   * KVM_CREATE_VM for a built-in type or a plugin already at hand, without awaiting discovery
   * (benchmarks and tight loops). EINVAL for a type that would need resolving.
   */
  createVmSync<T extends string = 'default'>(options: CreateVmOptions<T> = {}): Vm<T> {
    const type = (options.type ?? 'default') as T;
    if (BUILTIN_VM_TYPES.includes(type as BuiltinVmType)) return this.createVmWith(type, undefined, options);
    const passed = this.options.archs?.find((p) => p.vmTypes.includes(type));
    const plugin = passed ?? (this.options.registry ?? defaultArchRegistry).get(type);
    if (plugin === undefined) throw new KvmError('EINVAL', 'KVM_CREATE_VM', `VM type ${JSON.stringify(type)} is not built in, passed or registered; use createVm to discover it`);
    return this.createVmWith(type, plugin, options);
  }

  /** The VMs alive on this host. */
  vmList(): Vm[] {
    return [...this.vms];
  }

  /**
   * Cost overrides given to `openKvm({ costs })` that match no registered cost yet: after the VMs
   * of an experiment exist, a non-empty list means a typo (a harness should refuse it).
   */
  pendingCostOverrides(): string[] {
    return this.sim.costs.pendingOverrides();
  }

  /** Runs every VM's invariants, then the host's. */
  checkInvariants(): void {
    for (const vm of this.vms) vm.checkInvariants();
    this.host.checkInvariants();
  }

  private async resolve(type: string): Promise<ArchPlugin> {
    const passed = this.options.archs?.find((p) => p.vmTypes.includes(type));
    if (passed !== undefined) return passed;
    const reg = this.options.registry ?? defaultArchRegistry;
    return reg.resolve(type, this.options.importer === undefined ? {} : { importer: this.options.importer });
  }

  private createVmWith<T extends string>(type: T, plugin: ArchPlugin | undefined, options: CreateVmOptions<T>): Vm<T> {
    const id = this.nextVmId;
    let capabilities: ArchCapabilities;
    if (plugin === undefined) {
      capabilities = BUILTIN_CAPABILITIES[type as BuiltinVmType];
    } else {
      // Costs first (idempotent for the same defaults), so the plugin can charge from createVm on.
      this.sim.costs.register(plugin.name, plugin.costs);
      // The plugin's ArchVm says what it supports, once created (the Vm reads it from there).
      capabilities = { privateMem: false, privateByDefault: false, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false };
    }
    const extNames = new Set<string>();
    for (const e of options.extensions ?? []) {
      if (extNames.has(e.name)) throw new KvmError('EEXIST', 'KVM_CREATE_VM', `extension ${JSON.stringify(e.name)} is given twice`);
      extNames.add(e.name);
    }
    const process = this.host.createProcess(`vmm/vm${id}`);
    let vm: Vm<T>;
    try {
      vm = new Vm<T>({
        id,
        type,
        kvmType: KVM_TYPE_NUMBERS[type],
        sim: this.sim,
        host: this.host,
        process,
        capabilities,
        createArch:
          plugin === undefined
            ? undefined
            : (ctx) => {
                let arch;
                try {
                  arch = plugin.createVm(ctx);
                } catch (e) {
                  throw new ArchPluginError('E_PLUGIN_CREATE_VM', `plugin ${plugin.name} failed to create a ${type} VM: ${e instanceof Error ? e.message : String(e)}`, { subject: plugin.name, cause: e });
                }
                const problem = archVmProblem(arch);
                if (problem !== undefined) {
                  try {
                    const d = (arch as { destroy?: unknown } | null)?.destroy;
                    if (typeof d === 'function') d.call(arch);
                  } catch {
                    // The refusal below is the error to report; a failing destroy adds nothing to it.
                  }
                  throw new ArchPluginError('E_PLUGIN_CREATE_VM', `plugin ${plugin.name}'s createVm returned an unusable ArchVm: ${problem}`, { subject: plugin.name });
                }
                return arch;
              },
        archOptions: Object.freeze({ ...(options.archOptions ?? {}) }),
        extensions: options.extensions ?? [],
        proposals: options.proposals ?? {},
        hugePolicy: options.hugePolicy,
        hugepageRecovery: options.hugepageRecovery,
        inPlaceConversion: this.options.inPlaceConversion === true,
        onDestroy: (v) => void this.vms.delete(v),
      });
    } catch (e) {
      // No half-made VM: the arch is created first, and the VM's other layers are only reachable
      // from the VM object, which the caller never gets; the VMM process goes with it.
      process.exit();
      throw e;
    }
    this.nextVmId++;
    this.vms.add(vm as Vm);
    return vm;
  }
}
