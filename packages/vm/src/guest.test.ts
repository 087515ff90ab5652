/**
 * The guest workload library (`@cocokit/vm/guest`): what each behaviour does to the VM, counted
 * from the VMM's side (exits, conversions) and read back from host memory (the tags it writes).
 */
import { describe, expect, it } from 'vitest';
import { defineArchPlugin, gfn as toGfn, uapi, type ArchGuestOutcome, type ArchGuestStep, type ArchVm } from '@cocokit/sdk';
import { openKvm, runVmm, setupGuestMemory, type GuestProgram, type Vm } from './index.js';
import { AcceptedChunks, GuestPanic, bounceBuffer, firmwareBoot, touchWorkingSet, type FirmwareBootResult, type TouchResult } from './guest/index.js';

const PAGE = 4096;
const MiB = 2 ** 20;

async function swVm(size = 8 * MiB) {
  const kvm = openKvm({ hostBytes: 1 << 30 });
  const vm = await kvm.createVm({ type: 'sw-protected' });
  const mem = setupGuestMemory(vm, { size });
  return { kvm, vm, mem };
}

/** The gfns mapped in `[start, end)` and the tag of each page. */
function tags(vm: Vm, start: number, end: number): Map<number, bigint | undefined> {
  const out = new Map<number, bigint | undefined>();
  for (const leaf of vm.mmu.leaves('shared', start, end)) {
    const span = leaf.level === 0 ? 1 : 512 ** leaf.level;
    for (let g = Math.max(start, leaf.gfn); g < Math.min(end, leaf.gfn + span); g++) out.set(g, vm.host.tagAt(leaf.pfn + (g - leaf.gfn)));
  }
  return out;
}

describe('firmwareBoot (seed 000: OVMF flips its DMA pages on every transfer)', () => {
  for (const dmaPages of [1, 2] as const) {
    it(`makes two conversions per transfer over ${dmaPages} DMA page(s), each a KVM_HC_MAP_GPA_RANGE exit`, async () => {
      const { kvm, vm } = await swVm();
      let result: FirmwareBootResult | undefined;
      vm.createVcpu(0, function* (g) {
        result = yield* firmwareBoot(g, { dmaGpa: 0x10_0000, dmaPages, transfers: 5, computeNs: 1000 });
      });
      const r = runVmm(vm, { discard: 'both' });
      expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
      expect(result).toEqual({ transfers: 5, conversions: 10 });
      expect(r.exits['HYPERCALL']).toBe(10);
      expect(r.conversions).toBe(10);
      expect(r.convertedPages).toBe(10);
      const s = vm.stats().conversions;
      expect(s).toMatchObject({ toShared: 5, toPrivate: 5 + 1 });
      // Every DMA page ends private, with discard 'both' its shared copy dropped and its private page punched.
      const dma = 0x10_0000 / PAGE;
      for (let i = 0; i < dmaPages; i++) expect(vm.memslots.getAttributes(dma + i)).toBe(uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE);
      expect(s.punchHoles).toBe(5);
      expect(s.sharedDiscards).toBe(5);
      expect(vm.stats().memory.sharedAnonPages).toBe(0);
      expect(vm.vcpu(0)?.done).toBe(true);
      expect(r.nowNs).toBeGreaterThan(5 * 1000);
      kvm.checkInvariants();
    });
  }

  it('panics (GuestPanic out of KVM_RUN) when the VMM never enabled the hypercall exit', async () => {
    const { vm } = await swVm();
    const v = vm.createVcpu(0, function* (g) {
      yield* firmwareBoot(g, { dmaGpa: 0x10_0000, transfers: 1 });
    });
    expect(() => v.run()).toThrow(GuestPanic);
  });
});

