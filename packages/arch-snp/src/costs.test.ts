import { createSim } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import { SNP_COSTS, SNP_COST_OWNER } from './costs.js';

describe('SNP costs', () => {
  it('gives every default a source, and says where no published figure exists', () => {
    for (const [name, def] of Object.entries(SNP_COSTS)) {
      expect(def.ns, name).toBeGreaterThan(0);
      expect(def.source.length, name).toBeGreaterThan(40);
      expect(def.unit.length, name).toBeGreaterThan(0);
    }
    for (const name of ['snp.rmpupdate', 'snp.psmash', 'snp.pvalidate'] as const) {
      expect(SNP_COSTS[name].source).toMatch(/no published per-instruction figure/);
    }
  });

  it('registers in a cost model and can be overridden', () => {
    const sim = createSim({ seed: 1 });
    sim.costs.register(SNP_COST_OWNER, SNP_COSTS);
    sim.costs.override({ 'snp.rmpupdate': 2000 });
    expect(sim.costs.get('snp.rmpupdate')).toBe(2000);
    expect(sim.costs.get('snp.psmash')).toBe(SNP_COSTS['snp.psmash'].ns);
  });
});
