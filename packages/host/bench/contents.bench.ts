/**
 * Page contents: tagging a 1 TiB range (one call, and page by page), byte writes and reads, and
 * the memory tags cost.
 *
 *   cd packages/host && pnpm bench contents
 */
import { runSuite } from '@cocokit/bench';
import { createHost } from '@cocokit/host';

const TIB_FRAMES = 2 ** 28;
const BATCH = 1000;

await runSuite('@cocokit/host', 'contents', (s) => {
  const host = createHost({ bytes: 2 ** 40 });
  for (let i = 0; i < 1024; i++) host.allocPages(18, 'guest_memfd');
  let tag = 1n;
  s.add('tagSequence over 1 TiB (2^28 pages) (per call)', () => {
    host.tagSequence(0, TIB_FRAMES, tag++);
  });
  s.add('fillTag over 1 TiB (per call)', () => {
    host.fillTag(0, TIB_FRAMES, tag++);
  });
  let next = 0;
  s.add(
    'writeTag page by page, sequential tags (per page)',
    () => {
      for (let i = 0; i < BATCH; i++) {
        const p = next++ % TIB_FRAMES;
        host.writeTag(p, 7n + BigInt(p));
      }
    },
    { opsPerCall: BATCH },
  );
  const data = new Uint8Array(4096).fill(0xab);
  s.add(
    'writeBytes 4 KiB (per page, 1000 distinct pages)',
    () => {
      for (let i = 0; i < BATCH; i++) host.writeBytes(2 ** 27 + i, 0, data);
    },
    { opsPerCall: BATCH },
  );
  s.add(
    'readBytes 4 KiB of a tagged page (per page)',
    () => {
      for (let i = 0; i < BATCH; i++) host.readBytes(1000 + i);
    },
    { opsPerCall: BATCH },
  );
  const one = (v: number) => ({ median: v, min: v, max: v, samples: 1 });
  host.tagSequence(0, TIB_FRAMES, 1n);
  s.record({ name: 'tag runs after tagging 1 TiB sequentially', unit: 'runs', ...one(host.stats().contents.tagRuns) });
});
