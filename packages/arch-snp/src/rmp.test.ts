import { createTestHostMemory } from '@cocokit/sdk/testing';
import { isKvmError, isModelInvariantError } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { PSMASH, RMPUPDATE } from './constants.js';
import { Rmp, rmpForHost } from './rmp.js';

const guest = (gfn: number, asid = 1) => ({ asid, gfn, immutable: false });

describe('Rmp', () => {
  it('starts hypervisor-owned everywhere and costs nothing for a 1 TiB host', () => {
    const rmp = new Rmp(2 ** 28);
    expect(rmp.lookup(2 ** 28 - 1)).toMatchObject({ assigned: false, asid: 0, validated: false });
    expect(rmp.stats()).toEqual({ assignedPages: 0, runs: 0 });
    // 1000 contiguous pages assigned at contiguous gfns: one run.
    for (let p = 0; p < 1000; p++) expect(rmp.rmpupdate(2 ** 27 + p, '4K', guest(p))).toBe(RMPUPDATE.SUCCESS);
    expect(rmp.stats()).toEqual({ assignedPages: 1000, runs: 1 });
    rmp.checkInvariants();
  });

  it('RMPUPDATE assigns a 4K page: owner, GPA, size, never validated', () => {
    const rmp = new Rmp(4096);
    expect(rmp.rmpupdate(7, '4K', guest(0x33, 5))).toBe(RMPUPDATE.SUCCESS);
    expect(rmp.lookup(7)).toEqual({ pfn: 7, assigned: true, asid: 5, gfn: 0x33, size: '4K', validated: false, immutable: false, vmsa: false });
    rmp.setValidated(7, '4K', true);
    // Reassigning (even to the same owner) clears Validated.
    expect(rmp.rmpupdate(7, '4K', guest(0x33, 5))).toBe(RMPUPDATE.SUCCESS);
    expect(rmp.lookup(7).validated).toBe(false);
    expect(rmp.rmpupdate(7, '4K', null)).toBe(RMPUPDATE.SUCCESS);
    expect(rmp.lookup(7).assigned).toBe(false);
    expect(rmp.stats().assignedPages).toBe(0);
    rmp.checkInvariants();
  });

  it('RMPUPDATE assigns and returns a 2M entry as one', () => {
    const rmp = new Rmp(4096);
    expect(rmp.rmpupdate(512, '2M', guest(1024))).toBe(RMPUPDATE.SUCCESS);
    expect(rmp.lookup(512 + 300)).toMatchObject({ assigned: true, size: '2M', gfn: 1024 + 300 });
    expect(rmp.stats().assignedPages).toBe(512);
    expect(rmp.rmpupdate(512, '2M', null)).toBe(RMPUPDATE.SUCCESS);
    expect(rmp.stats()).toEqual({ assignedPages: 0, runs: 0 });
  });

  it('RMPUPDATE refuses bad input with FAIL_INPUT and changes nothing', () => {
    const rmp = new Rmp(4096);
    expect(rmp.rmpupdate(4096, '4K', guest(0))).toBe(RMPUPDATE.FAIL_INPUT);
    expect(rmp.rmpupdate(-1, '4K', guest(0))).toBe(RMPUPDATE.FAIL_INPUT);
    expect(rmp.rmpupdate(513, '2M', guest(512))).toBe(RMPUPDATE.FAIL_INPUT);
    expect(rmp.rmpupdate(512, '2M', guest(513))).toBe(RMPUPDATE.FAIL_INPUT);
    expect(rmp.rmpupdate(4096 - 256, '2M', guest(0))).toBe(RMPUPDATE.FAIL_INPUT);
    expect(rmp.rmpupdate(1, '4K', { asid: 0, gfn: 0, immutable: false })).toBe(RMPUPDATE.FAIL_INPUT);
    expect(rmp.stats().assignedPages).toBe(0);
  });

  it('RMPUPDATE refuses an Immutable entry (FAIL_PERMISSION) and a VMSA (FAIL_INUSE)', () => {
    const rmp = new Rmp(4096);
    rmp.rmpupdate(3, '4K', { asid: 1, gfn: 3, immutable: true });
    expect(rmp.rmpupdate(3, '4K', null)).toBe(RMPUPDATE.FAIL_PERMISSION);
    rmp.firmwareLaunch(3, true); // now a Guest-Valid VMSA
    expect(rmp.lookup(3)).toMatchObject({ validated: true, immutable: false, vmsa: true });
    expect(rmp.rmpupdate(3, '4K', null)).toBe(RMPUPDATE.FAIL_INUSE);
    rmp.firmwareReclaim(3);
    expect(rmp.lookup(3).assigned).toBe(false);
    rmp.checkInvariants();
  });

  it('RMPUPDATE refuses 4K-under-2M and 2M-over-4K overlaps (FAIL_OVERLAP)', () => {
    const rmp = new Rmp(4096);
    rmp.rmpupdate(0, '2M', guest(0));
    expect(rmp.rmpupdate(5, '4K', null)).toBe(RMPUPDATE.FAIL_OVERLAP);
    expect(rmp.rmpupdate(5, '4K', guest(5))).toBe(RMPUPDATE.FAIL_OVERLAP);
    rmp.rmpupdate(1024 + 9, '4K', guest(9));
    expect(rmp.rmpupdate(1024, '2M', guest(0))).toBe(RMPUPDATE.FAIL_OVERLAP);
    expect(rmp.rmpupdate(1024, '2M', null)).toBe(RMPUPDATE.FAIL_OVERLAP);
    expect(rmp.stats().assignedPages).toBe(513);
  });

  it('PSMASH splits a 2M entry into 512 4K entries, keeping Validated and the GPAs', () => {
    const rmp = new Rmp(4096);
    rmp.rmpupdate(512, '2M', guest(2048, 3));
    rmp.setValidated(512, '2M', true);
    expect(rmp.psmash(512)).toBe(PSMASH.SUCCESS);
    for (const p of [512, 700, 1023]) {
      expect(rmp.lookup(p)).toMatchObject({ size: '4K', validated: true, asid: 3, gfn: 2048 + p - 512 });
    }
    // Now each 4K entry can be returned alone.
    expect(rmp.rmpupdate(700, '4K', null)).toBe(RMPUPDATE.SUCCESS);
    expect(rmp.stats().assignedPages).toBe(511);
    rmp.checkInvariants();
  });

  it('PSMASH refuses: FAIL_INPUT, FAIL_BADADDR, FAIL_PERMISSION', () => {
    const rmp = new Rmp(4096);
    expect(rmp.psmash(5)).toBe(PSMASH.FAIL_INPUT);
    expect(rmp.psmash(4096)).toBe(PSMASH.FAIL_INPUT);
    expect(rmp.psmash(0)).toBe(PSMASH.FAIL_BADADDR); // unassigned
    rmp.rmpupdate(0, '4K', guest(0));
    expect(rmp.psmash(0)).toBe(PSMASH.FAIL_BADADDR); // already 4K
    rmp.rmpupdate(512, '2M', { asid: 1, gfn: 512, immutable: true });
    expect(rmp.psmash(512)).toBe(PSMASH.FAIL_PERMISSION);
  });

  it('lookup refuses a pfn outside coverage with EINVAL', () => {
    const rmp = new Rmp(16);
    let err: unknown;
    try {
      rmp.lookup(16);
    } catch (e) {
      err = e;
    }
    expect(isKvmError(err, 'EINVAL')).toBe(true);
    expect(() => new Rmp(0)).toThrow(/positive/);
  });

  it('checkInvariants catches a corrupted table', () => {
    const rmp = new Rmp(4096);
    rmp.rmpupdate(0, '2M', guest(0));
    // Corrupt it the only way the API allows from outside: not at all. Reach into the map instead.
    (rmp as unknown as { entries: { set(a: number, b: number, v: unknown): void } }).entries.set(0, 10, {
      asid: 1, gfnDelta: 0, size: '2M', validated: true, immutable: false, vmsa: false,
    });
    let err: unknown;
    try {
      rmp.checkInvariants();
    } catch (e) {
      err = e;
    }
    expect(isModelInvariantError(err)).toBe(true);
  });

  it('is one table per host, shared by its VMs, with fresh ASIDs', () => {
    const host = createTestHostMemory(2 ** 20);
    const a = rmpForHost(host);
    expect(rmpForHost(host)).toBe(a);
    expect(rmpForHost(createTestHostMemory(2 ** 20))).not.toBe(a);
    expect(a.allocAsid()).not.toBe(a.allocAsid());
  });
});
