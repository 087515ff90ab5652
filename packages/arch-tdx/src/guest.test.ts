import { gfn, pfn, uapi } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { KVM_EXIT_HYPERCALL_LONG_MODE, TDX_MAP_GPA_MAX_LEN } from './guest.js';
import { SEPT_STATE } from './sept.js';
import { TDVMCALL_STATUS, TDX_STATUS as S } from './status.js';
import { createTestTd, expectExit, mapPrivate } from './test-support.js';

const G = 0x40000;
const P = 0x40000;
const MiB = 2 ** 20;

function runnable(options = {}) {
  const t = createTestTd(options);
  t.vm.finalize();
  return t;
}

describe('TDG.MEM.PAGE.ACCEPT', () => {
  it('PENDING → MAPPED, zeroing the page; a second ACCEPT is PAGE_ALREADY_ACCEPTED', () => {
    const t = runnable();
    const { vm } = t;
    mapPrivate(vm, G, P);
    t.host.writeBytes(pfn(P), 0, new Uint8Array([9, 9]));
    expect(vm.guestApi.accept(G * 4096)).toEqual({ kind: 'status', status: S.TDX_SUCCESS });
    expect(vm.vmApi.module.sept.state(G, 0)).toBe(SEPT_STATE.MAPPED);
    expect(t.host.readBytes(pfn(P), 0, 2)).toEqual(new Uint8Array(2));
    expect(vm.guestApi.accept(G * 4096)).toEqual({ kind: 'status', status: S.TDX_PAGE_ALREADY_ACCEPTED });
    vm.checkInvariants();
  });

  it('a 2M ACCEPT over 4K mappings is PAGE_SIZE_MISMATCH; a 4K ACCEPT inside an accepted 2M leaf is ALREADY_ACCEPTED', () => {
    const { vm } = runnable({ hugePages: true });
    mapPrivate(vm, G, P);
    expect(vm.guestApi.accept(G * 4096, 1)).toEqual({ kind: 'status', status: S.TDX_PAGE_SIZE_MISMATCH });
    mapPrivate(vm, G + 512, P + 512, 1);
    expect(vm.guestApi.accept((G + 512) * 4096, 1)).toEqual({ kind: 'status', status: S.TDX_SUCCESS });
    expect(vm.guestApi.accept((G + 513) * 4096, 0)).toEqual({ kind: 'status', status: S.TDX_PAGE_ALREADY_ACCEPTED });
  });

  it('a 4K ACCEPT inside a PENDING 2M leaf, or of an unmapped page, exits to KVM as an EPT violation', () => {
    const { vm } = runnable({ hugePages: true });
    mapPrivate(vm, G, P, 1);
    expect(vm.guestApi.accept((G + 1) * 4096, 0)).toEqual({ kind: 'ept-violation', fault: { gpa: (G + 1) * 4096, access: 'write' }, level: 0 });
    expect(vm.guestApi.accept((G + 2 ** 18) * 4096, 0)).toMatchObject({ kind: 'ept-violation' });
  });

  it('1G, a shared GPA, or a misaligned GPA is OPERAND_INVALID', () => {
    const { vm } = runnable();
    mapPrivate(vm, G, P);
    const invalid = { kind: 'status', status: S.TDX_OPERAND_INVALID };
    expect(vm.guestApi.accept(G * 4096, 2)).toEqual(invalid);
    expect(vm.guestApi.accept(2 ** 47 + G * 4096)).toEqual(invalid);
    expect(vm.guestApi.accept(G * 4096 + 8)).toEqual(invalid);
    expect(vm.guestApi.accept((G + 1) * 4096, 1)).toEqual(invalid); // 2M accept of a GPA not 2M-aligned
  });

  it('contention is OPERAND_BUSY and accepts nothing', () => {
    const { vm } = runnable();
    mapPrivate(vm, G, P);
    vm.vmApi.module.injectBusy('TDG.MEM.PAGE.ACCEPT');
    expect(vm.guestApi.accept(G * 4096)).toMatchObject({ kind: 'status' });
    expect(vm.vmApi.module.sept.state(G, 0)).toBe(SEPT_STATE.PENDING);
  });
});

describe('guest access to private memory', () => {
  it('a PENDING page raises #VE; after ACCEPT the access completes', () => {
    const { vm } = runnable();
    mapPrivate(vm, G, P);
    expect(vm.guestApi.access(G * 4096 + 16, 'read')).toEqual({ kind: 've', ve: { vector: 20, exitReason: 48, gpa: G * 4096 + 16 } });
    vm.guestApi.accept(G * 4096);
    expect(vm.guestApi.access(G * 4096 + 16, 'read')).toEqual({ kind: 'ok', pfn: P });
  });

  it('with SEPT_VE_DISABLE a PENDING access exits to KVM (pending EPT violation) instead', () => {
    const { vm } = runnable({ septVeDisable: true });
    mapPrivate(vm, G, P);
    expect(vm.guestApi.access(G * 4096, 'read')).toEqual({ kind: 'ept-violation', fault: { gpa: G * 4096, access: 'read' }, pending: true });
  });

  it('an unmapped private page is an EPT violation handled as a write; a shared GPA goes to the shared EPT', () => {
    const { vm } = runnable();
    expect(vm.guestApi.access(G * 4096, 'read')).toEqual({ kind: 'ept-violation', fault: { gpa: G * 4096, access: 'write' }, pending: false });
    expect(vm.guestApi.access(2 ** 47 + G * 4096, 'read')).toEqual({ kind: 'shared', gfn: G });
    expect(() => vm.guestApi.access(2 ** 48, 'read')).toThrow(/beyond GPAW/);
  });

  it('an initial (PAGE.ADDed) page needs no ACCEPT', () => {
    const { vm } = createTestTd();
    mapPrivate(vm, G, P);
    vm.vmApi.initMemRegion({ gpa: G * 4096, nrPages: 1, sources: [{ kind: 'zero' }] });
    vm.finalize();
    expect(vm.guestApi.access(G * 4096, 'exec')).toEqual({ kind: 'ok', pfn: P });
    expect(vm.guestApi.accept(G * 4096)).toEqual({ kind: 'status', status: S.TDX_PAGE_ALREADY_ACCEPTED });
  });
});

