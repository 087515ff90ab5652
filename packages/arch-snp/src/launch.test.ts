import { pfn as toPfn, type PageSource } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { errnoOf } from '@cocokit/sdk/testing';
import { createPscBuffer } from './psc.js';
import { exitOf, snpVm, step, type SnpTestVm } from '../test/snp-vm.js';

const P = 2 ** 18;
const POLICY = 2 ** 17 + 2 ** 16; // RSVD_MBO + SMT
const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const PAGE1 = Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff);
const VMSA = new Uint8Array(4096).fill(0x11);
/** The vector of digest.test.ts (derivation and cross-checks there). */
const TINY_LAUNCH_DIGEST = 'f67ee303f0fc50d4c8767f5ab2a298710efb714744b0f4147b4c02302dedb3f7b260f6bc2253a93c63d4fe57a2ce0792';

const bytes = (b: Uint8Array): PageSource => ({ kind: 'bytes', bytes: b });

function tinyLaunch(t: SnpTestVm, page1 = PAGE1): Uint8Array {
  t.api.launchStart({ policy: POLICY });
  t.vm.populate?.(0 as never, toPfn(P + 1), bytes(page1), 'normal');
  t.vm.populate?.(1 as never, toPfn(P + 2), null, 'zero');
  t.api.addVmsa(P + 3, VMSA);
  const m = t.vm.finalize?.();
  if (!m) throw new Error('no measurement');
  expect(m.kind).toBe('snp-launch-digest');
  return m.digest;
}

