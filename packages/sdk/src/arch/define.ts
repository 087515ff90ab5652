/**
 * `defineArchPlugin` and the validation the loader repeats on whatever a package exports. The same
 * checks run in both places, because a plugin object may come from another copy of the sdk (or be
 * forged by hand with the brand symbol): the brand says "this is meant to be a plugin", validation
 * says "and it is a usable one".
 */
import {
  ARCH_PLUGIN_BRAND,
  SUPPORTED_API_VERSIONS,
  type ArchPlugin,
  type ArchPluginDef,
  type ArchVmFor,
} from './contract.js';
import { ArchPluginError } from './errors.js';

/**
 * Names of plugins and VM types: a lowercase identifier, so a VM type can never smuggle a path into
 * the package names the loader imports (`@cocokit/arch-<type>`): no `/`, `.`, `@` or upper case.
 */
export const ARCH_NAME_PATTERN = /^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$/;
const MAX_NAME_LENGTH = 64;

/** Whether `name` is usable as a plugin name or VM type (see {@link ARCH_NAME_PATTERN}). */
export function isArchName(name: unknown): name is string {
  return typeof name === 'string' && name.length <= MAX_NAME_LENGTH && ARCH_NAME_PATTERN.test(name);
}

const supportedRange = `${SUPPORTED_API_VERSIONS.min}..${SUPPORTED_API_VERSIONS.max}`;

/**
 * Checks that `value` is a well-formed plugin definition (ignoring the brand) and returns it typed;
 * throws {@link ArchPluginError} `E_PLUGIN_INVALID` or `E_PLUGIN_API_VERSION` naming the plugin and
 * `where` it came from.
 */
export function validateArchPluginDef(value: unknown, where: string): ArchPluginDef {
  const invalid = (subject: string, what: string): never => {
    throw new ArchPluginError('E_PLUGIN_INVALID', `arch plugin ${subject} (${where}): ${what}`, { subject });
  };
  if (typeof value !== 'object' || value === null) {
    return invalid('<unnamed>', `expected a plugin object, got ${describe(value)}`);
  }
  const def = value as Record<string | symbol, unknown>;
  const name = def['name'];
  if (!isArchName(name)) {
    return invalid(
      typeof name === 'string' ? `'${name}'` : '<unnamed>',
      `name ${describe(name)} is not a lowercase identifier matching ${ARCH_NAME_PATTERN}`,
    );
  }
  const subject = `'${name}'`;
  const apiVersion = def['apiVersion'];
  if (typeof apiVersion !== 'number' || !Number.isInteger(apiVersion)) {
    return invalid(subject, `apiVersion ${describe(apiVersion)} is not an integer (this sdk supports ${supportedRange})`);
  }
  if (apiVersion < SUPPORTED_API_VERSIONS.min || apiVersion > SUPPORTED_API_VERSIONS.max) {
    throw new ArchPluginError(
      'E_PLUGIN_API_VERSION',
      `arch plugin ${subject} (${where}) was written for contract apiVersion ${apiVersion}, ` +
        `but this @cocokit/sdk supports ${supportedRange}; ` +
        (apiVersion > SUPPORTED_API_VERSIONS.max ? 'upgrade @cocokit/sdk' : 'upgrade the plugin'),
      { subject: name },
    );
  }
  const vmTypes = def['vmTypes'];
  if (!Array.isArray(vmTypes) || vmTypes.length === 0) {
    return invalid(subject, `vmTypes must be a non-empty array of VM type names, got ${describe(vmTypes)}`);
  }
  const seen = new Set<string>();
  for (const t of vmTypes) {
    if (!isArchName(t)) return invalid(subject, `vmTypes entry ${describe(t)} is not a lowercase identifier`);
    if (seen.has(t)) return invalid(subject, `vmTypes lists '${t}' twice`);
    seen.add(t);
  }
  const costs = def['costs'] ?? {};
  if (typeof costs !== 'object' || costs === null || Array.isArray(costs)) {
    return invalid(subject, `costs must be an object of { ns, source } by name, got ${describe(costs)}`);
  }
  for (const [cost, entry] of Object.entries(costs)) {
    const c = entry as { ns?: unknown; source?: unknown } | null;
    if (typeof c !== 'object' || c === null) return invalid(subject, `cost '${cost}' is ${describe(c)}, not { ns, source }`);
    if (typeof c.ns !== 'number' || !Number.isFinite(c.ns) || c.ns < 0) {
      return invalid(subject, `cost '${cost}' has ns = ${describe(c.ns)}; it must be a finite number >= 0`);
    }
    if (typeof c.source !== 'string' || c.source.trim() === '') {
      return invalid(subject, `cost '${cost}' has no source: every default must say where its number comes from`);
    }
  }
  if (typeof def['createVm'] !== 'function') {
    return invalid(subject, `createVm must be a function, got ${describe(def['createVm'])}`);
  }
  const description = def['description'];
  if (description !== undefined && typeof description !== 'string') {
    return invalid(subject, `description must be a string, got ${describe(description)}`);
  }
  return value as ArchPluginDef;
}

