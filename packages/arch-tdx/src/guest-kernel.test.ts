import { gfn, pfn, uapi, type ArchGuestStep, type GuestFault } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { TDX_ACCEPT_EPT_VIOLATION_LIMIT, TDX_MAP_GPA_MAX_RETRIES } from './guest-kernel.js';
import { SEPT_STATE } from './sept.js';
import { TDVMCALL_STATUS, TDX_STATUS as S } from './status.js';
import { createTestTd, drive, faultIn, mapPrivate, type TestCoreOptions, type TestTd } from './test-support.js';
import type { TdxVmOptions } from './vm.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
/** A 2M-aligned private buffer. */
const BUF = 64 * MiB;
const SHARED = 2 ** 47;

function runnable(options: TdxVmOptions = {}, core: TestCoreOptions = { mapGpaExit: true }): TestTd {
  const t = createTestTd(options, core);
  t.vm.finalize();
  return t;
}

/** Faults in and accepts `[gpa, gpa + size)` at 4K, as a guest that has been using the memory. */
function privateAndAccepted(t: TestTd, gpa: number, size: number): void {
  for (let a = gpa; a < gpa + size; a += 4096) {
    faultIn(t, { gpa: a, access: 'write' });
    expect(t.vm.guestApi.accept(a)).toEqual({ kind: 'status', status: S.TDX_SUCCESS });
  }
}

const state = (t: TestTd, gpa: number, level = 0) => t.vm.vmApi.module.sept.state(gpa / 4096, level);

describe('guestKernel.convert to shared (set_memory_decrypted → tdx_enc_status_changed)', () => {
  it('is one MapGPA with the shared bit set, completed over 2 MiB exits; the VMM zaps the private pages', () => {
    const t = runnable();
    privateAndAccepted(t, BUF, 3 * MiB);
    const r = drive(t, t.vm.guestKernel.convert(BUF, 3 * MiB, false), { afterStep: () => t.vm.checkInvariants() });
    expect(r.outcome).toEqual({ ok: true });
    // One guest call: KVM splits it into exits and completes it; the guest sees one TDVMCALL.
    expect(r.calls).toEqual([`mapGpa(0x${(SHARED + BUF).toString(16)}, 0x300000)`]);
    expect(r.exits.map((e) => e['args'])).toEqual([
      [BUF, 512, uapi.KVM_MAP_GPA_RANGE_DECRYPTED, 0, 0, 0],
      [BUF + 2 * MiB, 256, uapi.KVM_MAP_GPA_RANGE_DECRYPTED, 0, 0, 0],
    ]);
    expect(r.exits.every((e) => e.reason === 'HYPERCALL' && e['nr'] === uapi.KVM_HC_MAP_GPA_RANGE)).toBe(true);
    expect(r.npfs).toEqual([]);
    expect(state(t, BUF)).toBe(SEPT_STATE.FREE);
    expect(t.mirror.size).toBe(0);
    expect(t.vm.vmApi.module.stats().privatePages).toBe(0);
    t.vm.checkInvariants();
  });

  it('fails with the TDVMCALL status when userspace did not enable the exit, or refused a chunk', () => {
    const off = runnable({}, {});
    const r = drive(off, off.vm.guestKernel.convert(BUF, 4096, false));
    expect(r.outcome).toEqual({ ok: false, reason: expect.stringMatching(/failed with TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED/) as unknown });
    const t = runnable();
    const refused = drive(t, t.vm.guestKernel.convert(BUF, 4 * MiB, false), { userspace: (e) => ((e['args'] as number[])[0] === BUF ? 0 : 22) });
    expect(refused.outcome).toEqual({ ok: false, reason: expect.stringMatching(/INVALID_OPERAND/) as unknown });
    expect(refused.exits).toHaveLength(2);
  });
});

