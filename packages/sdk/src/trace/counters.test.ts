import { describe, expect, it } from 'vitest';
import { createSim } from '../sim/sim.js';
import { createCounters } from './counters.js';
import type { TraceEvent } from './types.js';

const ev = (name: string, dur: number, fields: Record<string, unknown> = {}): TraceEvent => ({ name, ts: 0, dur, actorId: 0, actor: 'vmm', fields });

describe('createCounters', () => {
  it('counts per event name', () => {
    const c = createCounters();
    for (const n of ['b', 'a', 'b', 'c', 'b']) c.event(ev(n, 0));
    expect(c.total).toBe(5);
    expect(c.count('b')).toBe(3);
    expect(c.count('zzz')).toBe(0);
    expect(c.counts()).toEqual([
      ['a', 1],
      ['b', 3],
      ['c', 1],
    ]);
  });

  it('histograms durations in log2 buckets', () => {
    const c = createCounters();
    for (const d of [1, 2, 3, 4, 100, 1000, 0]) c.event(ev('x', d));
    const h = c.histogram('x')!;
    expect(h).toMatchObject({ count: 6, sum: 1110, min: 1, max: 1000, mean: 185 });
    expect(h.buckets).toEqual([
      { lo: 1, hi: 2, count: 1 },
      { lo: 2, hi: 4, count: 2 },
      { lo: 4, hi: 8, count: 1 },
      { lo: 64, hi: 128, count: 1 },
      { lo: 512, hi: 1024, count: 1 },
    ]);
    expect(h.quantile(0.5)).toBe(4); // the 3rd of 6 samples is in [2, 4)
    expect(h.quantile(1)).toBe(1000); // capped by max
    expect(c.histogram('none')).toBeUndefined();
    expect(createCounters({ durations: false }).histogram('x')).toBeUndefined();
  });

  it('histograms chosen numeric fields, including large values and values below 1', () => {
    const c = createCounters({ fields: { 'gmem.punch_hole': ['npages'] } });
    for (const n of [0, 512, 512, 2 ** 40, 'not a number']) c.event(ev('gmem.punch_hole', 0, { npages: n }));
    const h = c.histogram('gmem.punch_hole', 'npages')!;
    expect(h.count).toBe(4);
    expect(h.buckets).toEqual([
      { lo: -Infinity, hi: 1, count: 1 },
      { lo: 512, hi: 1024, count: 2 },
      { lo: 2 ** 40, hi: 2 ** 41, count: 1 },
    ]);
    expect(c.histogram('gmem.punch_hole')).toBeUndefined(); // no durations
  });

  it('prints a readable summary and resets', () => {
    const sim = createSim();
    const c = createCounters({ fields: { 'x.fault': ['level'] } });
    sim.trace.attach(c);
    sim.trace.emit('x.fault', { level: 1 }, 200);
    sim.trace.emit('x.fault', { level: 2 }, 300);
    sim.trace.emit('x.map', {});
    const s = c.summary();
    expect(s.split('\n')).toEqual([
      'event    count   (3 events)',
      'x.fault  2',
      '           dur ns: n=2 mean=250 min=200 p50<=256 p99<=300 max=300',
      '           level: n=2 mean=1.5 min=1 p50<=2 p99<=2 max=2',
      'x.map    1',
    ]);
    c.reset();
    expect([c.total, c.counts(), c.histogram('x.fault')]).toEqual([0, [], undefined]);
  });
});
