/**
 * KVM's own accesses to guest memory — not the guest's, which go through the stage-2 tables:
 * kvm_read_guest / kvm_write_guest (virt/kvm/kvm_main.c), what the x86 emulator fetches an
 * instruction and walks the guest's page tables with, and the gfn_to_pfn_cache
 * (virt/kvm/pfncache.c), the long-term kernel mapping kvm-clock is written through.
 *
 * A gfn whose memory is the VMM's (an hva-backed slot) is reached through its hva: copy_from_user
 * for an access, GUP and the direct map for a cache. A gfn whose memory is guest_memfd's (a private
 * gfn, or any gfn of a GMEM_ONLY slot: the fault path's rule) is reached through the file, as seed
 * 002's series teaches kvm_{read,write}_guest, the page-table walker and pfncache.c to do: for a
 * GUEST_MEMFD_FLAG_NO_DIRECT_MAP file each access restores the page's direct-map entry for its
 * duration (remap → access → unmap, under the folio lock), and a cache holds a refcounted
 * restoration until gmem invalidates it (punch hole, conversion, release) or it is deactivated.
 */
import { KvmError, PAGE_SIZE, type Sim } from '@cocokit/sdk';
import type { GmemPfnCache, GuestMemfd } from '@cocokit/gmem';
import type { Host, HostProcess } from '@cocokit/host';
import type { Memslot, Memslots } from '@cocokit/memslot';

/** What a {@link KernelAccess} needs from its VM (internal). */
export interface KernelAccessHost {
  readonly id: number;
  readonly sim: Sim;
  readonly host: Host;
  readonly memslots: Memslots;
  readonly process: HostProcess;
  /** kvm_mem_is_private for `gfn` (false on VMs without private memory). */
  isPrivateGfn(gfn: number, slot: Memslot): boolean;
  fileOf(slot: Memslot): { readonly file: GuestMemfd; readonly pgoff: number } | undefined;
  /**
   * Whether private memory is closed to the host kernel: hardware-protected types (TDX, SNP, pKVM)
   * encrypt or own it; only the seed's non-confidential use lets KVM read it.
   */
  readonly privateInaccessible: boolean;
}

/** What KVM's own accesses did so far. */
export interface KernelAccessStats {
  /** kvm_read_guest_page / kvm_write_guest_page calls (an access crossing a page counts once per page). */
  readonly reads: number;
  readonly writes: number;
  readonly bytesRead: number;
  readonly bytesWritten: number;
  /** Of those, the ones served from guest_memfd (the rest went through the VMM's hva). */
  readonly gmemAccesses: number;
  /** kvm_{read,write}_guest accesses that found their page out of the direct map and put it back for the access. */
  readonly tempRemaps: number;
  /** Distinct host pages KVM put back into the direct map, for an access or a cache. */
  readonly pagesExposed: number;
  /** Instructions the emulator fetched from guest memory (MMIO emulation), and the page-table entries its walks read. */
  readonly emulations: number;
  readonly walkReads: number;
  /** Of the temporary remaps, those the page-table walks made (the rest of the emulations' are instruction fetches). */
  readonly walkRemaps: number;
  /**
   * gfn_to_pfn_cache activations, (re)resolutions of a pfn, resolutions that put a page back into
   * the direct map (long-term, until invalidated or deactivated), and writes through a cache.
   */
  readonly gpcActivations: number;
  readonly gpcRefreshes: number;
  readonly gpcRemaps: number;
  readonly gpcWrites: number;
  /** kvm-clock updates (kvm_setup_guest_pvclock) that reached guest memory. */
  readonly clockUpdates: number;
}

/** Where a gfn's memory is, as KVM resolves it for its own access. */
type Backing =
  | { readonly kind: 'gmem'; readonly file: GuestMemfd; readonly index: number }
  | { readonly kind: 'hva'; readonly hva: number };

/**
 * KVM's accesses to one VM's guest memory. Get it as `vm.kernelAccess`.
 *
 * @example
 * const insn = vm.kernelAccess.readGuest(rip, 15);   // kvm_read_guest: remap → copy → unmap under NO_DIRECT_MAP
 * const gpc = vm.kernelAccess.gpcInit();
 * gpc.activate(clockGpa, 32);                       // the page stays in the direct map until deactivate
 */
