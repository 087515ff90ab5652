import { describe, expect, it } from 'vitest';
import { createSim, uapi } from '@cocokit/sdk';
import { InvalidationSeq } from './invalidation.js';
import { MiB, setup } from './test-env.js';
import type { PendingFault } from './fault.js';

const PAGE = 4096;
const PUNCH = uapi.FALLOC_FL_KEEP_SIZE | uapi.FALLOC_FL_PUNCH_HOLE;

describe('InvalidationSeq', () => {
  it('retries gfns inside an in-progress range, and any fault whose snapshot is older than an end', () => {
    const s = new InvalidationSeq();
    const snap = s.seq;
    s.begin();
    s.addRange(10, 20);
    s.begin();
    s.addRange(100, 101); // one range per VM: widened to [10, 101)
    expect(s.retryGfn(snap, 5)).toBe(false);
    expect(s.retryGfn(snap, 50)).toBe(true);
    s.end();
    expect(s.retryGfn(snap, 5)).toBe(true); // the sequence moved
    expect(s.retryGfn(s.seq, 50)).toBe(true); // still in progress
    s.end();
    expect(s.inProgress).toBe(0);
    expect(s.retryGfn(s.seq, 50)).toBe(false);
  });
});

describe('a fault racing with an invalidation retries instead of installing a stale pfn', () => {
  it('two actors: the vCPU resolves the pfn, the VMM punches the page out, the vCPU re-checks under mmu_lock', () => {
    const sim = createSim();
    const env = setup({ sim });
    const { file } = env.gmemSlot(0, 0, MiB);
    env.setPrivate(0, MiB);
    const log: string[] = [];
    let stalePfn = -1;
    sim.spawn('vcpu0', function* () {
      // Half one, outside mmu_lock: snapshot mmu_invalidate_seq, get the pfn from guest_memfd.
      const p = env.mmu.beginFault({ gpa: 0, access: 'write' }) as PendingFault;
      stalePfn = p.pfn;
      log.push(`vcpu resolved pfn ${p.pfn} at seq ${p.mmuSeq}`);
      yield; // the scheduler runs the earlier VMM actor here
      // Half two, under mmu_lock for read: the sequence moved, so the pfn may be stale.
      const r = env.mmu.finishFault(p);
      log.push(`vcpu ${r.kind}${r.kind === 'retry' ? `:${r.reason}` : ''}`);
      // The vCPU re-enters the guest, faults again, and maps the page guest_memfd has now.
      const again = env.mmu.fault({ gpa: 0, access: 'write' });
      log.push(`vcpu ${again.kind}`);
      expect(again.kind === 'mapped' && again.pfn).toBe(file.folioAt(0)!.pfn);
    });
    sim.spawn('vmm', function* () {
      yield { sleep: 1 }; // start after the vCPU's first step
      file.fallocate(PUNCH, 0, PAGE);
      log.push(`vmm punched index 0 (pfn ${stalePfn} in use: ${env.host.isInUse(stalePfn)}) seq ${env.mmu.seq.seq}`);
    });
    sim.runUntilIdle();
    expect(log).toEqual([
      `vcpu resolved pfn ${stalePfn} at seq 1`,
      `vmm punched index 0 (pfn ${stalePfn} in use: false) seq 2`,
      'vcpu retry:invalidation',
      'vcpu mapped',
    ]);
    expect(env.mmu.stats.retries.invalidation).toBe(1);
    expect(env.mmu.stats.fixed).toBe(1);
    env.check();
  });

  it('without the invalidation in between, the same two halves map', () => {
    const env = setup();
    env.gmemSlot(0, 0, MiB);
    env.setPrivate(0, MiB);
    const p = env.mmu.beginFault({ gpa: 0, access: 'read' }) as PendingFault;
    expect(env.mmu.finishFault(p).kind).toBe('mapped');
  });

  it('a host invalidation in progress makes faults retry before and after they resolve the pfn', () => {
    const sim = createSim();
    const env = setup({ sim, privateMem: false });
    const { hva } = env.hvaSlot(0, 0, MiB);
    const out: string[] = [];
    sim.spawn('vcpu0', function* () {
      const p = env.mmu.beginFault({ gpa: PAGE, access: 'read' }) as PendingFault; // before start
      yield { sleep: 2000 };
      out.push(`finish during: ${env.mmu.finishFault(p).kind}`);
      const early = env.mmu.beginFault({ gpa: PAGE, access: 'read' });
      out.push(`begin during: ${early.kind}`);
      yield { sleep: 100_000 };
      out.push(`after end: ${env.mmu.fault({ gpa: PAGE, access: 'read' }).kind}`);
    });
    sim.spawn('host-mm', function* () {
      yield { sleep: 1 };
      env.mmu.invalidateHvaRangeStart(hva, hva + MiB);
      yield { sleep: 50_000 };
      env.mmu.invalidateHvaRangeEnd(hva, hva + MiB);
    });
    sim.runUntilIdle();
    expect(out).toEqual(['finish during: retry', 'begin during: retry', 'after end: mapped']);
    expect(env.vmm.pfnAt(hva + PAGE)).toBeDefined();
    env.check();
  });

  it('faults and zaps contend for mmu_lock in virtual time', () => {
    const sim = createSim();
    const env = setup({ sim, privateMem: false });
    env.hvaSlot(0, 0, 4 * MiB);
    for (let i = 0; i < 1024; i++) env.mmu.fault({ gpa: i * PAGE, access: 'write' });
    sim.spawn('zapper', function* () {
      env.mmu.zapGfnRange(0, 1024);
      yield;
    });
    sim.spawn('vcpu', function* () {
      yield { sleep: 10 };
      expect(env.mmu.fault({ gpa: 100 * PAGE, access: 'write' }).kind).toBe('mapped');
    });
    sim.runUntilIdle();
    expect(env.mmu.lock.stats.contended).toBeGreaterThan(0);
    expect(env.mmu.lock.stats.waitedNs).toBeGreaterThan(0);
  });
});
