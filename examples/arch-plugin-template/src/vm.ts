/**
 * One VM of the toy arch: the hooks the core calls (guest_memfd lifecycle, host access, conversions,
 * guest access checks, exit completion) over three pieces of state:
 *
 * - the **owned bit** of each host page (`owned`: pfn → the gfn it backs), set by `gmemPrepare`
 *   when guest_memfd first maps a page private and cleared by `gmemInvalidate` when it leaves the
 *   guest; the host may not write an owned page (`hostAccess`), like SNP's RMP or pKVM's host
 *   stage-2;
 * - the guest's **acceptance** of each private frame (`accepted`), set by the guest's
 *   `accept(gpa)` and lost when the page leaves the guest or the frame is converted to shared; a
 *   private access to an unaccepted frame is a #VE (`guestAccess`), like TDX's PENDING pages;
 * - the **conversion request in flight** per vCPU (`inflight`): `share` / `unshare` exit to
 *   userspace with KVM_HC_MAP_GPA_RANGE, and `completeExit` hands the guest userspace's answer.
 *
 * State lives in plain Maps: fine for a toy. A plugin meant for 1 TiB guests keeps runs instead
 * (the sdk's `NumberRangeMap`, as @cocokit/arch-snp's RMP does).
 */
import {
  KvmError,
  PAGE_SIZE,
  gfn as toGfn,
  invariant,
  uapi,
  type ArchExit,
  type ArchGuestCall,
  type ArchGuestKernel,
  type ArchGuestOutcome,
  type ArchGuestStep,
  type ArchVmContext,
  type GfnRange,
  type GuestException,
  type HostFault,
  type PageOrder,
} from '@cocokit/sdk';
import type { ToyAcceptResult, ToyArchVm, ToyGuestApi, ToyVmApi } from './api.js';

/** The vector of the exception a private access to an unaccepted page raises: X86_TRAP_VE (#VE), as on TDX. */
export const TOY_UNACCEPTED_VECTOR = 20;

/** NPFs one page's acceptance may take in a row before the guest kernel gives up (the VMM never maps it). */
export const TOY_ACCEPT_NPF_LIMIT = 4;

const hex = (n: number): string => `0x${n.toString(16)}`;

/** The options a toy VM understands (`createVm({ type: 'toy', archOptions })`): none yet. */
const KNOWN_OPTIONS: readonly string[] = [];

/**
 * Creates the arch state of one toy VM. Throws {@link KvmError} `EINVAL` for an option it does
 * not know (the core wraps it in an `E_PLUGIN_CREATE_VM` ArchPluginError, and no VM is made).
 */
