import { uapi, type ArchGuestCall, type ArchGuestStep } from '@cocokit/sdk';
import { errnoOf } from '@cocokit/sdk/testing';
import { describe, expect, it } from 'vitest';
import { PVALIDATE, VMGEXIT_PSC_ERROR } from './constants.js';
import { snpGuestKernel } from './guest-kernel.js';
import type { PscBuffer } from './psc.js';
import { drive } from '../test/drive.js';
import { snpVm, type SnpTestVm } from '../test/snp-vm.js';
import { withNestedTables } from './test-helpers.js';

const BASE = 2 ** 18; // host pfn of gfn 0 in the test's guest_memfd
const G = 2 ** 16;
const gpa = (gfn: number): number => gfn * 4096;
const ENC = uapi.KVM_MAP_GPA_RANGE_ENCRYPTED;
const DEC = uapi.KVM_MAP_GPA_RANGE_DECRYPTED;
const SZ_2M = uapi.KVM_MAP_GPA_RANGE_PAGE_SZ_2M;
const SZ_4K = uapi.KVM_MAP_GPA_RANGE_PAGE_SZ_4K;

/** What kind of step each was: the op of an arch call, or 'npf'. */
const kinds = (steps: readonly ArchGuestStep[]): string[] => steps.map((s) => (s.kind === 'npf' ? 'npf' : s.op));
const rmp = (t: SnpTestVm, gfn: number) => t.api.rmpEntry(BASE + gfn);

describe('guestKernel.accept (snp_accept_memory: PSC private, then PVALIDATE)', () => {
  it('accepts 2 MiB with one 2M PSC entry and one 2M PVALIDATE, after the fault that maps it', () => {
    const t = withNestedTables(snpVm());
    const log = drive(t, snpGuestKernel.accept(gpa(G), 2 ** 21), { folioOrder: 9 });
    expect(log.outcome).toEqual({ ok: true });
    expect(kinds(log.steps)).toEqual(['psc', 'pvalidate', 'npf', 'pvalidate']);
    expect(log.steps[0]).toMatchObject({ kind: 'arch', op: 'psc', args: [{ hdr: { curEntry: 1, endEntry: 0 } }] });
    expect(log.steps[1]).toEqual({ kind: 'arch', op: 'pvalidate', args: [gpa(G), '2M', true] });
    expect(log.steps[2]).toEqual({ kind: 'npf', fault: { gpa: gpa(G), access: 'write', encrypted: true } });
    expect(log.exits.map((e) => e.args)).toEqual([[gpa(G), 512, ENC | SZ_2M]]);
    expect(rmp(t, G + 511)).toMatchObject({ assigned: true, size: '2M', validated: true });
    expect(t.bugs).toEqual([]);
    t.vm.checkInvariants();
  });

  it('falls back to 4K PVALIDATE when the RMP entries under a 2M entry are 4K (FAIL_SIZEMISMATCH)', () => {
    const t = withNestedTables(snpVm());
    const log = drive(t, snpGuestKernel.accept(gpa(G), 2 ** 21), { folioOrder: 0 });
    expect(log.outcome).toEqual({ ok: true });
    const k = kinds(log.steps);
    // 2M PVALIDATE, its fault, 2M again (SIZEMISMATCH), then per page: PVALIDATE, fault, PVALIDATE
    // (the first page was faulted in by the 2M attempt).
    expect(k.slice(0, 5)).toEqual(['psc', 'pvalidate', 'npf', 'pvalidate', 'pvalidate']);
    expect(k.filter((x) => x === 'npf')).toHaveLength(512);
    expect(rmp(t, G + 300)).toMatchObject({ size: '4K', validated: true });
    t.vm.checkInvariants();
  });

  it('is the lazy-acceptance loop of a guest: an unaccepted page raises #VC 0x404, isUnaccepted says so, accept, retry', () => {
    const t = withNestedTables(snpVm());
    // The first touch faults the page in (the core's fault path), then the RMP check raises #VC.
    t.prepare(BASE + G, G, 9);
    const access = t.access({ gpa: gpa(G + 3) + 8, access: 'write', private: true, pfn: BASE + G + 3, level: 1 });
    const vc = t.vm.guestAccess(access);
    expect(vc).toEqual({ kind: 'exception', vector: 29, name: '#VC', errorCode: 0x404, gpa: gpa(G + 3) + 8 });
    if (vc === 'ok' || vc.kind !== 'exception') throw new Error('expected an exception');
    expect(t.vm.guestKernel.isUnaccepted(vc)).toBe(true);
    expect(drive(t, t.vm.guestKernel.accept(gpa(G), 2 ** 21), { folioOrder: 9 }).outcome).toEqual({ ok: true });
    expect(t.vm.guestAccess(access)).toBe('ok');
  });

  it('isUnaccepted is true only for #VC with error code 0x404', () => {
    const k = snpGuestKernel;
    expect(k.isUnaccepted({ kind: 'exception', vector: 29, name: '#VC', errorCode: 0x404 })).toBe(true);
    expect(k.isUnaccepted({ kind: 'exception', vector: 29, name: '#VC', errorCode: 0x72 })).toBe(false);
    expect(k.isUnaccepted({ kind: 'exception', vector: 20, name: '#VE', errorCode: 0x404 })).toBe(false);
    expect(k.isUnaccepted({ kind: 'exception', vector: 29, name: '#VC' })).toBe(false);
  });
});

