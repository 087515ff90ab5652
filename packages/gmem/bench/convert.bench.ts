/**
 * In-place conversion throughput and the model's memory:
 * - a 64 GiB file converted 4 KiB at a time in random order (to private, then back), bound to one
 *   slot with a listener, no host mappings;
 * - the same file converted whole, both ways;
 * - a 1 TiB file of 1 GiB folios converted in 2 MiB pieces, under both huge-folio policies;
 * - memory of an untouched 1 TiB file, and per allocated 4 KiB folio (2^17 single folios at random
 *   indices of a 1 TiB file, host included).
 *
 *   cd packages/gmem && pnpm bench convert
 *   COCOKIT_BENCH_QUICK=1 pnpm bench convert
 */
import { heapUsed, runSuite } from '@cocokit/bench';
import { createHost } from '@cocokit/host';
import { gfn, uapi } from '@cocokit/sdk';
import { createGmemVm } from '@cocokit/gmem';

const { GUEST_MEMFD_FLAG_HUGETLB, GUEST_MEMFD_HUGE_1GB } = uapi;

const P = 4096;
const PRIVATE = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE;
const BATCH = 1000;
const listener = { invalidateBegin: () => undefined, invalidateEnd: () => undefined };

/** Live bytes after two full collections: the JS heap plus ArrayBuffer backing stores (typed arrays live outside the heap). */
function liveBytes(): number {
  return heapUsed() + process.memoryUsage().arrayBuffers;
}

function shuffled(n: number): Uint32Array {
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  let x = 12345;
  for (let i = n - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) % 2147483648;
    const j = x % (i + 1);
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
  return a;
}

await runSuite('@cocokit/gmem', 'convert', (s) => {
  {
    const host = createHost({ bytes: 2 ** 36 });
    const vm = createGmemVm({ host });
    // One file first, so compiling the code on first use is not counted; then sixteen, so a few
    // hundred bytes of collector noise do not decide the figure.
    vm.createGuestMemfd({ size: 2 ** 40 }).close();
    const before = liveBytes();
    const files = Array.from({ length: 16 }, () => vm.createGuestMemfd({ size: 2 ** 40 }));
    const untouched = (liveBytes() - before) / files.length;
    s.record({ name: `untouched 1 TiB file (bytes, ${files[0]!.modelRuns} run)`, unit: 'bytes', median: untouched, min: untouched, max: untouched, samples: 1 });
  }
  {
    // Single 4 KiB folios at distinct random indices: no two coalesce in the page cache (their
    // pfn - index differ), which is the worst case per folio. The host hands the frames out in
    // order, as its buddy allocator does from a fresh host. Everything stays referenced until
    // after the second reading.
    const n = 2 ** 17;
    const pages = 2 ** 28; // 1 TiB
    const host = createHost({ bytes: 2 ** 36 });
    const vm = createGmemVm({ host });
    const f = vm.createGuestMemfd({ size: pages * P });
    const at = new Float64Array(n);
    const seen = new Set<number>();
    let x = 2463534242;
    for (let i = 0; i < n; i++) {
      let v: number;
      do {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        x >>>= 0;
        v = x % pages;
      } while (seen.has(v));
      seen.add(v);
      at[i] = v;
    }
    seen.clear();
    const before = liveBytes();
    for (let i = 0; i < n; i++) f.fallocate(uapi.FALLOC_FL_KEEP_SIZE, at[i]! * P, P);
    const perFolio = (liveBytes() - before) / n;
    if (f.allocatedPages !== n || host.buddy.usedBy('guest_memfd') !== n) throw new Error('folio memory: allocation count is off');
    s.record({
      name: `per allocated 4 KiB folio, ${n} at random indices of a 1 TiB file (bytes, host included; ${f.stats().folioRuns} folio runs, ${host.stats().modelRuns} host runs)`,
      unit: 'bytes',
      median: perFolio,
      min: perFolio,
      max: perFolio,
      samples: 1,
    });
  }
  {
    const host = createHost({ bytes: 2 ** 36 });
    const vm = createGmemVm({ host, privateMem: true, proposals: { memoryAttributes2: true } });
    vm.subscribe(listener);
    const pages = 2 ** 24; // 64 GiB
    const f = vm.createGuestMemfd({ size: pages * P, flags: uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED });
    vm.binder.bind({ fd: f.fd, vm: vm.vmToken, offset: 0, npages: pages }, { baseGfn: gfn(0), npages: pages });
    const order = shuffled(pages);
    let i = 0;
    let toPrivate = true;
    s.add(
      '64 GiB file, random 4 KiB conversions (to private, then back) (per conversion)',
      () => {
        for (let k = 0; k < BATCH; k++) {
          const idx = order[i]!;
          f.setMemoryAttributes2({ offset: idx * P, size: P, attributes: toPrivate ? PRIVATE : 0 });
          if (++i === pages) {
            i = 0;
            toPrivate = !toPrivate;
          }
        }
      },
      { opsPerCall: BATCH },
    );
    let whole = true;
    const g = vm.createGuestMemfd({ size: pages * P, flags: uapi.GUEST_MEMFD_FLAG_MMAP | uapi.GUEST_MEMFD_FLAG_INIT_SHARED });
    s.add('64 GiB file converted whole (per conversion)', () => {
      g.setMemoryAttributes2({ offset: 0, size: pages * P, attributes: whole ? PRIVATE : 0 });
      whole = !whole;
    });
  }
  for (const policy of ['split-eager', 'split-on-fault'] as const) {
    const host = createHost({ bytes: 2 ** 40 });
    const vm = createGmemVm({ host, privateMem: true, hugePolicy: policy, proposals: { memoryAttributes2: true, hugetlb: true } });
    vm.subscribe(listener);
    const pages = 2 ** 28; // 1 TiB
    const f = vm.createGuestMemfd({ size: pages * P, flags: uapi.GUEST_MEMFD_FLAG_MMAP + GUEST_MEMFD_FLAG_HUGETLB + GUEST_MEMFD_HUGE_1GB });
    f.fallocate(uapi.FALLOC_FL_KEEP_SIZE, 0, pages * P);
    const pieces = pages / 512;
    const order = shuffled(pieces);
    let i = 0;
    let toShared = true;
    s.add(
      `1 TiB file of 1 GiB folios, random 2 MiB conversions, ${policy} (per conversion)`,
      () => {
        for (let k = 0; k < 100; k++) {
          f.setMemoryAttributes2({ offset: order[i]! * 512 * P, size: 512 * P, attributes: toShared ? 0 : PRIVATE });
          if (++i === pieces) {
            i = 0;
            toShared = !toShared;
          }
        }
      },
      { opsPerCall: 100 },
    );
  }
});
