/**
 * The plugin object: `@cocokit/arch-tdx`'s default export, found at run time like any third-party
 * plugin (package.json declares `"cocokit": { "arch": ["tdx"] }`; `resolveArch('tdx')` imports
 * this package).
 */
import { CONTRACT_API_VERSION, defineArchPlugin } from '@cocokit/sdk';
import { TDX_COSTS } from './costs.js';
import { createTdxVm } from './vm.js';

/** The Intel TDX plugin: VM type `tdx` (KVM_X86_TDX_VM). */
const tdx = defineArchPlugin({
  name: 'tdx',
  apiVersion: CONTRACT_API_VERSION,
  vmTypes: ['tdx'],
  description: 'Intel TDX: Secure EPT in a modelled TDX module, PAGE.ADD/AUG, ACCEPT, MapGPA and MRTD',
  costs: TDX_COSTS,
  createVm: createTdxVm,
});

export default tdx;
