/**
 * The fault pipeline (mmu.c: kvm_mmu_do_page_fault → kvm_tdp_page_fault → kvm_mmu_faultin_pfn,
 * then kvm_tdp_mmu_map under mmu_lock for read), in two halves so simulated actors can interleave
 * an invalidation between them:
 *
 * 1. {@link beginFault}, outside mmu_lock: classify the access (arch `classifyFault`), look up the
 *    memslot, snapshot `mmu_invalidate_seq`, check private vs shared (a mismatch is a
 *    KVM_EXIT_MEMORY_FAULT, never a silent retry), handle no-slot (MMIO) and INVALID slots (retry),
 *    bail out early if an invalidation covering the gfn is in progress, run the extension hook,
 *    resolve the pfn (guest_memfd `getPfn` for private and GMEM_ONLY faults, GUP from the VMM
 *    process otherwise), and compute the mapping level.
 * 2. {@link finishFault}, under mmu_lock for read: if the sequence moved or an invalidation covers
 *    the gfn, the pfn may be stale → retry, nothing installed (is_page_fault_stale); else map.
 */
import { KvmError, gfn as toGfn, isKvmError, pfn as toPfn, uapi, type Access, type Errno, type Gfn, type MappingLevel } from '@cocokit/sdk';
import type { Memslot } from '@cocokit/memslot';
import { maxMappingLevel, orderLevel } from './max-level.js';
import type { Mmu } from './mmu.js';
import { ENTRY_SPAN, SPTE, encodeLeaf, leafFlags, leafPfn } from './page-table.js';
import type { FaultOutcome, FaultRequest, MmuExit } from './types.js';

/** A fault between its two halves: the pfn is resolved and, for hva memory, referenced. */
export interface PendingFault {
  readonly kind: 'pending';
  readonly gpa: number;
  readonly gfn: Gfn;
  readonly access: Access;
  readonly private: boolean;
  readonly slot: Memslot;
  /** The `mmu_invalidate_seq` snapshot. */
  readonly mmuSeq: number;
  /** The pfn backing `gfn`. */
  readonly pfn: number;
  /** The goal level. */
  readonly level: MappingLevel;
  readonly writable: boolean;
  readonly prefault: boolean;
  /** A GUP reference is held on `pfn` (hva memory) until the fault ends (kvm_release_faultin_page). */
  readonly gupRef: boolean;
}

/** Internal fault request: classification already done (pre-fault uses the gfn's attribute). */
export interface ClassifiedFault {
  readonly gpa: number;
  readonly gfn: number;
  readonly access: Access;
  readonly private: boolean;
  readonly prefault: boolean;
}

const PAGE = 4096;

/** kvm_mmu_do_page_fault's classification, then {@link beginClassified}. */
export function beginFault(mmu: Mmu, req: FaultRequest): FaultOutcome | PendingFault {
  const arch = mmu.arch;
  if (arch?.classifyFault !== undefined) {
    const c = arch.classifyFault(req.encrypted === undefined ? { gpa: req.gpa, access: req.access } : { gpa: req.gpa, access: req.access, encrypted: req.encrypted });
    return beginClassified(mmu, { gpa: req.gpa, gfn: c.gfn, access: req.access, private: c.private, prefault: false });
  }
  const gfn = Math.floor(req.gpa / PAGE);
  // SW_PROTECTED: the access is private iff the gfn is private now (kvm_mem_is_private). Nothing
  // runs between this and the first half's own check, so the slot found here is handed on and the
  // private/shared mismatch check is skipped: it would ask the same question of the same state.
  const slot = mmu.memslots.lookup(gfn, mmu.asId);
  const isPrivate = mmu.privateMem && mmu.isPrivateGfn(gfn, slot);
  return faultIn(mmu, { gpa: req.gpa, gfn, access: req.access, private: isPrivate, prefault: false }, slot, true);
}

