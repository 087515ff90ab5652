// The package's dts build compiles every entry with the core tsconfig (no Node types); this entry is
// Node-only, so it brings its own. TypeScript >= 5.5 does not copy the directive into the emitted .d.ts.
/// <reference types="node" />
/**
 * Node-only discovery helpers (`@cocokit/sdk/node`): read the application's package.json and its
 * direct dependencies' package.json files from disk, and import plugins as the application would
 * resolve them. The core entry stays platform-neutral; only this subpath touches `node:` APIs.
 *
 * Lookups follow Node's own rule for a bare specifier: `<dir>/node_modules/<name>` in the
 * application's directory and each parent in turn. Only packages the application names are looked
 * up, so this is never a crawl of node_modules. (`require.resolve('<name>/package.json')` is not
 * used: a package whose `exports` does not list `./package.json` would look absent.)
 */
import { readFile, stat } from 'node:fs/promises';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ArchPluginError } from '../arch/errors.js';
import type { PackageJsonSource } from '../arch/discovery.js';
import { defaultArchRegistry, type ArchImporter, type ArchListing, type ArchRegistry } from '../arch/registry.js';

/** An npm package name (optionally scoped): nothing that could step outside node_modules. */
const PACKAGE_NAME = /^(?:@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/;

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

async function readJson(path: string, what: string): Promise<unknown> {
  const text = await readFile(path, 'utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new ArchPluginError('E_PLUGIN_INVALID', `${what}: ${path} is not valid JSON: ${(e as Error).message}`, {
      subject: what,
      cause: e,
    });
  }
}

/** The nearest directory at or above `start` that holds a package.json, or `undefined`. */
export async function findPackageRoot(start: string): Promise<string | undefined> {
  let dir = resolvePath(start);
  for (;;) {
    if (await isFile(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/**
 * The directory of package `name` as code in `fromDir` resolves it (`node_modules/<name>` in
 * `fromDir` or the nearest parent that has it), or `undefined` when it is not installed.
 */
export async function findInstalledPackage(name: string, fromDir: string): Promise<string | undefined> {
  if (!PACKAGE_NAME.test(name)) return undefined;
  let dir = resolvePath(fromDir);
  for (;;) {
    const candidate = join(dir, 'node_modules', name);
    if (await isFile(join(candidate, 'package.json'))) return candidate;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

/** A {@link PackageJsonSource} read from disk, plus where it was read. */
export interface NodeDiscovery extends PackageJsonSource {
  /** The application's root: the nearest directory at or above `appDir` with a package.json. */
  readonly appRoot: string;
}

/**
 * Reads the application's package.json (the nearest one at or above `appDir`) and returns a
 * {@link PackageJsonSource} whose `readPackageJson(name)` reads the installed dependency's
 * package.json as the application resolves it (`undefined` when not installed). Pass it to
 * `listArchs`.
 *
 * @throws {@link ArchPluginError} `E_PLUGIN_NOT_FOUND` when no package.json is found at or above
 * `appDir`; `E_PLUGIN_INVALID` when one is not valid JSON.
 */
export async function nodeDiscovery(appDir: string = process.cwd()): Promise<NodeDiscovery> {
  const appRoot = await findPackageRoot(appDir);
  if (appRoot === undefined) {
    throw new ArchPluginError(
      'E_PLUGIN_NOT_FOUND',
      `listArchs: no package.json at or above ${resolvePath(appDir)}, so there are no dependencies to look at`,
      { subject: resolvePath(appDir) },
    );
  }
  const appPackageJson = await readJson(join(appRoot, 'package.json'), "the application's package.json");
  return {
    appRoot,
    appPackageJson,
    async readPackageJson(name) {
      const dir = await findInstalledPackage(name, appRoot);
      return dir === undefined ? undefined : readJson(join(dir, 'package.json'), `package ${name}`);
    },
  };
}

/** Options of {@link listInstalledArchs}. */
export interface ListInstalledArchsOptions {
  /** The registry whose plugins are listed too (default: the process-wide one). */
  readonly registry?: ArchRegistry;
}

/**
 * The arch plugins of the application at `appDir`: its direct dependencies that declare
 * `"cocokit": { "arch": [...] }`, merged with the registry's plugins (see `listArchs`).
 */
export async function listInstalledArchs(
  appDir: string = process.cwd(),
  options: ListInstalledArchsOptions = {},
): Promise<ArchListing[]> {
  return (options.registry ?? defaultArchRegistry).list(await nodeDiscovery(appDir));
}

/** Export conditions an ESM `import` matches in Node, in no particular order (the map's order decides). */
const IMPORT_CONDITIONS = new Set(['import', 'node', 'default', 'module-sync']);

/** The target of the `"."` entry of a package's `exports` for an ESM import, or `undefined`. */
function exportsTarget(exports: unknown): string | undefined {
  if (typeof exports === 'string') return exports;
  if (Array.isArray(exports)) {
    for (const e of exports) {
      const t = exportsTarget(e);
      if (t !== undefined) return t;
    }
    return undefined;
  }
  if (typeof exports !== 'object' || exports === null) return undefined;
  const map = exports as Record<string, unknown>;
  const keys = Object.keys(map);
  if (keys.some((k) => k.startsWith('.'))) return '.' in map ? exportsTarget(map['.']) : undefined;
  for (const k of keys) {
    if (!IMPORT_CONDITIONS.has(k)) continue;
    const t = exportsTarget(map[k]);
    if (t !== undefined) return t;
  }
  return undefined;
}

/**
 * An importer that resolves bare package names from `appDir`, as the application itself would:
 * under pnpm's strict layout the sdk cannot see the application's dependencies, so the default
 * `import()` (which resolves from the sdk's own location) would miss them. Handles the `"."` entry
 * of `exports` with the `import`/`node`/`default` conditions, then `main`, then `index.js`;
 * anything else (a relative path, a URL) is passed to `import()` unchanged.
 *
 * A package that is not installed rejects like Node (`ERR_MODULE_NOT_FOUND`, quoting the name), so
 * `resolveArch` reports it as "not installed"; anything else is the package failing to load.
 */
export function nodeImporter(appDir: string = process.cwd()): ArchImporter {
  return async (specifier) => {
    if (!PACKAGE_NAME.test(specifier)) return import(/* @vite-ignore */ specifier);
    const dir = await findInstalledPackage(specifier, appDir);
    if (dir === undefined) {
      throw Object.assign(new Error(`Cannot find package '${specifier}' from ${resolvePath(appDir)}`), {
        code: 'ERR_MODULE_NOT_FOUND',
      });
    }
    const manifest = (await readJson(join(dir, 'package.json'), `package ${specifier}`)) as {
      exports?: unknown;
      main?: unknown;
    } | null;
    let entry: string | undefined;
    if (manifest?.exports !== undefined) {
      entry = exportsTarget(manifest.exports);
      if (entry === undefined) {
        throw Object.assign(new Error(`package ${specifier} (${dir}) exports no "." entry for import`), {
          code: 'ERR_PACKAGE_PATH_NOT_EXPORTED',
        });
      }
    } else {
      entry = typeof manifest?.main === 'string' ? manifest.main : 'index.js';
    }
    return import(/* @vite-ignore */ pathToFileURL(join(dir, entry)).href);
  };
}
