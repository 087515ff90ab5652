/**
 * Random sequences of create / fallocate / punch / mmap-touch / pin / convert / bind / unbind /
 * get_pfn / close, checking every invariant (gmem's and the host's) after every step, for both
 * huge-folio policies.
 */
import { describe, it } from 'vitest';
import fc from 'fast-check';
import { isKvmError, uapi } from '@cocokit/sdk';
import type { Pfn } from '@cocokit/sdk';
import { MAP, PROT } from '@cocokit/host';
import type { GuestMemfd } from './guest-memfd.js';
import type { GmemBinding } from './gmem-vm.js';
import { setup, slotAt } from './test-helpers.js';

const { GUEST_MEMFD_FLAG_HUGETLB, GUEST_MEMFD_HUGE_2MB } = uapi;

const P = 4096;
const { FALLOC_FL_KEEP_SIZE: KEEP, FALLOC_FL_PUNCH_HOLE: PUNCH } = uapi;

const step = fc.record({
  kind: fc.constantFrom('create', 'alloc', 'punch', 'touch', 'pin', 'unpin', 'convert', 'bind', 'unbind', 'getpfn', 'close', 'cache'),
  a: fc.nat(2047),
  b: fc.integer({ min: 1, max: 1024 }),
  flag: fc.boolean(),
});

function run(policy: 'split-eager' | 'split-on-fault', steps: ReadonlyArray<{ kind: string; a: number; b: number; flag: boolean }>): void {
  const { vm, vmm, host } = setup({ privateMem: true, hugePolicy: policy, proposals: { memoryAttributes2: true, gmemConvert: true, hugetlb: true, noDirectMap: true } });
  const files: Array<{ f: GuestMemfd; addr: number }> = [];
  const pins: Pfn[][] = [];
  const bound: Array<{ b: GmemBinding; slot: ReturnType<typeof slotAt> }> = [];
  let nextGfn = 0;
  for (const s of steps) {
    const live = files.filter((x) => x.f.alive && !x.f.fdsClosed);
    const pick = live[s.a % Math.max(1, live.length)];
    try {
      switch (s.kind) {
        case 'create': {
          const huge = s.a % 3 === 0;
          const flags = uapi.GUEST_MEMFD_FLAG_MMAP | (s.flag ? uapi.GUEST_MEMFD_FLAG_INIT_SHARED : 0) | (s.a % 5 === 0 ? uapi.GUEST_MEMFD_FLAG_NO_DIRECT_MAP : 0) | (huge ? GUEST_MEMFD_FLAG_HUGETLB + GUEST_MEMFD_HUGE_2MB : 0);
          const f = vm.createGuestMemfd({ size: 4 * 512 * P, flags });
          const addr = vmm.mmap({ length: 4 * 512 * P, prot: PROT.READ | PROT.WRITE, flags: MAP.SHARED, file: f });
          files.push({ f, addr });
          break;
        }
        case 'alloc':
          pick?.f.fallocate(KEEP, (s.a % 2048) * P, s.b * P);
          break;
        case 'punch':
          pick?.f.fallocate(KEEP | PUNCH, (s.a % 2048) * P, s.b * P);
          break;
        case 'touch':
          if (pick) vmm.touch(pick.addr + (s.a % 2048) * P, Math.min(s.b, 8) * P, s.flag ? 'write' : 'read');
          break;
        case 'pin':
          if (pick) pins.push(vmm.gup(pick.addr + (s.a % 2048) * P, 1, { longterm: true }));
          break;
        case 'unpin': {
          const p = pins.pop();
          if (p) vmm.unpin(p, { longterm: true });
          break;
        }
        case 'convert':
          if (pick) {
            const off = (s.a % 2048) * P;
            const size = Math.min(s.b, 2048 - (s.a % 2048)) * P;
            if (s.flag) pick.f.setMemoryAttributes2({ offset: off, size, attributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE });
            else pick.f.convertShared({ offset: off, size });
          }
          break;
        case 'bind':
          if (pick) {
            const req = { fd: pick.f.fd, vm: vm.vmToken, offset: s.a % 2048, npages: Math.min(s.b, 2048 - (s.a % 2048)) };
            vm.binder.checkBind(req);
            const slot = slotAt(nextGfn, req.npages);
            nextGfn += 4096;
            bound.push({ b: vm.binder.bind(req, slot), slot });
          }
          break;
        case 'unbind': {
          const x = bound.splice(s.a % Math.max(1, bound.length), 1)[0];
          if (x) vm.binder.unbind(x.b, x.slot);
          break;
        }
        case 'getpfn': {
          const x = bound[s.a % Math.max(1, bound.length)];
          if (x) vm.getPfn(x.slot, x.slot.baseGfn + (s.b % x.slot.npages));
          break;
        }
        case 'cache':
          if (pick) {
            const c = pick.f.pfnCache(s.a % 2048);
            if (s.flag) c.release();
          }
          break;
        case 'close':
          if (pick) {
            if (s.flag) vmm.munmap(pick.addr, 4 * 512 * P);
            pick.f.close();
          }
          break;
      }
    } catch (e) {
      if (!isKvmError(e)) throw e;
    }
    vm.checkInvariants();
    host.checkInvariants();
  }
}

describe('gmem property: invariants hold after every step', () => {
  for (const policy of ['split-eager', 'split-on-fault'] as const) {
    it(`${policy}`, () => {
      fc.assert(fc.property(fc.array(step, { minLength: 1, maxLength: 40 }), (steps) => run(policy, steps)), { numRuns: 60 });
    });
  }
});
