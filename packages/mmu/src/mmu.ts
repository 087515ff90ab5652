/**
 * The TDP MMU of one VM (arch/x86/kvm/mmu/mmu.c and tdp_mmu.c): a shared (direct) root and, when
 * the arch asks for one, a private mirror root; the fault pipeline; zapping with the invalidation
 * sequence; pre-fault; dirty logging; statistics and invariants. The MMU subscribes itself to
 * memslot changes, attribute changes and guest_memfd invalidations at creation.
 */
import { KvmError, uapi, type ArchResult, type ArchVm, type FaultClass, type Gfn, type KvmPreFaultMemory, type RwLock, type Sim } from '@cocokit/sdk';
import type { Host, HostProcess } from '@cocokit/host';
import type { GmemVm } from '@cocokit/gmem';
import type { Memslot, Memslots } from '@cocokit/memslot';
import { registerMmuCosts } from './costs.js';
import { beginFault, finishFault, type PendingFault } from './fault.js';
import { InvalidationSeq } from './invalidation.js';
import { checkMmuInvariants } from './invariants.js';
import { subscribeAll } from './notifiers.js';
import { PageTable, ROOT_LEVEL, type LeafSpte, type PrivateTableHooks, type ZapCount, type ZapFilter } from './page-table.js';
import { preFaultMemory, tdpMapPage, type PreFaultOptions } from './prefault.js';
import { createMmuStats, type MmuStats } from './stats.js';
import type { FaultOutcome, FaultRequest, HugepageRecovery, MmuOptions, PrivateTracking } from './types.js';
import { memslotFlushScope, zapGfnRange, type ZapScope } from './zap.js';

/** Creates the MMU of one VM and subscribes it to memslot, attribute and guest_memfd events. */
export function createMmu(options: MmuOptions): Mmu {
  return new Mmu(options);
}

/**
 * The TDP MMU of one VM.
 *
 * @example
 * const mmu = createMmu({ sim, host, memslots, gmem, process: vmm });
 * mmu.fault({ gpa: 0x1000, access: 'write' }); // { kind: 'mapped', level: 0, ... }
 */
export class Mmu {
  /** @internal */ readonly sim: Sim;
  /** @internal */ readonly host: Host;
  /** @internal */ readonly memslots: Memslots;
  /** @internal */ readonly gmem: GmemVm | undefined;
  /** @internal */ readonly arch: ArchVm | undefined;
  /** @internal */ readonly process: HostProcess | undefined;
  /** @internal */ readonly options: MmuOptions;
  /** The memslot address space served. */
  readonly asId: number;
  /** Where private-ness comes from. */
  readonly privateTracking: PrivateTracking;
  /** The hugepage recovery policy. */
  readonly hugepageRecovery: HugepageRecovery;
  /** Whether the VM has private memory (memslots' `hasPrivateMem`). */
  readonly privateMem: boolean;
  /** The shared (direct) root: every mapping of VMs without a mirror root, shared ones otherwise. */
  readonly direct: PageTable;
  /** The private mirror root, when `arch.capabilities.mirrorRoot`. */
  readonly mirror: PageTable | undefined;
  /** The invalidation sequence (mmu_invalidate_seq and friends). */
  readonly seq = new InvalidationSeq();
  /** Counters. */
  readonly stats: MmuStats = createMmuStats();
  /** mmu_lock: read for faults, write for zaps. */
  readonly lock: RwLock;
  /** Set when a private-table removal failed for good (KVM_BUG_ON → the VM is dead): faults fail EIO. */
  bugged: string | undefined;
  /** @internal What the fault path's `PageTable.map` zapped on its way (reset per map, reused so a fault allocates no count). */
  readonly mapZapped: ZapCount = { byLevel: [0, 0, 0], tablesFreed: 0 };
  private readonly unsubscribe: () => void;

