/**
 * pKVM's page ownership state machine, as the nVHE hypervisor at EL2 keeps it
 * (arch/arm64/kvm/hyp/nvhe/mem_protect.c, arch/arm64/kvm/hyp/include/nvhe/memory.h).
 *
 * Three kinds of component share physical memory: the HOST (the Linux kernel running KVM), HYP (the
 * hypervisor itself) and each protected GUEST. Per page and per component there is a 2-bit state:
 * OWNED, SHARED_OWNED, SHARED_BORROWED, or the meta-state NOPAGE (no access). Where the kernel
 * stores them, and so where the model does:
 *
 * - host and hyp states live in the hypervisor's vmemmap (`struct hyp_page`: `__host_state`,
 *   `__hyp_state_comp` stored complemented so that zeroed memory means hyp NOPAGE, a `refcount` of
 *   hyp pins). The model stores a record only for a page whose states differ from the zero state
 *   (host OWNED, hyp NOPAGE, refcount 0), so a 1 TiB host costs nothing until pages move;
 * - a guest's state lives in the software bits of its stage-2 PTE; an invalid PTE is NOPAGE. The
 *   model keeps one `gfn → { state, pfn }` map per VM.
 *
 * A page that is not the host's has an invalid host stage-2 entry annotated with its owner: the
 * record's `owner`. One table serves every VM of a host (like the RMP of @cocokit/arch-snp), found
 * with {@link memProtectForHost}.
 *
 * Every transition checks all its preconditions, then changes state: a refused transition
 * (a thrown {@link KvmError} with the errno EL2 returns) changes nothing. Errnos, after
 * arch-specs.md C.2 and C.5: EPERM for a page in the wrong state, EBUSY for a page pinned by hyp,
 * ENOENT for a guest PTE that is not valid, EINVAL for an address that is not memory.
 */
import { KvmError, ModelInvariantError, type HostMemoryView, type Pfn } from '@cocokit/sdk';
import type { PkvmPageState } from './constants.js';

/** A guest's stage-2 entry for one gfn, as EL2 sees it (its software bits and output address). */
export interface GuestPte {
  /** The guest's state: OWNED after a donation, SHARED_OWNED after the guest's MEM_SHARE. */
  readonly state: 'owned' | 'shared-owned';
  /**
   * The host page it maps; `undefined` for a shared page the host took back through guest_memfd
   * (a conversion to shared or a hole punch): the guest still holds the IPA shared, and whichever
   * page the core maps there now is the host's own (see {@link PkvmMemProtect.hostReclaimPage}).
   */
  readonly pfn: number | undefined;
}

/** The hypervisor's view of one host page (`struct hyp_page` plus the host stage-2 annotation). */
export interface HypPage {
  readonly host: PkvmPageState;
  readonly hyp: PkvmPageState;
  /** Hyp pins (hyp_pin_shared_mem): a page hyp is using cannot be unshared (EBUSY). */
  readonly refcount: number;
  /** The guest that owns the page and the gfn it is mapped at (the host stage-2 owner annotation). */
  readonly owner: { readonly vm: number; readonly gfn: number } | undefined;
}

interface MutablePage {
  host: PkvmPageState;
  hyp: PkvmPageState;
  refcount: number;
  owner: { vm: number; gfn: number } | undefined;
}

/** A host page nobody but the host has touched: the zero state of the vmemmap. */
const HOST_PAGE: HypPage = Object.freeze({ host: 'owned', hyp: 'nopage', refcount: 0, owner: undefined });

const hex = (n: number): string => `0x${n.toString(16)}`;

/** What a forced or teardown reclaim did to one page. */
export interface Reclaimed {
  readonly pfn: number;
  readonly gfn: number;
  /** Whether the page was the guest's alone (OWNED): its contents were wiped before the host got it. */
  readonly wiped: boolean;
}

/** The page ownership of one host, for all its protected VMs. */
export class PkvmMemProtect {
  /** Frames of host memory: what `addr_is_memory` accepts. */
  readonly nrFrames: number;
  private readonly host: HostMemoryView;
  private readonly pages = new Map<number, MutablePage>();
  private readonly guests = new Map<number, Map<number, GuestPte>>();
  private nextHandle = 1;

  constructor(host: HostMemoryView) {
    this.host = host;
    this.nrFrames = host.nrFrames;
  }

  // ------------------------------------------------------------------------------------------
  // reading