/** kvm_prepare_memory_fault_exit: gpa of the faulting page, size 4K (x86), PRIVATE if the access was. */
export function memoryFaultExit(gfn: number, isPrivate: boolean, errno: Errno): MmuExit {
  return {
    reason: 'MEMORY_FAULT',
    exitReason: uapi.KVM_EXIT_MEMORY_FAULT,
    memoryFault: { gpa: gfn * PAGE, size: PAGE, flags: isPrivate ? uapi.KVM_MEMORY_EXIT_FLAG_PRIVATE : 0 },
    errno,
  };
}

function trace(mmu: Mmu, f: ClassifiedFault, outcome: string, level: number): void {
  if (mmu.sim.trace.enabled) mmu.sim.trace.emit('mmu.fault', { gfn: f.gfn, access: f.access, private: f.private, outcome, level });
}

function exit(mmu: Mmu, f: ClassifiedFault, e: MmuExit, kind: 'memoryFault' | 'mmio' | 'extension'): FaultOutcome {
  mmu.stats.exits[kind]++;
  trace(mmu, f, `exit:${e.reason}`, -1);
  return { kind: 'exit', exit: e, gfn: toGfn(f.gfn) };
}

function error(mmu: Mmu, f: ClassifiedFault, errno: Errno, reason: string): FaultOutcome {
  mmu.stats.errors++;
  trace(mmu, f, `error:${errno}`, -1);
  return { kind: 'error', errno, reason, gfn: toGfn(f.gfn) };
}

function retry(mmu: Mmu, f: ClassifiedFault, reason: 'invalidation' | 'invalid-slot' | 'arch-busy'): FaultOutcome {
  if (reason === 'invalidation') mmu.stats.retries.invalidation++;
  else if (reason === 'invalid-slot') mmu.stats.retries.invalidSlot++;
  else mmu.stats.retries.archBusy++;
  trace(mmu, f, `retry:${reason}`, -1);
  return { kind: 'retry', reason, gfn: toGfn(f.gfn) };
}

/** The first half for an already classified fault (kvm_mmu_faultin_pfn, as of 6.18). */
export function beginClassified(mmu: Mmu, f: ClassifiedFault): FaultOutcome | PendingFault {
  return faultIn(mmu, f, mmu.memslots.lookup(f.gfn, mmu.asId), false);
}

/**
 * {@link beginClassified} with the memslot of `f.gfn` already looked up. `privateChecked`: the
 * caller derived `f.private` from `isPrivateGfn(f.gfn, slot)` itself with nothing in between, so
 * the private/shared mismatch check would ask the same question of the same state.
 */
