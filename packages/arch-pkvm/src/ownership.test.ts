import { createTestHostMemory, errnoOf } from '@cocokit/sdk/testing';
import { describe, expect, it } from 'vitest';
import { PkvmMemProtect } from './ownership.js';

/** Everything the table holds about `pfns` and VM `vm`'s `gfns`, to compare before and after a refusal. */
function snapshot(mp: PkvmMemProtect, vm: number, pfns: number[], gfns: number[]): string {
  return JSON.stringify({ pages: pfns.map((p) => mp.page(p)), ptes: gfns.map((g) => mp.guestPte(vm, g) ?? null), tracked: mp.trackedPages });
}

function setup(): { mp: PkvmMemProtect; vm: number; other: number; host: ReturnType<typeof createTestHostMemory> } {
  const host = createTestHostMemory(1024);
  const mp = new PkvmMemProtect(host);
  return { mp, vm: mp.initVm(), other: mp.initVm(), host };
}

describe('pKVM page ownership', () => {
  it('donates a page to a guest, shares it back, unshares it and relinquishes it', () => {
    const { mp, vm, host } = setup();
    host.writeBytes(5 as never, 0, new Uint8Array([1, 2, 3]));
    mp.hostDonateGuest(vm, 5, 0x40);
    expect(mp.page(5)).toEqual({ host: 'nopage', hyp: 'nopage', refcount: 0, owner: { vm, gfn: 0x40 } });
    expect(mp.guestPte(vm, 0x40)).toEqual({ state: 'owned', pfn: 5 });
    expect(mp.hostAccessOwner(5)).toMatch(/^VM /);
    expect(mp.guestShareHost(vm, 0x40)).toBe(5);
    expect(mp.page(5).host).toBe('shared-borrowed');
    expect(mp.guestPte(vm, 0x40)?.state).toBe('shared-owned');
    expect(mp.hostAccessOwner(5)).toBeUndefined();
    expect(mp.guestUnshareHost(vm, 0x40)).toBe(5);
    expect(mp.page(5).host).toBe('nopage');
    mp.checkInvariants();
    expect(mp.guestRelinquishToHost(vm, 0x40)).toEqual({ pfn: 5, gfn: 0x40, wiped: true });
    expect(host.readBytes(5 as never, 0, 3)).toEqual(new Uint8Array(3));
    expect(mp.page(5)).toEqual({ host: 'owned', hyp: 'nopage', refcount: 0, owner: undefined });
    expect(mp.guestPte(vm, 0x40)).toBeUndefined();
    expect(mp.trackedPages).toBe(0);
    mp.checkInvariants();
  });

  it('relinquishing an IPA with nothing mapped is a no-op', () => {
    const { mp, vm } = setup();
    expect(mp.guestRelinquishToHost(vm, 7)).toBeUndefined();
    expect(mp.trackedPages).toBe(0);
  });

  it('a forced reclaim wipes a private page, and keeps a shared IPA shared without its page', () => {
    const { mp, vm, host } = setup();
    mp.hostDonateGuest(vm, 1, 0x10);
    mp.hostDonateGuest(vm, 2, 0x11);
    host.writeBytes(2 as never, 0, new Uint8Array([9]));
    mp.guestShareHost(vm, 0x11);
    expect(mp.hostReclaimPage(vm, 1)).toEqual({ pfn: 1, gfn: 0x10, wiped: true });
    expect(mp.hostReclaimPage(vm, 2)).toEqual({ pfn: 2, gfn: 0x11, wiped: false });
    expect(host.readBytes(2 as never, 0, 1)).toEqual(new Uint8Array([9]));
    expect(mp.guestPte(vm, 0x10)).toBeUndefined();
    expect(mp.guestPte(vm, 0x11)).toEqual({ state: 'shared-owned', pfn: undefined });
    mp.checkInvariants();
    // Unsharing it makes the IPA NOPAGE: the next private access has the host donate again.
    expect(mp.guestUnshareHost(vm, 0x11)).toBeUndefined();
    expect(mp.guestPte(vm, 0x11)).toBeUndefined();
    mp.hostDonateGuest(vm, 3, 0x11);
    mp.checkInvariants();
  });

  it('shares with hyp, pins and unshares', () => {
    const { mp } = setup();
    mp.hostShareHyp(9);
    expect(mp.page(9)).toMatchObject({ host: 'shared-owned', hyp: 'shared-borrowed' });
    mp.hypPinSharedMem(9);
    expect(errnoOf(() => mp.hostUnshareHyp(9))).toBe('EBUSY');
    mp.hypUnpinSharedMem(9);
    mp.hostUnshareHyp(9);
    mp.hostDonateHyp(9);
    expect(mp.hostAccessOwner(9)).toBe('hyp');
    mp.hypDonateHost(9);
    expect(mp.trackedPages).toBe(0);
    mp.checkInvariants();
  });

  it('tears a VM down, giving every page back', () => {
    const { mp, vm, other } = setup();
    mp.hostDonateGuest(vm, 1, 0);
    mp.hostDonateGuest(vm, 2, 1);
    mp.guestShareHost(vm, 1);
    mp.hostDonateGuest(other, 3, 0);
    expect(mp.teardownVm(vm).map((r) => [r.pfn, r.wiped])).toEqual([[1, true], [2, false]]);
    expect(mp.trackedPages).toBe(1);
    expect(errnoOf(() => mp.guestPte(vm, 0))).toBe('ENOENT');
    mp.checkInvariants();
  });

  describe('every refused transition changes no state', () => {
    // Each case: set up a state, then a transition EL2 must refuse, with its errno.
    const cases: Array<{ what: string; errno: string; prep(mp: PkvmMemProtect, vm: number, other: number): void; refused(mp: PkvmMemProtect, vm: number, other: number): unknown }> = [
      { what: 'donate a page the host does not own', errno: 'EPERM', prep: (mp, vm) => mp.hostDonateGuest(vm, 1, 0), refused: (mp, _vm, other) => mp.hostDonateGuest(other, 1, 5) },
      { what: 'donate to an IPA already mapped', errno: 'EPERM', prep: (mp, vm) => mp.hostDonateGuest(vm, 1, 0), refused: (mp, vm) => mp.hostDonateGuest(vm, 2, 0) },
      { what: 'donate a page shared with hyp', errno: 'EPERM', prep: (mp) => mp.hostShareHyp(1), refused: (mp, vm) => mp.hostDonateGuest(vm, 1, 0) },
      { what: 'donate a pfn that is not memory', errno: 'EINVAL', prep: () => undefined, refused: (mp, vm) => mp.hostDonateGuest(vm, 1024, 0) },
      { what: 'donate to a VM that does not exist', errno: 'ENOENT', prep: () => undefined, refused: (mp) => mp.hostDonateGuest(99, 1, 0) },
      { what: 'share an IPA with nothing mapped', errno: 'ENOENT', prep: () => undefined, refused: (mp, vm) => mp.guestShareHost(vm, 0) },
      { what: 'share a page already shared', errno: 'EPERM', prep: (mp, vm) => { mp.hostDonateGuest(vm, 1, 0); mp.guestShareHost(vm, 0); }, refused: (mp, vm) => mp.guestShareHost(vm, 0) },
      { what: 'unshare a page not shared', errno: 'EPERM', prep: (mp, vm) => mp.hostDonateGuest(vm, 1, 0), refused: (mp, vm) => mp.guestUnshareHost(vm, 0) },
      { what: 'unshare an IPA with nothing mapped', errno: 'ENOENT', prep: () => undefined, refused: (mp, vm) => mp.guestUnshareHost(vm, 0) },
      { what: "share another VM's page", errno: 'ENOENT', prep: (mp, vm) => mp.hostDonateGuest(vm, 1, 0), refused: (mp, _vm, other) => mp.guestShareHost(other, 0) },
      { what: 'share with hyp a page the guest owns', errno: 'EPERM', prep: (mp, vm) => mp.hostDonateGuest(vm, 1, 0), refused: (mp) => mp.hostShareHyp(1) },
      { what: 'unshare from hyp a page never shared', errno: 'EPERM', prep: () => undefined, refused: (mp) => mp.hostUnshareHyp(1) },
      { what: 'unshare from hyp a pinned page', errno: 'EBUSY', prep: (mp) => { mp.hostShareHyp(1); mp.hypPinSharedMem(1); }, refused: (mp) => mp.hostUnshareHyp(1) },
      { what: 'donate to hyp a page the guest owns', errno: 'EPERM', prep: (mp, vm) => mp.hostDonateGuest(vm, 1, 0), refused: (mp) => mp.hostDonateHyp(1) },
      { what: "hyp donating to the host a guest's page", errno: 'EPERM', prep: (mp, vm) => mp.hostDonateGuest(vm, 1, 0), refused: (mp) => mp.hypDonateHost(1) },
      { what: 'unpin a page never pinned', errno: 'EINVAL', prep: (mp) => mp.hostShareHyp(1), refused: (mp) => mp.hypUnpinSharedMem(1) },
      { what: 'pin a page not shared with hyp', errno: 'EPERM', prep: () => undefined, refused: (mp) => mp.hypPinSharedMem(1) },
    ];
    for (const c of cases) {
      it(`${c.what}: ${c.errno}`, () => {
        const { mp, vm, other } = setup();
        c.prep(mp, vm, other);
        const before = snapshot(mp, vm, [0, 1, 2, 5], [0, 1, 5]) + snapshot(mp, other, [], [0, 1, 5]);
        expect(errnoOf(() => c.refused(mp, vm, other))).toBe(c.errno);
        expect(snapshot(mp, vm, [0, 1, 2, 5], [0, 1, 5]) + snapshot(mp, other, [], [0, 1, 5])).toBe(before);
        mp.checkInvariants();
      });
    }
  });
});
