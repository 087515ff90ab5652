/**
 * File-backed mappings: the interface a file (guest_memfd, or a test's page-cache file) implements
 * so host processes can mmap it, in the shape of `struct file_operations`' `mmap` and
 * `vm_operations_struct`'s `fault`.
 */
import type { PgOff, Pfn } from '@cocokit/sdk';

/** What a page fault on a file mapping asks the file for. */
export interface FileFaultAccess {
  /** A write access (FAULT_FLAG_WRITE). */
  readonly write: boolean;
  /** The mapping is MAP_SHARED (a private mapping copies on write; the file sees a read). */
  readonly shared: boolean;
}

/** A file's answer to a fault: the page to map, or SIGBUS (VM_FAULT_SIGBUS). */
export type FileFaultResult = { readonly pfn: Pfn } | { readonly signal: 'SIGBUS'; readonly reason: string };

/** The mapping a process is about to create, as a file's `mmap` sees it. */
export interface FileMmapRequest {
  readonly pid: number;
  /** First byte address of the mapping. */
  readonly addr: number;
  /** Bytes (page-aligned). */
  readonly length: number;
  /** PROT_* bits. */
  readonly prot: number;
  /** MAP_SHARED (VM_SHARED) rather than MAP_PRIVATE. */
  readonly shared: boolean;
  /** File page of the mapping's first page. */
  readonly pgoff: PgOff;
}

/**
 * A file that host processes can map. The host calls `mmap` once per mmap() (before anything is
 * installed), `fault` on each first touch of a page, `gupAllowed` before pinning, and `release`
 * when the last mapping of the file goes.
 *
 * Ownership: the file owns its pages. When the host maps one into a process it takes one reference
 * (`getPages`) and drops it on unmap; a file that frees pages must first zap the mappings with
 * `host.unmapFileRange(file, start, end)` (truncate_pagecache does the same).
 */
export interface FileProvider {
  /** A name for traces and messages (e.g. `'guest_memfd:3'`). */
  readonly name: string;
  /** Size in pages (i_size). The host does not enforce it: `fault` decides (guest_memfd answers SIGBUS past it). */
  readonly nrPages: number;
  /** Whether the open file allows writing (FMODE_WRITE); default true. MAP_SHARED + PROT_WRITE on a read-only file is EACCES. */
  readonly writable?: boolean;
  /** Accepts or refuses a new mapping; refuse by throwing a KvmError (ENODEV: no mmap; EINVAL: MAP_PRIVATE; EPERM: PROT_EXEC...). */
  mmap?(req: FileMmapRequest): void;
  /** The page at `index`, or SIGBUS. Called with the page not yet mapped in this process. */
  fault(index: PgOff, access: FileFaultAccess): FileFaultResult;
  /** Whether `index` may be pinned by GUP (false → EFAULT; secretmem-like files refuse). Default: allowed. */
  gupAllowed?(index: PgOff, opts: { readonly write: boolean; readonly longterm: boolean }): boolean;
  /**
   * The mappings' reference on the file is gone. Every VMA of the file holds a reference on it
   * (vm_file, taken at mmap and by each VMA a split creates); the host calls `release` once the
   * last VMA mapping the file in any process goes: munmap, process exit, a MAP_FIXED mapping over
   * it, however the VMAs were split or merged before. It is called after the operation that
   * dropped the last VMA has finished (a VMA split or a mapping replaced in place never drops the
   * count to zero on the way), at most once per time the count reaches zero, and again if the file
   * is mapped and unmapped later. A file whose fds are all closed is released here (the last fput:
   * guest_memfd frees its pages in kvm_gmem_release). It must not throw.
   */
  release?(): void;
}