function faultIn(mmu: Mmu, f: ClassifiedFault, slot: Memslot | undefined, privateChecked: boolean): FaultOutcome | PendingFault {
  mmu.sim.charge('mmu.fault');
  if (f.private) mmu.stats.faults.private++;
  else mmu.stats.faults.shared++;
  if (mmu.bugged !== undefined) return error(mmu, f, 'EIO', `the VM is dead: ${mmu.bugged}`);
  const gfn = f.gfn;
  // 1. Snapshot the sequence before anything that an invalidation could change.
  const mmuSeq = mmu.seq.seq;
  // 2. Private vs shared, after the snapshot: attribute changes run inside an invalidation.
  if (!privateChecked && f.private !== mmu.isPrivateGfn(gfn, slot)) return exit(mmu, f, memoryFaultExit(gfn, f.private, 'EFAULT'), 'memoryFault');
  // 3. No memslot: kvm_handle_noslot_fault → emulate as MMIO.
  if (slot === undefined) return exit(mmu, f, { reason: 'MMIO', exitReason: uapi.KVM_EXIT_MMIO, phys: f.gpa, isWrite: f.access === 'write' }, 'mmio');
  // 4. A slot being deleted or moved: retry until the new layout is in (pre-fault: EAGAIN).
  if (slot.invalid) return retry(mmu, f, 'invalid-slot');
  // A write to a read-only slot: KVM_PFN_ERR_RO_FAULT → RET_PF_EMULATE → MMIO exit.
  const readonly = (slot.flags & uapi.KVM_MEM_READONLY) !== 0;
  if (readonly && f.access === 'write') return exit(mmu, f, { reason: 'MMIO', exitReason: uapi.KVM_EXIT_MMIO, phys: f.gpa, isWrite: true }, 'mmio');
  // 5. An invalidation covering the gfn is in progress: do not even fault the page in.
  if (mmu.seq.retryGfnUnsafe(mmuSeq, gfn)) return retry(mmu, f, 'invalidation');
  let cap: MappingLevel = 2;
  const hook = mmu.options.beforeMap;
  if (hook !== undefined) {
    const r = hook({ gpa: f.gpa, gfn: toGfn(gfn), access: f.access, private: f.private, slot, prefault: f.prefault });
    if (r !== 'continue') {
      if ('exit' in r) {
        mmu.stats.exits.extension++;
        trace(mmu, f, `exit:${r.exit.reason}`, -1);
        return { kind: 'exit', exit: r.errno === undefined ? r.exit : { ...r.exit, errno: r.errno }, gfn: toGfn(gfn) };
      }
      cap = r.maxLevel;
    }
  }
  // 6. Resolve the pfn.
  if (f.private || slot.gmem?.gmemOnly === true) {
    // kvm_mmu_faultin_pfn_gmem
    if (slot.gmem === undefined || mmu.gmem === undefined) return exit(mmu, f, memoryFaultExit(gfn, f.private, 'EFAULT'), 'memoryFault');
    let got;
    try {
      got = mmu.gmem.getPfn(slot, gfn);
    } catch (e) {
      if (isKvmError(e)) return exit(mmu, f, memoryFaultExit(gfn, f.private, e.errno), 'memoryFault');
      throw e;
    }
    const level = maxMappingLevel(mmu, slot, gfn, got.pfn, f.private, orderLevel(got.maxOrder), slot.gmem.pgoff, cap);
    return { kind: 'pending', gpa: f.gpa, gfn: toGfn(gfn), access: f.access, private: f.private, slot, mmuSeq, pfn: got.pfn, level, writable: !readonly, prefault: f.prefault, gupRef: false };
  }
  // Shared memory behind userspace_addr: GUP from the VMM process (hva_to_pfn).
  const proc = mmu.process;
  const hva = slot.userspaceAddr + (gfn - slot.baseGfn) * PAGE;
  if (proc === undefined) return error(mmu, f, 'EFAULT', 'no VMM process backs hva-based memslots (MmuOptions.process)');
  const write = f.access === 'write';
  let pfn: number;
  try {
    pfn = proc.gup(hva, 1, { write })[0] as number;
  } catch (e) {
    if (isKvmError(e)) return error(mmu, f, 'EFAULT', `hva 0x${hva.toString(16)} cannot be faulted in: ${e.reason}`);
    throw e;
  }
  const hostLevel = mmu.options.hostMappingLevel?.(slot, toGfn(gfn), hva) ?? 0;
  const level = maxMappingLevel(mmu, slot, gfn, pfn, false, hostLevel, slot.userspaceAddr / PAGE, cap);
  // Read faults map read-only so that a later write faults (and is logged, and breaks COW in the host).
  return { kind: 'pending', gpa: f.gpa, gfn: toGfn(gfn), access: f.access, private: false, slot, mmuSeq, pfn, level, writable: write && !readonly, prefault: f.prefault, gupRef: true };
}

function release(mmu: Mmu, p: PendingFault): void {
  if (p.gupRef) mmu.process!.unpin([toPfn(p.pfn)]);
}

/** The second half: under mmu_lock for read, re-check staleness and map (kvm_tdp_mmu_map). */
export function finishFault(mmu: Mmu, p: PendingFault): FaultOutcome {
  const out = mmu.lock.read(() => mapLocked(mmu, p));
  release(mmu, p);
  return out;
}

