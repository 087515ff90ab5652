/**
 * KVM_SET_MEMORY_ATTRIBUTES (../shared/spec/kvm-semantics.md §3.1, §3.2) and the x86 mixed-attribute
 * huge-page tracking (§3.3).
 */
import { describe, expect, it } from 'vitest';
import { createSim, gfn, uapi } from '@cocokit/sdk';
import type { FrameRange, Gfn } from '@cocokit/sdk';
import type { AttributeRange } from './index.js';
import { GiB, MiB, PAGE, defaultVm, expectRefused, region, swProtectedVm } from '../test/helpers.js';

const PRIVATE = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE;
const TiB = 2 ** 40;
const M2 = 512;
const G1 = 512 * 512;

describe('§3.1 availability', () => {
  it('without CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES the ioctl is ENOTTY (probed on Linux 6.18: default-only host)', () => {
    const { ms } = defaultVm({ memoryAttributesIoctl: false });
    expectRefused(ms, 'ENOTTY', () => ms.setMemoryAttributes({ address: 0, size: PAGE, attributes: 0 }));
  });
  it('PRIVATE on a VM type without private memory is EINVAL (supported attributes = 0)', () => {
    const { ms } = defaultVm();
    expectRefused(ms, 'EINVAL', () => ms.setMemoryAttributes({ address: 0, size: PAGE, attributes: PRIVATE }));
  });
  it('attributes 0 on a VM type without private memory is accepted (nothing to do)', () => {
    const { ms } = defaultVm();
    ms.setMemoryAttributes({ address: 0, size: PAGE, attributes: 0 });
    expect(ms.getAttributes(gfn(0))).toBe(0);
  });
  it('every gfn starts with attributes 0 (shared)', () => {
    const { ms } = swProtectedVm();
    expect(ms.getAttributes(gfn(123456))).toBe(0);
  });
});