export function createToyVm(ctx: ArchVmContext<'toy'>): ToyArchVm {
  for (const key of Object.keys(ctx.options)) {
    if (!KNOWN_OPTIONS.includes(key)) throw new KvmError('EINVAL', 'KVM_CREATE_VM', `the toy arch has no option ${JSON.stringify(key)}`);
  }
  const { sim, host } = ctx;
  /** Owned host pages: pfn → the gfn it backs. */
  const owned = new Map<number, number>();
  /** Accepted guest frames. */
  const accepted = new Set<number>();
  /** The KVM_HC_MAP_GPA_RANGE exit each vCPU is waiting on. */
  const inflight = new Map<number, ArchExit>();

  const isFrame = (n: number): boolean => Number.isSafeInteger(n) && n >= 0;

  /** Gives back the owned pages among `pfns`; returns how many there were. */
  function release(pfns: Iterable<number>): number {
    let n = 0;
    for (const p of pfns) {
      const g = owned.get(p);
      if (g === undefined) continue;
      owned.delete(p);
      accepted.delete(g);
      n++;
    }
    return n;
  }

  /** The owned pfns in `[start, end)`, walking whichever is smaller: the range or the owned set. */
  function ownedIn(start: number, end: number): number[] {
    if (end - start <= owned.size) {
      const out: number[] = [];
      for (let p = start; p < end; p++) if (owned.has(p)) out.push(p);
      return out;
    }
    return [...owned.keys()].filter((p) => p >= start && p < end);
  }

  // ---- the guest side ------------------------------------------------------------------------

  /** KVM_HC_MAP_GPA_RANGE for `[gpa, gpa + size)`: exits to userspace, or returns the error the guest sees. */
  function mapGpa(gpa: number, size: number, toPrivate: boolean): number {
    sim.charge('toy.hypercall');
    if (!isFrame(gpa) || !isFrame(size) || gpa % PAGE_SIZE !== 0 || size % PAGE_SIZE !== 0 || size === 0) return -uapi.KVM_EINVAL;
    // KVM exits for KVM_HC_MAP_GPA_RANGE only when userspace asked for it (user_exit_on_hypercall).
    const bitmap = ctx.enabledCap(uapi.KVM_CAP_EXIT_HYPERCALL) ?? 0;
    if (Math.floor(bitmap / 2 ** uapi.KVM_HC_MAP_GPA_RANGE) % 2 !== 1) return -uapi.KVM_ENOSYS;
    const vcpu = ctx.vcpu;
    invariant(vcpu !== undefined, 'toy.map-gpa-outside-vcpu', () => 'share/unshare ran outside a guest operation');
    const npages = size / PAGE_SIZE;
    const attrs = toPrivate ? uapi.KVM_MAP_GPA_RANGE_ENCRYPTED : uapi.KVM_MAP_GPA_RANGE_DECRYPTED | uapi.KVM_MAP_GPA_RANGE_PAGE_SZ_4K;
    const exit: ArchExit = {
      reason: 'HYPERCALL',
      exitReason: uapi.KVM_EXIT_HYPERCALL,
      nr: uapi.KVM_HC_MAP_GPA_RANGE,
      args: [gpa, npages, attrs, 0, 0, 0],
      ret: 0,
    };
    inflight.set(vcpu, exit);
    if (sim.trace.enabled) sim.trace.emit('toy.map_gpa', { gpa, npages, private: toPrivate });
    return ctx.exit(exit);
  }

  const guestApi: ToyGuestApi = {
    accept(gpa) {
      if (!isFrame(gpa) || gpa % PAGE_SIZE !== 0) return { status: 'invalid', reason: `gpa ${gpa} is not a page-aligned guest physical address` };
      const g = gpa / PAGE_SIZE;
      const m = ctx.translate(toGfn(g), 'private');
      if (m === undefined) return { status: 'not-mapped' };
      if (owned.get(m.pfn) !== g) return { status: 'not-private' };
      sim.charge('toy.accept');
      accepted.add(g);
      if (sim.trace.enabled) sim.trace.emit('toy.accept', { gfn: g, pfn: m.pfn });
      return { status: 'ok' };
    },
    share: (gpa, size) => mapGpa(gpa, size, false),
    unshare: (gpa, size) => mapGpa(gpa, size, true),
  };

  const vmApi: ToyVmApi = {
    isOwned: (pfn) => owned.has(pfn),
    ownerGfn: (pfn) => {
      const g = owned.get(pfn);
      return g === undefined ? undefined : toGfn(g);
    },
    isAccepted: (gfn) => accepted.has(gfn),
    ownedPages: () => owned.size,
    acceptedPages: () => accepted.size,
  };

  return {
    capabilities: {
      privateMem: true,
      privateByDefault: true,
      // Private pages are mapped 4K only: acceptance is tracked per 4K frame.
      maxPrivateLevel: 0,
      mirrorRoot: false,
      inPlaceConversion: true,
    },

    gmemPrepare(pfn, gfn, order: PageOrder) {
      const op = 'toy gmemPrepare';
      const n = 2 ** order;
      if (!isFrame(pfn) || !isFrame(gfn)) throw new KvmError('EINVAL', op, `pfn ${pfn} / gfn ${gfn} is not a frame number`);
      if (pfn % n !== 0 || gfn % n !== 0) throw new KvmError('EINVAL', op, `pfn ${hex(pfn)} and gfn ${hex(gfn)} must be aligned to order ${order}`);
      if (pfn + n > host.nrFrames) throw new KvmError('EFAULT', op, `pfns [${hex(pfn)}, ${hex(pfn + n)}) are outside host memory`);
      // Check every page, then change any: a refusal changes nothing.
      let fresh = 0;
      for (let i = 0; i < n; i++) {
        const holder = owned.get(pfn + i);
        if (holder === undefined) fresh++;
        else if (holder !== gfn + i) throw new KvmError('EBUSY', op, `pfn ${hex(pfn + i)} is already owned for gfn ${hex(holder)}`);
      }
      for (let i = 0; i < n; i++) owned.set(pfn + i, gfn + i);
      if (fresh > 0) sim.charge('toy.own', fresh);
      if (sim.trace.enabled) sim.trace.emit('toy.own', { pfn, gfn, npages: n });
    },

    gmemInvalidate(start, end) {
      if (!isFrame(start) || !isFrame(end) || start > end || end > host.nrFrames) {
        throw new KvmError('EINVAL', 'toy gmemInvalidate', `[${start}, ${end}) is not a range of host frames`);
      }
      const pages = release(ownedIn(start, end));
      if (pages > 0) sim.charge('toy.release', pages);
      if (sim.trace.enabled) sim.trace.emit('toy.release', { start, end, pages });
    },

    maxMappingLevel: (_gfn, _pfn, isPrivate) => (isPrivate ? 0 : 2),

    hostAccess(pfn, write): 'ok' | HostFault {
      if (!write || !owned.has(pfn)) return 'ok';
      return { signal: 'SIGBUS', kind: 'stage2', reason: `pfn ${hex(pfn)} is owned by a toy guest: the host may not write it` };
    },

    beforeConvert(range: GfnRange, toPrivate) {
      if (toPrivate) return;
      // A frame that becomes shared is no longer the guest's private page: its acceptance goes.
      if (range.end - range.start <= accepted.size) {
        for (let g = range.start; g < range.end; g++) accepted.delete(g);
      } else {
        for (const g of [...accepted]) if (g >= range.start && g < range.end) accepted.delete(g);
      }
    },

    guestAccess(a): 'ok' | GuestException {
      if (!a.private || accepted.has(a.gfn)) return 'ok';
      return { kind: 'exception', vector: TOY_UNACCEPTED_VECTOR, name: '#VE', gpa: a.gpa };
    },

    completeExit(exit, vcpu) {
      // Only this vCPU's own conversion request is the toy's to complete.
      if (inflight.get(vcpu) !== exit) return undefined;
      inflight.delete(vcpu);
      const ret = exit['ret'];
      return { value: typeof ret === 'number' ? ret : -uapi.KVM_EINVAL };
    },

    guestKernel: createToyGuestKernel(),
    vmApi,
    guestApi,

    checkInvariants() {
      const ownedGfns = new Set<number>();
      for (const [p, g] of owned) {
        invariant(isFrame(p) && p < host.nrFrames && isFrame(g), 'toy.owned-frame', () => `owned entry ${p} → ${g} is not a frame pair`);
        invariant(!ownedGfns.has(g), 'toy.owned-gfn-unique', () => `gfn ${hex(g)} is backed by two owned pages`);
        ownedGfns.add(g);
      }
      for (const g of accepted) {
        invariant(ownedGfns.has(g), 'toy.accepted-is-owned', () => `gfn ${hex(g)} is accepted but no owned page backs it`);
      }
    },

    destroy() {
      // The core invalidates every guest page first; anything still owned goes back to the host now.
      release([...owned.keys()]);
      inflight.clear();
    },
  };
}

