/**
 * Guest accesses through 2M and 1G leaves land on the page of the gfn they name: the MMU's
 * `lookup` answers the pfn of the gfn itself, so the vCPU adds no offset of its own.
 */
import { describe, expect, it } from 'vitest';
import { uapi } from '@cocokit/sdk';
import { openKvm, runVmm, setupGuestMemory } from './index.js';

const PAGE = 4096;
const MiB = 2 ** 20;
const GiB = 2 ** 30;

describe('guest accesses inside huge leaves', () => {
  for (const [name, huge, size] of [['2M', uapi.GUEST_MEMFD_HUGE_2MB, 4 * MiB], ['1G', uapi.GUEST_MEMFD_HUGE_1GB, GiB]] as const) {
    it(`a write at an offset inside a ${name} leaf tags the folio's page at that offset`, async () => {
      const kvm = openKvm({ hostBytes: 4 * GiB, inPlaceConversion: true });
      const vm = await kvm.createVm({ type: 'sw-protected', proposals: { hugetlb: true } });
      const mem = setupGuestMemory(vm, { size, path: 'in-place', fileFlags: uapi.GUEST_MEMFD_FLAG_HUGETLB | huge });
      const pages = [0, 1, 7, size / PAGE / 2 + 3, size / PAGE - 1];
      vm.createVcpu(0, function* (g) {
        for (const p of pages) yield* g.write(p * PAGE, BigInt(1000 + p));
      });
      expect(runVmm(vm, { path: 'in-place' }).ok).toBe(true);
      const file = mem.file!.file;
      expect(vm.mmu.lookup(pages[3]!)?.level).toBe(name === '2M' ? 1 : 2);
      for (const p of pages) {
        const f = file.folioAt(p)!;
        expect(vm.host.tagAt((f.pfn as number) + (p - (f.index as number))), `page ${p}`).toBe(BigInt(1000 + p));
      }
      vm.checkInvariants();
    });
  }
});