  /** The hypervisor's view of `pfn`. */
  page(pfn: number): HypPage {
    const p = this.pages.get(pfn);
    return p === undefined ? HOST_PAGE : { ...p, owner: p.owner && { ...p.owner } };
  }

  /** VM `vm`'s stage-2 entry at `gfn`, `undefined` for NOPAGE. */
  guestPte(vm: number, gfn: number): GuestPte | undefined {
    return this.guestTable(vm, 'guestPte').get(gfn);
  }

  /** The gfns VM `vm` holds, in no particular order. */
  guestGfns(vm: number): number[] {
    return [...this.guestTable(vm, 'guestGfns').keys()];
  }

  /** Pages not in the zero state (host OWNED, hyp NOPAGE). */
  get trackedPages(): number {
    return this.pages.size;
  }

  // ------------------------------------------------------------------------------------------
  // VMs

  /** __pkvm_init_vm: a new protected VM with an empty stage-2; returns its handle. */
  initVm(): number {
    const handle = this.nextHandle++;
    this.guests.set(handle, new Map());
    return handle;
  }

  /**
   * __pkvm_teardown_vm then __pkvm_reclaim_dying_guest_page for every page the VM still holds
   * (arch-specs.md C.2, pending upstream): each goes back to the host, wiped if it was the guest's
   * alone. Returns what was reclaimed.
   */
  teardownVm(vm: number): Reclaimed[] {
    const table = this.guestTable(vm, '__pkvm_teardown_vm');
    const out: Reclaimed[] = [];
    for (const [gfn, pte] of table) {
      if (pte.pfn !== undefined) out.push(this.reclaimOne(pte.pfn, gfn, pte.state === 'owned', false));
    }
    this.guests.delete(vm);
    return out;
  }

  // ------------------------------------------------------------------------------------------
  // host <-> hyp (mem_protect.c: __pkvm_host_share_hyp, __pkvm_host_unshare_hyp,
  // __pkvm_host_donate_hyp, __pkvm_hyp_donate_host, hyp_pin_shared_mem)

  /** __pkvm_host_share_hyp: host OWNED → SHARED_OWNED, hyp NOPAGE → SHARED_BORROWED. */
  hostShareHyp(pfn: number): void {
    const op = '__pkvm_host_share_hyp';
    const p = this.checkMemory(op, pfn);
    this.expect(op, pfn, p.host === 'owned', `the host's state is ${p.host}, not owned`);
    this.expect(op, pfn, p.hyp === 'nopage', `hyp's state is ${p.hyp}, not nopage`);
    this.write(pfn, { ...p, host: 'shared-owned', hyp: 'shared-borrowed' });
  }

  /** __pkvm_host_unshare_hyp: back to host OWNED, hyp NOPAGE; EBUSY while hyp holds a pin. */
  hostUnshareHyp(pfn: number): void {
    const op = '__pkvm_host_unshare_hyp';
    const p = this.checkMemory(op, pfn);
    this.expect(op, pfn, p.host === 'shared-owned' && p.hyp === 'shared-borrowed', `the page is host ${p.host} / hyp ${p.hyp}, not shared with hyp`);
    if (p.refcount > 0) throw new KvmError('EBUSY', op, `pfn ${hex(pfn)} is pinned by hyp ${p.refcount} time(s) (hyp_unpin_shared_mem first)`);
    this.write(pfn, { ...p, host: 'owned', hyp: 'nopage' });
  }

  /** hyp_pin_shared_mem: hyp takes a reference on a page the host shares with it. */
  hypPinSharedMem(pfn: number): void {
    const op = 'hyp_pin_shared_mem';
    const p = this.checkMemory(op, pfn);
    this.expect(op, pfn, p.host === 'shared-owned' && p.hyp === 'shared-borrowed', `the page is host ${p.host} / hyp ${p.hyp}, not shared with hyp`);
    this.write(pfn, { ...p, refcount: p.refcount + 1 });
  }

  /** hyp_unpin_shared_mem: drops a pin taken with {@link hypPinSharedMem}. */
  hypUnpinSharedMem(pfn: number): void {
    const op = 'hyp_unpin_shared_mem';
    const p = this.checkMemory(op, pfn);
    if (p.refcount === 0) throw new KvmError('EINVAL', op, `pfn ${hex(pfn)} is not pinned by hyp`);
    this.write(pfn, { ...p, refcount: p.refcount - 1 });
  }

