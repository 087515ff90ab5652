import { describe, expect, it } from 'vitest';
import { defineArchPlugin, gfn } from '@cocokit/sdk';
import { Vmm, openKvm, runVmm, setupGuestMemory, type ConversionPath, type DiscardPolicy, type GuestProgram } from './index.js';
import { firmwareBoot, touchWorkingSet } from './guest/index.js';

const MiB = 2 ** 20;

/** Seed 000's boot: the firmware flips its DMA pages on every transfer, then the OS touches its memory. */
const bootThenWork: GuestProgram = function* (g) {
  yield* firmwareBoot(g, { dmaGpa: 0x10_0000, transfers: 16 });
  yield* touchWorkingSet(g, { gpa: 0x20_0000, size: 4 * MiB, accesses: 2048, pattern: 'random' });
};

const cases: Array<{ path: ConversionPath; discard?: DiscardPolicy }> = [
  { path: 'attributes', discard: 'both' },
  { path: 'attributes', discard: 'lazy' },
  { path: 'in-place' },
];

describe('end to end: sw-protected', () => {
  for (const c of cases) {
    it(`boots with the firmware pattern and runs a workload (${c.path}${c.discard ? `, discard ${c.discard}` : ''})`, async () => {
      const kvm = openKvm({ hostBytes: 1 << 30, inPlaceConversion: c.path === 'in-place' });
      const vm = await kvm.createVm({ type: 'sw-protected' });
      setupGuestMemory(vm, { size: 16 * MiB, path: c.path });
      vm.createVcpu(0, bootThenWork);
      const r = runVmm(vm, { path: c.path, ...(c.discard ? { discard: c.discard } : {}) });
      expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
      // 16 transfers × 2 conversions, each one KVM_HC_MAP_GPA_RANGE exit handled by the helper.
      expect(r.exits['HYPERCALL']).toBe(32);
      expect(r.conversions).toBe(32);
      expect(vm.stats().conversions.conversions).toBe(32 + (c.path === 'attributes' ? 1 : 0));
      vm.checkInvariants();
      kvm.checkInvariants();
    });
  }
});

describe('end to end: default (no private memory)', () => {
  // The same program on a plain VM: the firmware sees no memory encryption and does its DMA in
  // place, so nothing converts and the exit loop only sees the final shutdown. Under 'attributes'
  // RAM is anonymous memory of the VMM; under 'in-place' it is a guest_memfd with MMAP and
  // INIT_SHARED mapped into the VMM (6.18's guest_memfd for non-confidential VMs).
  for (const path of ['attributes', 'in-place'] as const) {
    it(`boots with the firmware pattern and runs a workload (${path === 'attributes' ? 'anonymous memory' : 'guest_memfd, mmapped'})`, async () => {
      const kvm = openKvm({ hostBytes: 1 << 30 });
      const vm = await kvm.createVm({ type: 'default' });
      const mem = setupGuestMemory(vm, { size: 16 * MiB, path });
      expect(mem.file === undefined).toBe(path === 'attributes');
      let boot: { conversions: number } | undefined;
      vm.createVcpu(0, function* (g) {
        boot = yield* firmwareBoot(g, { dmaGpa: 0x10_0000, transfers: 16 });
        yield* touchWorkingSet(g, { gpa: 0x20_0000, size: 4 * MiB, accesses: 2048, pattern: 'random' });
      });
      const r = runVmm(vm, { path });
      expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
      expect(boot?.conversions).toBe(0);
      expect(r.conversions).toBe(0);
      expect(r.exits['HYPERCALL'] ?? 0).toBe(0);
      expect(r.exits['MEMORY_FAULT'] ?? 0).toBe(0);
      expect(r.vcpus.map((v) => v.state)).toEqual(['shutdown']);
      const s = vm.stats();
      expect(s.conversions.conversions).toBe(0);
      // Every page the guest touched is backed exactly once, in the backing the layout chose.
      const touched = s.memory.guestMemfdPages + s.memory.sharedAnonPages;
      expect(touched).toBeGreaterThan(2);
      expect(path === 'attributes' ? s.memory.guestMemfdPages : s.memory.sharedAnonPages).toBe(0);
      vm.checkInvariants();
      kvm.checkInvariants();
    });
  }
});