/** One call of the toy guest API, its op and arguments checked against {@link ToyGuestApi}. */
const call = <K extends keyof ToyGuestApi>(op: K, ...args: Parameters<ToyGuestApi[K]>): ArchGuestCall => ({ kind: 'arch', op, args });

const OK: ArchGuestOutcome = Object.freeze({ ok: true });
const failed = (reason: string): ArchGuestOutcome => ({ ok: false, reason });

function badRange(gpa: number, size: number): string | undefined {
  if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(size) || gpa < 0 || size <= 0) return `[${gpa}, +${size}) is not a range of addresses`;
  if (gpa % PAGE_SIZE !== 0 || size % PAGE_SIZE !== 0) return `[${hex(gpa)}, +${hex(size)}) is not page aligned`;
  return undefined;
}

/**
 * The toy guest OS's memory-encryption code (the contract's `guestKernel`), so arch-neutral guest
 * programs (`@cocokit/vm/guest`: firmware DMA flips, lazy acceptance) run on a toy VM. Built only
 * from the guest API: `share` / `unshare` to ask the host, `accept` page by page, and an NPF step
 * when a page to accept is not mapped yet (KVM faults it in; the guest retries).
 */
export function createToyGuestKernel(): ArchGuestKernel {
  function* accept(gpa: number, size: number): Generator<ArchGuestStep, ArchGuestOutcome, unknown> {
    const bad = badRange(gpa, size);
    if (bad !== undefined) return failed(`accept: ${bad}`);
    for (let p = gpa; p < gpa + size; p += PAGE_SIZE) {
      for (let npfs = 0; ; ) {
        const r = (yield call('accept', p)) as ToyAcceptResult;
        if (r.status === 'ok') break;
        if (r.status !== 'not-mapped') return failed(`accept(${hex(p)}): ${r.status === 'invalid' ? r.reason : 'the page is not private'}`);
        if (++npfs > TOY_ACCEPT_NPF_LIMIT) return failed(`accept(${hex(p)}): still not mapped after ${TOY_ACCEPT_NPF_LIMIT} nested page faults`);
        yield { kind: 'npf', fault: { gpa: p, access: 'write' } };
      }
    }
    return OK;
  }

  return {
    *convert(gpa, size, toPrivate) {
      const bad = badRange(gpa, size);
      if (bad !== undefined) return failed(`convert: ${bad}`);
      const ret = (yield toPrivate ? call('unshare', gpa, size) : call('share', gpa, size)) as number;
      if (ret !== 0) return failed(`KVM_HC_MAP_GPA_RANGE(${hex(gpa)}, ${size / PAGE_SIZE} pages) returned ${ret}`);
      // Pages that come back private must be accepted before use.
      return toPrivate ? yield* accept(gpa, size) : OK;
    },
    accept,
    isUnaccepted: (e) => e.vector === TOY_UNACCEPTED_VECTOR,
  };
}
