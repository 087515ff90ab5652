/**
 * memslot hot paths: gfn → slot lookup with 1, 32 and 509 slots (random gfns inside slots, so the
 * last-hit cache mostly misses, and repeated gfns, where it hits), and KVM_SET_MEMORY_ATTRIBUTES
 * over 1 TiB in one call against 2^18 separate 4 KiB calls.
 * Targets (issue 3): lookup under 100 ns median with 32 slots; the whole-1-TiB call under 1 ms.
 *
 *   cd packages/memslot && pnpm bench
 *   COCOKIT_BENCH_QUICK=1 pnpm bench
 */
import { gfn, uapi } from '@cocokit/sdk';
import type { Gfn } from '@cocokit/sdk';
import { runSuite } from '@cocokit/bench';
import { Memslots } from '../src/index.js';

const PAGE = 4096;
const PRIVATE = uapi.KVM_MEMORY_ATTRIBUTE_PRIVATE;
const TiB = 2 ** 40;
const BATCH = 1024;

function vm(): Memslots {
  return new Memslots({ hasPrivateMem: true, readonlyMem: true, nrAddressSpaces: 1, supportedAttributes: PRIVATE });
}

/** `n` slots of 1 GiB each with a 2 MiB hole between them, like a VMM's RAM + holes layout. */
function withSlots(n: number): Memslots {
  const ms = vm();
  const stride = 2 ** 30 + 2 ** 21;
  for (let i = 0; i < n; i++) {
    ms.setUserMemoryRegion2({ slot: i, flags: 0, guest_phys_addr: i * stride, memory_size: 2 ** 30, userspace_addr: 0 });
  }
  return ms;
}

function randomGfnsInSlots(ms: Memslots, count: number, seed: number): Gfn[] {
  const slots = ms.slots();
  const out: Gfn[] = [];
  let x = seed;
  for (let i = 0; i < count; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    const s = slots[x % slots.length]!;
    out.push(gfn(s.baseGfn + (x % s.npages)));
  }
  return out;
}

await runSuite('@cocokit/memslot', 'memslots', (s) => {
  for (const n of [1, 32, 509]) {
    const ms = withSlots(n);
    const gfns = randomGfnsInSlots(ms, BATCH, n);
    let sink = 0;
    s.add(
      `lookup, ${n} slot${n === 1 ? '' : 's'}, random gfn`,
      () => {
        for (let i = 0; i < BATCH; i++) sink += ms.lookup(gfns[i]!)?.id ?? 0;
        return sink;
      },
      { opsPerCall: BATCH },
    );
    const same = gfns[0]!;
    s.add(
      `lookup, ${n} slot${n === 1 ? '' : 's'}, same gfn (last-hit cache)`,
      () => {
        for (let i = 0; i < BATCH; i++) sink += ms.lookup(same)?.id ?? 0;
        return sink;
      },
      { opsPerCall: BATCH },
    );
  }

  // A 1 TiB guest in one slot, so the per-slot hooks and the mixed tracking run too.
  let big = vm();
  const fresh = () => {
    big = vm();
    big.setUserMemoryRegion2({ slot: 0, flags: 0, guest_phys_addr: 0, memory_size: TiB, userspace_addr: 0 });
  };
  let toggle = 0;
  s.add(
    'set attributes, 1 TiB in one call (alternating PRIVATE/shared)',
    () => {
      toggle ^= PRIVATE;
      big.setMemoryAttributes({ address: 0, size: TiB, attributes: toggle });
    },
    { beforeAll: fresh },
  );
  s.add(
    'set attributes, 2^18 calls of 4 KiB, one per 4 MiB across 1 TiB (whole sequence)',
    () => {
      toggle ^= PRIVATE;
      for (let i = 0; i < 2 ** 18; i++) big.setMemoryAttributes({ address: i * 4 * 2 ** 20, size: PAGE, attributes: toggle });
    },
    { beforeAll: fresh, time: 2000 },
  );
  s.add(
    'set attributes, 2^18 contiguous calls of 4 KiB, 1 GiB (whole sequence)',
    () => {
      toggle ^= PRIVATE;
      for (let i = 0; i < 2 ** 18; i++) big.setMemoryAttributes({ address: i * PAGE, size: PAGE, attributes: toggle });
    },
    { beforeAll: fresh, time: 2000 },
  );
});
