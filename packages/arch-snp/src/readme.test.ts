// The README's example, run as a test so it stays runnable (with @cocokit/host, a dev dependency,
// as the host memory a real VM would lend the plugin).
import { createHost } from '@cocokit/host';
import { createSim, gfn, pfn, uapi, type ArchVmContext } from '@cocokit/sdk';
import { expect, it } from 'vitest';
import snp, { createPscBuffer, type MapGpaRangeExit } from './index.js';

it('runs the README example', () => {
  const sim = createSim();
  sim.costs.register(snp.name, snp.costs);
  const host = createHost({ bytes: 2 ** 36, sim });
  const caps = new Map([[uapi.KVM_CAP_EXIT_HYPERCALL, 2 ** uapi.KVM_HC_MAP_GPA_RANGE]]);
  const exits: MapGpaRangeExit[] = [];
  const npt = new Map<number, number>();
  const ctx: ArchVmContext = {
    sim,
    host,
    vmType: 'snp',
    options: {},
    exit: (e) => {
      exits.push(e as MapGpaRangeExit);
      throw new Error(e.reason);
    },
    vcpu: 0,
    enabledCap: (cap) => caps.get(cap),
    markBugged: (reason) => {
      throw new Error(reason);
    },
    translate: (g, root) => {
      const p = root === 'private' ? npt.get(g) : undefined;
      return p === undefined ? undefined : { pfn: pfn(p), level: 0 };
    },
  };
  const vm = snp.createVm(ctx);

  const image = host.allocPages(9, 'guest_memfd');
  vm.vmApi.launchStart({ policy: 1 << 17 });
  vm.populate(gfn(0), image, { kind: 'bytes', bytes: new Uint8Array(4096).fill(0x90) }, 'normal');
  vm.vmApi.addVmsa(image + 1, new Uint8Array(4096));
  expect(vm.finalize()).toMatchObject({ kind: 'snp-launch-digest', digest: expect.any(Uint8Array) as unknown });

  const folio = host.allocPages(9, 'guest_memfd');
  vm.gmemPrepare(folio, gfn(512), 9);
  for (let i = 0; i < 512; i++) npt.set(512 + i, folio + i);
  const read = { gpa: 512 * 4096, gfn: gfn(512), access: 'read', private: true, pfn: folio, level: 1, vcpu: 0 } as const;
  expect(vm.guestAccess(read)).toEqual({ kind: 'exception', vector: 29, name: '#VC', errorCode: 0x404, gpa: 512 * 4096 });
  expect(vm.guestApi.pvalidate(512 * 4096, '2M', true)).toEqual({ kind: 'done', rc: 0 });
  expect(vm.guestAccess(read)).toBe('ok');
  expect(vm.hostAccess(folio, true)).toMatchObject({ signal: 'SIGBUS', kind: 'rmp', reason: expect.stringMatching(/^RMP #PF: /) as unknown });

  expect(() => vm.guestApi.psc(createPscBuffer([{ gfn: 0x100, op: 'SHARED' }]))).toThrow('HYPERCALL');
  const exit = exits.pop() as MapGpaRangeExit;
  expect(exit).toMatchObject({ reason: 'HYPERCALL', exitReason: uapi.KVM_EXIT_HYPERCALL, nr: uapi.KVM_HC_MAP_GPA_RANGE, args: [0x100000, 1, 0] });
  exit.ret = 0;
  expect(vm.completeExit(exit, 0)).toEqual({ value: 0 });

  npt.clear();
  vm.gmemInvalidate(folio, pfn(folio + 512));
  vm.gmemInvalidate(image, pfn(image + 1));
  vm.destroy();
  expect(vm.vmApi.rmpStats().assignedPages).toBe(0);
  expect(vm.vmApi.launchPhase).toBe('decommissioned');
  vm.checkInvariants();
});