export class KernelAccess {
  private readonly vm: KernelAccessHost;
  private readonly caches = new Set<GfnToPfnCache>();
  private readonly exposed = new Set<number>();
  private offNotifier: (() => void) | undefined;
  private offAttributes: (() => void) | undefined;
  private s = { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, gmemAccesses: 0, tempRemaps: 0, emulations: 0, walkReads: 0, walkRemaps: 0, gpcActivations: 0, gpcRefreshes: 0, gpcRemaps: 0, gpcWrites: 0, clockUpdates: 0 };

  /** @internal Made by the VM. */
  constructor(vm: KernelAccessHost) {
    this.vm = vm;
  }

  /**
   * kvm_read_guest: `len` bytes at `gpa`, page by page. EFAULT when a page has no memslot (KVM
   * reads MMIO only through the emulator's device path), when the VMM's mapping faults, or when the
   * page is private memory of a hardware-protected VM.
   */
  readGuest(gpa: number, len: number): Uint8Array {
    checkSpan(gpa, len, 'kvm_read_guest');
    const out = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const at = gpa + done;
      const n = Math.min(len - done, PAGE_SIZE - (at % PAGE_SIZE));
      out.set(this.readGuestPage(at, n), done);
      done += n;
    }
    return out;
  }

  /** kvm_write_guest: `data` at `gpa`, page by page (marking the pages dirty). Errors as {@link readGuest}. */
  writeGuest(gpa: number, data: Uint8Array): void {
    checkSpan(gpa, data.length, 'kvm_write_guest');
    let done = 0;
    while (done < data.length) {
      const at = gpa + done;
      const n = Math.min(data.length - done, PAGE_SIZE - (at % PAGE_SIZE));
      this.writeGuestPage(at, data.subarray(done, done + n));
      done += n;
    }
  }

  /** kvm_gpc_init: an inactive gfn_to_pfn_cache of this VM. */
  gpcInit(): GfnToPfnCache {
    return new GfnToPfnCache(this);
  }

  /** The counters so far. */
  stats(): KernelAccessStats {
    return { ...this.s, pagesExposed: this.exposed.size };
  }

  /**
   * @internal The emulator's instruction fetch for MMIO emulation (x86_emulate_instruction →
   * __do_insn_fetch_bytes): the walk of the guest page tables that translates RIP
   * (paging64_walk_addr_generic reads one 8-byte entry per level), then up to 15 bytes at the
   * instruction, never past its page.
   */
  emulatorFetch(insnGpa: number, walk: readonly number[]): Uint8Array {
    this.s.emulations++;
    const before = this.s.tempRemaps;
    try {
      for (const pte of walk) {
        this.readGuest(pte, 8);
        this.s.walkReads++;
      }
    } finally {
      this.s.walkRemaps += this.s.tempRemaps - before;
    }
    return this.readGuest(insnGpa, Math.min(15, PAGE_SIZE - (insnGpa % PAGE_SIZE)));
  }

  /** @internal Drops every cache (kvm_destroy_vm: the vCPUs' kvm_gpc_deactivate) and the notifiers. */
  destroy(): void {
    for (const c of [...this.caches]) c.deactivate();
    this.offNotifier?.();
    this.offAttributes?.();
    this.offNotifier = this.offAttributes = undefined;
  }

  // -------------------------------------------------------------------------------------------
  // Internals shared with the caches

  /** @internal Resolves `gpa` the way KVM's own accesses do (__gfn_to_hva_many / the seed's gmem path). */
  backing(gpa: number, op: string): { readonly backing: Backing; readonly slot: Memslot } {
    const gfn = Math.floor(gpa / PAGE_SIZE);
    const slot = this.vm.memslots.lookup(gfn, 0);
    if (slot === undefined || slot.invalid) throw new KvmError('EFAULT', op, `gpa 0x${gpa.toString(16)} is in no memslot`);
    const priv = this.vm.isPrivateGfn(gfn, slot);
    if (priv && this.vm.privateInaccessible) throw new KvmError('EFAULT', op, `gpa 0x${gpa.toString(16)} is private memory of a confidential VM; KVM cannot access it`);
    const b = slot.gmem === undefined ? undefined : this.vm.fileOf(slot);
    if (b !== undefined && (priv || slot.gmem?.gmemOnly === true)) {
      return { backing: { kind: 'gmem', file: b.file, index: b.pgoff + (gfn - slot.baseGfn) }, slot };
    }
    return { backing: { kind: 'hva', hva: slot.userspaceAddr + (gfn - slot.baseGfn) * PAGE_SIZE }, slot };
  }

  /** @internal Notes that `pfn` was put back into the direct map by KVM. */
  noteExposed(pfn: number): void {
    this.exposed.add(pfn);
  }

  /** @internal */
  get sim(): Sim {
    return this.vm.sim;
  }

  /** @internal */
  get host(): Host {
    return this.vm.host;
  }

  /** @internal */
  get process(): HostProcess {
    return this.vm.process;
  }

  /** @internal */
  get memslots(): Memslots {
    return this.vm.memslots;
  }

  /** @internal */
  count(what: 'gpcActivations' | 'gpcRefreshes' | 'gpcRemaps' | 'gpcWrites' | 'clockUpdates'): void {
    this.s[what]++;
  }

  /** @internal An active cache joins the invalidation sources: the mmu notifier and attribute changes. */
  track(c: GfnToPfnCache): void {
    this.caches.add(c);
    // gfn_to_pfn_cache_invalidate_start: a change to the VMM's page tables under a cache's hva.
    this.offNotifier ??= this.vm.process.addMmuNotifier({
      invalidateRangeStart: (start, end) => {
        for (const k of this.caches) k.invalidateHva(start, end);
      },
      invalidateRangeEnd: () => undefined,
    });
    // The seed's "pfncache: invalidate when memory attributes change": a gfn that turns private
    // (or shared) now resolves elsewhere.
    this.offAttributes ??= this.vm.memslots.onAttributesChange({
      preSet: (range) => {
        for (const k of this.caches) k.invalidateGfn(range.start, range.end);
      },
    });
  }

  /** @internal */
  untrack(c: GfnToPfnCache): void {
    this.caches.delete(c);
  }

  private readGuestPage(gpa: number, len: number): Uint8Array {
    const { backing: b } = this.backing(gpa, 'kvm_read_guest');
    this.s.reads++;
    this.s.bytesRead += len;
    this.charge();
    const off = gpa % PAGE_SIZE;
    if (b.kind === 'gmem') {
      this.s.gmemAccesses++;
      const data = b.file.kernelRead(b.index, off, len);
      this.noteRemap(b);
      this.trace(gpa, len, 'read', b);
      return data;
    }
    const r = this.vm.process.read(b.hva + off, len);
    if (!r.ok) throw new KvmError('EFAULT', 'kvm_read_guest', `copy_from_user at hva 0x${(b.hva + off).toString(16)}: ${r.signal}`);
    if (r.data === undefined) throw new KvmError('EFAULT', 'kvm_read_guest', `copy_from_user at hva 0x${(b.hva + off).toString(16)} returned no data`);
    this.trace(gpa, len, 'read', b);
    return r.data;
  }

  private writeGuestPage(gpa: number, data: Uint8Array): void {
    const { backing: b, slot } = this.backing(gpa, 'kvm_write_guest');
    this.s.writes++;
    this.s.bytesWritten += data.length;
    this.charge();
    const off = gpa % PAGE_SIZE;
    if (b.kind === 'gmem') {
      this.s.gmemAccesses++;
      b.file.kernelWrite(b.index, { kind: 'bytes', bytes: data.slice() }, off);
      this.noteRemap(b);
    } else {
      const r = this.vm.process.write(b.hva + off, data);
      if (!r.ok) throw new KvmError('EFAULT', 'kvm_write_guest', `copy_to_user at hva 0x${(b.hva + off).toString(16)}: ${r.signal}`);
    }
    // mark_page_dirty_in_slot.
    if (slot.dirtyLogging) this.vm.memslots.markDirty(slot, Math.floor(gpa / PAGE_SIZE));
    this.trace(gpa, data.length, 'write', b);
  }

  /**
   * Counts the remap a gmem access just made. After the access the page is back in the direct map
   * only if a cache still holds it; if it is out, the access's own restoration took the sharing
   * count from 0 to 1, which is a remap.
   */
  private noteRemap(b: Extract<Backing, { kind: 'gmem' }>): void {
    if (!b.file.noDirectMap) return;
    const pfn = pageOf(b.file, b.index);
    if (pfn !== undefined && !this.vm.host.isDirectMapped(pfn)) {
      this.s.tempRemaps++;
      this.exposed.add(pfn);
    }
  }

  private charge(): void {
    this.vm.sim.charge('vm.kvm_guest_access');
  }

  private trace(gpa: number, len: number, op: 'read' | 'write', b: Backing): void {
    if (this.vm.sim.trace.enabled) this.vm.sim.trace.emit('vm.kernel_access', { vm: this.vm.id, gpa, len, op, backing: b.kind });
  }
}

