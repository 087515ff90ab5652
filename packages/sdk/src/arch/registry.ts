/**
 * The arch plugin registry and run-time resolution (DESIGN.md, "Discovery"). `resolveArch(vmType)`
 * looks in the registry, then imports exactly `@cocokit/arch-<type>`, then `cocokit-arch-<type>`
 * (the only two names ever guessed), validates what it got, and caches it in the registry. A
 * failure names every place looked and why each failed.
 *
 * Platform-neutral: the importer is `import()`, injectable for tests and for hosts whose module
 * resolution starts elsewhere (`@cocokit/sdk/node`'s `nodeImporter(appDir)`).
 */
import type { ArchPlugin } from './contract.js';
import { isArchName, validateArchPlugin } from './define.js';
import { discoverArchPackages, type DependencyField, type PackageJsonSource } from './discovery.js';
import { ArchPluginError, isArchPluginError, type ArchLookupAttempt } from './errors.js';

/** Imports a module by specifier and returns its namespace object (what `import()` returns). */
export type ArchImporter = (specifier: string) => Promise<unknown>;

/**
 * The default importer: `import()` from the sdk's own location. Under a hoisted node_modules that
 * finds the application's packages; under pnpm's strict layout use `nodeImporter(appDir)` from
 * `@cocokit/sdk/node`, which resolves from the application instead.
 */
export const defaultArchImporter: ArchImporter = (specifier) => import(/* @vite-ignore */ specifier);

/** Options of {@link ArchRegistry.resolve}. */
export interface ResolveArchOptions {
  /**
   * Imports a package. It must reject like Node does when the package is not installed (an error
   * with code `ERR_MODULE_NOT_FOUND` whose message quotes the specifier); any other rejection is
   * reported as the package failing to load, never as "not installed".
   */
  readonly importer?: ArchImporter;
}

/** One plugin as {@link ArchRegistry.list} reports it. */
export interface ArchListing {
  /** The npm package, when known (discovered, or resolved by import); `undefined` for one registered in process. */
  readonly package: string | undefined;
  /** The installed version, when read from its package.json. */
  readonly version: string | undefined;
  /** The VM types it serves (as registered) or declares (in `cocokit.arch`). */
  readonly vmTypes: readonly string[];
  /** The plugin's name, once it is in the registry. */
  readonly plugin: string | undefined;
  /** Whether it is in the registry now (registered in process, or already resolved). */
  readonly registered: boolean;
  /** The application's package.json field that names it, for discovered packages. */
  readonly dependencyField: DependencyField | undefined;
}

/** A set of arch plugins by VM type, with resolution and listing. */
export interface ArchRegistry {
  /**
   * Adds `plugin` for each of its VM types. Registering the same plugin object again does nothing.
   *
   * @throws {@link ArchPluginError} `E_PLUGIN_INVALID` (not a branded, valid plugin) or
   * `E_PLUGIN_DUPLICATE` (another plugin already has its name or one of its VM types).
   */
  register(plugin: ArchPlugin): void;
  /** Removes a plugin (by object or name); returns whether it was there. For tests. */
  unregister(plugin: ArchPlugin | string): boolean;
  /** The registered plugin serving `vmType`, without importing anything. */
  get(vmType: string): ArchPlugin | undefined;
  /** The VM types registered now (in process or already resolved), sorted. */
  types(): string[];
  /**
   * The plugin serving `vmType`: from the registry, else from `@cocokit/arch-<type>`, else from
   * `cocokit-arch-<type>`; an imported plugin is validated and registered (so later calls are cheap).
   *
   * A lower-precedence package is never used to paper over a higher one that is installed but
   * broken: the first installed candidate decides.
   *
   * @throws {@link ArchPluginError} `E_PLUGIN_NOT_FOUND` (nothing anywhere; the message lists each
   * place), `E_PLUGIN_INVALID` / `E_PLUGIN_API_VERSION` (a package was installed but unusable, or
   * threw while importing: `cause` holds what it threw), `E_PLUGIN_DUPLICATE`.
   */
  resolve(vmType: string, options?: ResolveArchOptions): Promise<ArchPlugin>;
  /**
   * The registered plugins, plus, given `source`, the application's direct dependencies that
   * declare `cocokit.arch` (see {@link discoverArchPackages}); sorted, one entry per plugin.
   */
  list(source?: PackageJsonSource): Promise<ArchListing[]>;
}

/** The two package names the loader tries for `vmType`, in order. */
export function archPackageNames(vmType: string): readonly [string, string] {
  return [`@cocokit/arch-${vmType}`, `cocokit-arch-${vmType}`];
}

