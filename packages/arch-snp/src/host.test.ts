/** The plugin over the real host model (@cocokit/host, a dev dependency): its hooks install as they are. */
import { createHost } from '@cocokit/host';
import { createSim, gfn as toGfn, type ArchVmContext } from '@cocokit/sdk';
import { describe, expect, it } from 'vitest';
import snp from './index.js';

describe('snp over @cocokit/host', () => {
  it('its hostAccess installs as the host access check: a guest-owned page faults the host with SIGBUS', () => {
    const sim = createSim({ seed: 1 });
    sim.costs.register(snp.name, snp.costs);
    const host = createHost({ bytes: 2 ** 34, sim });
    const ctx: ArchVmContext = {
      sim,
      host,
      vmType: 'snp',
      options: {},
      exit: (e) => {
        throw new Error(`unexpected exit ${e.reason}`);
      },
      // Outside any vCPU, nothing enabled, nothing mapped: what the core lends a VM with no guest running.
      vcpu: undefined,
      enabledCap: () => undefined,
      markBugged: (reason) => {
        throw new Error(`unexpected KVM_BUG_ON: ${reason}`);
      },
      translate: () => undefined,
    };
    const vm = snp.createVm(ctx);
    const folio = host.allocPages(9, 'guest_memfd', { zero: true });
    const remove = host.addHostAccessCheck(vm.hostAccess.bind(vm));
    vm.gmemPrepare(folio, toGfn(0), 9);
    expect(host.checkHostAccess(folio, true)).toMatchObject({ signal: 'SIGBUS', kind: 'rmp' });
    expect(host.checkHostAccess(folio, false)).toBe('ok');
    vm.gmemInvalidate(folio, (folio + 512) as typeof folio);
    expect(host.checkHostAccess(folio, true)).toBe('ok');
    remove();
    vm.checkInvariants();
  });
});
