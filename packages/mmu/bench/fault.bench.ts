/**
 * MMU hot paths on a guest_memfd-backed 64 GiB private slot (an SW_PROTECTED-like VM, the whole
 * slot PRIVATE): 4K faults through the whole pipeline (classification, slot lookup, mismatch
 * check, gmem getPfn, level, map under mmu_lock), first touch and re-fault after zap; 2M faults on
 * 2M hugetlb folios; zap of a range fully mapped at 4K; memory per mapped 4K page beyond gmem's.
 * Targets (issue 5): ≥ 1,000,000 4K first-touch faults/s on one core; < 40 bytes per mapped 4K page.
 * A first touch is dominated by guest_memfd's own allocation in getPfn (folio insert, host buddy
 * allocation, zeroing); the re-fault rows show the MMU's share with gmem's page already there.
 *
 *   cd packages/mmu && pnpm bench
 *   COCOKIT_BENCH_QUICK=1 pnpm bench
 *   COCOKIT_BENCH_ZAP_GIB=64 pnpm bench     (zap range; default 16 GiB, see README)
 */
import { createSim, uapi } from '@cocokit/sdk';
import { createHost } from '@cocokit/host';
import { createGmemVm } from '@cocokit/gmem';
import { Memslots } from '@cocokit/memslot';
import { heapUsed, runSuite } from '@cocokit/bench';
import { createMmu } from '../src/index.js';

const PAGE = 4096;
const GiB = 2 ** 30;
const SLOT = 64 * GiB;
const HUGETLB_2M = uapi.GUEST_MEMFD_FLAG_HUGETLB | (21 << uapi.GUEST_MEMFD_HUGE_SHIFT);
const quick = process.env['COCOKIT_BENCH_QUICK'] === '1';
const zapGiB = Number(process.env['COCOKIT_BENCH_ZAP_GIB'] ?? (quick ? 4 : 16));

function env(fileFlags = 0) {
  const sim = createSim();
  const host = createHost({ bytes: 2 * SLOT, sim });
  const gmem = createGmemVm({ host, sim, privateMem: true, proposals: { hugetlb: true } });
  const memslots = new Memslots({
    hasPrivateMem: true,
    readonlyMem: true,
    nrAddressSpaces: 1,
    supportedAttributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE,
    binder: gmem.binder,
    vmToken: gmem.vmToken,
    sim,
  });
  const file = gmem.createGuestMemfd({ size: SLOT, flags: fileFlags });
  memslots.setUserMemoryRegion2({ slot: 0, flags: uapi.KVM_MEM_GUEST_MEMFD, guest_phys_addr: 0, memory_size: SLOT, userspace_addr: 0, guest_memfd: file.fd, guest_memfd_offset: 0 });
  memslots.setMemoryAttributes({ address: 0, size: SLOT, attributes: uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE });
  const mmu = createMmu({ sim, host, memslots, gmem });
  return { sim, host, gmem, memslots, file, mmu };
}

function faultRange(mmu: ReturnType<typeof env>['mmu'], startGfn: number, n: number, stride = 1): void {
  for (let i = 0; i < n; i++) {
    const r = mmu.fault({ gpa: (startGfn + i * stride) * PAGE, access: 'write' });
    if (r.kind !== 'mapped') throw new Error(`fault at gfn ${startGfn + i * stride}: ${r.kind}`);
  }
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, min: s[0]!, max: s[s.length - 1]!, samples: s.length };
};

