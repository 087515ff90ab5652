/**
 * SEV-SNP numbers with the names the kernel, the AMD64 manual (APM Vol. 2 §15.36) and the SEV-SNP
 * firmware ABI give them, so a reader can grep for them in arch/x86/include/asm/sev.h,
 * arch/x86/include/asm/sev-common.h and include/linux/psp-sev.h.
 */

/** RMPUPDATE return codes (APM Vol. 3 "RMPUPDATE"; RMPUPDATE_FAIL_* in arch/x86/include/asm/sev.h). */
export const RMPUPDATE = {
  SUCCESS: 0,
  /** Bad input: the address is beyond the RMP, or a 2M update is not 2M-aligned. */
  FAIL_INPUT: 1,
  /** The entry is Immutable (firmware-owned): only SNP_PAGE_RECLAIM may change it. */
  FAIL_PERMISSION: 2,
  /** The entry is in use (a running VMSA; another CPU is updating it). */
  FAIL_INUSE: 3,
  /** A 4K update under a 2M entry, or a 2M update over assigned 4K entries. */
  FAIL_OVERLAP: 4,
} as const;
/** An RMPUPDATE return code. */
export type RmpUpdateRc = (typeof RMPUPDATE)[keyof typeof RMPUPDATE];

/** PSMASH return codes (APM Vol. 3 "PSMASH"; PSMASH_FAIL_INUSE in arch/x86/include/asm/sev.h). */
export const PSMASH = {
  SUCCESS: 0,
  /** The address is not 2M-aligned or beyond the RMP. */
  FAIL_INPUT: 1,
  /** The 2M entry is Immutable. */
  FAIL_PERMISSION: 2,
  /** Another CPU is using the entry; KVM retries (snp_rmptable_psmash). */
  FAIL_INUSE: 3,
  /** The entry is not a 2M entry (nothing to smash). */
  FAIL_BADADDR: 4,
} as const;
/** A PSMASH return code. */
export type PsmashRc = (typeof PSMASH)[keyof typeof PSMASH];

/**
 * PVALIDATE results (APM Vol. 3 "PVALIDATE"; PVALIDATE_FAIL_* in arch/x86/include/asm/sev.h).
 * `FAIL_NOUPDATE` is Linux's software code for "EAX = 0 with rFLAGS.CF = 1": the Validated bit
 * already had the requested value and the RMP was not changed.
 */
export const PVALIDATE = {
  SUCCESS: 0,
  FAIL_INPUT: 1,
  FAIL_SIZEMISMATCH: 6,
  FAIL_NOUPDATE: 255,
} as const;
/** A PVALIDATE result code. */
export type PvalidateRc = (typeof PVALIDATE)[keyof typeof PVALIDATE];

/** RMP page sizes as PVALIDATE's RCX and the RMP entry's Page_Size encode them (RMP_PG_SIZE_4K/2M). */
export const RMP_PG_SIZE = { '4K': 0, '2M': 1 } as const;
/** An RMP page size: 4K or 2M. */
export type RmpPageSize = keyof typeof RMP_PG_SIZE;

/** Pages per 2M RMP entry (PTRS_PER_PMD). */
export const PAGES_PER_2M = 512;

/** Page State Change operations (enum psc_op / VMGEXIT_PSC_OP_*, arch/x86/include/asm/sev-common.h). */
export const PSC_OP = { PRIVATE: 1, SHARED: 2, PSMASH: 3, UNSMASH: 4 } as const;
/** A PSC operation name. */
export type PscOpName = keyof typeof PSC_OP;

/** The most entries a PSC buffer may hold (VMGEXIT_PSC_MAX_COUNT, the GHCB shared-buffer limit). */
export const VMGEXIT_PSC_MAX_COUNT = 253;
/** The PSC result KVM returns in SW_EXITINFO2 (VMGEXIT_PSC_ERROR_*, arch/x86/include/asm/sev-common.h). */
export const VMGEXIT_PSC_ERROR = {
  NONE: 0,
  /** `end_entry` is out of range: (1 << 32) | 1. */
  INVALID_HDR: 2 ** 32 + 1,
  /** An entry's `cur_page` exceeds its size or its gfn is misaligned: (1 << 32) | 2. */
  INVALID_ENTRY: 2 ** 32 + 2,
  /** Userspace failed the conversion (or refused the hypercall exit): 0x100 << 32. */
  GENERIC: 0x100 * 2 ** 32,
} as const;

/** GHCB MSR protocol codes for a single-page PSC (GHCB_MSR_PSC_*, arch/x86/include/asm/sev-common.h). */
export const GHCB_MSR_PSC_REQ = 0x014n;
/** The response code of the GHCB MSR PSC protocol. */
export const GHCB_MSR_PSC_RESP = 0x015n;
/** KVM's generic error response: bit 63 set (GHCB_MSR_PSC_RESP_ERROR). */
export const GHCB_MSR_PSC_RESP_ERROR = (1n << 63n) | GHCB_MSR_PSC_RESP;

/** #VC error code for an access to a page whose RMP entry is not validated (SVM_EXIT_VMM_COMMUNICATION, APM Table 15-39). */
export const VC_PAGE_NOT_VALIDATED = 0x404;

/**
 * SNP_LAUNCH_UPDATE page types (KVM_SEV_SNP_PAGE_TYPE_* in arch/x86/include/uapi/asm/kvm.h, which
 * are the firmware's PAGE_TYPE values of PAGE_INFO, SEV-SNP ABI §8.17). VMSA is used only by KVM
 * itself, at LAUNCH_FINISH.
 */
export const SNP_PAGE_TYPE = {
  normal: 1,
  vmsa: 2,
  zero: 3,
  unmeasured: 4,
  secrets: 5,
  cpuid: 6,
} as const;
/** A launch page type name. */
export type SnpPageType = keyof typeof SNP_PAGE_TYPE;

/**
 * The GPA a VMSA is measured at: (u64)-1, page-aligned, bits above 51 cleared (SEV-SNP ABI
 * §8.17, as virtee/sev-snp-measure's gctx.py spells it; KVM's snp_launch_update_vmsa).
 */
export const VMSA_GPA = 0xffff_ffff_f000;

/** SNP_LAUNCH_START policy bits KVM accepts (SNP_POLICY_MASK_* in arch/x86/kvm/svm/sev.c). */
export const SNP_POLICY = {
  /** ABI minor version, bits 7:0. */
  ABI_MINOR_MASK: 0xff,
  /** ABI major version, bits 15:8. */
  ABI_MAJOR_MASK: 0xff00,
  SMT: 2 ** 16,
  /** Reserved, must be one. */
  RSVD_MBO: 2 ** 17,
  DEBUG: 2 ** 19,
  SINGLE_SOCKET: 2 ** 20,
} as const;

/** Every policy bit KVM lets through (SNP_POLICY_MASK_VALID). */
export const SNP_POLICY_MASK_VALID =
  SNP_POLICY.ABI_MINOR_MASK + SNP_POLICY.ABI_MAJOR_MASK + SNP_POLICY.SMT + SNP_POLICY.RSVD_MBO + SNP_POLICY.DEBUG + SNP_POLICY.SINGLE_SOCKET;
