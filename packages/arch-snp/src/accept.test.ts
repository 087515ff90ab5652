import { uapi } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { exitOf, snpVm, step, valueOf } from '../test/snp-vm.js';

const P = 2 ** 18;
const G = 2 ** 16;

describe('lazy acceptance', () => {
  it('accepts a 2 MiB chunk on first use: PSC private (an exit), fault-in, one 2M PVALIDATE', () => {
    const t = snpVm();
    const gpa = (G + 37) * 4096;
    const exit = exitOf(step(() => t.guest.acceptOnFirstUse(gpa)));
    expect(exit.args).toEqual([G * 4096, 512, uapi.KVM_MAP_GPA_RANGE_ENCRYPTED | uapi.KVM_MAP_GPA_RANGE_PAGE_SZ_2M]);
    exit.ret = 0; // the VMM converted the range
    // The guest's PVALIDATE faults: nothing is mapped yet; the core faults the 2M folio in.
    expect(valueOf(step(() => t.guest.acceptOnFirstUse(gpa)))).toMatchObject({ status: 'npf', npf: { reason: 'not-present', gfn: G } });
    t.prepare(P, G, 9);
    expect(valueOf(step(() => t.guest.acceptOnFirstUse(gpa)))).toEqual({ status: 'accepted', now: true });
    expect(t.api.rmpEntry(P + 511)).toMatchObject({ validated: true, size: '2M' });
    expect(valueOf(step(() => t.guest.acceptOnFirstUse((G + 500) * 4096)))).toEqual({ status: 'accepted', now: false });
    expect(t.guest.isAccepted((G + 1) * 4096)).toBe(true);
    expect(t.guest.isAccepted((G + 512) * 4096)).toBe(false);
    expect(t.guest.access({ gpa, access: 'write', encrypted: true })).toBe('ok');
    t.vm.checkInvariants?.();
  });

  it('falls back to 4K PVALIDATE when the RMP entries are 4K', () => {
    const t = snpVm();
    exitOf(step(() => t.guest.acceptOnFirstUse(G * 4096))).ret = 0;
    for (let i = 0; i < 512; i++) t.prepare(P + i, G + i);
    expect(valueOf(step(() => t.guest.acceptOnFirstUse(G * 4096)))).toEqual({ status: 'accepted', now: true });
    expect(t.api.rmpEntry(P + 300)).toMatchObject({ validated: true, size: '4K' });
  });

  it('reports a failed PSC and starts over on the next call', () => {
    const t = snpVm();
    exitOf(step(() => t.guest.acceptOnFirstUse(G * 4096))).ret = 1;
    expect(valueOf(step(() => t.guest.acceptOnFirstUse(G * 4096)))).toMatchObject({ status: 'error' });
    expect(exitOf(step(() => t.guest.acceptOnFirstUse(G * 4096))).args[0]).toBe(G * 4096);
  });

  it('uses the chunk size of the VM options', () => {
    const t = snpVm({ vmOptions: { acceptChunkPages: 1024 } });
    expect(exitOf(step(() => t.guest.acceptOnFirstUse((G + 700) * 4096))).args).toEqual([
      G * 4096,
      1024,
      uapi.KVM_MAP_GPA_RANGE_ENCRYPTED | uapi.KVM_MAP_GPA_RANGE_PAGE_SZ_2M,
    ]);
  });
});