/** Whether `e` (from importing `specifier`) says that `specifier` itself is not installed. */
function isNotInstalled(e: unknown, specifier: string): boolean {
  if (typeof e !== 'object' || e === null) return false;
  const { code, message } = e as { code?: unknown; message?: unknown };
  const text = typeof message === 'string' ? message : '';
  // A package that is installed but imports a missing dependency also fails with
  // ERR_MODULE_NOT_FOUND; only an error that quotes our own specifier means "ours is absent".
  const namesSpecifier = text.includes(`'${specifier}'`) || text.includes(`"${specifier}"`);
  const notFound =
    code === 'ERR_MODULE_NOT_FOUND' ||
    code === 'MODULE_NOT_FOUND' ||
    /cannot find (package|module)|failed to (load|resolve)/i.test(text);
  return notFound && namesSpecifier;
}

function firstLine(e: unknown): string {
  const text = typeof e === 'object' && e !== null && 'message' in e ? String(e.message) : String(e);
  return text.split('\n')[0] ?? text;
}

function formatAttempts(attempts: readonly ArchLookupAttempt[]): string {
  return attempts.map((a) => `\n  - ${a.place}: ${a.detail}`).join('');
}

/** Creates an empty registry (tests and embedders; most code uses the process-wide one). */
export function createArchRegistry(): ArchRegistry {
  const byType = new Map<string, ArchPlugin>();
  const byName = new Map<string, { plugin: ArchPlugin; package: string | undefined }>();
  const inflight = new Map<string, Promise<ArchPlugin>>();

  function register(plugin: ArchPlugin, fromPackage?: string): void {
    const valid = validateArchPlugin(plugin, fromPackage ?? 'registerArch');
    const sameName = byName.get(valid.name);
    if (sameName?.plugin === valid) return;
    if (sameName) {
      throw new ArchPluginError(
        'E_PLUGIN_DUPLICATE',
        `arch plugin '${valid.name}'${fromPackage ? ` (from ${fromPackage})` : ''}: another plugin object ` +
          `named '${valid.name}'${sameName.package ? ` (from ${sameName.package})` : ''} is already registered; ` +
          `unregister it first, or check for two installed copies of the plugin`,
        { subject: valid.name },
      );
    }
    for (const t of valid.vmTypes) {
      const holder = byType.get(t);
      if (holder) {
        throw new ArchPluginError(
          'E_PLUGIN_DUPLICATE',
          `arch plugin '${valid.name}'${fromPackage ? ` (from ${fromPackage})` : ''} claims VM type '${t}', ` +
            `which plugin '${holder.name}' already serves`,
          { subject: valid.name },
        );
      }
    }
    byName.set(valid.name, { plugin: valid, package: fromPackage });
    for (const t of valid.vmTypes) byType.set(t, valid);
  }

  function unregister(plugin: ArchPlugin | string): boolean {
    const name = typeof plugin === 'string' ? plugin : plugin.name;
    const entry = byName.get(name);
    if (!entry || (typeof plugin !== 'string' && entry.plugin !== plugin)) return false;
    byName.delete(name);
    for (const t of entry.plugin.vmTypes) if (byType.get(t) === entry.plugin) byType.delete(t);
    return true;
  }

  async function importAndValidate(vmType: string, importer: ArchImporter): Promise<ArchPlugin> {
    const registered = [...byType.keys()].sort();
    const attempts: ArchLookupAttempt[] = [
      {
        place: 'registry',
        outcome: 'absent',
        detail: `no plugin registered for '${vmType}' (registered: ${registered.length ? registered.join(', ') : 'none'})`,
      },
    ];
    const candidates = archPackageNames(vmType);
    for (const [i, specifier] of candidates.entries()) {
      const fail = (detail: string, cause: unknown, code: 'E_PLUGIN_INVALID' | 'E_PLUGIN_API_VERSION'): never => {
        attempts.push({ place: specifier, outcome: 'invalid', detail });
        const skipped = candidates.slice(i + 1);
        throw new ArchPluginError(
          code,
          `arch plugin for VM type '${vmType}': ${specifier} is installed but cannot be used. Looked in:` +
            formatAttempts(attempts) +
            (skipped.length ? `\nNot tried: ${skipped.join(', ')} (the first installed package decides).` : ''),
          { subject: vmType, attempts, cause },
        );
      };
      let namespace: unknown;
      try {
        namespace = await importer(specifier);
      } catch (e) {
        if (isNotInstalled(e, specifier)) {
          attempts.push({ place: specifier, outcome: 'absent', detail: 'not installed' });
          continue;
        }
        return fail(`installed, but threw while importing: ${firstLine(e)}`, e, 'E_PLUGIN_INVALID');
      }
      const exported =
        typeof namespace === 'object' && namespace !== null ? (namespace as { default?: unknown }).default : undefined;
      if (exported === undefined) {
        return fail('installed, but has no default export (export default defineArchPlugin({ ... }))', undefined, 'E_PLUGIN_INVALID');
      }
      let plugin: ArchPlugin;
      try {
        plugin = validateArchPlugin(exported, specifier);
      } catch (e) {
        if (!isArchPluginError(e)) throw e;
        return fail(`installed, but invalid: ${e.message}`, e, e.code === 'E_PLUGIN_API_VERSION' ? e.code : 'E_PLUGIN_INVALID');
      }
      if (!plugin.vmTypes.includes(vmType)) {
        return fail(
          `installed, but its plugin '${plugin.name}' serves ${plugin.vmTypes.map((t) => `'${t}'`).join(', ')}, not '${vmType}'`,
          undefined,
          'E_PLUGIN_INVALID',
        );
      }
      register(plugin, specifier);
      return plugin;
    }
    throw new ArchPluginError(
      'E_PLUGIN_NOT_FOUND',
      `no arch plugin for VM type '${vmType}'. Looked in:` +
        formatAttempts(attempts) +
        `\nInstall ${candidates.join(' or ')}, or register the plugin object (registerArch, openKvm({ archs }))`,
      { subject: vmType, attempts },
    );
  }

  async function resolve(vmType: string, options: ResolveArchOptions = {}): Promise<ArchPlugin> {
    if (!isArchName(vmType)) {
      throw new ArchPluginError(
        'E_PLUGIN_NOT_FOUND',
        `no arch plugin for VM type ${JSON.stringify(vmType)}: not a lowercase identifier, so nothing was looked up`,
        { subject: String(vmType) },
      );
    }
    const hit = byType.get(vmType);
    if (hit) return hit;
    // Two concurrent resolutions of one type share one import, so the plugin is registered once.
    const pending = inflight.get(vmType);
    if (pending) return pending;
    const promise = importAndValidate(vmType, options.importer ?? defaultArchImporter).finally(() => {
      inflight.delete(vmType);
    });
    inflight.set(vmType, promise);
    return promise;
  }

  async function list(source?: PackageJsonSource): Promise<ArchListing[]> {
    const out = new Map<string, ArchListing>();
    for (const { plugin, package: pkg } of byName.values()) {
      out.set(pkg ?? `plugin:${plugin.name}`, {
        package: pkg,
        version: undefined,
        vmTypes: plugin.vmTypes,
        plugin: plugin.name,
        registered: true,
        dependencyField: undefined,
      });
    }
    if (source) {
      for (const found of await discoverArchPackages(source)) {
        const known = out.get(found.package);
        out.set(found.package, {
          package: found.package,
          version: found.version,
          vmTypes: known?.vmTypes ?? found.vmTypes,
          plugin: known?.plugin,
          registered: known !== undefined,
          dependencyField: found.dependencyField,
        });
      }
    }
    return [...out.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, v]) => v);
  }

  return {
    register: (plugin) => register(plugin),
    unregister,
    get: (vmType) => byType.get(vmType),
    types: () => [...byType.keys()].sort(),
    resolve,
    list,
  };
}