await runSuite('@cocokit/mmu', 'fault', (s) => {
  // --- 4K first touch: fresh gfns, so guest_memfd allocates and the MMU builds tables. ---
  {
    const e = env();
    const chunk = quick ? 2 ** 18 : 2 ** 20; // 1 GiB or 4 GiB of 4K pages per sample
    const samples: number[] = [];
    for (let k = 0; k < 3; k++) {
      const t0 = performance.now();
      faultRange(e.mmu, k * chunk, chunk);
      samples.push(((performance.now() - t0) * 1e6) / chunk);
    }
    s.record({ name: '4K fault, first touch (gmem alloc + map)', unit: 'ns/op', ...stats(samples) });
    s.record({ name: '4K first-touch faults per second (median)', unit: 'faults/s', median: 1e9 / stats(samples).median, min: 1e9 / stats(samples).max, max: 1e9 / stats(samples).min, samples: 3 });

    // Memory of the MMU per mapped 4K page: heap with the mappings minus heap after zapping them
    // (guest_memfd keeps its pages, so the difference is the MMU's own structures).
    // The MMU's own first touch: guest_memfd already holds the pages (getPfn ran once, untimed),
    // so the timed faults are the MMU's work on fresh gfns, building every table.
    {
      const f = env();
      const slot = f.memslots.slot(0, 0)!;
      for (let g = 0; g < chunk; g++) f.gmem.getPfn(slot, g);
      const t1 = performance.now();
      faultRange(f.mmu, 0, chunk);
      const ns = ((performance.now() - t1) * 1e6) / chunk;
      s.record({ name: '4K fault, MMU first touch (gmem page ready, tables built)', unit: 'ns/op', median: ns, min: ns, max: ns, samples: 1 });
      s.record({ name: '4K MMU first-touch faults per second', unit: 'faults/s', median: 1e9 / ns, min: 1e9 / ns, max: 1e9 / ns, samples: 1 });
    }

    // Tables are Float64Arrays: their bytes are ArrayBuffer memory, outside the JS heap, so both count.
    const mem = () => heapUsed() + process.memoryUsage().arrayBuffers;
    const mapped = e.mmu.mappedLeaves;
    const withMaps = mem();
    e.mmu.zapAll();
    const without = mem();
    s.record({ name: 'MMU bytes per mapped 4K page (beyond gmem)', unit: 'bytes', median: (withMaps - without) / mapped, min: (withMaps - without) / mapped, max: (withMaps - without) / mapped, samples: 1 });

    // --- 4K re-fault after zap: gmem already has the pages. ---
    const batch = 512;
    let cursor = 0;
    const total = 3 * chunk;
    s.add('4K fault, re-fault after zap', () => faultRange(e.mmu, cursor, batch), {
      opsPerCall: batch,
      beforeEach: () => {
        cursor = (cursor + batch) % total;
        e.mmu.zapGfnRange(cursor, cursor + batch);
      },
    });
    s.add('4K fault, spurious (already mapped)', () => faultRange(e.mmu, 0, batch), {
      opsPerCall: batch,
      beforeAll: () => faultRange(e.mmu, 0, batch),
    });
  }

  // --- 2M faults on 2M hugetlb folios. ---
  {
    const e = env(HUGETLB_2M);
    const n = quick ? 2048 : 8192; // 4 or 16 GiB of 2M pages
    const t0 = performance.now();
    faultRange(e.mmu, 0, n, 512);
    const ns = ((performance.now() - t0) * 1e6) / n;
    s.record({ name: '2M fault, first touch (2M folio alloc + map)', unit: 'ns/op', median: ns, min: ns, max: ns, samples: 1 });
    const batch = 64;
    let cursor = 0;
    s.add('2M fault, re-fault after zap', () => faultRange(e.mmu, cursor * 512, batch, 512), {
      opsPerCall: batch,
      beforeEach: () => {
        cursor = (cursor + batch) % n;
        e.mmu.zapGfnRange(cursor * 512, (cursor + batch) * 512);
      },
    });
  }

  // --- Zap of a range fully mapped at 4K. ---
  {
    const e = env();
    const pages = (zapGiB * GiB) / PAGE;
    faultRange(e.mmu, 0, pages);
    const tables = e.mmu.pageTablePages;
    const t0 = performance.now();
    const zapped = e.mmu.zapGfnRange(0, pages);
    const ms = performance.now() - t0;
    if (zapped !== pages) throw new Error(`zapped ${zapped} of ${pages}`);
    s.record({ name: `zap ${zapGiB} GiB fully mapped at 4K (${pages} leaves, ${tables} tables)`, unit: 'ms', median: ms, min: ms, max: ms, samples: 1 });
    s.record({ name: `zap ${zapGiB} GiB, per 4K leaf`, unit: 'ns/op', median: (ms * 1e6) / pages, min: (ms * 1e6) / pages, max: (ms * 1e6) / pages, samples: 1 });
  }
});