/**
 * A gfn_to_pfn_cache (virt/kvm/pfncache.c): a kernel mapping of one guest page that stays valid
 * across guest entries until something invalidates it — the mmu notifier for hva-backed memory,
 * guest_memfd's invalidation for gmem pages (seed 002), a memslot change (the generation), an
 * attribute change. Users check it before each use and refresh it when the check fails.
 */
export class GfnToPfnCache {
  private readonly ka: KernelAccess;
  private isActive = false;
  private isValid = false;
  private cachedGpa = 0;
  private cachedLen = 0;
  private generation = -1;
  private uhva: number | undefined;
  private cachedPfn: number | undefined;
  private gmem: GmemPfnCache | undefined;

  /** @internal Use `vm.kernelAccess.gpcInit()`. */
  constructor(ka: KernelAccess) {
    this.ka = ka;
  }

  /** Whether the cache is active (kvm_gpc_activate was called and kvm_gpc_deactivate was not). */
  get active(): boolean {
    return this.isActive;
  }

  /** The guest-physical address cached. */
  get gpa(): number {
    return this.cachedGpa;
  }

  /** The host page mapped, while valid. */
  get pfn(): number | undefined {
    return this.isValid ? this.cachedPfn : undefined;
  }

  /**
   * kvm_gpc_activate: starts caching `[gpa, gpa + len)`, which must not cross a page (EINVAL), and
   * resolves it at once (EFAULT if it cannot be: the cache stays active and a later refresh retries).
   */
  activate(gpa: number, len: number): void {
    checkSpan(gpa, len, 'kvm_gpc_activate');
    if ((gpa % PAGE_SIZE) + len > PAGE_SIZE) throw new KvmError('EINVAL', 'kvm_gpc_activate', `[0x${gpa.toString(16)}, +${len}) crosses a page`);
    if (this.isActive && gpa !== this.cachedGpa) this.unmap();
    this.cachedGpa = gpa;
    this.cachedLen = len;
    this.isActive = true;
    this.ka.count('gpcActivations');
    this.ka.track(this);
    this.traceOp('activate');
    this.refresh(len);
  }