  /** __pkvm_host_donate_hyp: host OWNED → NOPAGE (owner hyp), hyp NOPAGE → OWNED. */
  hostDonateHyp(pfn: number): void {
    const op = '__pkvm_host_donate_hyp';
    const p = this.checkMemory(op, pfn);
    this.expect(op, pfn, p.host === 'owned', `the host's state is ${p.host}, not owned`);
    this.expect(op, pfn, p.hyp === 'nopage', `hyp's state is ${p.hyp}, not nopage`);
    this.write(pfn, { ...p, host: 'nopage', hyp: 'owned' });
  }

  /** __pkvm_hyp_donate_host: hyp OWNED → NOPAGE, host NOPAGE → OWNED. */
  hypDonateHost(pfn: number): void {
    const op = '__pkvm_hyp_donate_host';
    const p = this.checkMemory(op, pfn);
    this.expect(op, pfn, p.hyp === 'owned' && p.host === 'nopage' && p.owner === undefined, `the page is host ${p.host} / hyp ${p.hyp}, not hyp's own`);
    this.write(pfn, { ...p, host: 'owned', hyp: 'nopage' });
  }

  // ------------------------------------------------------------------------------------------
  // host <-> protected guest

  /**
   * The checks of __pkvm_host_donate_guest(pfn, gfn) (pending upstream; in the Android common
   * kernel): `pfn` is memory (EINVAL), the host owns it alone with no hyp pin (EPERM), and the
   * guest's IPA is NOPAGE (EPERM). Throws the refusal; changes nothing.
   */
  checkHostDonateGuest(vm: number, pfn: number, gfn: number): void {
    const op = '__pkvm_host_donate_guest';
    const table = this.guestTable(vm, op);
    const p = this.checkMemory(op, pfn);
    this.expect(op, pfn, p.host === 'owned' && p.hyp === 'nopage', `the page is host ${p.host} / hyp ${p.hyp}, not the host's alone`);
    if (p.refcount > 0) throw new KvmError('EPERM', op, `pfn ${hex(pfn)} is pinned by hyp`);
    const pte = table.get(gfn);
    if (pte !== undefined) {
      throw new KvmError('EPERM', op, `gfn ${hex(gfn)} of VM ${vm} is already ${pte.state}${pte.pfn === undefined ? '' : ` (pfn ${hex(pte.pfn)})`}: the IPA must be NOPAGE`);
    }
  }

  /**
   * __pkvm_host_donate_guest: host OWNED → NOPAGE (the host stage-2 entry annotated with the guest
   * and gfn), guest NOPAGE → OWNED (RWX), after {@link checkHostDonateGuest}.
   */
  hostDonateGuest(vm: number, pfn: number, gfn: number): void {
    this.checkHostDonateGuest(vm, pfn, gfn);
    this.guestTable(vm, '__pkvm_host_donate_guest').set(gfn, Object.freeze({ state: 'owned', pfn }));
    this.write(pfn, { host: 'nopage', hyp: 'nopage', refcount: 0, owner: { vm, gfn } });
  }

  /**
   * The guest's MEM_SHARE at EL2 (__pkvm_guest_share_host): guest OWNED → SHARED_OWNED, host
   * NOPAGE → SHARED_BORROWED (the host stage-2 identity mapping comes back). ENOENT when the IPA is
   * NOPAGE (the hypervisor then asks the host to fault the page in, and the guest retries),
   * EPERM for any other state. Returns the pfn shared.
   */
  guestShareHost(vm: number, gfn: number): number {
    const op = '__pkvm_guest_share_host';
    const table = this.guestTable(vm, op);
    const pte = table.get(gfn);
    if (pte === undefined) throw new KvmError('ENOENT', op, `gfn ${hex(gfn)} of VM ${vm} is not mapped (NOPAGE)`);
    if (pte.state !== 'owned' || pte.pfn === undefined) throw new KvmError('EPERM', op, `gfn ${hex(gfn)} of VM ${vm} is ${pte.state}, not owned`);
    const p = this.page(pte.pfn);
    this.expect(op, pte.pfn, p.host === 'nopage', `the host's state is ${p.host}, not nopage`);
    table.set(gfn, Object.freeze({ state: 'shared-owned', pfn: pte.pfn }));
    this.write(pte.pfn, { ...p, host: 'shared-borrowed', owner: { vm, gfn } });
    return pte.pfn;
  }

