/** Costs and trace events: what memslot charges to a sim and what it emits. */
import { describe, expect, it } from 'vitest';
import { createRingBuffer, createSim, uapi } from '@cocokit/sdk';
import { MEMSLOT_COSTS, Memslots } from './index.js';
import { MiB, defaultVm, region } from '../test/helpers.js';

describe('costs', () => {
  it('registers every memslot cost with a source, once per sim however many VMs share it', () => {
    const sim = createSim({ seed: 1 });
    defaultVm({ sim });
    defaultVm({ sim, slotsLockName: 'vm2.slots_lock' });
    for (const [name, def] of Object.entries(MEMSLOT_COSTS)) {
      expect(sim.costs.get(name as keyof typeof MEMSLOT_COSTS)).toBe(def.ns);
      expect(def.source.length).toBeGreaterThan(10);
    }
  });
  it('create charges the ioctl and one swap; delete the ioctl, two swaps and the per-slot flush', () => {
    const sim = createSim({ seed: 1 });
    const { ms } = defaultVm({ sim });
    const c = (n: keyof typeof MEMSLOT_COSTS) => sim.costs.get(n);
    let t = sim.now;
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    expect(sim.now - t).toBe(c('memslot.set_user_memory_region') + c('memslot.swap'));
    t = sim.now;
    ms.setUserMemoryRegion2(region(0, 0, 0));
    expect(sim.now - t).toBe(c('memslot.set_user_memory_region') + 2 * c('memslot.swap') + c('memslot.flush_shadow_memslot'));
  });
  it('a refused ioctl still pays its entry cost, and nothing else', () => {
    const sim = createSim({ seed: 1 });
    const { ms } = defaultVm({ sim });
    const t = sim.now;
    expect(() => ms.setUserMemoryRegion2(region(0, 1, MiB))).toThrow(/EINVAL/);
    expect(sim.now - t).toBe(sim.costs.get('memslot.set_user_memory_region'));
  });
  it('user overrides apply', () => {
    const sim = createSim({ seed: 1, costs: { 'memslot.swap': 1 } });
    const ms = new Memslots({ hasPrivateMem: false, readonlyMem: true, nrAddressSpaces: 1, supportedAttributes: 0, sim });
    const t = sim.now;
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    expect(sim.now - t).toBe(sim.costs.get('memslot.set_user_memory_region') + 1);
  });
});

describe('trace', () => {
  it('emits memslot.create/flags/move/delete and memslot.set_attributes with their fields', () => {
    const sim = createSim({ seed: 1 });
    const ring = createRingBuffer(64);
    sim.trace.attach(ring);
    const { ms } = defaultVm({ sim, hasPrivateMem: true, supportedAttributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE });
    ms.setUserMemoryRegion2(region(0, 0, MiB));
    ms.setUserMemoryRegion2({ ...region(0, 0, MiB), flags: uapi.KVM_MEM_LOG_DIRTY_PAGES });
    ms.setUserMemoryRegion2({ ...region(0, 2 * MiB, MiB), flags: uapi.KVM_MEM_LOG_DIRTY_PAGES });
    ms.setMemoryAttributes({ address: 2 * MiB, size: MiB, attributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE });
    ms.setUserMemoryRegion2(region(0, 0, 0));
    const events = ring.events();
    expect(events.map((e) => e.name)).toEqual(['memslot.create', 'memslot.flags', 'memslot.move', 'memslot.set_attributes', 'memslot.delete']);
    expect(events[0]?.fields).toEqual({ asId: 0, id: 0, baseGfn: 0, npages: 256, flags: 0, guestMemfd: false });
    expect(events[3]?.fields).toEqual({ start: 512, end: 768, attributes: 8, slots: 1 });
  });
});