describe('end to end: memory and time after the boot, per conversion path', () => {
  const program: GuestProgram = function* (g) {
    yield* firmwareBoot(g, { dmaGpa: 0x10_0000, dmaPages: 2, transfers: 16 });
    yield* touchWorkingSet(g, { gpa: 0x40_0000, size: 4 * MiB });
  };
  const run = async (path: ConversionPath, discard?: DiscardPolicy) => {
    const kvm = openKvm({ hostBytes: 1 << 30, inPlaceConversion: path === 'in-place' });
    const vm = await kvm.createVm({ type: 'sw-protected' });
    setupGuestMemory(vm, { size: 16 * MiB, path });
    vm.createVcpu(0, program);
    const vmm = new Vmm(vm, { path, ...(discard === undefined ? {} : { discard }) });
    const setupNs = vm.sim.now;
    const r = vmm.run();
    expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
    vm.checkInvariants();
    kvm.checkInvariants();
    return { vm, vmm, r, bootNs: r.nowNs - setupNs, memory: vm.stats().memory };
  };

  it('the discard policy decides which copies of the DMA pages stay allocated', async () => {
    const working = (4 * MiB) / 4096;
    const both = await run('attributes', 'both');
    expect([both.memory.guestMemfdPages, both.memory.sharedAnonPages]).toEqual([working, 0]);
    const privateOnly = await run('attributes', 'private-only');
    expect([privateOnly.memory.guestMemfdPages, privateOnly.memory.sharedAnonPages]).toEqual([working, 2]);
    const none = await run('attributes', 'none');
    expect([none.memory.guestMemfdPages, none.memory.sharedAnonPages]).toEqual([working, 2]);
    // The host's high-water mark sees the two shared copies no discard left behind.
    expect(none.memory.peakHostUsedFrames - both.memory.peakHostUsedFrames).toBe(2);
    expect(both.memory.peakHostUsedFrames).toBe(both.memory.hostUsedFrames);
    // Lazy: every flip back cancelled the queued discard; the last two drops wait for a flush.
    const lazy = await run('attributes', 'lazy');
    expect([lazy.memory.guestMemfdPages, lazy.memory.sharedAnonPages]).toEqual([working, 2]);
    expect(lazy.vm.stats().conversions).toMatchObject({ punchHoles: 0, sharedDiscards: 0, lazyCancelledPages: 30, pendingDiscardPages: 2 });
    expect(lazy.vmm.flushDiscards()).toBe(2);
    expect(lazy.vm.stats().memory.sharedAnonPages).toBe(0);
    // In place: one copy, the DMA pages' own guest_memfd pages.
    const inPlace = await run('in-place');
    expect([inPlace.memory.guestMemfdPages, inPlace.memory.sharedAnonPages]).toEqual([working + 2, 0]);
  });

  it("seed 000's ordering in virtual time: discarding on every conversion boots slowest, no discard fastest", async () => {
    const t = async (discard: DiscardPolicy) => (await run('attributes', discard)).bootNs;
    const [both, privateOnly, lazy, none] = [await t('both'), await t('private-only'), await t('lazy'), await t('none')];
    expect(both).toBeGreaterThan(privateOnly);
    expect(privateOnly).toBeGreaterThan(none);
    expect(lazy).toBeLessThan(privateOnly);
  });
});

describe('end to end: several vCPUs', () => {
  it('interleave in virtual time through the simulation kernel, each booting and working on its own memory', async () => {
    const kvm = openKvm({ hostBytes: 1 << 30 });
    const vm = await kvm.createVm({ type: 'sw-protected' });
    setupGuestMemory(vm, { size: 32 * MiB });
    for (let i = 0; i < 3; i++) {
      vm.createVcpu(i, function* (g) {
        yield* firmwareBoot(g, { dmaGpa: 0x10_0000 + i * 0x1000, dmaPages: 1, transfers: 4 + i });
        yield* touchWorkingSet(g, { gpa: (4 + 8 * i) * MiB, size: 2 * MiB, pattern: 'random', accesses: 256 });
      });
    }
    const r = runVmm(vm, { discard: 'lazy' });
    expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
    expect(r.vcpus.map((v) => v.state)).toEqual(['shutdown', 'shutdown', 'shutdown']);
    expect(r.exits['HYPERCALL']).toBe(2 * (4 + 5 + 6));
    expect(r.nowNs).toBe(Math.max(...r.vcpus.map((v) => v.nowNs)));
    for (const v of r.vcpus) expect(v.nowNs).toBeGreaterThan(0);
    expect(vm.stats().vcpus).toBe(3);
    vm.checkInvariants();
    kvm.checkInvariants();
  });
});

describe('end to end: an arch that classifies accesses by their encrypted flag', () => {
  // SNP-like: a guest that touches memory as shared without asking first gets a MEMORY_FAULT exit,
  // which the Vmm helper answers by converting (QEMU's kvm_convert_memory), and the access completes.
  const encPlugin = defineArchPlugin({
    name: 'e2e-enc',
    apiVersion: 1,
    vmTypes: ['e2e-enc'],
    createVm: () => ({
      capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false },
      classifyFault: (f) => ({ gfn: gfn(Math.floor(f.gpa / 4096)), private: f.encrypted ?? true }),
    }),
  });

  it('implicit conversions through MEMORY_FAULT exits, in both directions', async () => {
    const kvm = openKvm({ hostBytes: 1 << 30, archs: [encPlugin] });
    const vm = await kvm.createVm({ type: 'e2e-enc' });
    setupGuestMemory(vm, { size: 4 * MiB });
    const got: unknown[] = [];
    vm.createVcpu(0, function* (g) {
      for (let i = 0; i < 4; i++) {
        yield* g.write(0x10_0000 + i * 4096, new Uint8Array([i + 1]), { shared: true });
        got.push(yield* g.read(0x10_0000 + i * 4096, 1, { shared: true }));
        yield* g.write(0x10_0000 + i * 4096, new Uint8Array([0x80 + i]));
      }
    });
    const r = runVmm(vm, { discard: 'none' });
    expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
    expect(r.exits['MEMORY_FAULT']).toBe(8);
    expect(r.conversions).toBe(8);
    expect(got).toEqual([1, 2, 3, 4].map((b) => new Uint8Array([b])));
    for (let i = 0; i < 4; i++) expect(vm.memslots.getAttributes(0x100 + i)).toBe(8);
    vm.checkInvariants();
  });
});
