// The README's example, run as a test so it stays runnable (with @cocokit/host, a dev dependency,
// as the host memory a real VM would lend the plugin).
import { createHost } from '@cocokit/host';
import { createSim, gfn, pfn, type ArchVmContext } from '@cocokit/sdk';
import { expect, it } from 'vitest';
import pkvm, { SMCCC_RET, pkvmMemRequest, type PkvmHypercallExit } from './index.js';

it('runs the README example', () => {
  const sim = createSim();
  sim.costs.register(pkvm.name, pkvm.costs);
  const host = createHost({ bytes: 2 ** 30, sim });
  const exits: PkvmHypercallExit[] = [];
  const s2 = new Map<number, number>();
  const ctx: ArchVmContext = {
    sim,
    host,
    vmType: 'pkvm',
    options: {},
    exit: (e) => {
      exits.push(e as PkvmHypercallExit);
      throw new Error(e.reason);
    },
    vcpu: 0,
    enabledCap: () => undefined,
    markBugged: (reason) => {
      throw new Error(reason);
    },
    translate: (g, root) => {
      const p = root === 'private' ? s2.get(g) : undefined;
      return p === undefined ? undefined : { pfn: pfn(p), level: 0 };
    },
  };
  const vm = pkvm.createVm(ctx);

  expect(vm.guestApi.memShare(0x40000)).toEqual({ kind: 'npf', fault: { gpa: 0x40000, access: 'write' } });
  const page = host.allocPages(0, 'guest_memfd');
  vm.gmemPrepare(page, gfn(0x40), 0);
  s2.set(0x40, page);
  expect(vm.hostAccess(page, false)).toMatchObject({ signal: 'SIGSEGV', kind: 'stage2' });
  expect(vm.vmApi.guestPte(0x40)).toEqual({ state: 'owned', pfn: page });

  expect(() => vm.guestApi.memShare(0x40000)).toThrow('HYPERCALL');
  const exit = exits.pop() as PkvmHypercallExit;
  expect(pkvmMemRequest(exit)).toEqual({ op: 'share', gpa: 0x40000, size: 4096 });
  expect(vm.completeExit(exit, 0)).toEqual({ value: SMCCC_RET.SUCCESS });
  expect(vm.hostAccess(page, true)).toBe('ok');
  expect(vm.vmApi.page(page)).toMatchObject({ host: 'shared-borrowed', owner: { gfn: 0x40 } });

  expect(vm.guestApi.memShare(0x40000)).toBe(SMCCC_RET.INVALID_PARAMETER);
  expect(() => vm.guestApi.memUnshare(0x40000)).toThrow('HYPERCALL');
  expect(vm.completeExit(exits.pop() as PkvmHypercallExit, 0)).toEqual({ value: 0 });
  expect(vm.hostAccess(page, true)).not.toBe('ok');

  s2.clear();
  vm.gmemInvalidate(page, pfn(page + 1));
  expect(vm.hostAccess(page, true)).toBe('ok');
  vm.checkInvariants();
  vm.destroy();
});
