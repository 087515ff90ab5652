/**
 * The toy arch plugin: `defineArchPlugin` wiring the VM's hooks (vm.ts) and the costs (costs.ts).
 * The default export of the package is this object; the core finds it by importing
 * `cocokit-arch-toy` when asked for VM type `toy`.
 */
import { defineArchPlugin } from '@cocokit/sdk';
import { TOY_COSTS } from './costs.js';
import { createToyVm } from './vm.js';

/** The toy arch plugin (VM type `toy`). */
const toy = defineArchPlugin({
  name: 'toy',
  // The contract version this plugin is written against: a literal, never the sdk's
  // CONTRACT_API_VERSION (that would always equal the running sdk's and defeat the check). A core
  // that does not support it refuses the plugin at load time, naming both versions.
  apiVersion: 1,
  vmTypes: ['toy'],
  description: 'A toy confidential VM: page ownership, guest acceptance, KVM_HC_MAP_GPA_RANGE conversions',
  costs: TOY_COSTS,
  createVm: createToyVm,
});

export default toy;