  /** kvm_gpc_check: usable for `len` bytes without a refresh (active, valid, same memslot generation, inside the page). */
  check(len: number = this.cachedLen): boolean {
    if (!this.isActive || !this.isValid) return false;
    if (this.generation !== this.ka.memslots.generation(0)) return false;
    if ((this.cachedGpa % PAGE_SIZE) + len > PAGE_SIZE) return false;
    // guest_memfd invalidated the page under the cache (punch hole, conversion, release).
    if (this.gmem !== undefined && !this.gmem.valid) return false;
    return true;
  }

  /**
   * kvm_gpc_refresh: resolves the gpa again (memslot, then hva and GUP, or the gmem pfn with a
   * sharing reference). The new mapping is made before the old one goes (gpc_unmap after the
   * swap), so a refresh onto the same page does not remap it. EINVAL when inactive, EFAULT when the
   * gpa has no memslot or the page cannot be had.
   */
  refresh(len: number = this.cachedLen): void {
    if (!this.isActive) throw new KvmError('EINVAL', 'kvm_gpc_refresh', 'the cache is not active');
    if ((this.cachedGpa % PAGE_SIZE) + len > PAGE_SIZE) throw new KvmError('EINVAL', 'kvm_gpc_refresh', `${len} bytes from 0x${this.cachedGpa.toString(16)} cross a page`);
    const old = this.gmem;
    this.gmem = undefined;
    this.isValid = false;
    this.uhva = undefined;
    this.cachedPfn = undefined;
    try {
      this.generation = this.ka.memslots.generation(0);
      const { backing: b } = this.ka.backing(this.cachedGpa, 'kvm_gpc_refresh');
      this.ka.count('gpcRefreshes');
      if (b.kind === 'gmem') {
        // Held in the direct map already (by the old mapping or another cache), the page is not remapped.
        const before = pageOf(b.file, b.index);
        const remaps = b.file.noDirectMap && (before === undefined || !this.ka.host.isDirectMapped(before));
        const c = b.file.pfnCache(b.index);
        if (remaps) {
          this.ka.count('gpcRemaps');
          this.ka.noteExposed(c.pfn);
        }
        this.gmem = c;
        this.cachedPfn = c.pfn;
      } else {
        const hva = b.hva + (this.cachedGpa % PAGE_SIZE);
        // hva_to_pfn: fault the page in writable, as kvm-clock's cache is written.
        const r = this.ka.process.touch(hva, 1, 'write');
        const p = r.ok ? this.ka.process.pfnAt(hva) : undefined;
        if (p === undefined) throw new KvmError('EFAULT', 'kvm_gpc_refresh', `hva 0x${hva.toString(16)} cannot be faulted in`);
        this.uhva = b.hva;
        this.cachedPfn = p;
      }
      this.isValid = true;
      this.traceOp('refresh');
    } finally {
      old?.release();
    }
  }