/** The process-wide registry behind {@link registerArch}, {@link resolveArch} and {@link listArchs}. */
export const defaultArchRegistry: ArchRegistry = createArchRegistry();

/** Registers `plugin` in the process-wide registry; see {@link ArchRegistry.register}. */
export function registerArch(plugin: ArchPlugin): void {
  defaultArchRegistry.register(plugin);
}

/** Removes a plugin from the process-wide registry (for tests); see {@link ArchRegistry.unregister}. */
export function unregisterArch(plugin: ArchPlugin | string): boolean {
  return defaultArchRegistry.unregister(plugin);
}

/** Resolves `vmType` through the process-wide registry; see {@link ArchRegistry.resolve}. */
export function resolveArch(vmType: string, options?: ResolveArchOptions): Promise<ArchPlugin> {
  return defaultArchRegistry.resolve(vmType, options);
}

/**
 * Lists the process-wide registry's plugins and, given `source`, the application's direct
 * dependencies that declare `cocokit.arch`; see {@link ArchRegistry.list}. In Node,
 * `listInstalledArchs(appDir)` from `@cocokit/sdk/node` reads `source` from disk.
 */
export function listArchs(source?: PackageJsonSource): Promise<ArchListing[]> {
  return defaultArchRegistry.list(source);
}
