// The "Under @cocokit/vm" example of packages/arch-tdx/README.md, run as written (sizes as there),
// so it cannot rot. It lives here, not in the plugin, because the plugin does not depend on the core.
import tdx, { KVM_TDX_MEASURE_MEMORY_REGION } from '@cocokit/arch-tdx';
import { openKvm, runVmm, setupGuestMemory } from '@cocokit/vm';
import { firmwareBoot, touchWorkingSet } from '@cocokit/vm/guest';
import { expect, it } from 'vitest';

it('runs the arch-tdx README example under @cocokit/vm', async () => {
  const kvm = openKvm({ archs: [tdx], hostBytes: 1 << 30 });
  const vm = await kvm.createVm({ type: 'tdx', archOptions: { gpaw: 48 } });
  setupGuestMemory(vm, { size: 16 << 20, path: 'attributes' }); // private at start
  // The TD image: 16 pages (zero-filled here; `{ kind: 'bytes', bytes }` for real contents).
  const sources = Array.from({ length: 16 }, () => ({ kind: 'zero' }) as const);
  expect(() => vm.preFaultMemory({ gpa: 0, size: 4096 })).toThrow(/EOPNOTSUPP/);
  vm.archApi.initMemRegion({ gpa: 0, nrPages: 16, sources }, KVM_TDX_MEASURE_MEMORY_REGION);
  const mrtd = vm.finalize(); // { kind: 'mrtd', digest: Uint8Array(48) }; pre-faulting is allowed from here on
  vm.createVcpu(0, function* (g) {
    yield* firmwareBoot(g, { dmaGpa: 0x10_0000, transfers: 8 }); // 16 MapGPA exits
    yield* touchWorkingSet(g, { gpa: 0x20_0000, size: 8 << 20, acceptChunk: 2 << 20, accesses: 1024 });
  });
  const run = runVmm(vm, { path: 'attributes', discard: 'both' }); // or 'lazy'
  // run.exits: { HYPERCALL: 16, SYSTEM_EVENT: 1 }

  expect(mrtd).toMatchObject({ kind: 'mrtd', digest: expect.any(Uint8Array) as unknown });
  expect(mrtd?.digest).toHaveLength(48);
  expect(vm.preFaultAllowed).toBe(true);
  expect(run.ok, JSON.stringify(run.vcpus)).toBe(true);
  expect(run.exits).toEqual({ HYPERCALL: 16, SYSTEM_EVENT: 1 });
  expect(vm.archApi.module.stats().calls['TDH.MEM.PAGE.ADD']).toBe(16);
  vm.checkInvariants();
  kvm.checkInvariants();
});