/**
 * Checks that `value` is a plugin: it carries the brand (`Symbol.for('cocokit.arch-plugin')`, so
 * one made by another copy of the sdk counts) and passes {@link validateArchPluginDef}. `where`
 * says where it came from, for the message.
 */
export function validateArchPlugin(value: unknown, where: string): ArchPlugin {
  if (!isBranded(value)) {
    const name =
      typeof value === 'object' && value !== null && typeof (value as { name?: unknown }).name === 'string'
        ? `'${(value as { name: string }).name}'`
        : '<unnamed>';
    throw new ArchPluginError(
      'E_PLUGIN_INVALID',
      `arch plugin ${name} (${where}): ${describe(value)} is not an arch plugin; ` +
        `export default defineArchPlugin({ ... }) from @cocokit/sdk`,
      { subject: name },
    );
  }
  validateArchPluginDef(value, where);
  return value as ArchPlugin;
}

/** Whether `value` carries the plugin brand (without validating it). */
export function isBranded(value: unknown): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Record<symbol, unknown>)[ARCH_PLUGIN_BRAND] === 'number'
  );
}

/**
 * Defines an arch plugin: validates `def` now (so a mistake fails when the module loads, with the
 * plugin's name, not deep inside a hook) and returns it frozen and branded. A plugin module's
 * default export is its result:
 *
 * ```ts
 * export default defineArchPlugin({
 *   name: 'snp', apiVersion: 1, vmTypes: ['snp'],
 *   costs: { 'snp.rmpupdate': { ns: 1200, source: '…' } },
 *   createVm(ctx) { return { capabilities: { … }, gmemPrepare(pfn, gfn, order) { … } }; },
 * });
 * ```
 *
 * @throws {@link ArchPluginError} `E_PLUGIN_INVALID` or `E_PLUGIN_API_VERSION`.
 */
export function defineArchPlugin<const VmType extends string, Vm extends ArchVmFor<VmType>>(
  def: ArchPluginDef<VmType, Vm>,
): ArchPlugin<VmType, Vm> {
  validateArchPluginDef(def, 'defineArchPlugin');
  const plugin = {
    ...def,
    vmTypes: Object.freeze([...def.vmTypes]),
    costs: Object.freeze({ ...(def.costs ?? {}) }),
    [ARCH_PLUGIN_BRAND]: def.apiVersion,
  };
  return Object.freeze(plugin) as ArchPlugin<VmType, Vm>;
}

/** A short description of an unexpected value, for messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of ${value.length}`;
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
    case 'number':
    case 'boolean':
    case 'bigint':
    case 'undefined':
      return String(value);
    case 'function':
      return 'a function';
    case 'symbol':
      return value.toString();
    default:
      return 'an object';
  }
}