  constructor(options: MmuOptions) {
    // Refuse before anything is allocated or registered.
    const a = options.arch;
    if (a?.capabilities.mirrorRoot === true) {
      const missing = (['linkPrivateTable', 'setPrivateSpte', 'removePrivateSpte'] as const).filter((h) => typeof a[h] !== 'function');
      if (missing.length > 0) throw new KvmError('EINVAL', 'createMmu', `the arch asks for a mirror root but lacks ${missing.join(', ')}`);
      // The model's tables are 4-level (root entries at level 3); a 5-level private root (TDX with
      // GPAW 52) would be linked at a level these tables never have.
      const root = a.capabilities.privateRootLevel ?? ROOT_LEVEL;
      if (root !== ROOT_LEVEL) {
        throw new KvmError('EINVAL', 'createMmu', `the arch's private root is at level ${root}; this MMU has 4-level tables (root entries at level ${ROOT_LEVEL})`);
      }
    }
    this.options = options;
    this.sim = options.sim;
    this.host = options.host;
    this.memslots = options.memslots;
    this.gmem = options.gmem;
    this.arch = options.arch;
    this.process = options.process;
    this.asId = options.asId ?? 0;
    this.privateMem = options.memslots.config.hasPrivateMem;
    const p = options.gmem?.proposals;
    this.privateTracking = options.privateTracking ?? (p !== undefined && (p.memoryAttributes2 || p.gmemConvert) ? 'gmem' : 'attributes');
    this.hugepageRecovery = options.hugepageRecovery ?? 'on-fault';
    registerMmuCosts(this.sim);
    this.lock = this.sim.rwlock('mmu_lock');
    const host = this.host;
    const stats = this.stats;
    const sim = this.sim;
    const pages = {
      alloc: (): number => {
        const pfn = host.allocPages(0, 'page_table', { zero: true });
        stats.tablesAllocated++;
        sim.charge('mmu.table_alloc');
        return pfn;
      },
      free: (pfn: number): void => {
        host.freePages(pfn, 0);
        stats.tablesFreed++;
      },
    };
    this.direct = new PageTable(pages);
    const arch = this.arch;
    if (arch?.capabilities.mirrorRoot === true) {
      const hooks: PrivateTableHooks = {
        link: (g, l) => arch.linkPrivateTable!(g as Gfn, l),
        set: (g, l, pfn) => arch.setPrivateSpte!(g as Gfn, l, pfn as never),
        remove: (g, l, pfn) => arch.removePrivateSpte!(g as Gfn, l, pfn as never),
        split: (g, l): ArchResult => (arch.splitPrivateSpte ? arch.splitPrivateSpte(g as Gfn, l) : { status: 'error', errno: 'EIO', reason: 'the arch cannot split private mappings' }),
      };
      this.mirror = new PageTable(pages, hooks);
      this.mirror.onBug = (reason) => {
        this.bugged ??= reason;
      };
    } else {
      this.mirror = undefined;
    }
    this.unsubscribe = subscribeAll(this);
  }

  /**
   * Handles one fault attempt synchronously (kvm_mmu_page_fault → kvm_tdp_page_fault): the pfn is
   * resolved outside mmu_lock, then mapped under it for read. A `retry` outcome means the vCPU
   * re-enters the guest and faults again; exits carry what KVM_RUN reports.
   */
  fault(req: FaultRequest): FaultOutcome {
    const p = beginFault(this, req);
    return p.kind === 'pending' ? finishFault(this, p) : p;
  }

  /**
   * How KVM classifies an access (kvm_mmu_do_page_fault): the arch's `classifyFault`, or, on VMs
   * without one (sw-protected), gfn = gpa >> 12 and private iff the gfn is private now. A vCPU uses
   * it to find the mapping an access goes through before it faults; {@link Mmu.fault} classifies
   * the same way (inline, to hand the slot it looked up to the rest of the fault).
   */
  classify(req: FaultRequest): FaultClass {
    const arch = this.arch;
    if (arch?.classifyFault !== undefined) {
      return arch.classifyFault(req.encrypted === undefined ? { gpa: req.gpa, access: req.access } : { gpa: req.gpa, access: req.access, encrypted: req.encrypted });
    }
    const gfn = Math.floor(req.gpa / 4096);
    return { gfn: gfn as Gfn, private: this.privateMem && this.isPrivateGfn(gfn, this.memslots.lookup(gfn, this.asId)) };
  }

