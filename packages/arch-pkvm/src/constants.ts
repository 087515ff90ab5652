/**
 * pKVM numbers with the names the kernel gives them, so a reader can grep for them in
 * include/linux/arm-smccc.h, arch/arm64/kvm/hyp/include/nvhe/memory.h and
 * Documentation/virt/kvm/arm/hypercalls.rst.
 */

/**
 * The per-component page states of pKVM's ownership model (enum pkvm_page_state,
 * arch/arm64/kvm/hyp/include/nvhe/memory.h): two software bits per page and component.
 */
export const PKVM_PAGE_STATE = {
  /** PKVM_PAGE_OWNED: owned and exclusively accessible by the component. */
  OWNED: 0b00,
  /** PKVM_PAGE_SHARED_OWNED: owned, and also accessible by another component. */
  SHARED_OWNED: 0b01,
  /** PKVM_PAGE_SHARED_BORROWED: accessible, owned by another component. */
  SHARED_BORROWED: 0b10,
  /** PKVM_NOPAGE: the meta-state "no access" (an invalid stage-2 entry). */
  NOPAGE: 0b11,
} as const;

/** A page state, by name: what the model stores and reports. */
export type PkvmPageState = 'owned' | 'shared-owned' | 'shared-borrowed' | 'nopage';

/** The 2-bit encoding of a {@link PkvmPageState} (the kernel's enum value). */
export function pageStateBits(s: PkvmPageState): number {
  switch (s) {
    case 'owned':
      return PKVM_PAGE_STATE.OWNED;
    case 'shared-owned':
      return PKVM_PAGE_STATE.SHARED_OWNED;
    case 'shared-borrowed':
      return PKVM_PAGE_STATE.SHARED_BORROWED;
    case 'nopage':
      return PKVM_PAGE_STATE.NOPAGE;
  }
}

/** ARM_SMCCC_KVM_FUNC_* (include/linux/arm-smccc.h): the vendor-hyp KVM service numbers pKVM guests use. */
export const ARM_SMCCC_KVM_FUNC = {
  HYP_MEMINFO: 2,
  MEM_SHARE: 3,
  MEM_UNSHARE: 4,
  /** Fuad Tabba / Keir Fraser, "KVM: arm64: Implement MEM_RELINQUISH SMCCC hypercall" (RFC, 2024-02-22). */
  MEM_RELINQUISH: 9,
} as const;

/**
 * ARM_SMCCC_CALL_VAL(ARM_SMCCC_FAST_CALL, ARM_SMCCC_SMC_64, ARM_SMCCC_OWNER_VENDOR_HYP, func):
 * bit 31 (fast call) + bit 30 (SMC64) + owner 6 in bits 29:24 = 0xC6000000 + func.
 */
export const smcccVendorHypFuncId = (func: number): number => 0xc600_0000 + func;

/** The function IDs a pKVM guest issues (ARM_SMCCC_VENDOR_HYP_KVM_*_FUNC_ID). */
export const ARM_SMCCC_VENDOR_HYP_KVM_FUNC_ID = {
  HYP_MEMINFO: smcccVendorHypFuncId(ARM_SMCCC_KVM_FUNC.HYP_MEMINFO),
  MEM_SHARE: smcccVendorHypFuncId(ARM_SMCCC_KVM_FUNC.MEM_SHARE),
  MEM_UNSHARE: smcccVendorHypFuncId(ARM_SMCCC_KVM_FUNC.MEM_UNSHARE),
  MEM_RELINQUISH: smcccVendorHypFuncId(ARM_SMCCC_KVM_FUNC.MEM_RELINQUISH),
} as const;

/** SMCCC return codes the guest reads in x0 (include/linux/arm-smccc.h). */
export const SMCCC_RET = {
  SUCCESS: 0,
  NOT_SUPPORTED: -1,
  NOT_REQUIRED: -2,
  INVALID_PARAMETER: -3,
} as const;

/** The memory protection granule HYP_MEMINFO reports: PAGE_SIZE of the hypervisor (4 KiB here). */
export const PKVM_GRANULE = 4096;