describe('§3.2 validation, in order', () => {
  it('rule 2: flags != 0 is EINVAL', () => {
    const { ms } = swProtectedVm();
    expectRefused(ms, 'EINVAL', () => ms.setMemoryAttributes({ address: 0, size: PAGE, attributes: PRIVATE, flags: 1 }));
    expectRefused(ms, 'EINVAL', () => ms.setMemoryAttributes({ address: 0, size: PAGE, attributes: PRIVATE, flags: 2n ** 63n }));
  });
  it('rule 3: attributes outside the supported set are EINVAL (RWX bits 0-2, high bits)', () => {
    const { ms } = swProtectedVm();
    for (const a of [1, 2, 4, PRIVATE | 1, 2n ** 40n]) {
      expectRefused(ms, 'EINVAL', () => ms.setMemoryAttributes({ address: 0, size: PAGE, attributes: a }));
    }
  });
  it('rule 4: size 0 or address + size wrapping is EINVAL', () => {
    const { ms } = swProtectedVm();
    expectRefused(ms, 'EINVAL', () => ms.setMemoryAttributes({ address: 0, size: 0, attributes: PRIVATE }));
    expectRefused(ms, 'EINVAL', () => ms.setMemoryAttributes({ address: 2n ** 64n - 4096n, size: 8192, attributes: PRIVATE }));
  });
  it('rule 5: address or size not page aligned is EINVAL', () => {
    const { ms } = swProtectedVm();
    expectRefused(ms, 'EINVAL', () => ms.setMemoryAttributes({ address: 1, size: PAGE, attributes: PRIVATE }));
    expectRefused(ms, 'EINVAL', () => ms.setMemoryAttributes({ address: 0, size: PAGE + 1, attributes: PRIVATE }));
  });
  it('the flags check comes first: an unaligned request with flags is still EINVAL and changes nothing', () => {
    const { ms } = swProtectedVm();
    expectRefused(ms, 'EINVAL', () => ms.setMemoryAttributes({ address: 1, size: 0, attributes: 1, flags: 1 }));
  });
  it('rule 6: a range already entirely at the value is a no-op: no hooks run', () => {
    const { ms } = swProtectedVm();
    ms.setUserMemoryRegion2(region(0, 0, 4 * MiB));
    ms.setMemoryAttributes({ address: 0, size: 4 * MiB, attributes: PRIVATE });
    const calls: string[] = [];
    ms.onAttributesChange({ preSet: () => void calls.push('pre'), postSet: () => void calls.push('post') });
    ms.setMemoryAttributes({ address: 0, size: 4 * MiB, attributes: PRIVATE });
    ms.setMemoryAttributes({ address: 8 * MiB, size: 4 * MiB, attributes: 0 });
    expect(calls).toEqual([]);
  });
  it('rules 8-10: pre and post hooks run once per intersecting memslot, clipped to it, around the store', () => {
    const { ms } = swProtectedVm();
    ms.setUserMemoryRegion2(region(0, 0, 2 * MiB));
    ms.setUserMemoryRegion2(region(1, 4 * MiB, 2 * MiB));
    const calls: Array<{ phase: string; id: number; start: number; end: number; seen: number }> = [];
    const rec = (phase: string) => (r: AttributeRange) =>
      void calls.push({ phase, id: r.slot.id, start: r.start, end: r.end, seen: ms.getAttributes(r.start) });
    ms.onAttributesChange({ preSet: rec('pre'), postSet: rec('post') });
    ms.setMemoryAttributes({ address: MiB, size: 4 * MiB, attributes: PRIVATE });
    expect(calls).toEqual([
      { phase: 'pre', id: 0, start: 256, end: 512, seen: 0 },
      { phase: 'pre', id: 1, start: 1024, end: 1280, seen: 0 },
      { phase: 'post', id: 0, start: 256, end: 512, seen: PRIVATE },
      { phase: 'post', id: 1, start: 1024, end: 1280, seen: PRIVATE },
    ]);
  });
  it('a range with no memslot is set (attributes are per gfn, independent of memslots) and runs no hooks', () => {
    const { ms } = swProtectedVm();
    const calls: string[] = [];
    ms.onAttributesChange({ preSet: () => void calls.push('pre') });
    ms.setMemoryAttributes({ address: 64 * GiB, size: 2 * MiB, attributes: PRIVATE });
    expect(ms.getAttributes(gfn((64 * GiB) / PAGE + 3))).toBe(PRIVATE);
    expect(calls).toEqual([]);
    // A slot created later sees the attributes.
    ms.setUserMemoryRegion2(region(0, 64 * GiB, 2 * MiB));
    expect(ms.rangeHasAttributes(gfn((64 * GiB) / PAGE), gfn((64 * GiB) / PAGE + 512), PRIVATE)).toBe(true);
    ms.checkInvariants();
  });
  it('setting 0 erases: the range reads shared again and the store holds no run', () => {
    const { ms } = swProtectedVm();
    ms.setMemoryAttributes({ address: 0, size: 4 * MiB, attributes: PRIVATE });
    ms.setMemoryAttributes({ address: MiB, size: MiB, attributes: 0 });
    expect([...ms.attributeRuns()].map((r) => [r.start, r.end])).toEqual([
      [0, 256],
      [512, 1024],
    ]);
    ms.checkInvariants();
  });
  it('marking a 1 TiB guest private is one run and one call', () => {
    const { ms } = swProtectedVm();
    ms.setUserMemoryRegion2(region(0, 0, 2 ** 31 * PAGE - PAGE, { userspace_addr: 0 }));
    const t0 = Date.now();
    ms.setMemoryAttributes({ address: 0, size: TiB, attributes: PRIVATE });
    expect(Date.now() - t0).toBeLessThan(50);
    expect([...ms.attributeRuns()]).toHaveLength(1);
    expect(ms.rangeHasAttributes(gfn(0), gfn(TiB / PAGE), PRIVATE)).toBe(true);
    ms.checkInvariants();
  });
  it('the virtual-time charge follows the kernel\'s per-gfn xarray: 2^28 pages cost 2^28 attribute_page units', () => {
    const sim = createSim({ seed: 1 });
    const { ms } = swProtectedVm({ sim });
    const t0 = sim.now;
    ms.setMemoryAttributes({ address: 0, size: TiB, attributes: PRIVATE });
    const per = sim.costs.get('memslot.attribute_page');
    expect(sim.now - t0).toBe(sim.costs.get('memslot.set_memory_attributes') + per * 2 ** 28);
    // A no-op set pays only the ioctl.
    const t1 = sim.now;
    ms.setMemoryAttributes({ address: 0, size: TiB, attributes: PRIVATE });
    expect(sim.now - t1).toBe(sim.costs.get('memslot.set_memory_attributes'));
  });
});

