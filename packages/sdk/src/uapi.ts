/**
 * uapi: the kernel's user-visible constants and shapes, named and valued as in
 * include/uapi/linux/kvm.h, so a prototype written against cocokit ports to real KVM without
 * renaming. Items that exist only in a proposal say so in their comment (see
 * ../shared/spec/kvm-semantics.md for the status labels).
 */

// ---- memslot flags (struct kvm_userspace_memory_region2.flags) ----
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;
export const KVM_MEM_GUEST_MEMFD = 1 << 2;
/** PROPOSED (KVM Userfault series, not merged): claimed by the userfault extension. */
export const KVM_MEM_USERFAULT = 1 << 3;

/** Slots per address space on x86 (KVM_USER_MEM_SLOTS; `KVM_CAP_NR_MEMSLOTS` answers this). */
export const KVM_USER_MEM_SLOTS = 32764;
/** Largest user memslot, in pages (KVM_MEM_MAX_NR_PAGES = 2^31 - 1). */
export const KVM_MEM_MAX_NR_PAGES = 2 ** 31 - 1;
/** Address spaces on x86 with SMM (KVM_MAX_NR_ADDRESS_SPACES); `as_id` is `slot >> 16`. */
export const KVM_MAX_NR_ADDRESS_SPACES = 2;

/** Flags the v1 ioctl (`KVM_SET_USER_MEMORY_REGION`) accepts; anything else is EINVAL. */
export const KVM_SET_USER_MEMORY_REGION_V1_FLAGS = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY;

// ---- dirty logging ----
export const KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168;
/** KVM_GET_DIRTY_LOG no longer clears (and re-protects); KVM_CLEAR_DIRTY_LOG does. */
export const KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1 << 0;
/** New dirty bitmaps start all set (only together with MANUAL_PROTECT_ENABLE). */
export const KVM_DIRTY_LOG_INITIALLY_SET = 1 << 1;

// ---- memory attributes ----
/** Bits 0-2 are left free for future RWX attributes. */
export const KVM_MEMORY_ATTRIBUTE_PRIVATE = 1 << 3;

// ---- guest_memfd creation flags (struct kvm_create_guest_memfd.flags) ----
export const GUEST_MEMFD_FLAG_MMAP = 1 << 0;
export const GUEST_MEMFD_FLAG_INIT_SHARED = 1 << 1;
/**
 * PROPOSED (seed 003, conversion RFC v2; lost to INIT_SHARED upstream): files start private.
 * Generation 1 numbered it 1<<1; the model places it at 1<<2 so it can coexist with INIT_SHARED
 * and is only accepted when the proposal's option is on.
 */
export const GUEST_MEMFD_FLAG_INIT_PRIVATE = 1 << 2;
/** PROPOSED (seed 002, "direct map removal"): the file's folios are removed from the direct map. */
export const GUEST_MEMFD_FLAG_NO_DIRECT_MAP = 1 << 3;

/**
 * PROPOSED-CONV-v2 ("1G page support" RFC v2, Ackerley Tng): the file's folios come from HugeTLB
 * at the size encoded in bits 26..31 (log2 of the page size, as `MAP_HUGE_*`). The RFC numbered it
 * 1<<2, which the sdk gives to INIT_PRIVATE in this model, so it sits at 1<<4.
 */
export const GUEST_MEMFD_FLAG_HUGETLB = 1 << 4;
/** Shift of the huge-page size field (HUGETLB_FLAG_ENCODE_SHIFT). */
export const GUEST_MEMFD_HUGE_SHIFT = 26;
/** Mask of the huge-page size field once shifted down (HUGETLB_FLAG_ENCODE_MASK). */
export const GUEST_MEMFD_HUGE_MASK = 0x3f;
/** 2 MiB folios (`21 << 26`, as MAP_HUGE_2MB). */
export const GUEST_MEMFD_HUGE_2MB = 21 * 2 ** GUEST_MEMFD_HUGE_SHIFT;
/** 1 GiB folios (`30 << 26`, as MAP_HUGE_1GB). */
export const GUEST_MEMFD_HUGE_1GB = 30 * 2 ** GUEST_MEMFD_HUGE_SHIFT;