describe('guestKernel.convert (set_memory_decrypted / set_memory_encrypted → __set_pages_state)', () => {
  it('to shared: PVALIDATE rescind of every entry before the PSC; userspace punches the pages out of the RMP', () => {
    const t = withNestedTables(snpVm());
    drive(t, snpGuestKernel.accept(gpa(G), 2 ** 21), { folioOrder: 9 });
    const log = drive(t, snpGuestKernel.convert(gpa(G), 2 ** 21, false), { folioOrder: 9 });
    expect(log.outcome).toEqual({ ok: true });
    expect(kinds(log.steps)).toEqual(['pvalidate', 'psc']);
    expect(log.steps[0]).toEqual({ kind: 'arch', op: 'pvalidate', args: [gpa(G), '2M', false] });
    expect(log.exits.map((e) => e.args)).toEqual([[gpa(G), 512, DEC | SZ_2M]]);
    expect(rmp(t, G).assigned).toBe(false);
    t.vm.checkInvariants();
  });

  it('to private: the PSC first, then PVALIDATE validate (round trip)', () => {
    const t = withNestedTables(snpVm());
    drive(t, snpGuestKernel.accept(gpa(G), 2 ** 21), { folioOrder: 9 });
    drive(t, snpGuestKernel.convert(gpa(G), 2 ** 21, false), { folioOrder: 9 });
    const log = drive(t, snpGuestKernel.convert(gpa(G), 2 ** 21, true), { folioOrder: 9 });
    expect(log.outcome).toEqual({ ok: true });
    expect(kinds(log.steps)).toEqual(['psc', 'pvalidate', 'npf', 'pvalidate']);
    expect(rmp(t, G + 17)).toMatchObject({ assigned: true, size: '2M', validated: true });
  });

  it('uses 2M entries only where the range is 2M-aligned and at least 2M long; KVM merges same-size neighbours into one exit', () => {
    const t = withNestedTables(snpVm());
    const log = drive(t, snpGuestKernel.accept(gpa(G + 510), (2 + 512 + 4) * 4096), { folioOrder: 0 });
    expect(log.outcome).toEqual({ ok: true });
    const desc = (log.steps[0] as ArchGuestCall).args[0] as PscBuffer;
    expect(desc.entries.map((e) => [e.gfn - G, e.pageSize])).toEqual([
      [510, 0],
      [511, 0],
      [512, 1],
      [1024, 0],
      [1025, 0],
      [1026, 0],
      [1027, 0],
    ]);
    expect(log.exits.map((e) => e.args)).toEqual([
      [gpa(G + 510), 2, ENC | SZ_4K],
      [gpa(G + 512), 512, ENC | SZ_2M],
      [gpa(G + 1024), 4, ENC | SZ_4K],
    ]);
    expect(rmp(t, G + 700).validated).toBe(true);
    expect(rmp(t, G + 509).assigned).toBe(false);
    expect(rmp(t, G + 1028).assigned).toBe(false);
  });

  it('splits a range into descriptors of at most 253 entries (VMGEXIT_PSC_MAX_COUNT)', () => {
    const t = withNestedTables(snpVm());
    const log = drive(t, snpGuestKernel.accept(gpa(G + 1), 300 * 4096), { folioOrder: 0 });
    expect(log.outcome).toEqual({ ok: true });
    const descs = log.steps.filter((s): s is ArchGuestCall => s.kind === 'arch' && s.op === 'psc').map((s) => s.args[0] as PscBuffer);
    expect(descs.map((d) => d.entries.length)).toEqual([253, 47]);
    expect(log.exits.map((e) => e.args)).toEqual([
      [gpa(G + 1), 253, ENC | SZ_4K],
      [gpa(G + 254), 47, ENC | SZ_4K],
    ]);
  });

  it('to shared through a 4K entry under a 2M RMP entry: the SIZEM #NPF is yielded with KVM\'s zap, then PVALIDATE is issued again', () => {
    const t = withNestedTables(snpVm());
    drive(t, snpGuestKernel.accept(gpa(G), 2 ** 21), { folioOrder: 9 });
    const log = drive(t, snpGuestKernel.convert(gpa(G + 8), 4 * 4096, false), { folioOrder: 9 });
    expect(log.outcome).toEqual({ ok: true });
    expect(kinds(log.steps)).toEqual(['pvalidate', 'npf', 'pvalidate', 'pvalidate', 'pvalidate', 'pvalidate', 'psc']);
    expect(log.steps[1]).toEqual({ kind: 'npf', fault: { gpa: gpa(G + 8), access: 'write', encrypted: true }, zap: { start: G + 8, end: G + 8 + 512 } });
    expect(log.zaps).toEqual([{ start: G + 8, end: G + 520 }]);
    expect(rmp(t, G + 8).assigned).toBe(false);
    expect(rmp(t, G + 12)).toMatchObject({ assigned: true, size: '4K', validated: true });
    expect(t.bugs).toEqual([]);
    t.vm.checkInvariants();
  });

  it('runs on the vCPU it is driven on: the PSC in flight is that vCPU\'s', () => {
    const t = withNestedTables(snpVm());
    const log = drive(t, snpGuestKernel.accept(gpa(G), 4096), { vcpu: 7 });
    expect(log.outcome).toEqual({ ok: true });
    expect(log.exits).toHaveLength(1);
    expect(log.reissues).toBe(0);
  });
});