  /**
   * The guest's MEM_UNSHARE at EL2 (__pkvm_guest_unshare_host): guest SHARED_OWNED → OWNED, host
   * SHARED_BORROWED → NOPAGE. ENOENT for a NOPAGE IPA, EPERM for any other state. A shared IPA
   * whose page the host already took back through guest_memfd ({@link GuestPte.pfn} undefined)
   * becomes NOPAGE: the next private access has the host donate a page again. Returns the pfn
   * taken from the host, if any.
   */
  guestUnshareHost(vm: number, gfn: number): number | undefined {
    const op = '__pkvm_guest_unshare_host';
    const table = this.guestTable(vm, op);
    const pte = table.get(gfn);
    if (pte === undefined) throw new KvmError('ENOENT', op, `gfn ${hex(gfn)} of VM ${vm} is not mapped (NOPAGE)`);
    if (pte.state !== 'shared-owned') throw new KvmError('EPERM', op, `gfn ${hex(gfn)} of VM ${vm} is ${pte.state}, not shared-owned`);
    if (pte.pfn === undefined) {
      table.delete(gfn);
      return undefined;
    }
    const p = this.page(pte.pfn);
    this.expect(op, pte.pfn, p.host === 'shared-borrowed', `the host's state is ${p.host}, not shared-borrowed`);
    table.set(gfn, Object.freeze({ state: 'owned', pfn: pte.pfn }));
    this.write(pte.pfn, { ...p, host: 'nopage', owner: { vm, gfn } });
    return pte.pfn;
  }

  /**
   * The guest's MEM_RELINQUISH at EL2 (__pkvm_guest_relinquish_to_host), then the host's reclaim
   * of the page (pkvm_host_reclaim_page → __pkvm_host_reclaim_page): the guest's entry is zapped and
   * the page is the host's again, wiped if it was the guest's alone. An IPA with nothing mapped is
   * a no-op. Returns what was relinquished, or `undefined`.
   */
  guestRelinquishToHost(vm: number, gfn: number): Reclaimed | undefined {
    const table = this.guestTable(vm, '__pkvm_guest_relinquish_to_host');
    const pte = table.get(gfn);
    if (pte === undefined) return undefined;
    if (pte.pfn === undefined) {
      table.delete(gfn);
      return undefined;
    }
    return this.reclaimOne(pte.pfn, gfn, pte.state === 'owned', false);
  }

  /**
   * The host takes `pfn` back from VM `vm` without the guest's consent (the pending "hypercall to
   * force reclaim of a protected page", and guest_memfd freeing or converting the page): a page the
   * guest owned alone is wiped first and its IPA becomes NOPAGE; a page the guest shared stays
   * shared in the guest's view, but no longer backed by this pfn. Returns `undefined` when `pfn`
   * is not the VM's.
   */
  hostReclaimPage(vm: number, pfn: number): Reclaimed | undefined {
    this.guestTable(vm, '__pkvm_host_reclaim_page');
    const p = this.pages.get(pfn);
    if (p?.owner?.vm !== vm) return undefined;
    const pte = this.guestPte(vm, p.owner.gfn);
    const shared = pte?.state === 'shared-owned';
    return this.reclaimOne(pfn, p.owner.gfn, !shared, shared);
  }

  // ------------------------------------------------------------------------------------------
  // host access

  /**
   * Whether a host access to `pfn` passes the host stage-2 (host_stage2_idmap): the host may touch
   * a page it owns or borrows; a page it has given away (NOPAGE) traps to EL2, which refuses to map
   * it. Returns the owner of a refused page, `undefined` when allowed.
   */
  hostAccessOwner(pfn: number): string | undefined {
    const p = this.pages.get(pfn);
    if (p === undefined || p.host !== 'nopage') return undefined;
    return p.owner === undefined ? 'hyp' : `VM ${p.owner.vm} (gfn ${hex(p.owner.gfn)})`;
  }

  // ------------------------------------------------------------------------------------------
  // invariants

