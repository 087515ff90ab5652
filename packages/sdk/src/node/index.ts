/**
 * `@cocokit/sdk/node`: the Node-only helpers of arch plugin discovery. The main entry is
 * platform-neutral (it also runs in a browser); these read package.json files from disk and import
 * plugins the way the application resolves them.
 */
export {
  findInstalledPackage,
  findPackageRoot,
  listInstalledArchs,
  nodeDiscovery,
  nodeImporter,
} from './discovery.js';
export type { ListInstalledArchsOptions, NodeDiscovery } from './discovery.js';