describe('TDG.VP.VMCALL<MapGPA> → KVM_HC_MAP_GPA_RANGE', () => {
  it('without KVM_CAP_EXIT_HYPERCALL it is SUBFUNC_UNSUPPORTED (R11 = gpa)', () => {
    const { vm } = runnable();
    expect(vm.guestApi.mapGpa(0x1000, 0x1000)).toEqual({ status: TDVMCALL_STATUS.SUBFUNC_UNSUPPORTED, r11: 0x1000 });
  });

  it('refuses wraps, mixed sides of the shared bit (INVALID_OPERAND) and misalignment (ALIGN_ERROR)', () => {
    const { vm } = runnable();
    vm.vmApi.setMapGpaExit(true);
    expect(vm.guestApi.mapGpa(2 ** 47 - 0x1000, 0x2000)).toEqual({ status: TDVMCALL_STATUS.INVALID_OPERAND, r11: 2 ** 47 - 0x1000 });
    expect(vm.guestApi.mapGpa(0x1000, 0)).toEqual({ status: TDVMCALL_STATUS.INVALID_OPERAND, r11: 0x1000 });
    expect(vm.guestApi.mapGpa(2 ** 48 - 0x1000, 0x2000).status).toBe(TDVMCALL_STATUS.INVALID_OPERAND);
    expect(vm.guestApi.mapGpa(0x1800, 0x1000)).toEqual({ status: TDVMCALL_STATUS.ALIGN_ERROR, r11: 0x1800 });
  });

  it('exits in 2 MiB chunks with the shared bit stripped, and completes with SUCCESS', () => {
    const t = runnable();
    const { vm } = t;
    vm.vmApi.setMapGpaExit(true);
    const shared = 2 ** 47;
    const first = expectExit(t, () => vm.guestApi.mapGpa(shared + 4 * MiB, 5 * MiB, 2));
    expect(first).toEqual({
      reason: 'KVM_EXIT_HYPERCALL',
      exitReason: uapi.KVM_EXIT_HYPERCALL,
      vcpu: 2,
      nr: uapi.KVM_HC_MAP_GPA_RANGE,
      args: [4 * MiB, 512, uapi.KVM_MAP_GPA_RANGE_DECRYPTED, 0, 0, 0],
      ret: 0,
      flags: KVM_EXIT_HYPERCALL_LONG_MODE,
    });
    const second = expectExit(t, () => vm.vmApi.completeMapGpa(2, 0));
    expect(second['args']).toEqual([6 * MiB, 512, 0, 0, 0, 0]);
    const third = expectExit(t, () => vm.vmApi.completeMapGpa(2, 0));
    expect(third['args']).toEqual([8 * MiB, 256, 0, 0, 0, 0]);
    expect(vm.vmApi.completeMapGpa(2, 0)).toEqual({ status: TDVMCALL_STATUS.SUCCESS });
    expect(() => vm.vmApi.completeMapGpa(2, 0)).toThrow(/no MapGPA in progress/);
    vm.checkInvariants();
  });

  it('a private request is ENCRYPTED; pending events stop it with RETRY and the next GPA; a failed chunk is INVALID_OPERAND', () => {
    const t = runnable();
    const { vm } = t;
    vm.vmApi.setMapGpaExit(true);
    const e = expectExit(t, () => vm.guestApi.mapGpa(0, 2 * TDX_MAP_GPA_MAX_LEN));
    expect(e['args']).toEqual([0, 512, uapi.KVM_MAP_GPA_RANGE_ENCRYPTED, 0, 0, 0]);
    expect(vm.vmApi.completeMapGpa(0, 0, true)).toEqual({ status: TDVMCALL_STATUS.RETRY, r11: 2 * MiB });
    // The guest re-issues from R11.
    expectExit(t, () => vm.guestApi.mapGpa(2 * MiB, 2 * MiB));
    expect(vm.vmApi.completeMapGpa(0, 22)).toEqual({ status: TDVMCALL_STATUS.INVALID_OPERAND, r11: 2 * MiB });
  });
});

describe('sparse S-EPT', () => {
  it('pages of a 1 TiB TD cost only the entries touched', () => {
    const { vm } = runnable();
    [0, 2 ** 27, 2 ** 28 - 1].forEach((g, i) => expect(mapPrivate(vm, g, P + i)).toEqual({ status: 'ok' }));
    expect(vm.vmApi.module.stats().entries).toEqual([3, 3, 3, 2]) // 4K leaves, 2M and 1G page tables, 512G entries (0..512G and 512G..1T);
    expect(vm.removePrivateSpte(gfn(0), 0, pfn(P))).toEqual({ status: 'ok' });
  });
});
