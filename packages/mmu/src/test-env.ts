/** Shared set-up for the MMU's tests (not exported from the package). */
import { archOk, createSim, uapi, type ArchResult, type ArchVm, type FaultClass, type GuestFault, type Sim } from '@cocokit/sdk';
import { MAP, PROT, createHost } from '@cocokit/host';
import { createGmemVm, type GmemProposals } from '@cocokit/gmem';
import { Memslots } from '@cocokit/memslot';
import { createMmu } from './mmu.js';
import type { MmuOptions } from './types.js';

export const MiB = 2 ** 20;
export const GiB = 2 ** 30;

/** What {@link setup} accepts. */
export interface EnvOptions extends Partial<Omit<MmuOptions, 'sim' | 'host' | 'memslots' | 'gmem' | 'process'>> {
  readonly privateMem?: boolean;
  readonly proposals?: Partial<GmemProposals>;
  readonly hostBytes?: number;
  readonly sim?: Sim;
  readonly noProcess?: boolean;
}

/** A sim, a host, a VMM process, guest_memfd, memslots and the MMU. */
export function setup(options: EnvOptions = {}) {
  const sim = options.sim ?? createSim();
  const host = createHost({ bytes: options.hostBytes ?? 2 * GiB, sim });
  const privateMem = options.privateMem ?? true;
  const gmem = createGmemVm({ host, sim, privateMem, proposals: options.proposals ?? {}, ...(options.arch ? { arch: options.arch } : {}) });
  const memslots = new Memslots({
    hasPrivateMem: privateMem,
    readonlyMem: true,
    nrAddressSpaces: 1,
    supportedAttributes: privateMem ? uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE : 0,
    binder: gmem.binder,
    vmToken: gmem.vmToken,
    sim,
  });
  const vmm = host.createProcess('vmm');
  const { privateMem: _p, proposals: _q, hostBytes: _h, sim: _s, noProcess, ...rest } = options;
  const mmu = createMmu({ ...rest, sim, host, memslots, gmem, ...(noProcess === true ? {} : { process: vmm }) });
  /** An anonymous-memory slot: mmap + KVM_SET_USER_MEMORY_REGION2. */
  const hvaSlot = (slot: number, gpa: number, size: number, flags = 0, prot = PROT.READ | PROT.WRITE) => {
    const hva = vmm.mmap({ length: size, prot, flags: MAP.PRIVATE | MAP.ANONYMOUS });
    memslots.setUserMemoryRegion2({ slot, flags, guest_phys_addr: gpa, memory_size: size, userspace_addr: hva });
    return { hva, slot: memslots.slot(0, slot)! };
  };
  /** A guest_memfd slot over a new file of `size` bytes. */
  const gmemSlot = (slot: number, gpa: number, size: number, fileFlags = 0, flags = 0, userspaceAddr = 0) => {
    const file = gmem.createGuestMemfd({ size, flags: fileFlags });
    memslots.setUserMemoryRegion2({ slot, flags: flags | uapi.KVM_MEM_GUEST_MEMFD, guest_phys_addr: gpa, memory_size: size, userspace_addr: userspaceAddr, guest_memfd: file.fd, guest_memfd_offset: 0 });
    return { file, slot: memslots.slot(0, slot)! };
  };
  const setPrivate = (gpa: number, size: number, priv = true) =>
    memslots.setMemoryAttributes({ address: gpa, size, attributes: priv ? uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE : 0 });
  const check = () => {
    mmu.checkInvariants();
    memslots.checkInvariants();
    gmem.checkInvariants();
  };
  return { sim, host, gmem, memslots, vmm, mmu, hvaSlot, gmemSlot, setPrivate, check };
}

/** 2 MiB hugetlb folios for `createGuestMemfd` (PROPOSED-CONV-v2 hugetlb). */
export const HUGETLB_2M = uapi.GUEST_MEMFD_FLAG_HUGETLB | (21 << uapi.GUEST_MEMFD_HUGE_SHIFT);

/**
 * A small fake arch: SNP-like classification by the fault's `encrypted` flag (or the gfn's current
 * kind when absent), optional mirror root with recording private-table hooks whose answers a test
 * can script.
 */
export function fakeArch(options: { mirror?: boolean; maxPrivateLevel?: 0 | 1 | 2; classify?: boolean } = {}) {
  const calls: string[] = [];
  const script: { link: ArchResult[]; set: ArchResult[]; remove: ArchResult[]; split: ArchResult[] } = { link: [], set: [], remove: [], split: [] };
  const next = (k: keyof typeof script): ArchResult => script[k].shift() ?? archOk();
  const arch: ArchVm = {
    capabilities: {
      privateMem: true,
      privateByDefault: false,
      maxPrivateLevel: options.maxPrivateLevel ?? 2,
      mirrorRoot: options.mirror ?? false,
      inPlaceConversion: false,
    },
    ...(options.classify === false
      ? {}
      : {
          classifyFault: (f: GuestFault): FaultClass => ({ gfn: Math.floor(f.gpa / 4096) as never, private: f.encrypted === true }),
        }),
    ...(options.mirror === true
      ? {
          linkPrivateTable: (g, l) => (calls.push(`link ${g} ${l}`), next('link')),
          setPrivateSpte: (g, l, p) => (calls.push(`set ${g} ${l} ${p}`), next('set')),
          removePrivateSpte: (g, l, p) => (calls.push(`remove ${g} ${l} ${p}`), next('remove')),
          splitPrivateSpte: (g, l) => (calls.push(`split ${g} ${l}`), next('split')),
        }
      : {}),
  } as ArchVm;
  return { arch, calls, script };
}
