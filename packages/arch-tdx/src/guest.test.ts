import { gfn, pfn, uapi, type Access, type ArchExit, type MappingLevel } from '@cocokit/sdk';
import { errnoOf } from '@cocokit/sdk/testing';
import { describe, expect, it } from 'vitest';
import { KVM_EXIT_HYPERCALL_LONG_MODE, TDX_MAP_GPA_MAX_LEN } from './guest.js';
import { SEPT_STATE } from './sept.js';
import { TDVMCALL_STATUS, TDX_STATUS as S } from './status.js';
import { GuestExit, createTestTd, expectExit, mapPrivate, type TestCoreOptions, type TestTd } from './test-support.js';
import type { TdxVmOptions } from './vm.js';

const G = 0x40000;
const P = 0x40000;
const MiB = 2 ** 20;

function runnable(options: TdxVmOptions = {}, core: TestCoreOptions = {}): TestTd {
  const t = createTestTd(options, core);
  t.vm.finalize();
  return t;
}

/**
 * A guest access as the core makes it once the frame is mapped: classified, then checked with the
 * mirror EPT's mapping (or `pfn`/`level` given explicitly, to play a core whose mirror is wrong).
 */
function access(t: TestTd, gpa: number, kind: Access = 'read', over: { pfn?: number; level?: MappingLevel; vcpu?: number } = {}) {
  const c = t.vm.classifyFault({ gpa, access: kind });
  const m = t.mirror.get(c.gfn);
  return t.vm.guestAccess({
    gpa,
    gfn: c.gfn,
    access: kind,
    private: c.private,
    pfn: pfn(over.pfn ?? m?.pfn ?? 0),
    level: over.level ?? m?.level ?? 0,
    vcpu: over.vcpu ?? 0,
  });
}

