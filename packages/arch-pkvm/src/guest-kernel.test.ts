import { createArchTestVm, archExitOf } from '@cocokit/sdk/testing';
import { describe, expect, it } from 'vitest';
import pkvm, { SMCCC_RET, type PkvmGuestApi } from './index.js';

/**
 * A small stand-in for the core's vCPU: runs a guest-kernel operation, answering each forwarded
 * hypercall with `ret` and each NPF by donating a fresh page (what the fault path's gmemPrepare does).
 */
function drive(t: ReturnType<typeof createArchTestVm>, gen: Generator<unknown, unknown, unknown>, ret = 0): { outcome: unknown; exits: number; npfs: number } {
  let exits = 0;
  let npfs = 0;
  let next = gen.next();
  while (!next.done) {
    const step = next.value as { kind: string; op?: string; args?: unknown[]; fault?: { gpa: number } };
    if (step.kind === 'npf') {
      npfs++;
      const g = (step.fault?.gpa ?? 0) / 4096;
      t.vm.gmemPrepare?.(t.allocPfn(0), g as never, 0);
      next = gen.next(undefined);
      continue;
    }
    let value: unknown;
    try {
      value = t.onVcpu(0, () => (t.vm.guestApi as unknown as Record<string, (...a: unknown[]) => unknown>)[step.op ?? '']?.(...(step.args ?? [])));
    } catch (e) {
      const exit = archExitOf(e);
      if (exit === undefined) throw e;
      exits++;
      (exit as unknown as { ret: number }).ret = ret;
      value = t.vm.completeExit?.(exit, 0)?.value;
    }
    next = gen.next(value);
  }
  return { outcome: next.value, exits, npfs };
}

describe('the pKVM guest kernel', () => {
  it('shares a range one granule at a time, faulting pages in first, then takes it back', () => {
    const t = createArchTestVm(pkvm, 'pkvm');
    const k = t.vm.guestKernel;
    if (k === undefined) throw new Error('no guest kernel');
    expect(drive(t, k.convert(0x10000, 3 * 4096, false))).toEqual({ outcome: { ok: true }, exits: 3, npfs: 3 });
    expect(t.vm.checkInvariants?.()).toBeUndefined();
    expect(drive(t, k.convert(0x10000, 3 * 4096, true))).toEqual({ outcome: { ok: true }, exits: 3, npfs: 0 });
    expect(drive(t, k.accept(0, 4096))).toEqual({ outcome: { ok: true }, exits: 0, npfs: 0 });
    expect(k.isUnaccepted({ kind: 'exception', vector: 20, name: '#VE' })).toBe(false);
  });

  it('fails where Linux WARNs: userspace refused, or EL2 refused', () => {
    const t = createArchTestVm(pkvm, 'pkvm');
    const k = t.vm.guestKernel;
    if (k === undefined) throw new Error('no guest kernel');
    expect(drive(t, k.convert(0x10000, 4096, false), 1).outcome).toEqual({ ok: false, reason: 'MEM_SHARE of ipa 0x10000 returned -3' });
    expect(drive(t, k.convert(0x20000, 4096, true)).outcome).toEqual({ ok: false, reason: 'MEM_UNSHARE of ipa 0x20000 returned -3' });
    expect(() => k.convert(0x10001, 4096, false)).toThrow(/granule/);
  });

  it('checks the SMCCC arguments and answers HYP_MEMINFO', () => {
    const t = createArchTestVm(pkvm, 'pkvm');
    const g = t.vm.guestApi as PkvmGuestApi;
    expect(g.hypMeminfo()).toBe(4096);
    expect(g.hypMeminfo(1)).toBe(SMCCC_RET.INVALID_PARAMETER);
    expect(g.memShare(0x1001)).toBe(SMCCC_RET.INVALID_PARAMETER);
    expect(g.memUnshare(0x1000, 1)).toBe(SMCCC_RET.INVALID_PARAMETER);
    expect(g.memRelinquish(0x1000)).toBe(SMCCC_RET.SUCCESS);
    expect(t.exits).toEqual([]);
  });
});