describe('guestKernel failures (where Linux calls sev_es_terminate)', () => {
  it('a PSC that userspace failed ends the operation (GHCB_TERM_PSC), before any PVALIDATE', () => {
    const t = withNestedTables(snpVm());
    const log = drive(t, snpGuestKernel.accept(gpa(G), 2 ** 21), { answer: () => 1 });
    expect(log.outcome).toEqual({ ok: false, reason: `SNP: PSC failed exit_info_2=0x${VMGEXIT_PSC_ERROR.GENERIC.toString(16)} (GHCB_TERM_PSC)` });
    expect(kinds(log.steps)).toEqual(['psc']);
  });

  it('a PSC with KVM_HC_MAP_GPA_RANGE exits off fails at once, with no exit', () => {
    const t = withNestedTables(snpVm({ enabledCaps: {} }));
    const log = drive(t, snpGuestKernel.convert(gpa(G), 4096, true));
    expect(log.outcome).toMatchObject({ ok: false, reason: expect.stringMatching(/PSC failed/) as unknown });
    expect(log.exits).toEqual([]);
  });

  it('PVALIDATE returning anything but 0 terminates, FAIL_NOUPDATE included (a page validated twice)', () => {
    const t = withNestedTables(snpVm());
    drive(t, snpGuestKernel.accept(gpa(G), 2 ** 21), { folioOrder: 9 });
    const log = drive(t, snpGuestKernel.accept(gpa(G), 2 ** 21), { folioOrder: 9 });
    expect(log.outcome).toEqual({
      ok: false,
      reason: `PVALIDATE failure: pfn: 0x${G.toString(16)}, action: 1, size: 2M, ret: ${PVALIDATE.FAIL_NOUPDATE} (FAIL_NOUPDATE) (GHCB_TERM_PVALIDATE)`,
    });
  });

  it('checks that the hypervisor does not move the PSC descriptor backwards', () => {
    const op = snpGuestKernel.convert(gpa(G), 2 * 4096, true);
    const first = op.next();
    const desc = (first.value as ArchGuestCall).args[0] as PscBuffer;
    // A "hypervisor" that reports success without progress, then grows end_entry.
    expect(op.next(0).value).toMatchObject({ kind: 'arch', op: 'psc' });
    desc.hdr.endEntry = 5;
    const end = op.next(0);
    expect(end.done).toBe(true);
    expect(end.value).toMatchObject({ ok: false, reason: expect.stringMatching(/going backward/) as unknown });
  });

  it('refuses a misaligned or negative range at the call (EINVAL); an empty one is done with no step', () => {
    expect(errnoOf(() => snpGuestKernel.convert(4095, 4096, true))).toBe('EINVAL');
    expect(errnoOf(() => snpGuestKernel.accept(0, 100))).toBe('EINVAL');
    expect(errnoOf(() => snpGuestKernel.accept(-4096, 4096))).toBe('EINVAL');
    expect(snpGuestKernel.accept(gpa(G), 0).next()).toEqual({ done: true, value: { ok: true } });
  });

  it('names only ops of the plugin\'s own guest API', () => {
    const t = withNestedTables(snpVm());
    const log = drive(t, snpGuestKernel.accept(gpa(G), 2 ** 21 + 4096), { folioOrder: 0 });
    const ops = new Set(log.steps.flatMap((s) => (s.kind === 'arch' ? [s.op] : [])));
    for (const op of ops) expect(Object.keys(t.guest)).toContain(op);
  });
});