describe('guestKernel.convert to private (set_memory_encrypted): MapGPA, then tdx_accept_memory', () => {
  it('upstream (4K private mappings): each 2M ACCEPT meets an EPT violation, then a 4K table (PAGE_SIZE_MISMATCH), so the guest falls back to 4K', () => {
    const t = runnable();
    const r = drive(t, t.vm.guestKernel.convert(BUF, 2 * MiB + 8192, true), { afterStep: () => t.vm.checkInvariants() });
    expect(r.outcome).toEqual({ ok: true });
    expect(r.exits.map((e) => e['args'])).toEqual([
      [BUF, 512, uapi.KVM_MAP_GPA_RANGE_ENCRYPTED, 0, 0, 0],
      [BUF + 2 * MiB, 2, uapi.KVM_MAP_GPA_RANGE_ENCRYPTED, 0, 0, 0],
    ]);
    const hex = (a: number) => `0x${a.toString(16)}`;
    expect(r.calls.slice(0, 6)).toEqual([
      `mapGpa(${hex(BUF)}, ${hex(2 * MiB + 8192)})`,
      `accept(${hex(BUF)}, 1)`, // EPT violation: KVM maps the first 4K page (and the table above it)
      `accept(${hex(BUF)}, 1)`, // re-issued: PAGE_SIZE_MISMATCH
      `accept(${hex(BUF)}, 0)`, // the fault above left this page PENDING: SUCCESS
      `accept(${hex(BUF + 4096)}, 0)`, // EPT violation
      `accept(${hex(BUF + 4096)}, 0)`, // re-issued: SUCCESS
    ]);
    // Every page faulted once, as a write on the private GPA.
    expect(r.npfs).toHaveLength(514);
    expect(r.npfs[0]).toEqual({ gpa: BUF, access: 'write' });
    for (const a of [BUF, BUF + 2 * MiB - 4096, BUF + 2 * MiB + 4096]) expect(state(t, a)).toBe(SEPT_STATE.MAPPED);
    expect(t.vm.vmApi.module.stats().privatePages).toBe(514);
  });

  it('with the huge-page series a 2M fault maps 2M PENDING and one 2M ACCEPT takes it', () => {
    const t = runnable({ hugePages: true });
    const npf = (f: GuestFault) => faultIn(t, f, f.gpa % (2 * MiB) === 0 ? 1 : 0);
    const r = drive(t, t.vm.guestKernel.convert(BUF, 4 * MiB, true), { npf });
    expect(r.outcome).toEqual({ ok: true });
    expect(r.calls.filter((c) => c.startsWith('accept'))).toEqual([
      `accept(0x${BUF.toString(16)}, 1)`,
      `accept(0x${BUF.toString(16)}, 1)`,
      `accept(0x${(BUF + 2 * MiB).toString(16)}, 1)`,
      `accept(0x${(BUF + 2 * MiB).toString(16)}, 1)`,
    ]);
    expect(r.npfs).toHaveLength(2);
    expect(state(t, BUF, 1)).toBe(SEPT_STATE.MAPPED);
    t.vm.checkInvariants();
  });

  it('round-trips: private → shared → private gives accepted private memory again', () => {
    const t = runnable();
    privateAndAccepted(t, BUF, 8192);
    expect(drive(t, t.vm.guestKernel.convert(BUF, 8192, false)).outcome).toEqual({ ok: true });
    expect(state(t, BUF)).toBe(SEPT_STATE.FREE);
    expect(drive(t, t.vm.guestKernel.convert(BUF, 8192, true)).outcome).toEqual({ ok: true });
    expect(state(t, BUF + 4096)).toBe(SEPT_STATE.MAPPED);
    t.vm.checkInvariants();
  });
});

describe('tdx_map_gpa: RETRY handling against an untrusted VMM', () => {
  it('resumes from R11 after KVM stops for a pending event', () => {
    const t = runnable();
    t.vm.vmApi.injectPendingEvents(0);
    const r = drive(t, t.vm.guestKernel.convert(BUF, 4 * MiB, false));
    expect(r.outcome).toEqual({ ok: true });
    expect(r.calls).toEqual([`mapGpa(0x${(SHARED + BUF).toString(16)}, 0x400000)`, `mapGpa(0x${(SHARED + BUF + 2 * MiB).toString(16)}, 0x200000)`]);
  });

  /** Feeds MapGPA results to the generator by hand, as a VMM that answers anything it likes. */
  function answerMapGpa(results: Array<{ status: bigint; r11?: number }>) {
    const t = runnable();
    const gen = t.vm.guestKernel.convert(BUF, 4 * MiB, true);
    const steps: ArchGuestStep[] = [];
    let r = gen.next();
    for (const result of results) {
      if (r.done) break;
      steps.push(r.value);
      r = gen.next(result);
    }
    return { steps, done: r.done ? r.value : undefined };
  }

  it(`gives up after ${TDX_MAP_GPA_MAX_RETRIES} RETRYs without progress, and on an R11 outside the request`, () => {
    const stuck = answerMapGpa(Array(TDX_MAP_GPA_MAX_RETRIES).fill({ status: TDVMCALL_STATUS.RETRY, r11: BUF }));
    expect(stuck.steps).toHaveLength(TDX_MAP_GPA_MAX_RETRIES);
    expect(stuck.done).toEqual({ ok: false, reason: expect.stringMatching(/no progress after 3 RETRYs/) as unknown });
    const outside = answerMapGpa([{ status: TDVMCALL_STATUS.RETRY, r11: BUF + 4 * MiB }]);
    expect(outside.done).toEqual({ ok: false, reason: expect.stringMatching(/outside the request/) as unknown });
    // Progress resets the count: two stalls, a step forward, two stalls, then success.
    const r = (r11: number) => ({ status: TDVMCALL_STATUS.RETRY, r11 });
    const progress = answerMapGpa([r(BUF), r(BUF), r(BUF + MiB), r(BUF + MiB), r(BUF + MiB), { status: TDVMCALL_STATUS.SUCCESS }]);
    expect(progress.steps.map((s) => (s.kind === 'arch' ? s.args : s.kind))).toEqual([
      [BUF, 4 * MiB],
      [BUF, 4 * MiB],
      [BUF, 4 * MiB],
      [BUF + MiB, 3 * MiB],
      [BUF + MiB, 3 * MiB],
      [BUF + MiB, 3 * MiB],
    ]);
    // The sixth answer (SUCCESS) leads to the ACCEPT of the range: the first accept step.
    expect(progress.done).toBeUndefined();
  });
});

