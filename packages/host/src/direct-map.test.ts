import { describe, expect, it } from 'vitest';
import { DirectMap } from './direct-map.js';
import type { HostCostName } from './costs.js';

function env() {
  const charged: Record<string, number> = {};
  let now = 0;
  const events: string[] = [];
  return {
    charged,
    events,
    tick: (ns: number) => void (now += ns),
    env: {
      charge: (n: HostCostName, u: number) => void (charged[n] = (charged[n] ?? 0) + u),
      now: () => now,
      trace: (op: string, s: number, e: number) => void events.push(`${op} ${s}-${e}`),
    },
  };
}

describe('DirectMap', () => {
  it('maps everything until removed; remove and restore are idempotent and charged', () => {
    const t = env();
    const dm = new DirectMap(t.env);
    expect(dm.isMapped(5)).toBe(true);
    expect(dm.remove(0, 512)).toBe(512);
    expect(dm.remove(0, 512)).toBe(0);
    expect(dm.isMapped(5)).toBe(false);
    expect(t.charged).toEqual({ 'host.direct_map_update': 512, 'host.tlb_shootdown': 1 });
    expect(dm.restore(0, 256)).toBe(256);
    expect(dm.isMapped(5)).toBe(true);
    expect(dm.isMapped(300)).toBe(false);
    expect(t.charged['host.tlb_shootdown']).toBe(1); // adding mappings needs no flush
    expect(dm.stats()).toMatchObject({ pagesRemoved: 512, pagesRestored: 256, removedNow: 256, shootdowns: 1 });
    expect(dm.runCount).toBe(1);
    dm.checkInvariants();
  });

  it('temporary restoration is refcounted, counts remaps, bytes and time exposed', () => {
    const t = env();
    const dm = new DirectMap(t.env);
    dm.remove(10, 20);
    const a = dm.tempMap(12);
    const b = dm.tempMap(12);
    expect(dm.isMapped(12)).toBe(true);
    expect(dm.tempCount(12)).toBe(2);
    t.tick(500);
    a.unmap();
    expect(dm.isMapped(12)).toBe(true);
    t.tick(500);
    b.unmap();
    expect(dm.isMapped(12)).toBe(false);
    expect(() => b.unmap()).toThrow(/unmapped twice/);
    expect(dm.stats()).toMatchObject({ tempMaps: 2, tempRemaps: 1, bytesExposed: 4096, exposureNs: 1000, shootdowns: 2, tempMappedNow: 0 });
    // A page that is not removed: the handle counts but nothing is remapped.
    const c = dm.tempMap(50);
    expect(dm.stats().tempRemaps).toBe(1);
    // Removing it meanwhile keeps it visible until the handle goes.
    dm.remove(50, 51);
    expect(dm.isMapped(50)).toBe(true);
    t.tick(100);
    c.unmap();
    expect(dm.isMapped(50)).toBe(false);
    expect(dm.stats().exposureNs).toBe(1100);
    expect(dm.isPristine(0, 10)).toBe(true);
    expect(dm.isPristine(0, 11)).toBe(false);
    dm.checkInvariants();
    expect(t.events[0]).toBe('remove 10-20');
  });

  it('restore while temporarily mapped ends the exposure and rewrites only unmapped entries', () => {
    const t = env();
    const dm = new DirectMap(t.env);
    dm.remove(0, 4);
    const h = dm.tempMap(1);
    const before = t.charged['host.direct_map_update']!;
    t.tick(10);
    dm.restore(0, 4);
    expect(t.charged['host.direct_map_update']! - before).toBe(3);
    expect(dm.stats().exposureNs).toBe(10);
    h.unmap();
    expect(dm.isMapped(1)).toBe(true);
    dm.checkInvariants();
  });
});