describe('kvm_range_has_memory_attributes', () => {
  it('attrs outside mask & supported are never had; an empty range always is', () => {
    const { ms } = swProtectedVm();
    expect(ms.rangeHasAttributes(gfn(0), gfn(10), 1)).toBe(false);
    expect(ms.rangeHasAttributes(gfn(0), gfn(10), PRIVATE, 0)).toBe(false);
    expect(ms.rangeHasAttributes(gfn(5), gfn(5), PRIVATE)).toBe(true);
    expect(ms.rangeHasAttributes(gfn(0), gfn(10), 0)).toBe(true);
  });
  it('partial ranges: mixed is neither all private nor all shared; mask 0 matches everything with attrs 0', () => {
    const { ms } = swProtectedVm();
    ms.setMemoryAttributes({ address: 0, size: 4 * PAGE, attributes: PRIVATE });
    expect(ms.rangeHasAttributes(gfn(0), gfn(8), PRIVATE)).toBe(false);
    expect(ms.rangeHasAttributes(gfn(0), gfn(8), 0)).toBe(false);
    expect(ms.rangeHasAttributes(gfn(0), gfn(4), PRIVATE)).toBe(true);
    expect(ms.rangeHasAttributes(gfn(0), gfn(8), 0, 0)).toBe(true);
  });
});