describe('SNP launch', () => {
  it('measures the tiny launch to the ABI-derived vector', () => {
    const t = snpVm();
    expect(hex(tinyLaunch(t))).toBe(TINY_LAUNCH_DIGEST);
    expect(t.api.launchPhase).toBe('finished');
    t.vm.checkInvariants?.();
  });

  it('leaves launched pages validated, mutable, guest-owned and measured as written', () => {
    const t = snpVm();
    tinyLaunch(t);
    expect(t.api.rmpEntry(P + 1)).toMatchObject({ assigned: true, gfn: 0, validated: true, immutable: false, vmsa: false });
    expect(t.api.rmpEntry(P + 3)).toMatchObject({ assigned: true, gfn: 0xfffffffff, validated: true, vmsa: true });
    expect(t.host.readBytes(toPfn(P + 1))).toEqual(PAGE1);
    expect(t.vm.guestAccess(t.access({ gpa: 0x10, private: true, pfn: P + 1 }))).toBe('ok');
    expect(t.vm.hostAccess?.(toPfn(P + 1), true)).toMatchObject({ kind: 'rmp' });
  });

  it('changes the measurement when any measured byte changes', () => {
    const changed = PAGE1.slice();
    changed[4095] = (changed[4095] as number) ^ 1;
    expect(hex(tinyLaunch(snpVm(), changed))).not.toBe(TINY_LAUNCH_DIGEST);
  });

  it('refuses LAUNCH_START with a bad policy, or twice', () => {
    const t = snpVm();
    expect(errnoOf(() => t.api.launchStart({ policy: 0 }))).toBe('EINVAL');
    expect(errnoOf(() => t.api.launchStart({ policy: 2 ** 17 + 2 ** 18 }))).toBe('EINVAL');
    expect(errnoOf(() => t.api.launchStart({ policy: 2 ** 17 + 2 ** 40 }))).toBe('EINVAL');
    t.api.launchStart({ policy: 2 ** 17 });
    expect(errnoOf(() => t.api.launchStart({ policy: 2 ** 17 }))).toBe('EINVAL');
  });

  it('refuses populate outside a launch, for bad types, missing sources and assigned pages, with no change', () => {
    const t = snpVm();
    const pop = (gfn: number, pfn: number, src: PageSource | null, kind: string) => () => t.vm.populate?.(gfn as never, toPfn(pfn), src, kind);
    expect(errnoOf(pop(0, P, bytes(PAGE1), 'normal'))).toBe('EINVAL');
    t.api.launchStart({ policy: POLICY });
    expect(errnoOf(pop(0, P, bytes(PAGE1), 'vmsa'))).toBe('EINVAL');
    expect(errnoOf(pop(0, P, bytes(PAGE1), 'bogus'))).toBe('EINVAL');
    expect(errnoOf(pop(0, P, null, 'normal'))).toBe('EINVAL');
    expect(errnoOf(pop(0, 2 ** 30, bytes(PAGE1), 'normal'))).toBe('EINVAL');
    t.prepare(P, 5);
    expect(errnoOf(pop(0, P, bytes(PAGE1), 'normal'))).toBe('EEXIST');
    expect(t.api.launchDigest()).toEqual(new Uint8Array(48));
  });

  it('measures UNMEASURED, SECRETS and CPUID pages as zero contents, at their GPA', () => {
    const t = snpVm();
    t.api.launchStart({ policy: POLICY });
    t.vm.populate?.(4 as never, toPfn(P), bytes(PAGE1), 'unmeasured');
    t.vm.populate?.(5 as never, toPfn(P + 1), bytes(PAGE1), 'cpuid');
    t.vm.populate?.(6 as never, toPfn(P + 2), bytes(PAGE1), 'secrets');
    expect(t.host.readBytes(toPfn(P + 1))).toEqual(PAGE1);
    expect(t.host.readBytes(toPfn(P + 2))).toEqual(new Uint8Array(4096));
    const u = snpVm();
    u.api.launchStart({ policy: POLICY });
    u.vm.populate?.(4 as never, toPfn(P), bytes(new Uint8Array(4096)), 'unmeasured');
    u.vm.populate?.(5 as never, toPfn(P + 1), bytes(new Uint8Array(4096)), 'cpuid');
    u.vm.populate?.(6 as never, toPfn(P + 2), bytes(new Uint8Array(4096)), 'secrets');
    expect(hex(t.api.launchDigest())).toBe(hex(u.api.launchDigest()));
  });

  it('LAUNCH_UPDATE over a range reports partial progress and refuses bad parameters', () => {
    const t = snpVm();
    const resolve = (gfn: number) => ({ pfn: P + gfn, src: bytes(PAGE1) });
    expect(errnoOf(() => t.api.launchUpdate({ gfnStart: 0, npages: 1, type: 'normal' }, resolve))).toBe('EINVAL');
    t.api.launchStart({ policy: POLICY });
    expect(errnoOf(() => t.api.launchUpdate({ gfnStart: 0, npages: 1, type: 'vmsa' }, resolve))).toBe('EINVAL');
    expect(errnoOf(() => t.api.launchUpdate({ gfnStart: 0, npages: 1, type: 'normal', flags: 1 }, resolve))).toBe('EINVAL');
    expect(errnoOf(() => t.api.launchUpdate({ gfnStart: 0, npages: 0, type: 'normal' }, resolve))).toBe('EINVAL');
    t.prepare(P + 3, 99); // gfn 3's page is taken: the update stops there
    expect(t.api.launchUpdate({ gfnStart: 0, npages: 8, type: 'normal' }, resolve)).toEqual({ gfnStart: 3, npages: 5 });
    expect(errnoOf(() => t.api.launchUpdate({ gfnStart: 3, npages: 5, type: 'normal' }, resolve))).toBe('EEXIST');
    expect(t.api.launchUpdate({ gfnStart: 4, npages: 4, type: 'zero' }, (gfn) => ({ pfn: P + gfn, src: null }))).toEqual({ gfnStart: 8, npages: 0 });
    t.vm.checkInvariants?.();
  });

  it('refuses LAUNCH_FINISH before START or twice, bad host data, and a 2M-aligned VMSA page', () => {
    const t = snpVm();
    expect(errnoOf(() => t.vm.finalize?.())).toBe('EINVAL');
    t.api.launchStart({ policy: POLICY });
    expect(errnoOf(() => t.api.addVmsa(P, VMSA))).toBe('EINVAL');
    expect(errnoOf(() => t.api.addVmsa(P + 1, new Uint8Array(100)))).toBe('EINVAL');
    expect(errnoOf(() => t.api.launchFinish({ hostData: new Uint8Array(31) }))).toBe('EINVAL');
    expect(errnoOf(() => t.api.launchFinish({ flags: 1 }))).toBe('EINVAL');
    t.api.launchFinish({ hostData: new Uint8Array(32).fill(7) });
    expect(errnoOf(() => t.vm.finalize?.())).toBe('EINVAL');
    expect(errnoOf(() => t.vm.populate?.(0 as never, toPfn(P + 5), null, 'zero'))).toBe('EINVAL');
  });

  it('destroy (sev_vm_destroy: SNP_DECOMMISSION) gives the VMSA pages back to the hypervisor', () => {
    const t = snpVm();
    const ring = t.trace();
    tinyLaunch(t);
    // guest_memfd invalidates the guest's own pages before the VM goes (the contract's order).
    t.invalidate(P, P + 3);
    expect(t.vm.hostAccess(toPfn(P + 3), true)).toMatchObject({ kind: 'rmp' });
    const before = t.sim.now;
    t.vm.destroy();
    expect(t.api.rmpEntry(P + 3).assigned).toBe(false);
    expect(t.vm.hostAccess(toPfn(P + 3), true)).toBe('ok');
    expect(t.api.rmpStats().assignedPages).toBe(0);
    expect(t.api.launchPhase).toBe('decommissioned');
    // SNP_DECOMMISSION, then one SNP_PAGE_RECLAIM per VMSA.
    expect(t.sim.now - before).toBe(2 * t.sim.costs.get('snp.fw_command'));
    // The VMSA goes back through the firmware (SNP_PAGE_RECLAIM), not a KVM RMPUPDATE.
    expect(ring.filter('snp.rmpupdate').filter((e) => e.fields.op === 'shared')).toHaveLength(2);
    t.vm.checkInvariants();
  });

  it('destroy before any launch, or while a page state change waits for userspace, releases everything', () => {
    const t = snpVm();
    t.onVcpu(0);
    exitOf(step(() => t.guest.psc(createPscBuffer([{ gfn: 1, op: 'PRIVATE' }]))));
    const before = t.sim.now;
    t.vm.destroy();
    expect(t.api.launchPhase).toBe('decommissioned');
    // No LAUNCH_START, no guest context: snp_decommission_context has nothing to do.
    expect(t.sim.now).toBe(before);
    // Nothing is left in flight: the completion has nothing to complete.
    expect(t.vm.completeExit(t.exits[0] as never, 0)).toBeUndefined();
  });

  it('traces each launch step', () => {
    const t = snpVm();
    const ring = t.trace();
    tinyLaunch(t);
    expect(ring.filter('snp.launch_update').map((e) => e.fields.type)).toEqual(['normal', 'zero', 'vmsa']);
    expect(ring.filter('snp.launch_finish').map((e) => e.fields)).toEqual([{ vmsas: 1, pages: 3 }]);
    expect(ring.filter('snp.launch_start')).toHaveLength(1);
  });
});