  /** Writes `data` at `offset` within the cached range through the kernel mapping; the caller has checked. */
  write(offset: number, data: Uint8Array): void {
    if (!this.check(offset + data.length) || this.cachedPfn === undefined) {
      throw new KvmError('EINVAL', 'gpc write', 'the cache is not valid: kvm_gpc_check / kvm_gpc_refresh first');
    }
    this.ka.count('gpcWrites');
    this.ka.sim.charge('vm.kvm_guest_access');
    this.ka.host.writeBytes(this.cachedPfn, (this.cachedGpa % PAGE_SIZE) + offset, data);
  }

  /** kvm_gpc_deactivate: stops caching and drops the mapping (the gmem page leaves the direct map again). */
  deactivate(): void {
    if (!this.isActive) return;
    this.unmap();
    this.isActive = false;
    this.ka.untrack(this);
    this.traceOp('deactivate');
  }

  /** @internal The mmu notifier's invalidate_range_start for hva `[start, end)`. */
  invalidateHva(start: number, end: number): void {
    if (this.uhva !== undefined && this.uhva < end && this.uhva + PAGE_SIZE > start) this.invalidate();
  }

  /** @internal An attribute change over gfns `[start, end)`. */
  invalidateGfn(start: number, end: number): void {
    const gfn = Math.floor(this.cachedGpa / PAGE_SIZE);
    if (this.isActive && gfn >= start && gfn < end) this.invalidate();
  }

  private invalidate(): void {
    if (!this.isValid) return;
    this.isValid = false;
    this.traceOp('invalidate');
  }

  private unmap(): void {
    this.isValid = false;
    this.gmem?.release();
    this.gmem = undefined;
    this.uhva = undefined;
    this.cachedPfn = undefined;
  }

  private traceOp(op: 'activate' | 'refresh' | 'invalidate' | 'deactivate'): void {
    const sim = this.ka.sim;
    if (sim.trace.enabled) sim.trace.emit('vm.gpc', { gpa: this.cachedGpa, op, pfn: this.cachedPfn ?? -1 });
  }
}

/** The size of struct pvclock_vcpu_time_info, what kvm-clock's cache maps. */
export const PVCLOCK_VCPU_TIME_INFO_SIZE = 32;

/**
 * kvm_setup_guest_pvclock: writes the vCPU's pvclock_vcpu_time_info through its cache — version
 * made odd, the time fields, version made even again — refreshing the cache first when the check
 * fails. Returns false when the cache cannot be made valid (the update is skipped, as KVM does).
 */
export function kvmSetupGuestPvclock(gpc: GfnToPfnCache, systemTimeNs: number, version: number, ka: KernelAccess): boolean {
  if (!gpc.active) return false;
  while (!gpc.check(PVCLOCK_VCPU_TIME_INFO_SIZE)) {
    try {
      gpc.refresh(PVCLOCK_VCPU_TIME_INFO_SIZE);
    } catch {
      return false;
    }
  }
  const info = new Uint8Array(PVCLOCK_VCPU_TIME_INFO_SIZE);
  const view = new DataView(info.buffer);
  // struct pvclock_vcpu_time_info: u32 version, u32 pad0, u64 tsc_timestamp, u64 system_time, ...
  view.setUint32(0, (version * 2 + 1) >>> 0, true);
  gpc.write(0, info.subarray(0, 4));
  view.setBigUint64(16, BigInt(Math.floor(systemTimeNs)), true);
  gpc.write(8, info.subarray(8, PVCLOCK_VCPU_TIME_INFO_SIZE));
  view.setUint32(0, (version * 2 + 2) >>> 0, true);
  gpc.write(0, info.subarray(0, 4));
  ka.count('clockUpdates');
  return true;
}

/** The host page holding file page `index`, or undefined for a hole. */
function pageOf(file: GuestMemfd, index: number): number | undefined {
  const f = file.folioAt(index);
  return f === undefined ? undefined : f.pfn + (index - f.index);
}

function checkSpan(gpa: number, len: number, op: string): void {
  if (!Number.isSafeInteger(gpa) || gpa < 0 || !Number.isSafeInteger(len) || len <= 0 || !Number.isSafeInteger(gpa + len)) {
    throw new KvmError('EINVAL', op, `[${gpa}, +${len}) is not a guest-physical range`);
  }
}
