import { describe, expect, it } from 'vitest';
import { createSim } from '../sim/sim.js';
import { createTraceEventRecorder, toChromeTraceJson } from './perfetto.js';
import type { ChromeTraceEvent } from './perfetto.js';

describe('Chrome/Perfetto trace-event export', () => {
  const record = () => {
    const sim = createSim();
    const rec = createTraceEventRecorder();
    sim.trace.attach(rec);
    sim.trace.emit('vm.create', { type: 'sw-protected' });
    for (let v = 0; v < 2; v++) {
      sim.spawn(`vcpu${v}`, function* () {
        sim.lock('slots_lock').with(() => sim.advance(1500));
        sim.trace.emit('gmem.convert', { gfn: 16 + v, npages: 1n, private: true }, 1500);
        yield;
        sim.trace.emit('mmu.fault', { gfn: v });
      });
    }
    sim.runUntilIdle();
    return rec;
  };

  it('records every event in emission order', () => {
    const rec = record();
    expect(rec.events.map((e) => e.name)).toEqual(['vm.create', 'gmem.convert', 'sim.lock_wait', 'gmem.convert', 'mmu.fault', 'mmu.fault']);
    rec.clear();
    expect(rec.events).toEqual([]);
  });

  it('produces the JSON Object Format: metadata, X and i phases, µs timestamps, one tid per actor', () => {
    const json = JSON.parse(JSON.stringify(record().toChromeTraceJson())) as { traceEvents: ChromeTraceEvent[]; displayTimeUnit: string };
    expect(json.displayTimeUnit).toBe('ns');
    const ev = json.traceEvents;
    const meta = ev.filter((e) => e.ph === 'M');
    expect(meta).toEqual([
      { name: 'process_name', ph: 'M', ts: 0, pid: 1, tid: 0, args: { name: 'cocokit' } },
      { name: 'thread_name', ph: 'M', ts: 0, pid: 1, tid: 1, args: { name: 'vmm' } },
      { name: 'thread_sort_index', ph: 'M', ts: 0, pid: 1, tid: 1, args: { sort_index: 1 } },
      { name: 'thread_name', ph: 'M', ts: 0, pid: 1, tid: 2, args: { name: 'vcpu0' } },
      { name: 'thread_sort_index', ph: 'M', ts: 0, pid: 1, tid: 2, args: { sort_index: 2 } },
      { name: 'thread_name', ph: 'M', ts: 0, pid: 1, tid: 3, args: { name: 'vcpu1' } },
      { name: 'thread_sort_index', ph: 'M', ts: 0, pid: 1, tid: 3, args: { sort_index: 3 } },
    ]);
    expect(ev.slice(0, meta.length).every((e) => e.ph === 'M')).toBe(true);
    const body = ev.slice(meta.length);
    // vcpu1 waited 1500 ns for slots_lock, then converted [1500, 3000) ns = [1.5, 3) µs; at equal
    // ts, spans come before instants (longer first)
    expect(body).toEqual([
      { name: 'gmem.convert', cat: 'gmem', ph: 'X', ts: 0, dur: 1.5, pid: 1, tid: 2, args: { gfn: 16, npages: '1', private: true } },
      { name: 'sim.lock_wait', cat: 'sim', ph: 'X', ts: 0, dur: 1.5, pid: 1, tid: 3, args: { lock: 'slots_lock', mode: 'exclusive' } },
      { name: 'vm.create', cat: 'vm', ph: 'i', s: 't', ts: 0, pid: 1, tid: 1, args: { type: 'sw-protected' } },
      { name: 'gmem.convert', cat: 'gmem', ph: 'X', ts: 1.5, dur: 1.5, pid: 1, tid: 3, args: { gfn: 17, npages: '1', private: true } },
      { name: 'mmu.fault', cat: 'mmu', ph: 'i', s: 't', ts: 1.5, pid: 1, tid: 2, args: { gfn: 0 } },
      { name: 'mmu.fault', cat: 'mmu', ph: 'i', s: 't', ts: 3, pid: 1, tid: 3, args: { gfn: 1 } },
    ]);
    for (const e of body) {
      expect(typeof e.ts).toBe('number');
      if (e.ph === 'X') expect(e.dur).toBeGreaterThan(0);
    }
  });

  it('keeps sub-microsecond precision, sorts by start (enclosing span first) and takes pid and name', () => {
    const t = toChromeTraceJson(
      [
        { name: 'inner', ts: 1001, dur: 1, actorId: 4, actor: 'handler', fields: {} },
        { name: 'outer', ts: 1001, dur: 10, actorId: 4, actor: 'handler', fields: {} },
        { name: 'first', ts: 1, dur: 0, actorId: 4, actor: 'handler', fields: {} },
      ],
      { pid: 42, processName: 'experiment' },
    );
    expect(t.traceEvents.map((e) => [e.name, e.ts, e.pid])).toEqual([
      ['process_name', 0, 42],
      ['thread_name', 0, 42],
      ['thread_sort_index', 0, 42],
      ['first', 0.001, 42],
      ['outer', 1.001, 42],
      ['inner', 1.001, 42],
    ]);
    expect(t.traceEvents[0]!.args).toEqual({ name: 'experiment' });
    expect(t.traceEvents[4]!.dur).toBe(0.01);
    expect(t.traceEvents[4]!.tid).toBe(5);
    expect(toChromeTraceJson([]).traceEvents).toHaveLength(1);
  });
});