  /**
   * The ownership invariants (arch-specs.md C.1; the pairings pkvm_ownership_selftest checks):
   * at most one owner per page, SHARED_OWNED on one side always paired with SHARED_BORROWED on the
   * other, hyp pins only on pages shared with hyp, and every guest PTE agreeing with the owner
   * annotation of its page.
   */
  checkInvariants(): void {
    const bad: (pfn: number, what: string) => never = (pfn, what) => {
      throw new ModelInvariantError('pkvm.ownership', `pfn ${hex(pfn)}: ${what}`);
    };
    for (const [pfn, p] of this.pages) {
      if (p.host === 'owned' && p.hyp === 'nopage' && p.refcount === 0 && p.owner === undefined) bad(pfn, 'a record in the zero state is stored');
      if (p.refcount > 0 && p.hyp !== 'shared-borrowed') bad(pfn, `hyp pins on a page hyp is ${p.hyp}`);
      if ((p.host === 'shared-owned') !== (p.hyp === 'shared-borrowed')) bad(pfn, `host ${p.host} with hyp ${p.hyp}`);
      if (p.owner === undefined) {
        if (p.host === 'shared-borrowed') bad(pfn, 'the host borrows a page nobody owns');
        if ((p.host === 'nopage') !== (p.hyp === 'owned')) bad(pfn, `host ${p.host} with hyp ${p.hyp} and no guest owner`);
        continue;
      }
      if (p.hyp !== 'nopage') bad(pfn, `guest-owned page is hyp ${p.hyp}`);
      const pte = this.guests.get(p.owner.vm)?.get(p.owner.gfn);
      if (pte?.pfn !== pfn) bad(pfn, `owner VM ${p.owner.vm} gfn ${hex(p.owner.gfn)} does not map it`);
      const expected = pte.state === 'owned' ? 'nopage' : 'shared-borrowed';
      if (p.host !== expected) bad(pfn, `guest ${pte.state} but host ${p.host}`);
    }
    for (const [vm, table] of this.guests) {
      for (const [gfn, pte] of table) {
        if (pte.pfn === undefined) {
          if (pte.state !== 'shared-owned') bad(-1, `VM ${vm} gfn ${hex(gfn)} is ${pte.state} with no page`);
          continue;
        }
        const owner = this.pages.get(pte.pfn)?.owner;
        if (owner?.vm !== vm || owner.gfn !== gfn) bad(pte.pfn, `VM ${vm} gfn ${hex(gfn)} maps it but the page's owner is ${JSON.stringify(owner)}`);
      }
    }
  }

  // ------------------------------------------------------------------------------------------
  // internals

  private guestTable(vm: number, op: string): Map<number, GuestPte> {
    const t = this.guests.get(vm);
    if (t === undefined) throw new KvmError('ENOENT', op, `no protected VM with handle ${vm}`);
    return t;
  }

  /** addr_is_memory: an integral pfn inside host memory, else EINVAL. Returns the page's state. */
  private checkMemory(op: string, pfn: number): HypPage {
    if (!Number.isSafeInteger(pfn) || pfn < 0 || pfn >= this.nrFrames) {
      throw new KvmError('EINVAL', op, `pfn ${String(pfn)} is not memory (host has ${this.nrFrames} frames)`);
    }
    return this.page(pfn);
  }

  private expect(op: string, pfn: number, ok: boolean, why: string): void {
    if (!ok) throw new KvmError('EPERM', op, `pfn ${hex(pfn)}: ${why}`);
  }

  /**
   * The page goes back to the host, wiped when `wipe`; the guest's PTE is zapped, or with
   * `keepSharedIpa` left shared with no page behind it.
   */
  private reclaimOne(pfn: number, gfn: number, wipe: boolean, keepSharedIpa: boolean): Reclaimed {
    const p = this.pages.get(pfn);
    const vm = p?.owner?.vm;
    if (vm === undefined) throw new ModelInvariantError('pkvm.ownership', `reclaiming pfn ${hex(pfn)}, which no guest owns`);
    const table = this.guestTable(vm, '__pkvm_host_reclaim_page');
    // hyp_poison_page: the guest's data never reaches the host.
    if (wipe) this.host.zero(pfn as Pfn);
    if (keepSharedIpa) table.set(gfn, Object.freeze({ state: 'shared-owned', pfn: undefined }));
    else table.delete(gfn);
    this.pages.delete(pfn);
    return { pfn, gfn, wiped: wipe };
  }

  private write(pfn: number, p: HypPage): void {
    if (p.host === 'owned' && p.hyp === 'nopage' && p.refcount === 0 && p.owner === undefined) this.pages.delete(pfn);
    else this.pages.set(pfn, { host: p.host, hyp: p.hyp, refcount: p.refcount, owner: p.owner && { ...p.owner } });
  }
}

const tables = new WeakMap<HostMemoryView, PkvmMemProtect>();

/** The one ownership table of `host`, shared by all its protected VMs (the hypervisor's vmemmap). */
export function memProtectForHost(host: HostMemoryView): PkvmMemProtect {
  let t = tables.get(host);
  if (t === undefined) tables.set(host, (t = new PkvmMemProtect(host)));
  return t;
}