/** PROPOSED-CONV-v2: `KVM_GMEM_CONVERT_SHARED = _IOWR(0xAF, 0x41, struct kvm_gmem_convert)`. */
export const KVM_GMEM_CONVERT_SHARED = 0xc040af41;
/** PROPOSED-CONV-v2: `KVM_GMEM_CONVERT_PRIVATE = _IOWR(0xAF, 0x42, struct kvm_gmem_convert)`. */
export const KVM_GMEM_CONVERT_PRIVATE = 0xc040af42;

// ---- exits (struct kvm_run.exit_reason) ----
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HYPERCALL = 3;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_INTERNAL_ERROR = 17;
export const KVM_EXIT_SYSTEM_EVENT = 24;
export const KVM_EXIT_MEMORY_FAULT = 39;

/** kvm_run.memory_fault.flags */
export const KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3;
/** kvm_run.system_event.type */
export const KVM_SYSTEM_EVENT_SHUTDOWN = 1;
export const KVM_SYSTEM_EVENT_RESET = 2;
/** PROPOSED (KVM Userfault): the fault hit a page marked in the slot's userfault bitmap. */
export const KVM_MEMORY_EXIT_FLAG_USERFAULT = 1 << 4;

/** Hypercall numbers (include/uapi/linux/kvm_para.h). */
export const KVM_HC_MAP_GPA_RANGE = 12;
/** Hypercall return codes (include/uapi/linux/kvm_para.h): -KVM_ENOSYS for an unknown or disabled hypercall. */
export const KVM_ENOSYS = 1000;
export const KVM_EINVAL = 22;
/** KVM_HC_MAP_GPA_RANGE attribute bits (arch/x86/include/uapi/asm/kvm_para.h). */
export const KVM_MAP_GPA_RANGE_PAGE_SZ_4K = 0;
export const KVM_MAP_GPA_RANGE_PAGE_SZ_2M = 1 << 0;
export const KVM_MAP_GPA_RANGE_PAGE_SZ_1G = 1 << 1;
export const KVM_MAP_GPA_RANGE_ENCRYPTED = 1 << 4;
export const KVM_MAP_GPA_RANGE_DECRYPTED = 0;
/**
 * kvm-clock MSRs (arch/x86/include/uapi/asm/kvm_para.h): the guest writes the gpa of its
 * pvclock_vcpu_time_info with bit 0 set to enable the clock, 0 to disable it.
 */
export const MSR_KVM_SYSTEM_TIME = 0x12;
export const MSR_KVM_SYSTEM_TIME_NEW = 0x4b564d01;

// ---- capabilities (KVM_CHECK_EXTENSION) ----
export const KVM_CAP_NR_MEMSLOTS = 10;
export const KVM_CAP_READONLY_MEM = 81;
export const KVM_CAP_MULTI_ADDRESS_SPACE = 118;
export const KVM_CAP_EXIT_HYPERCALL = 201;
export const KVM_CAP_USER_MEMORY2 = 231;
export const KVM_CAP_MEMORY_FAULT_INFO = 232;
export const KVM_CAP_MEMORY_ATTRIBUTES = 233;
export const KVM_CAP_GUEST_MEMFD = 234;
export const KVM_CAP_VM_TYPES = 235;
export const KVM_CAP_PRE_FAULT_MEMORY = 236;
export const KVM_CAP_GUEST_MEMFD_FLAGS = 244;
/** PROPOSED (in-place conversion v8): answers PRIVATE when the guest_memfd ioctl is usable. */
export const KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES = 250;

// ---- x86 VM types (KVM_CREATE_VM type argument) ----
export const KVM_X86_DEFAULT_VM = 0;
export const KVM_X86_SW_PROTECTED_VM = 1;
export const KVM_X86_SEV_VM = 2;
export const KVM_X86_SEV_ES_VM = 3;
export const KVM_X86_SNP_VM = 4;
export const KVM_X86_TDX_VM = 5;