function mapLocked(mmu: Mmu, p: PendingFault): FaultOutcome {
  const f: ClassifiedFault = p;
  if (mmu.bugged !== undefined) return error(mmu, f, 'EIO', `the VM is dead: ${mmu.bugged}`);
  // is_page_fault_stale: an invalidation ran (or runs) since the snapshot.
  if (mmu.seq.retryGfn(p.mmuSeq, p.gfn)) return retry(mmu, f, 'invalidation');
  // SRCU keeps the slot alive across a real fault; in the model a slot change between the halves
  // is treated like the INVALID window.
  const now = mmu.memslots.lookup(p.gfn, mmu.asId);
  if (now !== p.slot || now.invalid) return retry(mmu, f, 'invalid-slot');
  const pt = p.private && mmu.mirror !== undefined ? mmu.mirror : mmu.direct;
  let level = p.level;
  // A mirror root cannot turn a table into a huge leaf (no promote hook): stay below existing tables.
  if (pt.mirror) while (level > 0 && pt.hasTableBelow(p.gfn, level)) level = (level - 1) as MappingLevel;
  const span = ENTRY_SPAN[level];
  const base = p.gfn - (p.gfn % span);
  const basePfn = p.pfn - (p.gfn - base);
  const write = p.access === 'write';
  let flags: number = SPTE.PRESENT;
  if (p.writable) flags |= SPTE.WRITABLE;
  if (!p.prefault) flags |= SPTE.ACCESSED;
  if (write) flags |= SPTE.DIRTY;
  if (p.private) flags |= SPTE.PRIVATE;
  const existing = pt.leafLevel(p.gfn);
  if (existing === level && pt.found !== 0) {
    const old = pt.found;
    const oldFlags = leafFlags(old);
    if (leafPfn(old) === basePfn && (!write || (oldFlags & SPTE.WRITABLE) !== 0)) {
      // Spurious: someone else mapped it (or a prefault did); only the A/D bits move.
      const merged = encodeLeaf(basePfn, oldFlags | (flags & (SPTE.ACCESSED | SPTE.DIRTY)));
      if (merged !== old) pt.map(base, level, merged);
      mmu.stats.spurious++;
      if (write && p.slot.dirtyLogging) mmu.memslots.markDirty(p.slot, p.gfn);
      trace(mmu, f, 'spurious', level);
      return { kind: 'mapped', gfn: p.gfn, pfn: toPfn(p.pfn), level, private: p.private, writable: (oldFlags & SPTE.WRITABLE) !== 0, spurious: true };
    }
  }
  // One scratch count per MMU, reset here: a map never nests in another one of the same MMU.
  const zapped = mmu.mapZapped;
  zapped.byLevel[0] = zapped.byLevel[1] = zapped.byLevel[2] = 0;
  zapped.tablesFreed = 0;
  let r;
  try {
    r = pt.map(base, level, encodeLeaf(basePfn, flags), zapped);
  } catch (e) {
    if (e instanceof KvmError) return error(mmu, f, e.errno, e.reason);
    throw e;
  }
  const z = zapped.byLevel[0] + zapped.byLevel[1] + zapped.byLevel[2];
  if (z > 0) {
    for (let l = 0; l < 3; l++) mmu.stats.zapped[l]! += zapped.byLevel[l]!;
    mmu.flushTlbs();
  }
  if (r !== undefined) {
    if (r.status === 'busy') return retry(mmu, f, 'arch-busy');
    if (r.status === 'error') return error(mmu, f, r.errno, r.reason);
  }
  mmu.sim.charge('mmu.spte_set');
  mmu.stats.maps[level]++;
  mmu.stats.fixed++;
  if (write && p.slot.dirtyLogging) mmu.memslots.markDirty(p.slot, p.gfn);
  if (mmu.sim.trace.enabled) mmu.sim.trace.emit('mmu.map', { gfn: base, level, pfn: basePfn, private: p.private, writable: p.writable });
  trace(mmu, f, 'mapped', level);
  return { kind: 'mapped', gfn: p.gfn, pfn: toPfn(p.pfn), level, private: p.private, writable: p.writable, spurious: false };
}