describe('touchWorkingSet', () => {
  it('sequential: touches every page once, tags each with its gfn, accepts each chunk once', async () => {
    const { vm } = await swVm();
    let result: TouchResult | undefined;
    const start = 2 * MiB;
    vm.createVcpu(0, function* (g) {
      result = yield* touchWorkingSet(g, { gpa: start, size: 4 * MiB, acceptChunk: MiB });
    });
    const r = runVmm(vm);
    expect(r.ok).toBe(true);
    expect(result).toEqual({ accesses: 1024, accepts: 4, exceptions: 0 });
    const t = tags(vm, start / PAGE, (start + 4 * MiB) / PAGE);
    expect(t.size).toBe(1024);
    for (const [g, tag] of t) expect(tag).toBe(BigInt(g));
    expect(vm.stats().memory.guestMemfdPages).toBe(1024);
  });

  it('random: accepts exactly the chunks it touched; reads take no conversions; a shared accepted set is reused', async () => {
    const { vm } = await swVm();
    const accepted = new AcceptedChunks(MiB);
    const results: TouchResult[] = [];
    vm.createVcpu(0, function* (g) {
      results.push(yield* touchWorkingSet(g, { gpa: 0, size: 4 * MiB, accesses: 64, pattern: 'random', accepted }));
      results.push(yield* touchWorkingSet(g, { gpa: 0, size: 4 * MiB, accesses: 64, pattern: 'random', accepted, write: false }));
    });
    expect(runVmm(vm).ok).toBe(true);
    const t = tags(vm, 0, (4 * MiB) / PAGE);
    const written = [...t].filter(([, tag]) => tag !== undefined).map(([g]) => g);
    const chunks = new Set(written.map((g) => Math.floor((g * PAGE) / MiB)));
    expect(results[0]).toEqual({ accesses: 64, accepts: chunks.size, exceptions: 0 });
    for (const g of written) expect(t.get(g)).toBe(BigInt(g));
    expect(written.length).toBeLessThanOrEqual(64);
    expect(written.length).toBeGreaterThan(32); // 64 draws over 1024 pages rarely collide much
    expect(accepted.size).toBeGreaterThanOrEqual(chunks.size);
    expect(results[1]!.accesses).toBe(64);
    expect(results[1]!.accepts).toBe(accepted.size - chunks.size);
    expect(vm.stats().conversions.conversions).toBe(1);
  });

  describe('on an arch whose private memory must be accepted (#VE until accepted)', () => {
    interface AcceptApi {
      readonly accepted: Set<number>;
      /** gfns whose accesses take a machine check (#MC), which no accept can fix. */
      readonly poisoned: Set<number>;
      accepts: number;
    }
    const fakeAccept = defineArchPlugin({
      name: 'fake-accept',
      apiVersion: 1,
      vmTypes: ['fake-accept'],
      createVm() {
        const api: AcceptApi = { accepted: new Set(), poisoned: new Set(), accepts: 0 };
        const arch: ArchVm = {
          capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false },
          guestAccess(a) {
            if (api.poisoned.has(a.gfn)) return { kind: 'exception', vector: 18, name: '#MC', gpa: a.gpa };
            return a.private && !api.accepted.has(a.gfn) ? { kind: 'exception', vector: 20, name: '#VE', gpa: a.gpa } : 'ok';
          },
          guestApi: {
            accept(gpa: number, size: number): number {
              api.accepts++;
              for (let g = gpa / PAGE; g < (gpa + size) / PAGE; g++) api.accepted.add(toGfn(g));
              return 0;
            },
          },
          guestKernel: {
            // eslint-disable-next-line require-yield
            *convert(): Generator<ArchGuestStep, ArchGuestOutcome, unknown> {
              return { ok: false, reason: 'not modelled by this test arch' };
            },
            *accept(gpa, size): Generator<ArchGuestStep, ArchGuestOutcome, unknown> {
              const r = yield { kind: 'arch', op: 'accept', args: [gpa, size] };
              return r === 0 ? { ok: true } : { ok: false, reason: String(r) };
            },
            isUnaccepted: (e) => e.vector === 20,
          },
          vmApi: api,
        };
        return arch;
      },
    });

    async function acceptVm() {
      const kvm = openKvm({ hostBytes: 1 << 30, archs: [fakeAccept] });
      const vm = await kvm.createVm({ type: 'fake-accept' });
      setupGuestMemory(vm, { size: 4 * MiB });
      return { vm, api: vm.archApi as AcceptApi };
    }

    it('with acceptChunk, each chunk is accepted before first use and no exception is taken', async () => {
      const { vm, api } = await acceptVm();
      let result: TouchResult | undefined;
      vm.createVcpu(0, function* (g) {
        result = yield* touchWorkingSet(g, { gpa: 0, size: 2 * MiB, acceptChunk: 256 * 1024 });
      });
      expect(runVmm(vm).ok).toBe(true);
      expect(result).toEqual({ accesses: 512, accepts: 8, exceptions: 0 });
      expect(api.accepts).toBe(8);
      expect(vm.stats().vcpu.exceptions).toBe(0);
    });

    it('without it, each first touch takes the exception, accepts its page and retries', async () => {
      const { vm, api } = await acceptVm();
      let result: TouchResult | undefined;
      vm.createVcpu(0, function* (g) {
        result = yield* touchWorkingSet(g, { gpa: 0, size: 64 * PAGE, accesses: 128 });
      });
      expect(runVmm(vm).ok).toBe(true);
      expect(result).toEqual({ accesses: 128, accepts: 64, exceptions: 64 });
      expect(api.accepts).toBe(64);
      expect(vm.stats().vcpu.exceptions).toBe(64);
      for (const [g, tag] of tags(vm, 0, 64)) expect(tag).toBe(BigInt(g));
    });

    it('a chunk the guest believes accepted but the arch does not still takes #VE once, answered by accepting it', async () => {
      const { vm, api } = await acceptVm();
      const accepted = new AcceptedChunks(PAGE);
      accepted.add(0);
      let result: TouchResult | undefined;
      vm.createVcpu(0, function* (g) {
        result = yield* touchWorkingSet(g, { gpa: 0, size: PAGE, accepted });
      });
      expect(runVmm(vm).ok).toBe(true);
      expect(result).toEqual({ accesses: 1, accepts: 1, exceptions: 1 });
      expect(api.accepts).toBe(1);
    });

    it('an exception that does not mean "unaccepted" is a guest panic', async () => {
      const { vm, api } = await acceptVm();
      api.poisoned.add(3);
      const v = vm.createVcpu(0, function* (g) {
        yield* touchWorkingSet(g, { gpa: 0, size: 8 * PAGE, acceptChunk: 8 * PAGE });
      });
      expect(() => v.run()).toThrow(/#MC at 0x3000/);
      expect(api.accepts).toBe(1);
    });
  });

  it('refuses an empty or unaligned working set', async () => {
    const { vm } = await swVm();
    const program: GuestProgram = function* (g) {
      yield* touchWorkingSet(g, { gpa: 0x800, size: MiB });
    };
    const v = vm.createVcpu(0, program);
    expect(() => v.run()).toThrow(RangeError);
    expect(() => new AcceptedChunks(100)).toThrow(RangeError);
  });
});

describe('bounceBuffer (swiotlb)', () => {
  it('converts the region to shared once, then copies private data through the shared slots with no further conversion', async () => {
    const { vm, mem } = await swVm();
    const region = 0x40_0000;
    const buffer = 0x20_0000;
    let result: unknown;
    vm.createVcpu(0, function* (g) {
      yield* g.write(buffer, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
      result = yield* bounceBuffer(g, { gpa: region, size: 4 * PAGE, bufferGpa: buffer, transfers: 10 });
    });
    const r = runVmm(vm, { discard: 'none' });
    expect(r.ok).toBe(true);
    expect(result).toEqual({ transfers: 10, conversions: 1 });
    expect(r.exits['HYPERCALL']).toBe(1);
    expect(r.convertedPages).toBe(4);
    for (let i = 0; i < 4; i++) {
      expect(vm.memslots.getAttributes(region / PAGE + i)).toBe(0);
      expect(vm.process.read(mem.hva + region + i * PAGE, 8)).toEqual({ ok: true, data: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]) });
    }
    expect(vm.stats().memory.sharedAnonPages).toBe(4);
  });
});
