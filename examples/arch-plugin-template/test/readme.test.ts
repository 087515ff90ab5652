// The README's example, run as a test so it stays runnable. The one change: the README imports the
// installed package with `nodeImporter()` from the application's directory; here the package is
// this one, imported by name from source.
import { expect, it } from 'vitest';
import { createArchRegistry } from '@cocokit/sdk';
import { isGuestException, openKvm, runVmm, setupGuestMemory } from '@cocokit/vm';
import type {} from 'cocokit-arch-toy';

it('runs the README example', async () => {
  const kvm = openKvm({ hostBytes: 2 ** 30, registry: createArchRegistry(), importer: (s) => import(/* @vite-ignore */ s) });
  const vm = await kvm.createVm({ type: 'toy' });
  setupGuestMemory(vm, { size: 4 << 20 });

  vm.createVcpu(0, function* (g) {
    const r = yield* g.read(0x1000);
    if (isGuestException(r) && g.isUnaccepted(r)) yield* g.accept(0x1000, 4096);
    yield* g.write(0x1000, new Uint8Array([42]));
    yield* g.convert(0x8000, 4096, false);
    yield* g.write(0x8000, new Uint8Array([7]), { shared: true });
  });
  const result = runVmm(vm);
  expect(result.ok).toBe(true);
  expect(result.exits).toEqual({ HYPERCALL: 1, SYSTEM_EVENT: 1 });
  expect(vm.archApi.ownedPages()).toBe(1);
  expect(vm.archApi.isAccepted(1)).toBe(true);
});
