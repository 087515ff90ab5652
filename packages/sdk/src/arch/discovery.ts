/**
 * Which arch plugins an application has, from its package.json alone (DESIGN.md, "Discovery"): the
 * application's *direct* dependencies that declare `"cocokit": { "arch": ["<vmType>", ...] }` in
 * their own package.json (the opt-in role field, like Backstage's `backstage.role`). Never a crawl
 * of node_modules: only the packages the application names are looked up.
 *
 * Platform-neutral: reading files is the caller's job (`@cocokit/sdk/node` does it from disk), so
 * this also runs in a browser against package.json objects from anywhere.
 */
import { describe, isArchName } from './define.js';
import { ArchPluginError } from './errors.js';

/** The dependency fields of package.json that count as direct dependencies. */
export const DEPENDENCY_FIELDS = ['dependencies', 'optionalDependencies', 'devDependencies'] as const;

/** A dependency field of package.json. */
export type DependencyField = (typeof DEPENDENCY_FIELDS)[number];

/** Where {@link discoverArchPackages} reads package.json contents from. */
export interface PackageJsonSource {
  /** The application's package.json, parsed. */
  readonly appPackageJson: unknown;
  /**
   * The package.json of the installed dependency `name` as the application resolves it, parsed; or
   * `undefined` when it is not installed (then it is skipped: nothing can be known about it).
   */
  readonly readPackageJson: (name: string) => Promise<unknown>;
}

/** A dependency that declares itself an arch plugin. */
export interface ArchPackage {
  /** The npm package name. */
  readonly package: string;
  /** The installed version, from its package.json. */
  readonly version: string | undefined;
  /** The VM types it declares in `cocokit.arch`. */
  readonly vmTypes: readonly string[];
  /** The application's package.json field that names it. */
  readonly dependencyField: DependencyField;
}

/**
 * The application's direct dependencies that declare `cocokit.arch`, sorted by package name.
 *
 * @throws {@link ArchPluginError} `E_PLUGIN_INVALID` when a package declares `cocokit.arch` but not
 * as a non-empty array of VM type names (an opt-in that is wrong deserves an error, not silence).
 */
export async function discoverArchPackages(source: PackageJsonSource): Promise<ArchPackage[]> {
  const app = source.appPackageJson;
  if (typeof app !== 'object' || app === null) {
    throw new ArchPluginError('E_PLUGIN_INVALID', `listArchs: the application's package.json is ${describe(app)}`, {
      subject: 'package.json',
    });
  }
  const direct = new Map<string, DependencyField>();
  for (const field of DEPENDENCY_FIELDS) {
    const deps = (app as Record<string, unknown>)[field];
    if (typeof deps !== 'object' || deps === null) continue;
    for (const name of Object.keys(deps)) if (!direct.has(name)) direct.set(name, field);
  }
  const names = [...direct.keys()].sort();
  const manifests = await Promise.all(names.map((name) => source.readPackageJson(name)));
  const found: ArchPackage[] = [];
  names.forEach((name, i) => {
    const manifest = manifests[i];
    if (typeof manifest !== 'object' || manifest === null) return;
    const m = manifest as { version?: unknown; cocokit?: unknown };
    if (typeof m.cocokit !== 'object' || m.cocokit === null || !('arch' in m.cocokit)) return;
    const arch = (m.cocokit as { arch: unknown }).arch;
    if (!Array.isArray(arch) || arch.length === 0 || !arch.every(isArchName)) {
      throw new ArchPluginError(
        'E_PLUGIN_INVALID',
        `package ${name}: "cocokit": { "arch": ... } in its package.json must be a non-empty array of ` +
          `lowercase VM type names, got ${describe(arch)}`,
        { subject: name },
      );
    }
    found.push({
      package: name,
      version: typeof m.version === 'string' ? m.version : undefined,
      vmTypes: Object.freeze([...arch]),
      dependencyField: direct.get(name) as DependencyField,
    });
  });
  return found;
}