/** What the vCPU's call returns once `completeExit` answers it, or the next exit it takes. */
function complete(t: TestTd, exit: Record<string, unknown>, ret: number, vcpu = 0): { value: unknown } | { exit: Record<string, unknown> } | undefined {
  try {
    return t.onVcpu(vcpu, () => t.vm.completeExit({ ...(exit as ArchExit), ret }, vcpu));
  } catch (e) {
    if (e instanceof GuestExit) return { exit: e.exit as Record<string, unknown> };
    throw e;
  }
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

describe('guestAccess: what a guest access to memory meets', () => {
  it('a PENDING page raises #VE; after ACCEPT the access completes', () => {
    const t = runnable();
    mapPrivate(t.vm, G, P);
    const ve = access(t, G * 4096 + 16);
    expect(ve).toEqual({ kind: 'exception', vector: 20, name: '#VE', gpa: G * 4096 + 16 });
    expect(t.vm.guestKernel.isUnaccepted(ve as never)).toBe(true);
    t.vm.guestApi.accept(G * 4096);
    expect(access(t, G * 4096 + 16, 'write')).toBe('ok');
    expect(t.bugs).toEqual([]);
  });

  it('with SEPT_VE_DISABLE a PENDING access kills the TD (kvm_vm_dead): KVM_RUN fails with EIO, teardown still works', () => {
    const t = runnable({ septVeDisable: true });
    mapPrivate(t.vm, G, P);
    expect(() => access(t, G * 4096, 'read', { vcpu: 3 })).toThrow(/Guest access before accepting 0x40000000 on vCPU 3/);
    expect(t.bugs).toEqual(['Guest access before accepting 0x40000000 on vCPU 3']);
    expect(errnoOf(() => t.vm.guestApi.accept(G * 4096))).toBe('EIO');
    expect(errnoOf(() => access(t, G * 4096))).toBe('EIO');
    // kvm_vm_dead stops vCPUs, not the MMU: the pages can still be removed.
    expect(t.vm.removePrivateSpte(gfn(G), 0, pfn(P))).toEqual({ status: 'ok' });
    t.vm.checkInvariants();
  });

  it('a shared access is the shared EPT’s: ok; an initial (PAGE.ADDed) page needs no ACCEPT', () => {
    const t = createTestTd();
    // Upstream: INIT_MEM_REGION maps the page itself (tdx_gmem_post_populate).
    t.vm.vmApi.initMemRegion({ gpa: G * 4096, nrPages: 1, sources: [{ kind: 'zero' }] });
    t.vm.finalize();
    expect(access(t, 2 ** 47 + (G + 9) * 4096, 'write')).toBe('ok');
    expect(access(t, G * 4096, 'exec')).toBe('ok');
    expect(t.vm.guestApi.accept(G * 4096)).toEqual({ kind: 'status', status: S.TDX_PAGE_ALREADY_ACCEPTED });
  });

  it('no vCPU runs before KVM_TDX_FINALIZE_VM (tdx_vcpu_pre_run): EINVAL', () => {
    const t = createTestTd();
    t.vm.vmApi.initMemRegion({ gpa: G * 4096, nrPages: 1, sources: [{ kind: 'zero' }] });
    expect(errnoOf(() => access(t, G * 4096))).toBe('EINVAL');
    expect(errnoOf(() => t.vm.guestApi.accept(G * 4096))).toBe('EINVAL');
    expect(errnoOf(() => t.onVcpu(0, () => t.vm.guestApi.mapGpa(0, 4096)))).toBe('EINVAL');
  });

  it('a blocked leaf, or a frame neither the mirror nor the S-EPT maps, is an NPF handled as a write', () => {
    const t = runnable();
    mapPrivate(t.vm, G, P);
    expect(t.vm.vmApi.module.rangeBlock(G, 0)).toBe(S.TDX_SUCCESS);
    expect(access(t, G * 4096 + 8, 'read')).toEqual({ kind: 'npf', fault: { gpa: G * 4096 + 8, access: 'write' } });
    expect(access(t, (G + 1) * 4096, 'exec', { pfn: P + 1 })).toEqual({ kind: 'npf', fault: { gpa: (G + 1) * 4096, access: 'write' } });
    // A blocked S-EPT page above the leaf stops the walk too.
    mapPrivate(t.vm, G + 512, P + 512);
    expect(t.vm.vmApi.module.rangeBlock(G + 512, 1)).toBe(S.TDX_SUCCESS);
    expect(access(t, (G + 512) * 4096)).toEqual({ kind: 'npf', fault: { gpa: (G + 512) * 4096, access: 'write' } });
    expect(t.bugs).toEqual([]);
  });

  it('a mirror EPT that disagrees with the S-EPT (pfn or level) is a KVM_BUG_ON: EIO, the VM bugged', () => {
    const t = runnable();
    mapPrivate(t.vm, G, P);
    expect(errnoOf(() => access(t, G * 4096, 'read', { pfn: P + 1 }))).toBe('EIO');
    expect(t.bugs[0]).toMatch(/mirror EPT maps gfn 0x40000 to pfn 0x40001 at level 0 but the S-EPT to pfn 0x40000 at level 0/);
    expect(mapPrivate(t.vm, G + 1, P + 1)).toMatchObject({ status: 'error', errno: 'EIO' });

    const h = runnable({ hugePages: true });
    mapPrivate(h.vm, G, P, 1);
    expect(errnoOf(() => access(h, (G + 3) * 4096, 'read', { pfn: P + 3, level: 0 }))).toBe('EIO');
  });

  it('a page removed from the S-EPT behind KVM’s back while the mirror still maps it is a KVM_BUG_ON', () => {
    const t = runnable();
    mapPrivate(t.vm, G, P);
    const m = t.vm.vmApi.module;
    m.rangeBlock(G, 0);
    m.track();
    m.kickVcpus();
    expect(m.pageRemove(G, 0)).toBe(S.TDX_SUCCESS);
    expect(errnoOf(() => access(t, G * 4096))).toBe('EIO');
    expect(t.bugs[0]).toMatch(/mirror EPT maps gfn 0x40000 to pfn 0x40000 but the S-EPT has no leaf for it \(FREE at level 0\)/);
  });
});

describe('TDG.VP.VMCALL<MapGPA> → KVM_EXIT_HYPERCALL(KVM_HC_MAP_GPA_RANGE), completed by completeExit', () => {
  const mapGpa = (t: TestTd, gpa: number, size: number, vcpu = 0) => t.onVcpu(vcpu, () => t.vm.guestApi.mapGpa(gpa, size));

  it('without KVM_HC_MAP_GPA_RANGE in KVM_CAP_EXIT_HYPERCALL it is SUBFUNC_UNSUPPORTED (R11 = gpa)', () => {
    const unsupported = { status: TDVMCALL_STATUS.SUBFUNC_UNSUPPORTED, r11: 0x1000 };
    expect(mapGpa(runnable(), 0x1000, 0x1000)).toEqual(unsupported);
    // Another hypercall's bit is not enough.
    expect(mapGpa(runnable({}, { enabledCaps: { [uapi.KVM_CAP_EXIT_HYPERCALL]: 1 } }), 0x1000, 0x1000)).toEqual(unsupported);
    const t = runnable({}, { enabledCaps: { [uapi.KVM_CAP_EXIT_HYPERCALL]: 2 ** uapi.KVM_HC_MAP_GPA_RANGE + 1 } });
    expect(expectExit(t, () => t.vm.guestApi.mapGpa(0x1000, 0x1000))['reason']).toBe('HYPERCALL');
  });

  it('refuses wraps, mixed sides of the shared bit (INVALID_OPERAND) and misalignment (ALIGN_ERROR)', () => {
    const t = runnable({}, { mapGpaExit: true });
    expect(mapGpa(t, 2 ** 47 - 0x1000, 0x2000)).toEqual({ status: TDVMCALL_STATUS.INVALID_OPERAND, r11: 2 ** 47 - 0x1000 });
    expect(mapGpa(t, 0x1000, 0)).toEqual({ status: TDVMCALL_STATUS.INVALID_OPERAND, r11: 0x1000 });
    expect(mapGpa(t, 2 ** 48 - 0x1000, 0x2000).status).toBe(TDVMCALL_STATUS.INVALID_OPERAND);
    expect(mapGpa(t, 0x1800, 0x1000)).toEqual({ status: TDVMCALL_STATUS.ALIGN_ERROR, r11: 0x1800 });
    expect(t.exits).toEqual([]);
  });

  it('exits in 2 MiB chunks with the shared bit stripped; completeExit exits for the next chunk, then returns SUCCESS', () => {
    const t = runnable({}, { mapGpaExit: true });
    const shared = 2 ** 47;
    const first = expectExit(t, () => t.vm.guestApi.mapGpa(shared + 4 * MiB, 5 * MiB), 2);
    expect(first).toEqual({
      reason: 'HYPERCALL',
      exitReason: uapi.KVM_EXIT_HYPERCALL,
      nr: uapi.KVM_HC_MAP_GPA_RANGE,
      args: [4 * MiB, 512, uapi.KVM_MAP_GPA_RANGE_DECRYPTED, 0, 0, 0],
      ret: 0,
      flags: KVM_EXIT_HYPERCALL_LONG_MODE,
    });
    const second = complete(t, first, 0, 2);
    expect(second).toMatchObject({ exit: { reason: 'HYPERCALL', args: [6 * MiB, 512, 0, 0, 0, 0] } });
    const third = complete(t, (second as { exit: Record<string, unknown> }).exit, 0, 2);
    expect(third).toMatchObject({ exit: { args: [8 * MiB, 256, 0, 0, 0, 0] } });
    t.vm.checkInvariants();
    expect(complete(t, (third as { exit: Record<string, unknown> }).exit, 0, 2)).toEqual({ value: { status: TDVMCALL_STATUS.SUCCESS } });
    // Nothing in flight any more: not TDX's to complete.
    expect(complete(t, first, 0, 2)).toBeUndefined();
    t.vm.checkInvariants();
  });

  it('keeps each vCPU’s progress apart, keyed by ctx.vcpu', () => {
    const t = runnable({}, { mapGpaExit: true });
    const a = expectExit(t, () => t.vm.guestApi.mapGpa(0, 4 * MiB), 0);
    const b = expectExit(t, () => t.vm.guestApi.mapGpa(64 * MiB, 2 * MiB), 1);
    expect(a['args']).toEqual([0, 512, uapi.KVM_MAP_GPA_RANGE_ENCRYPTED, 0, 0, 0]);
    expect(complete(t, b, 0, 1)).toEqual({ value: { status: TDVMCALL_STATUS.SUCCESS } });
    expect(complete(t, a, 0, 0)).toMatchObject({ exit: { args: [2 * MiB, 512, uapi.KVM_MAP_GPA_RANGE_ENCRYPTED, 0, 0, 0] } });
  });

  it('a pending event stops it with RETRY and the next GPA; a non-zero ret fails it with INVALID_OPERAND', () => {
    const t = runnable({}, { mapGpaExit: true });
    const e = expectExit(t, () => t.vm.guestApi.mapGpa(0, 2 * TDX_MAP_GPA_MAX_LEN));
    t.vm.vmApi.injectPendingEvents(0);
    expect(complete(t, e, 0)).toEqual({ value: { status: TDVMCALL_STATUS.RETRY, r11: 2 * MiB } });
    // The guest re-issues from R11; the event was consumed.
    const again = expectExit(t, () => t.vm.guestApi.mapGpa(2 * MiB, 2 * MiB));
    expect(complete(t, again, 22)).toEqual({ value: { status: TDVMCALL_STATUS.INVALID_OPERAND, r11: 2 * MiB } });
    // R11 keeps the shared bit, as map_gpa_next does.
    const shared = expectExit(t, () => t.vm.guestApi.mapGpa(2 ** 47, 4096));
    expect(complete(t, shared, 1)).toEqual({ value: { status: TDVMCALL_STATUS.INVALID_OPERAND, r11: 2 ** 47 } });
    expect(() => t.vm.vmApi.injectPendingEvents(-1)).toThrow(RangeError);
  });

  it('completeExit leaves exits that are not a MapGPA of the vCPU to the core (undefined)', () => {
    const t = runnable({}, { mapGpaExit: true });
    const e = expectExit(t, () => t.vm.guestApi.mapGpa(0, 4096));
    expect(complete(t, { reason: 'MMIO' }, 0)).toBeUndefined();
    expect(complete(t, { ...e, nr: 1 }, 0)).toBeUndefined();
    expect(complete(t, e, 0, 7)).toBeUndefined();
    expect(complete(t, e, 0)).toEqual({ value: { status: TDVMCALL_STATUS.SUCCESS } });
  });

  it('a bugged VM fails the completion with EIO, as KVM_RUN does', () => {
    const t = runnable({}, { mapGpaExit: true });
    const e = expectExit(t, () => t.vm.guestApi.mapGpa(0, 4 * MiB));
    mapPrivate(t.vm, G, P);
    expect(mapPrivate(t.vm, G + 1, P).status).toBe('error'); // PAMT refuses a second gfn for the pfn: KVM_BUG_ON
    expect(errnoOf(() => complete(t, e, 0))).toBe('EIO');
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
