/**
 * Host page faults: first touch of anonymous pages (fault + alloc + zero-fill + page-table entry),
 * touching pages already mapped, and pinning with GUP.
 *
 *   cd packages/host && pnpm bench process
 */
import { runSuite } from '@cocokit/bench';
import { MAP, PROT, createHost } from '@cocokit/host';

const PAGES = 1024;
const PAGE = 4096;

await runSuite('@cocokit/host', 'process', (s) => {
  const host = createHost();
  const p = host.createProcess('bench');
  let addr = 0;
  s.add(
    'anonymous fault-in, 4 MiB mapping, write touch (per page; includes mmap/munmap)',
    () => {
      addr = p.mmap({ length: PAGES * PAGE, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS });
      p.touch(addr, PAGES * PAGE, 'write');
      p.munmap(addr, PAGES * PAGE);
    },
    { opsPerCall: PAGES },
  );
  const mapped = p.mmap({ length: PAGES * PAGE, prot: PROT.READ | PROT.WRITE, flags: MAP.PRIVATE | MAP.ANONYMOUS | MAP.POPULATE });
  s.add('touch of mapped pages (per page)', () => p.touch(mapped, PAGES * PAGE, 'read'), { opsPerCall: PAGES });
  const buf = new Uint8Array(64);
  s.add('read 64 bytes from a mapped page (per read)', () => {
    for (let i = 0; i < PAGES; i++) p.read(mapped + i * PAGE, 64);
  }, { opsPerCall: PAGES });
  s.add('write 64 bytes to a mapped page (per write)', () => {
    for (let i = 0; i < PAGES; i++) p.write(mapped + i * PAGE, buf);
  }, { opsPerCall: PAGES });
  s.add(
    'gup longterm + unpin (per page)',
    () => {
      const pfns = p.gup(mapped, PAGES, { longterm: true, write: true });
      p.unpin(pfns, { longterm: true });
    },
    { opsPerCall: PAGES },
  );
});
