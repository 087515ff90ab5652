import { describe, expect, it } from 'vitest';
import { isKvmError } from './errors.js';
import {
  MAX_BYTES,
  MAX_FRAMES,
  PAGE_SIZE,
  alignDown,
  alignUp,
  bytesToFrameFloor,
  bytesToFrames,
  bytesToFramesCeil,
  checkFrameRange,
  formatBytes,
  framesToBytes,
  isAligned,
  levelToOrder,
  orderToLevel,
  pagesInOrder,
  rangeContains,
  rangeCovers,
  rangeIntersection,
  rangeIsEmpty,
  rangeLength,
  rangesOverlap,
  toByteCount,
} from './units.js';

const einval = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return isKvmError(e, 'EINVAL');
  }
  return false;
};

describe('byte counts at the ioctl surface', () => {
  it('accepts safe integers and bigints in [0, 2^52]', () => {
    expect(toByteCount(0, 'op', 'x')).toBe(0);
    expect(toByteCount(2 ** 52, 'op', 'x')).toBe(2 ** 52);
    expect(toByteCount(4096n, 'op', 'x')).toBe(4096);
    expect(toByteCount(BigInt(MAX_BYTES), 'op', 'x')).toBe(MAX_BYTES);
  });
  it('refuses non-integers, negatives and values above 2^52 with EINVAL', () => {
    expect(einval(() => toByteCount(1.5, 'op', 'x'))).toBe(true);
    expect(einval(() => toByteCount(Number.NaN, 'op', 'x'))).toBe(true);
    expect(einval(() => toByteCount(Infinity, 'op', 'x'))).toBe(true);
    expect(einval(() => toByteCount(-1, 'op', 'x'))).toBe(true);
    expect(einval(() => toByteCount(-1n, 'op', 'x'))).toBe(true);
    expect(einval(() => toByteCount(2 ** 52 + 4096, 'op', 'x'))).toBe(true);
    expect(einval(() => toByteCount(1n << 63n, 'op', 'x'))).toBe(true);
  });
  it('names the operation and the field in the error', () => {
    expect(() => toByteCount(-1, 'KVM_CREATE_GUEST_MEMFD', 'size')).toThrow(
      expect.objectContaining({ op: 'KVM_CREATE_GUEST_MEMFD', errno: 'EINVAL', errnoValue: 22 }),
    );
    expect(() => toByteCount(-1, 'KVM_CREATE_GUEST_MEMFD', 'size')).toThrow(/size = -1/);
  });
});

describe('byte <-> frame conversion', () => {
  it('converts aligned byte counts exactly', () => {
    expect(bytesToFrames(0, 'op')).toBe(0);
    expect(bytesToFrames(PAGE_SIZE, 'op')).toBe(1);
    expect(bytesToFrames(2n ** 40n, 'op')).toBe(2 ** 28);
    expect(bytesToFrames(MAX_BYTES, 'op')).toBe(MAX_FRAMES);
  });
  it('refuses unaligned, fractional, negative and too-large values', () => {
    expect(einval(() => bytesToFrames(4095, 'op'))).toBe(true);
    expect(einval(() => bytesToFrames(4096.5, 'op'))).toBe(true);
    expect(einval(() => bytesToFrames(-4096, 'op'))).toBe(true);
    expect(einval(() => bytesToFrames(2 ** 53, 'op'))).toBe(true);
  });
  it('rounds addresses down and sizes up where asked', () => {
    expect(bytesToFrameFloor(8191, 'op')).toBe(1);
    expect(bytesToFramesCeil(4097, 'op')).toBe(2);
    expect(bytesToFramesCeil(0, 'op')).toBe(0);
    expect(einval(() => bytesToFrameFloor(-1, 'op'))).toBe(true);
    expect(einval(() => bytesToFramesCeil(0.5, 'op'))).toBe(true);
  });
  it('converts frames back to bytes and refuses what cannot be a frame count', () => {
    expect(framesToBytes(3)).toBe(3 * PAGE_SIZE);
    expect(framesToBytes(MAX_FRAMES)).toBe(MAX_BYTES);
    expect(einval(() => framesToBytes(-1))).toBe(true);
    expect(einval(() => framesToBytes(0.5))).toBe(true);
    expect(einval(() => framesToBytes(MAX_FRAMES + 1))).toBe(true);
  });
});

describe('orders and alignment above 2^31', () => {
  it('knows the frames in each order', () => {
    expect(pagesInOrder(0)).toBe(1);
    expect(pagesInOrder(9)).toBe(512);
    expect(pagesInOrder(18)).toBe(262144);
  });
  it('aligns with arithmetic, not 32-bit bitwise operators', () => {
    const big = 2 ** 38 + 3 * 512 + 7; // far above 2^31
    expect(alignDown(big, 9)).toBe(2 ** 38 + 3 * 512);
    expect(alignUp(big, 9)).toBe(2 ** 38 + 4 * 512);
    expect(alignUp(2 ** 38, 18)).toBe(2 ** 38);
    expect(isAligned(2 ** 38, 18)).toBe(true);
    expect(isAligned(big, 0)).toBe(true);
    expect(isAligned(big, 9)).toBe(false);
  });
  it('maps levels to orders and back', () => {
    expect([0, 1, 2].map((l) => levelToOrder(l as 0 | 1 | 2))).toEqual([0, 9, 18]);
    expect([0, 9, 18].map((o) => orderToLevel(o as 0 | 9 | 18))).toEqual([0, 1, 2]);
  });
});

describe('frame ranges', () => {
  const r = { start: 10, end: 20 };
  it('measures and tests membership half-open', () => {
    expect(rangeLength(r)).toBe(10);
    expect(rangeIsEmpty({ start: 5, end: 5 })).toBe(true);
    expect(rangeContains(r, 10)).toBe(true);
    expect(rangeContains(r, 20)).toBe(false);
    expect(rangeCovers(r, { start: 12, end: 20 })).toBe(true);
    expect(rangeCovers(r, { start: 12, end: 21 })).toBe(false);
  });
  it('overlaps and intersects', () => {
    expect(rangesOverlap(r, { start: 20, end: 30 })).toBe(false);
    expect(rangesOverlap(r, { start: 19, end: 30 })).toBe(true);
    expect(rangeIntersection(r, { start: 15, end: 30 })).toEqual({ start: 15, end: 20 });
    expect(rangeIntersection(r, { start: 20, end: 30 })).toBeUndefined();
  });
  it('checks well-formedness with EINVAL', () => {
    expect(() => checkFrameRange(0, MAX_FRAMES, 'op')).not.toThrow();
    expect(einval(() => checkFrameRange(5, 4, 'op'))).toBe(true);
    expect(einval(() => checkFrameRange(-1, 4, 'op'))).toBe(true);
    expect(einval(() => checkFrameRange(0, MAX_FRAMES + 1, 'op'))).toBe(true);
    expect(einval(() => checkFrameRange(0.5, 4, 'op'))).toBe(true);
  });
});

describe('formatBytes', () => {
  it('prints binary units', () => {
    expect(formatBytes(4096)).toBe('4 KiB');
    expect(formatBytes(2 ** 30)).toBe('1 GiB');
    expect(formatBytes(2 ** 40)).toBe('1 TiB');
    expect(formatBytes(1536)).toBe('1.50 KiB');
    expect(formatBytes(12)).toBe('12 B');
  });
});