describe('guestKernel.accept (accept_memory → tdx_accept_memory / try_accept_one)', () => {
  it('tries 1G first where aligned (OPERAND_INVALID in this module), then 2M', () => {
    const t = runnable({ hugePages: true });
    const npf = (f: GuestFault) => faultIn(t, f, 1);
    const r = drive(t, t.vm.guestKernel.accept(GiB, GiB), { npf });
    expect(r.outcome).toEqual({ ok: true });
    expect(r.calls.slice(0, 3)).toEqual(['accept(0x40000000, 2)', 'accept(0x40000000, 1)', 'accept(0x40000000, 1)']);
    expect(r.npfs).toHaveLength(512);
    expect(t.vm.vmApi.module.stats().privatePages).toBe(GiB / 4096);
  });

  it('lazy acceptance: a #VE on a PENDING page is "unaccepted", and accepting it makes the access complete', () => {
    const t = runnable();
    faultIn(t, { gpa: BUF, access: 'read' });
    const m = t.mirror.get(BUF / 4096);
    const read = () => t.vm.guestAccess({ gpa: BUF, gfn: gfn(BUF / 4096), access: 'read', private: true, pfn: pfn(m?.pfn ?? 0), level: 0, vcpu: 0 });
    const ve = read();
    expect(ve !== 'ok' && ve.kind === 'exception' && t.vm.guestKernel.isUnaccepted(ve)).toBe(true);
    expect(drive(t, t.vm.guestKernel.accept(BUF, 4096)).outcome).toEqual({ ok: true });
    expect(read()).toBe('ok');
    expect(t.vm.guestKernel.isUnaccepted({ kind: 'exception', vector: 29, name: '#VC', errorCode: 0x404 })).toBe(false);
  });

  it('fails as Linux does when a 4K ACCEPT does not succeed (already accepted, busy)', () => {
    const t = runnable();
    privateAndAccepted(t, BUF, 4096);
    expect(drive(t, t.vm.guestKernel.accept(BUF, 4096)).outcome).toEqual({ ok: false, reason: expect.stringMatching(/TDX_PAGE_ALREADY_ACCEPTED/) as unknown });
    mapPrivate(t.vm, BUF / 4096 + 1, t.allocPfn(0));
    t.vm.vmApi.module.injectBusy('TDG.MEM.PAGE.ACCEPT');
    expect(drive(t, t.vm.guestKernel.accept(BUF + 4096, 4096)).outcome).toEqual({ ok: false, reason: expect.stringMatching(/TDX_OPERAND_BUSY/) as unknown });
  });

  it(`reports a VMM that never maps the page after ${TDX_ACCEPT_EPT_VIOLATION_LIMIT} EPT violations instead of spinning`, () => {
    const t = runnable();
    const r = drive(t, t.vm.guestKernel.accept(BUF, 4096), { npf: () => undefined });
    expect(r.npfs).toHaveLength(TDX_ACCEPT_EPT_VIOLATION_LIMIT);
    expect(r.outcome).toEqual({ ok: false, reason: expect.stringMatching(/EPT violation 17 times in a row/) as unknown });
  });

  it('refuses ranges the guest cannot name, before any step', () => {
    const t = runnable();
    for (const [gpa, size] of [
      [BUF + 1, 4096],
      [BUF, 100],
      [-4096, 4096],
      [SHARED - 4096, 8192],
    ] as const) {
      const r = drive(t, t.vm.guestKernel.accept(gpa, size));
      expect(r.outcome.ok).toBe(false);
      expect(r.calls).toEqual([]);
      expect(drive(t, t.vm.guestKernel.convert(gpa, size, true)).calls).toEqual([]);
    }
    expect(drive(t, t.vm.guestKernel.accept(BUF, 0))).toMatchObject({ outcome: { ok: true }, calls: [] });
  });

  it('names only the plugin’s own guest-API ops, and checks what each step resumes with', () => {
    const t = runnable();
    const r = drive(t, t.vm.guestKernel.convert(BUF, 8192, true));
    expect(r.outcome).toEqual({ ok: true });
    const ops = new Set(r.calls.map((c) => c.slice(0, c.indexOf('('))));
    expect([...ops].sort()).toEqual(['accept', 'mapGpa']);
    for (const op of ops) expect(typeof (t.vm.guestApi as unknown as Record<string, unknown>)[op]).toBe('function');
    // A core that resumes a step with something else is broken: a model invariant, not a guest outcome.
    const bad = t.vm.guestKernel.accept(BUF, 4096);
    bad.next();
    expect(() => bad.next({ nope: true })).toThrow(/accept step resumed with/);
  });
});
