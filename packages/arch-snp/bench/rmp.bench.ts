/**
 * The SNP backend's hot paths on a 1 TiB host: RMPUPDATE through gmemPrepare/gmemInvalidate (4K and
 * 2M), PVALIDATE, SNP_LAUNCH_UPDATE with the launch digest, and what an assigned page costs in
 * memory (best case: one contiguous assignment; worst case: every other page).
 *
 *   cd packages/arch-snp && pnpm bench            (COCOKIT_BENCH_QUICK=1 for a short run)
 */
import { heapUsed, runSuite } from '@cocokit/bench';
import { createHost } from '@cocokit/host';
import { createSim, gfn, pfn, type ArchVmContext } from '@cocokit/sdk';
import snp from '@cocokit/arch-snp';

const BATCH = 512;

function newVm() {
  const sim = createSim({ seed: 1 });
  sim.costs.register(snp.name, snp.costs);
  const host = createHost({ bytes: 2 ** 40 });
  const ctx: ArchVmContext = {
    sim,
    host,
    vmType: 'snp',
    options: {},
    exit: (e) => {
      throw new Error(`unexpected exit ${e.reason}`);
    },
    // Outside any vCPU, nothing enabled: what the core lends a VM with no guest running.
    vcpu: undefined,
    enabledCap: () => undefined,
    markBugged: (reason) => {
      throw new Error(`unexpected KVM_BUG_ON: ${reason}`);
    },
    // The nested tables map gfn g of the first 1 GiB to base + g, as the core's fault path would
    // after gmemPrepare: PVALIDATE walks them (ctx.translate) before it checks the RMP.
    translate: (g, root) => (root === 'private' && g < 2 ** 18 ? { pfn: pfn(base + g), level: 0 } : undefined),
  };
  // Guest memory the host really allocated (its model refuses writes to free pages): 1 GiB.
  const base: number = host.allocPages(18, 'guest_memfd');
  return { sim, host, base, vm: snp.createVm(ctx) };
}

await runSuite('@cocokit/arch-snp', 'rmp', (s) => {
  const { vm, base } = newVm();

  s.add(
    'gmemPrepare + gmemInvalidate, 4K (per page: RMPUPDATE private + shared)',
    () => {
      for (let i = 0; i < BATCH; i++) vm.gmemPrepare(pfn(base + i), gfn(i), 0);
      vm.gmemInvalidate(pfn(base), pfn(base + BATCH));
    },
    { opsPerCall: BATCH },
  );
  s.add(
    'gmemPrepare + gmemInvalidate, 2M folio (per 2M: one RMPUPDATE each way)',
    () => {
      for (let i = 0; i < 8; i++) vm.gmemPrepare(pfn(base + i * 512), gfn(i * 512), 9);
      vm.gmemInvalidate(pfn(base), pfn(base + 8 * 512));
    },
    { opsPerCall: 8 },
  );
  s.add(
    'gmemInvalidate of 4K pages out of a 2M entry (per page, PSMASH included)',
    () => {
      vm.gmemPrepare(pfn(base), gfn(0), 9);
      for (let i = 0; i < BATCH; i++) vm.gmemInvalidate(pfn(base + i), pfn(base + i + 1));
    },
    { opsPerCall: BATCH },
  );

  const pv = newVm();
  for (let i = 0; i < BATCH; i++) pv.vm.gmemPrepare(pfn(pv.base + i), gfn(i), 0);
  let validate = true;
  s.add(
    'PVALIDATE 4K (per instruction, alternating validate/rescind)',
    () => {
      for (let i = 0; i < BATCH; i++) pv.vm.guestApi.pvalidate(i * 4096, '4K', validate);
      validate = !validate;
    },
    { opsPerCall: BATCH },
  );

  const page = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7) & 0xff);
  const startLaunch = () => {
    const l = newVm();
    l.vm.vmApi.launchStart({ policy: 2 ** 17 });
    return l;
  };
  let launch = startLaunch();
  let next = 0;
  s.add(
    'SNP_LAUNCH_UPDATE normal page (per page: copy, RMPUPDATE, SHA-384 x2)',
    () => {
      if (next + 64 > 2 ** 16) {
        launch = startLaunch();
        next = 0;
      }
      for (let i = 0; i < 64; i++) {
        launch.vm.populate(gfn(next), pfn(launch.base + next), { kind: 'bytes', bytes: page }, 'normal');
        next++;
      }
    },
    { opsPerCall: 64 },
  );

  // Memory per assigned page.
  const N = 2 ** 17; // 512 MiB of guest pages
  const one = (v: number) => ({ median: v, min: v, max: v, samples: 1 });
  const before = heapUsed();
  const contiguous = newVm();
  for (let i = 0; i < N; i++) contiguous.vm.gmemPrepare(pfn(contiguous.base + i), gfn(i), 0);
  const afterContiguous = heapUsed();
  const sparse = newVm();
  for (let i = 0; i < N; i++) sparse.vm.gmemPrepare(pfn(sparse.base + 2 * i), gfn(2 * i + 1), 0);
  const afterSparse = heapUsed();
  s.record({ name: 'heap per assigned 4K page, 2^17 contiguous pages', unit: 'bytes', ...one((afterContiguous - before) / N) });
  s.record({ name: 'heap per assigned 4K page, 2^17 pages every other pfn', unit: 'bytes', ...one((afterSparse - afterContiguous) / N) });
  s.record({ name: 'RMP runs, 2^17 contiguous pages', unit: 'runs', ...one(contiguous.vm.vmApi.rmpStats().runs) });
  s.record({ name: 'RMP runs, 2^17 pages every other pfn', unit: 'runs', ...one(sparse.vm.vmApi.rmpStats().runs) });
});