  /**
   * The first half of a fault, outside mmu_lock (kvm_mmu_faultin_pfn): classify, look up the slot,
   * snapshot mmu_invalidate_seq, check private/shared, resolve the pfn and the level. Returns an
   * outcome when the fault ends here, else the pending fault for {@link Mmu.finishFault}.
   * Splitting lets simulated actors interleave an invalidation between the halves.
   */
  beginFault(req: FaultRequest): FaultOutcome | PendingFault {
    return beginFault(this, req);
  }

  /** The second half, under mmu_lock for read: re-check the sequence (is_page_fault_stale) and map. */
  finishFault(p: PendingFault): FaultOutcome {
    return finishFault(this, p);
  }

  /** KVM_PRE_FAULT_MEMORY (kvm_vcpu_pre_fault_memory): see {@link preFaultMemory}. */
  preFaultMemory(range: KvmPreFaultMemory, options?: PreFaultOptions): number {
    return preFaultMemory(this, range, options);
  }

  /** kvm_tdp_map_page without the ioctl's pre_fault_allowed gate: see {@link tdpMapPage}. */
  tdpMapPage(gpa: number, op: string, options?: PreFaultOptions): number {
    return tdpMapPage(this, gpa, op, options);
  }

  /**
   * kvm_zap_gfn_range: zaps the leaves of `[start, end)` in both roots under mmu_lock for write,
   * inside an MMU invalidation (so racing faults retry), with one TLB flush if anything was
   * zapped. Page tables stay (kvm_tdp_mmu_zap_leafs). Returns the leaves zapped.
   */
  zapGfnRange(start: Gfn | number, end: Gfn | number, filter: ZapFilter = 'both', reason = 'zap_gfn_range'): number {
    return this.zapLocked(start, end, filter, reason, 'leafs');
  }

  /**
   * Zaps every mapping of `slot` (kvm_arch_flush_shadow_memslot): a default VM's shared tables
   * over the slot go too (kvm_mmu_zap_all_fast), other VM types keep their tables.
   */
  zapSlot(slot: Memslot): number {
    return this.zapLocked(slot.baseGfn, slot.endGfn, 'both', 'flush_shadow_memslot', memslotFlushScope(this));
  }

  /**
   * Zaps everything (kvm_mmu_zap_all): the direct root's page tables go too (kvm_tdp_mmu_zap_all,
   * tdp_mmu_zap_root), the root page aside. A mirror root loses its leaves but keeps its tables,
   * as the TDX module keeps the S-EPT pages until the TD is destroyed (kvm_tdp_mmu_zap_all leaves
   * mirror roots alone entirely; their teardown is {@link Mmu.destroy}).
   */
  zapAll(): number {
    return this.zapLocked(0, Number.MAX_SAFE_INTEGER, 'both', 'zap_all', 'tables');
  }

  private zapLocked(start: number, end: number, filter: ZapFilter, reason: string, scope: ZapScope): number {
    return this.lock.write(() => {
      this.seq.begin();
      this.stats.invalidations++;
      this.seq.addRange(start, end);
      const n = zapGfnRange(this, start, end, filter, reason, scope);
      this.seq.end();
      return n;
    });
  }

  /**
   * The host mmu-notifier's invalidate_range_start for `[hvaStart, hvaEnd)` of the VMM process
   * (kvm_mmu_notifier_invalidate_range_start): begins an invalidation and zaps the shared mappings
   * of hva-backed slots over that range. The process passed as `options.process` calls it (the MMU
   * registers as its mmu notifier) on munmap, exit, copy-on-write breaks and mprotect.
   */
  invalidateHvaRangeStart(hvaStart: number, hvaEnd: number): number {
    return this.lock.write(() => {
      this.seq.begin();
      this.stats.invalidations++;
      let n = 0;
      for (const r of this.hvaToGfnRanges(hvaStart, hvaEnd)) {
        this.seq.addRange(r.start, r.end);
        n += zapGfnRange(this, r.start, r.end, 'shared', 'mmu_notifier');
      }
      return n;
    });
  }