// ---- fallocate modes (include/uapi/linux/falloc.h) ----
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_NO_HIDE_STALE = 0x04;
export const FALLOC_FL_COLLAPSE_RANGE = 0x08;
export const FALLOC_FL_ZERO_RANGE = 0x10;
export const FALLOC_FL_INSERT_RANGE = 0x20;
export const FALLOC_FL_UNSHARE_RANGE = 0x40;

// ---- mmap (include/uapi/asm-generic/mman-common.h) ----
export const PROT_NONE = 0;
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const PROT_EXEC = 0x4;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_POPULATE = 0x8000;

// ---- guest_memfd conversion, generation 1 (PROPOSED-CONV-v2, not merged) ----
/** `struct kvm_gmem_convert { u64 offset; u64 size; u64 error_offset; u64 reserved[5]; }` */
export interface KvmGmemConvert {
  offset: number | bigint;
  size: number | bigint;
  error_offset?: number | bigint;
}

// ---- shapes (little-endian C structs, fields as the kernel names them) ----
/** `struct kvm_userspace_memory_region2`; `slot` = `(as_id << 16) | id`. */
export interface KvmUserspaceMemoryRegion2 {
  slot: number;
  flags: number;
  guest_phys_addr: number | bigint;
  memory_size: number | bigint;
  userspace_addr: number | bigint;
  guest_memfd_offset?: number | bigint;
  guest_memfd?: number;
  /** PROPOSED (KVM Userfault): takes pad2[0]. */
  userfault_bitmap?: number | bigint;
}

/** `struct kvm_dirty_log { u32 slot; u32 padding1; union { void *dirty_bitmap; u64 padding2; }; }` */
export interface KvmDirtyLog {
  slot: number;
  /** Where to copy the bitmap; must hold `ALIGN(npages, 64) / 8` bytes (EFAULT otherwise). Allocated if absent. */
  dirty_bitmap?: Uint8Array;
}

/** `struct kvm_clear_dirty_log { u32 slot; u32 num_pages; u64 first_page; void *dirty_bitmap; }` */
export interface KvmClearDirtyLog {
  slot: number;
  num_pages: number;
  first_page: number | bigint;
  /** Bit i ↔ page `first_page + i`; must hold `ALIGN(num_pages, 64) / 8` bytes (EFAULT otherwise). */
  dirty_bitmap: Uint8Array;
}

/** `struct kvm_enable_cap { u32 cap; u32 flags; u64 args[4]; u8 pad[64]; }` */
export interface KvmEnableCap {
  cap: number;
  flags?: number;
  args: readonly (number | bigint)[];
}

/** `struct kvm_create_guest_memfd { u64 size; u64 flags; u64 reserved[6]; }` */
export interface KvmCreateGuestMemfd {
  size: number | bigint;
  flags?: number | bigint;
}

/** `struct kvm_memory_attributes { u64 address; u64 size; u64 attributes; u64 flags; }` */
export interface KvmMemoryAttributes {
  address: number | bigint;
  size: number | bigint;
  attributes: number | bigint;
  flags?: number | bigint;
}

/**
 * PROPOSED (in-place conversion v8): `struct kvm_memory_attributes2`, a guest_memfd ioctl.
 * `error_offset` is copied back on a refusal.
 */
export interface KvmMemoryAttributes2 {
  offset: number | bigint;
  size: number | bigint;
  attributes: number | bigint;
  flags?: number | bigint;
  error_offset?: number | bigint;
  reserved?: ReadonlyArray<number | bigint>;
}

/** `struct kvm_pre_fault_memory { u64 gpa; u64 size; u64 flags; u64 padding[5]; }`; gpa/size are in/out. */
export interface KvmPreFaultMemory {
  gpa: number | bigint;
  size: number | bigint;
  flags?: number | bigint;
}

/** `kvm_run.memory_fault` */
export interface KvmMemoryFault {
  flags: number;
  gpa: number;
  size: number;
}