describe('§3.3 x86 mixed-attribute huge-page tracking', () => {
  const setup = () => {
    const vm = swProtectedVm();
    vm.ms.setUserMemoryRegion2(region(0, 0, 2 * GiB));
    return vm;
  };
  const slot0 = (ms: ReturnType<typeof setup>['ms']) => ms.slot(0, 0)!;

  it('a huge page holding both private and shared gfns is mixed at 2M and at the 1G above it', () => {
    const { ms } = setup();
    ms.setMemoryAttributes({ address: 4 * MiB + PAGE, size: PAGE, attributes: PRIVATE });
    const s = slot0(ms);
    expect(ms.isMixed(s, gfn(2 * M2), 1)).toBe(true);
    expect(ms.isMixed(s, gfn(2 * M2 + 511), 1)).toBe(true);
    expect(ms.isMixed(s, gfn(3 * M2), 1)).toBe(false);
    expect(ms.isMixed(s, gfn(0), 2)).toBe(true);
    expect(ms.isMixed(s, gfn(G1), 2)).toBe(false);
    ms.checkInvariants();
  });
  it('converting the whole huge page clears the mixed flag (pages entirely covered are not mixed)', () => {
    const { ms } = setup();
    ms.setMemoryAttributes({ address: 4 * MiB + PAGE, size: PAGE, attributes: PRIVATE });
    ms.setMemoryAttributes({ address: 4 * MiB, size: 2 * MiB, attributes: PRIVATE });
    const s = slot0(ms);
    expect(ms.isMixed(s, gfn(2 * M2), 1)).toBe(false);
    expect(ms.isMixed(s, gfn(0), 2)).toBe(true);
    ms.setMemoryAttributes({ address: 0, size: GiB, attributes: PRIVATE });
    expect(ms.isMixed(s, gfn(0), 2)).toBe(false);
    expect(ms.mixedHugepages(s, 1)).toEqual([]);
    ms.checkInvariants();
  });
  it('hugepage_has_attrs: 2M checks every gfn; 1G checks the 2M results', () => {
    const { ms } = setup();
    const s = slot0(ms);
    ms.setMemoryAttributes({ address: 0, size: GiB, attributes: PRIVATE });
    expect(ms.hugepageHasAttrs(s, gfn(0), 2, PRIVATE)).toBe(true);
    expect(ms.hugepageHasAttrs(s, gfn(M2), 1, PRIVATE)).toBe(true);
    ms.setMemoryAttributes({ address: 2 * MiB, size: PAGE, attributes: 0 });
    expect(ms.hugepageHasAttrs(s, gfn(M2), 1, PRIVATE)).toBe(false);
    expect(ms.hugepageHasAttrs(s, gfn(0), 2, PRIVATE)).toBe(false);
  });
  it('huge pages not fully inside the slot are never tracked (a misaligned slot can\'t map them huge anyway)', () => {
    const { ms } = swProtectedVm();
    ms.setUserMemoryRegion2(region(0, MiB, 2 * MiB));
    ms.setMemoryAttributes({ address: MiB + PAGE, size: PAGE, attributes: PRIVATE });
    const s = ms.slot(0, 0)!;
    expect(ms.isMixed(s, gfn(256), 1)).toBe(false);
    expect(ms.mixedHugepages(s, 1)).toEqual([]);
    ms.checkInvariants();
  });
  it('the tail huge page is recomputed only if inside the slot (Rick Edgecombe\'s head/tail fix)', () => {
    const { ms } = swProtectedVm();
    ms.setUserMemoryRegion2(region(0, 0, 3 * MiB));
    ms.setMemoryAttributes({ address: 2 * MiB - PAGE, size: 2 * PAGE, attributes: PRIVATE });
    const s = ms.slot(0, 0)!;
    expect(ms.isMixed(s, gfn(0), 1)).toBe(true);
    expect(ms.isMixed(s, gfn(M2), 1)).toBe(false);
    ms.checkInvariants();
  });
  it('on slot creation every huge page fully inside is computed from the attributes already set', () => {
    const { ms } = swProtectedVm();
    ms.setMemoryAttributes({ address: 6 * MiB + 8 * PAGE, size: 4 * PAGE, attributes: PRIVATE });
    ms.setMemoryAttributes({ address: GiB + 2 * MiB, size: 2 * MiB, attributes: PRIVATE });
    ms.setUserMemoryRegion2(region(0, 0, 4 * GiB));
    const s = ms.slot(0, 0)!;
    expect(ms.mixedHugepages(s, 1)).toEqual([{ start: 3 * M2, end: 4 * M2 }]);
    // 1G pages 0 and 1 are both mixed: one run.
    expect(ms.mixedHugepages(s, 2)).toEqual([{ start: 0, end: 2 * G1 }]);
    ms.checkInvariants();
  });
  it('a move recomputes the tracking at the new position; a flags-only change keeps it', () => {
    const { ms } = swProtectedVm();
    ms.setMemoryAttributes({ address: 8 * MiB + PAGE, size: PAGE, attributes: PRIVATE });
    ms.setUserMemoryRegion2(region(0, 0, 4 * MiB));
    expect(ms.mixedHugepages(ms.slot(0, 0)!, 1)).toEqual([]);
    ms.setUserMemoryRegion2(region(0, 8 * MiB, 4 * MiB));
    expect(ms.mixedHugepages(ms.slot(0, 0)!, 1)).toEqual([{ start: 4 * M2, end: 5 * M2 }]);
    ms.setUserMemoryRegion2({ ...region(0, 8 * MiB, 4 * MiB), flags: uapi.KVM_MEM_LOG_DIRTY_PAGES });
    expect(ms.mixedHugepages(ms.slot(0, 0)!, 1)).toEqual([{ start: 4 * M2, end: 5 * M2 }]);
    ms.checkInvariants();
  });
  it('pre-set adds the straddling head/tail huge pages that may be mapped huge to the invalidation', () => {
    const { ms } = setup();
    const got: Array<readonly FrameRange<Gfn>[]> = [];
    ms.onAttributesChange({ preSet: (_r, extra) => void got.push(extra) });
    ms.setMemoryAttributes({ address: 2 * MiB + PAGE, size: 2 * MiB, attributes: PRIVATE });
    expect(got[0]).toEqual([
      { start: M2, end: 2 * M2 },
      { start: 2 * M2, end: 3 * M2 },
      { start: 0, end: G1 },
    ]);
  });
  it('VM types without private memory track nothing', () => {
    const { ms } = defaultVm();
    ms.setUserMemoryRegion2(region(0, 0, GiB));
    expect(ms.isMixed(ms.slot(0, 0)!, gfn(0), 1)).toBe(false);
    expect(ms.mixedHugepages(ms.slot(0, 0)!, 2)).toEqual([]);
  });
  it('a 1 TiB slot with alternating 2M runs stays sparse: only mixed pages are stored', () => {
    const { ms } = swProtectedVm();
    ms.setUserMemoryRegion2(region(0, 0, 2 ** 31 * PAGE - 2 * MiB, { userspace_addr: 0 }));
    ms.setMemoryAttributes({ address: 0, size: TiB, attributes: PRIVATE });
    ms.setMemoryAttributes({ address: 5 * GiB + 3 * PAGE, size: PAGE, attributes: 0 });
    const s = ms.slot(0, 0)!;
    expect(ms.mixedHugepages(s, 1)).toEqual([{ start: 5 * G1, end: 5 * G1 + M2 }]);
    expect(ms.mixedHugepages(s, 2)).toEqual([{ start: 5 * G1, end: 6 * G1 }]);
    ms.checkInvariants();
  });
});
