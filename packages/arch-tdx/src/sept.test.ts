import { isModelInvariantError } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { SEPT_STATE, SecureEpt, septStateName } from './sept.js';

describe('SecureEpt', () => {
  it('stores entries sparsely per level; absent entries are FREE', () => {
    const s = new SecureEpt(3);
    expect(s.state(12345, 0)).toBe(SEPT_STATE.FREE);
    s.set(0, 3, SEPT_STATE.NL_MAPPED);
    s.set(0, 2, SEPT_STATE.NL_MAPPED);
    s.set(512, 1, SEPT_STATE.NL_MAPPED);
    s.set(513, 0, SEPT_STATE.PENDING, 0x777);
    expect(s.entry(513, 0)).toEqual({ level: 0, gfn: 513, state: SEPT_STATE.PENDING, pfn: 0x777 });
    expect(s.walkStop(513, 0)).toBe(-1);
    expect(s.walkStop(0, 0)).toBe(1);
    expect(s.hasChildren(512, 1)).toBe(true);
    expect(s.count(0)).toBe(1);
    s.checkInvariants();
    s.set(513, 0, SEPT_STATE.FREE);
    expect(s.count(0)).toBe(0);
  });

  it('checkInvariants finds a leaf without a linked parent, a misaligned 2M leaf, and a 4K page table', () => {
    const orphan = new SecureEpt(3);
    orphan.set(5, 0, SEPT_STATE.MAPPED, 5);
    expect(() => orphan.checkInvariants()).toThrow(/parent at level 1/);
    const misaligned = new SecureEpt(3);
    misaligned.set(0, 3, SEPT_STATE.NL_MAPPED);
    misaligned.set(0, 2, SEPT_STATE.NL_MAPPED);
    misaligned.set(0, 1, SEPT_STATE.PENDING, 3);
    expect(() => misaligned.checkInvariants()).toThrow(/not aligned/);
    const nl4k = new SecureEpt(3);
    nl4k.set(0, 3, SEPT_STATE.NL_MAPPED);
    nl4k.set(0, 2, SEPT_STATE.NL_MAPPED);
    nl4k.set(0, 1, SEPT_STATE.NL_MAPPED);
    nl4k.set(0, 0, SEPT_STATE.NL_MAPPED);
    try {
      nl4k.checkInvariants();
      expect.unreachable();
    } catch (e) {
      expect(isModelInvariantError(e)).toBe(true);
    }
  });

  it('names states as the module does', () => {
    expect(septStateName(SEPT_STATE.PENDING_BLOCKED)).toBe('PENDING_BLOCKED');
    expect(septStateName(99)).toBe('state 99');
  });
});
