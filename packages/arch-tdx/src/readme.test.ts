// The README's example, run as a test so it stays runnable (and with @cocokit/host, a dev
// dependency, as the host memory a real VM would lend the plugin).
import { createHost } from '@cocokit/host';
import { createSim, gfn, pfn, type ArchExit } from '@cocokit/sdk';
import { expect, it } from 'vitest';
import tdx, { KVM_TDX_MEASURE_MEMORY_REGION } from './index.js';

it('runs the README example', () => {
  const sim = createSim();
  sim.costs.register(tdx.name, tdx.costs);
  const host = createHost({ bytes: 2 ** 32, sim });
  const exits: ArchExit[] = [];
  const bugs: string[] = [];
  const vm = tdx.createVm({
    sim,
    host,
    vmType: 'tdx',
    options: { gpaw: 48, launchFlow: 'seed-001-premap' },
    exit(e) {
      exits.push(e);
      throw new Error(`exit ${e.reason}`);
    },
    vcpu: undefined,
    enabledCap: () => undefined,
    markBugged: (reason) => void bugs.push(reason),
    translate: () => undefined,
  });
  const [p0, p1] = [host.allocPages(0, 'guest_memfd'), host.allocPages(0, 'guest_memfd')];

  // Seed 001's flow, which needs no core to map (upstream's INIT_MEM_REGION asks the core, see below).
  // KVM_PRE_FAULT_MEMORY of one page, as the MMU does it: SEPT.ADD each missing level, then the leaf.
  for (const level of [3, 2, 1] as const) vm.linkPrivateTable(gfn(0x100), level);
  vm.setPrivateSpte(gfn(0x100), 0, pfn(p0)); // before finalize: premapped, no SEAMCALL
  // KVM_TDX_INIT_MEM_REGION with measurement: TDH.MEM.PAGE.ADD + 16 × TDH.MR.EXTEND.
  vm.vmApi.initMemRegion({ gpa: 0x100000, nrPages: 1, sources: [{ kind: 'zero' }] }, KVM_TDX_MEASURE_MEMORY_REGION);
  const { digest } = vm.finalize(); // TDH.MR.FINALIZE: 48-byte MRTD
  // After finalize a fault is TDH.MEM.PAGE.AUG (PENDING); the guest must accept before use.
  vm.setPrivateSpte(gfn(0x101), 0, pfn(p1));
  const read = { gpa: 0x101000, gfn: gfn(0x101), access: 'read', private: true, pfn: pfn(p1), level: 0, vcpu: 0 } as const;
  const before = vm.guestAccess(read); // { kind: 'exception', vector: 20, name: '#VE', gpa: 0x101000 }
  const accepted = vm.guestApi.accept(0x101000); // { kind: 'status', status: 0n }: TDX_SUCCESS
  const after = vm.guestAccess(read); // 'ok'
  const host1 = vm.hostAccess(pfn(p1), true); // { signal: 'SIGBUS', kind: 'integrity', ... }

  expect(digest).toHaveLength(48);
  expect(before).toEqual({ kind: 'exception', vector: 20, name: '#VE', gpa: 0x101000 });
  expect(accepted).toEqual({ kind: 'status', status: 0n });
  expect(after).toBe('ok');
  expect(host1).toMatchObject({ signal: 'SIGBUS', kind: 'integrity' });
  expect(sim.now).toBeGreaterThan(0);
  expect(exits).toEqual([]);
  expect(bugs).toEqual([]);
});
