/** Random sequences of faults, conversions, punches, zaps, pre-faults and dirty-log toggles keep every invariant. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { isKvmError, uapi } from '@cocokit/sdk';
import { HUGETLB_2M, MiB, fakeArch, setup } from './test-env.js';

const PAGE = 4096;
const PUNCH = uapi.FALLOC_FL_KEEP_SIZE | uapi.FALLOC_FL_PUNCH_HOLE;
const GMEM_PAGES = 1024; // 4 MiB at gfn 0
const HVA_BASE = 2048; // 1 MiB at gfn 2048

const op = fc.oneof(
  fc.record({ t: fc.constant('fault' as const), g: fc.integer({ min: 0, max: 2400 }), write: fc.boolean(), enc: fc.boolean() }),
  fc.record({ t: fc.constant('attr' as const), g: fc.integer({ min: 0, max: 2300 }), n: fc.integer({ min: 1, max: 600 }), priv: fc.boolean() }),
  fc.record({ t: fc.constant('punch' as const), g: fc.integer({ min: 0, max: GMEM_PAGES / 512 - 1 }) }),
  fc.record({ t: fc.constant('zap' as const), g: fc.integer({ min: 0, max: 2400 }), n: fc.integer({ min: 1, max: 1024 }) }),
  fc.record({ t: fc.constant('prefault' as const), g: fc.integer({ min: 0, max: 2400 }), n: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ t: fc.constant('dirty' as const), on: fc.boolean() }),
  fc.record({ t: fc.constant('harvest' as const) }),
  fc.record({ t: fc.constant('hva' as const), g: fc.integer({ min: 0, max: 255 }), n: fc.integer({ min: 1, max: 64 }) }),
);

describe('MMU invariants under random operations', () => {
  it('hold after every step, with either hugepage recovery policy and with a mirror root', () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 40 }), fc.boolean(), fc.boolean(), (ops, eager, mirror) => {
        const { arch } = fakeArch({ mirror, maxPrivateLevel: mirror ? 0 : 2 });
        const env = setup({ arch, proposals: { hugetlb: true }, hugepageRecovery: eager ? 'eager' : 'on-fault' });
        const { file } = env.gmemSlot(0, 0, GMEM_PAGES * PAGE, HUGETLB_2M);
        const { hva } = env.hvaSlot(1, HVA_BASE * PAGE, MiB);
        let logging = false;
        for (const o of ops) {
          switch (o.t) {
            case 'fault': {
              const r = env.mmu.fault({ gpa: o.g * PAGE, access: o.write ? 'write' : 'read', encrypted: o.enc });
              if (r.kind === 'mapped') expect(r.private).toBe(o.enc);
              break;
            }
            case 'attr':
              env.setPrivate(o.g * PAGE, o.n * PAGE, o.priv);
              break;
            case 'punch':
              file.fallocate(PUNCH, o.g * 2 * MiB, 2 * MiB);
              break;
            case 'zap':
              env.mmu.zapGfnRange(o.g, o.g + o.n);
              break;
            case 'prefault':
              try {
                env.mmu.preFaultMemory({ gpa: o.g * PAGE, size: o.n * PAGE });
              } catch (e) {
                if (!isKvmError(e)) throw e;
              }
              break;
            case 'dirty':
              if (o.on !== logging) {
                env.memslots.setUserMemoryRegion2({ slot: 1, flags: o.on ? uapi.KVM_MEM_LOG_DIRTY_PAGES : 0, guest_phys_addr: HVA_BASE * PAGE, memory_size: MiB, userspace_addr: hva });
                logging = o.on;
              }
              break;
            case 'harvest':
              if (logging) env.memslots.getDirtyLog({ slot: 1 });
              break;
            case 'hva':
              env.mmu.invalidateHvaRange(hva + o.g * PAGE, hva + (o.g + o.n) * PAGE);
              break;
          }
          env.check();
          expect(env.mmu.seq.inProgress).toBe(0);
        }
        if (logging) {
          // Every writable leaf of a logging slot is marked dirty.
          for (const l of env.mmu.leaves('shared', HVA_BASE, HVA_BASE + 256)) {
            if ((l.flags & 2) !== 0) expect(env.memslots.isDirty(env.memslots.slot(0, 1)!, l.gfn)).toBe(true);
          }
        }
      }),
      { numRuns: 150 },
    );
  });
});
