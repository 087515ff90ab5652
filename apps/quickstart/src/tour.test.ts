import { describe, expect, it } from 'vitest';
import { tour } from './tour.js';

describe('the quickstart tour', () => {
  const r = tour();
  const step = (name: string) => r.steps.find(([s]) => s === name)?.[1];

  it('keeps a 1 TiB host at a handful of runs of model state', () => {
    expect(step('host')).toMatch(/^1 TiB of frames, [1-9] runs? of model state$/);
  });
  it('reads back what the VMM wrote and faults past its mapping', () => {
    expect(step('process')).toBe('wrote and read back "hello from the VMM"; a read past the mapping gets SIGSEGV');
  });
  it('counts the temporary remap of a folio removed from the direct map', () => {
    expect(step('direct map')).toMatch(/1 temporary remap exposed 4096 bytes for \d+ ns/);
  });
  it('is refused with ENOMEM when the host runs out of 1 GiB blocks', () => {
    expect(step('refusal')).toMatch(/^ENOMEM after 10\d\d GiB folios$/);
  });
  it('holds the attributes of a 1 TiB guest with a shared hole in two runs', () => {
    expect(r.attributeRuns).toBe(2);
  });
  it('shows lock contention: one shared lock serialises four vCPUs, a lock each does not', () => {
    const shared = Math.max(...r.contention.shared);
    const distinct = Math.max(...r.contention.distinct);
    // Four equal streams of critical sections: serialised, they take four times as long.
    expect(shared).toBe(4 * distinct);
    expect(new Set(r.contention.distinct).size).toBe(1);
  });
  it('produces a trace with the host events it counted', () => {
    const names = new Set(r.trace.traceEvents.map((e) => e.name));
    expect(names).toContain('host.alloc');
    expect(names).toContain('host.direct_map');
    expect(r.eventCounts).toMatch(/host\.alloc\s+1025/);
  });
});