  /** kvm_mmu_notifier_invalidate_range_end: ends what {@link Mmu.invalidateHvaRangeStart} began. */
  invalidateHvaRangeEnd(_hvaStart: number, _hvaEnd: number): void {
    this.lock.write(() => this.seq.end());
  }

  /** Both halves of a host invalidation at once. */
  invalidateHvaRange(hvaStart: number, hvaEnd: number): number {
    const n = this.invalidateHvaRangeStart(hvaStart, hvaEnd);
    this.invalidateHvaRangeEnd(hvaStart, hvaEnd);
    return n;
  }

  /** @internal The gfn ranges of hva-backed slots that `[hvaStart, hvaEnd)` covers. */
  hvaToGfnRanges(hvaStart: number, hvaEnd: number): Array<{ start: number; end: number }> {
    const out: Array<{ start: number; end: number }> = [];
    for (const s of this.memslots.slots(this.asId)) {
      if (s.gmem?.gmemOnly === true) continue;
      const lo = Math.max(hvaStart, s.userspaceAddr);
      const hi = Math.min(hvaEnd, s.userspaceAddr + s.npages * 4096);
      if (lo >= hi) continue;
      const start = s.baseGfn + Math.floor((lo - s.userspaceAddr) / 4096);
      const end = s.baseGfn + Math.ceil((hi - s.userspaceAddr) / 4096);
      out.push({ start, end });
    }
    return out;
  }

  /** The leaf mapping `gfn` in the shared root, or in the mirror root with `private`. */
  lookup(gfn: Gfn | number, root: 'shared' | 'private' = 'shared'): LeafSpte | undefined {
    const pt = root === 'private' ? this.mirror : this.direct;
    return pt?.lookup(gfn);
  }

  /** Every leaf of a root intersecting `[start, end)`. */
  leaves(root: 'shared' | 'private' = 'shared', start = 0, end = Number.MAX_SAFE_INTEGER): LeafSpte[] {
    const pt = root === 'private' ? this.mirror : this.direct;
    return pt?.leafList(start, end) ?? [];
  }

  /** Page-table pages held now, both roots. */
  get pageTablePages(): number {
    return this.direct.tablePages + (this.mirror?.tablePages ?? 0);
  }

  /** Leaves present now, both roots. */
  get mappedLeaves(): number {
    return this.direct.leaves + (this.mirror?.leaves ?? 0);
  }

  /** @internal kvm_mem_is_private(gfn) with the configured tracking. */
  isPrivateGfn(gfn: number, slot: Memslot | undefined): boolean {
    if (!this.privateMem) return false;
    if (this.privateTracking === 'attributes') return (this.memslots.getAttributes(gfn) & uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE) !== 0;
    const b = slot === undefined ? undefined : this.gmemBinding(slot);
    if (b === undefined) return false;
    const index = b.pgoff + (gfn - slot!.baseGfn);
    return index < b.file.nrPages && b.file.shareability(index) === 'guest';
  }

  /** @internal The live guest_memfd binding of a slot. */
  gmemBinding(slot: Memslot): ReturnType<GmemVm['bindingOf']> {
    if (slot.gmem === undefined || this.gmem === undefined) return undefined;
    return this.gmem.bindingOf(slot);
  }

  /** @internal Accounts one remote TLB flush. */
  flushTlbs(): void {
    this.stats.tlbFlushes++;
    this.sim.charge('mmu.tlb_flush');
  }

  /**
   * Checks the MMU's invariants (throws ModelInvariantError): table bookkeeping; every present leaf
   * maps the pfn guest_memfd or the host says backs its gfn now; no private pfn in the shared
   * root's shared entries, nothing shared in the private root; no leaf above its allowed level; no
   * leaf outside a live memslot.
   */
  checkInvariants(): void {
    checkMmuInvariants(this);
  }

  /** Unsubscribes from memslot, attribute and guest_memfd events and frees every table (VM teardown). */
  destroy(): void {
    this.unsubscribe();
    this.direct.destroy();
    this.mirror?.destroy();
  }
}
