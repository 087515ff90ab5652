import { createSim } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { HOST_COSTS, HOST_COST_OWNER, registerHostCosts } from './costs.js';

describe('host costs', () => {
  it('every cost has a positive default, a unit and a source', () => {
    for (const [name, def] of Object.entries(HOST_COSTS)) {
      expect(name.startsWith('host.')).toBe(true);
      expect(def.ns).toBeGreaterThan(0);
      expect(def.source.length).toBeGreaterThan(20);
      expect(def.unit.length).toBeGreaterThan(0);
    }
  });

  it('registers once per sim under its owner, and honours overrides given at createSim', () => {
    const sim = createSim({ costs: { 'host.page_zero': 250 } });
    registerHostCosts(sim);
    registerHostCosts(sim);
    const e = sim.costs.entries().filter((x) => x.owner === HOST_COST_OWNER);
    expect(e.map((x) => x.name).sort()).toEqual(Object.keys(HOST_COSTS).sort());
    expect(sim.costs.get('host.page_zero')).toBe(250);
    expect(sim.costs.pendingOverrides()).toEqual([]);
  });
});
