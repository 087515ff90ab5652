// A plugin for VM type 'owner' whose VMs hold host state: a host-access check refusing every host
// write while the VM lives, and a destroy hook that reports itself through
// `archOptions.onDestroy`. For the tests that a VM refused after its arch exists leaves nothing
// of it behind. Branded by hand (see ../README.md).
export default {
  name: 'owner',
  apiVersion: 1,
  vmTypes: ['owner'],
  costs: {},
  createVm(ctx) {
    return {
      capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false },
      hostAccess(pfn, write) {
        return write ? { signal: 'SIGBUS', kind: 'stage2', reason: `pfn ${pfn} belongs to an owner VM` } : 'ok';
      },
      destroy() {
        if (typeof ctx.options.onDestroy === 'function') ctx.options.onDestroy();
      },
    };
  },
  [Symbol.for('cocokit.arch-plugin')]: 1,
};
