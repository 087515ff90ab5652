// Stand-ins serving the x86 VM types KVM_CREATE_VM has numbers for (KVM_X86_SEV_VM, KVM_X86_SNP_VM,
// KVM_X86_TDX_VM), so KVM_CAP_VM_TYPES can be tested without the vm package importing a real arch
// package. They model nothing: each VM is an empty ArchVm. Branded by hand (see ../README.md).
const BRAND = Symbol.for('cocokit.arch-plugin');

function standIn(name, vmType) {
  return {
    name,
    apiVersion: 1,
    vmTypes: [vmType],
    costs: {},
    createVm() {
      return {
        capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false },
        vmApi: { origin: name },
      };
    },
    [BRAND]: 1,
  };
}

export const fakeSev = standIn('fake-sev', 'sev');
export const fakeSnp = standIn('fake-snp', 'snp');
export const fakeTdx = standIn('fake-tdx', 'tdx');

// What a package's entry exports: the plugin as default (for an importer mapping a name here).
export default fakeSnp;
