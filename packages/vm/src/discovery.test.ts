// VM-type resolution as an application meets it (DESIGN.md, "Discovery"): `createVm({ type })`
// looks at the plugins passed as objects, then the registry, then imports exactly
// `@cocokit/arch-<type>` and `cocokit-arch-<type>`; `listArchs` reads the application's direct
// dependencies that opt in with `cocokit.arch`. The plugins are fixture packages installed in a fake
// application (../test-fixtures/README.md): the vm package imports no arch package, even here.
import { afterEach, describe, expect, it } from 'vitest';
import {
  SUPPORTED_API_VERSIONS,
  createArchRegistry,
  defaultArchRegistry,
  isArchPluginError,
  listArchs,
  registerArch,
  unregisterArch,
  type ArchImporter,
  type ArchPlugin,
  type PackageJsonSource,
} from '@cocokit/sdk';
import { listInstalledArchs, nodeDiscovery, nodeImporter } from '@cocokit/sdk/node';
import { archPluginErrorOf, archPluginRejectionOf } from '@cocokit/sdk/testing';
import { openKvm } from './index.js';

const app = new URL('../test-fixtures/app/', import.meta.url);
/** The fake application's directory (a POSIX path: this platform-neutral package has no node:url). */
const appDir = decodeURIComponent(app.pathname);

/** The fixture packages installed in the fake application's node_modules. */
const INSTALLED = [
  '@cocokit/arch-alpha',
  '@cocokit/arch-delta',
  'cocokit-arch-alpha',
  'cocokit-arch-delta',
  'cocokit-arch-future',
  'cocokit-arch-gamma',
  'cocokit-arch-malformed',
  'cocokit-arch-noflag',
  'cocokit-arch-throws',
  'cocokit-arch-transitive',
  'cocokit-arch-wrongtype',
] as const;

const moduleUrl = (pkg: string): string => new URL(`node_modules/${pkg}/index.js`, app).href;

/**
 * An importer over the fixture packages: each installed name maps to its module file; any other
 * name rejects as Node does for a package that is not installed. Records every specifier asked.
 */
function fixtureImporter(asked: string[] = []): ArchImporter {
  return async (specifier) => {
    asked.push(specifier);
    if (!(INSTALLED as readonly string[]).includes(specifier)) {
      throw Object.assign(new Error(`Cannot find package '${specifier}' imported from ${appDir}`), { code: 'ERR_MODULE_NOT_FOUND' });
    }
    return import(/* @vite-ignore */ moduleUrl(specifier));
  };
}

/** The plugin a fixture package exports by default. */
async function fixturePlugin(pkg: (typeof INSTALLED)[number]): Promise<ArchPlugin> {
  return ((await import(/* @vite-ignore */ moduleUrl(pkg))) as { default: ArchPlugin }).default;
}

/** Which fixture package made a VM's arch (fixture plugins say so in their vmApi). */
const origin = (vm: { readonly archApi: unknown }): string | undefined => (vm.archApi as { origin?: string } | undefined)?.origin;



// Tests that touch the process-wide registry put back what they took.
const registered: ArchPlugin[] = [];
function registerForTest(plugin: ArchPlugin): void {
  registerArch(plugin);
  registered.push(plugin);
}
afterEach(() => {
  for (const p of registered.splice(0)) unregisterArch(p);
});

describe('where createVm looks: objects passed, then the registry, then two package names', () => {
  it('finds a plugin registered in the process-wide registry (registerArch), importing nothing', async () => {
    registerForTest(await fixturePlugin('cocokit-arch-gamma'));
    const asked: string[] = [];
    const kvm = openKvm({ hostBytes: 1 << 30, importer: fixtureImporter(asked) });
    const vm = await kvm.createVm({ type: 'gamma' });
    expect(origin(vm)).toBe('cocokit-arch-gamma');
    expect(asked).toEqual([]);
  });

  it('finds a plugin in a registry passed as `registry`, and the process-wide one stays empty', async () => {
    const registry = createArchRegistry();
    registry.register(await fixturePlugin('cocokit-arch-gamma'));
    const asked: string[] = [];
    const vm = await openKvm({ hostBytes: 1 << 30, registry, importer: fixtureImporter(asked) }).createVm({ type: 'gamma' });
    expect(origin(vm)).toBe('cocokit-arch-gamma');
    expect(asked).toEqual([]);
    expect(defaultArchRegistry.get('gamma')).toBeUndefined();
  });

  it('does not see the process-wide registry through a registry of its own', async () => {
    registerForTest(await fixturePlugin('cocokit-arch-gamma'));
    const registry = createArchRegistry();
    const asked: string[] = [];
    const vm = await openKvm({ hostBytes: 1 << 30, registry, importer: fixtureImporter(asked) }).createVm({ type: 'gamma' });
    // Not in its registry: found by import instead, and registered there.
    expect(asked).toEqual(['@cocokit/arch-gamma', 'cocokit-arch-gamma']);
    expect(registry.get('gamma')?.name).toBe('gamma');
    expect(origin(vm)).toBe('cocokit-arch-gamma');
  });

  it('imports @cocokit/arch-<type> first, then cocokit-arch-<type>, and registers what it found', async () => {
    const registry = createArchRegistry();
    const asked: string[] = [];
    const kvm = openKvm({ hostBytes: 1 << 30, registry, importer: fixtureImporter(asked) });
    const vm = await kvm.createVm({ type: 'gamma' });
    expect(asked).toEqual(['@cocokit/arch-gamma', 'cocokit-arch-gamma']);
    expect(origin(vm)).toBe('cocokit-arch-gamma');
    expect(registry.get('gamma')).toBe(await fixturePlugin('cocokit-arch-gamma'));
    // Resolved once: the next VM of the type imports nothing.
    await kvm.createVm({ type: 'gamma' });
    expect(asked).toHaveLength(2);
    expect(kvm.vmList()).toHaveLength(2);
  });

  it('takes @cocokit/arch-<type> when both names are installed, and never imports the other', async () => {
    const asked: string[] = [];
    const vm = await openKvm({ hostBytes: 1 << 30, registry: createArchRegistry(), importer: fixtureImporter(asked) }).createVm({ type: 'alpha' });
    expect(origin(vm)).toBe('@cocokit/arch-alpha');
    expect(asked).toEqual(['@cocokit/arch-alpha']);
  });

  it('lets the first installed package decide: a broken @cocokit/arch-<type> is not papered over', async () => {
    const asked: string[] = [];
    const kvm = openKvm({ hostBytes: 1 << 30, registry: createArchRegistry(), importer: fixtureImporter(asked) });
    const e = await archPluginRejectionOf(kvm.createVm({ type: 'delta' }));
    expect(isArchPluginError(e, 'E_PLUGIN_INVALID')).toBe(true);
    expect(asked).toEqual(['@cocokit/arch-delta']);
    expect(e.attempts.map((a) => [a.place, a.outcome])).toEqual([
      ['registry', 'absent'],
      ['@cocokit/arch-delta', 'invalid'],
    ]);
    expect(e.message).toContain('defineArchPlugin');
    expect(e.message).toContain('Not tried: cocokit-arch-delta');
    expect(kvm.vmList()).toEqual([]);
  });

  it('uses plugins passed as objects before the registry and before any import', async () => {
    const registry = createArchRegistry();
    registry.register(await fixturePlugin('@cocokit/arch-alpha'));
    const asked: string[] = [];
    const unscoped = await fixturePlugin('cocokit-arch-alpha');
    const kvm = openKvm({ hostBytes: 1 << 30, archs: [unscoped], registry, importer: fixtureImporter(asked) });
    expect(origin(await kvm.createVm({ type: 'alpha' }))).toBe('cocokit-arch-alpha');
    // createVmSync needs no resolution for a plugin at hand.
    expect(origin(kvm.createVmSync({ type: 'alpha' }))).toBe('cocokit-arch-alpha');
    expect(asked).toEqual([]);
  });

  it('loads packages through nodeImporter as the application resolves them, with the same rules', async () => {
    const registry = createArchRegistry();
    const kvm = openKvm({ hostBytes: 1 << 30, registry, importer: nodeImporter(appDir) });
    expect(origin(await kvm.createVm({ type: 'gamma' }))).toBe('cocokit-arch-gamma');
    expect(origin(await kvm.createVm({ type: 'alpha' }))).toBe('@cocokit/arch-alpha');
    // Named like a plugin but not opted in: importable all the same (listing is what the field is for).
    expect(origin(await kvm.createVm({ type: 'noflag' }))).toBe('cocokit-arch-noflag');
    expect(isArchPluginError(await archPluginRejectionOf(kvm.createVm({ type: 'delta' })), 'E_PLUGIN_INVALID')).toBe(true);
    const missing = await archPluginRejectionOf(kvm.createVm({ type: 'omega' }));
    expect(isArchPluginError(missing, 'E_PLUGIN_NOT_FOUND')).toBe(true);
    expect(missing.attempts.map((a) => a.detail)).toEqual([expect.stringContaining('registered: alpha, gamma, noflag'), 'not installed', 'not installed']);
  });
});

describe('refusals name every place looked', () => {
  it('an unknown type, with the default registry and importer, lists the registry and both names', async () => {
    const kvm = openKvm({ hostBytes: 1 << 30 });
    const e = await archPluginRejectionOf(kvm.createVm({ type: 'omega' }));
    expect(isArchPluginError(e, 'E_PLUGIN_NOT_FOUND')).toBe(true);
    expect(e.subject).toBe('omega');
    expect(e.attempts).toEqual([
      { place: 'registry', outcome: 'absent', detail: "no plugin registered for 'omega' (registered: none)" },
      { place: '@cocokit/arch-omega', outcome: 'absent', detail: 'not installed' },
      { place: 'cocokit-arch-omega', outcome: 'absent', detail: 'not installed' },
    ]);
    for (const place of ['registry', '@cocokit/arch-omega', 'cocokit-arch-omega']) expect(e.message).toContain(`- ${place}:`);
    expect(e.message).toContain('Install @cocokit/arch-omega or cocokit-arch-omega');
    expect(e.message).toContain('openKvm({ archs })');
    expect(kvm.vmList()).toEqual([]);
  });

  it('a type that is not a lowercase identifier is refused before anything is imported', async () => {
    const asked: string[] = [];
    const kvm = openKvm({ hostBytes: 1 << 30, registry: createArchRegistry(), importer: fixtureImporter(asked) });
    for (const type of ['Gamma', '../gamma', '@cocokit/arch-gamma', 'arch gamma', '']) {
      expect(isArchPluginError(await archPluginRejectionOf(kvm.createVm({ type })), 'E_PLUGIN_NOT_FOUND')).toBe(true);
    }
    expect(asked).toEqual([]);
  });

  it('refuses an installed plugin of an unsupported apiVersion, naming both versions', async () => {
    const registry = createArchRegistry();
    const asked: string[] = [];
    const e = await archPluginRejectionOf(openKvm({ hostBytes: 1 << 30, registry, importer: fixtureImporter(asked) }).createVm({ type: 'future' }));
    expect(isArchPluginError(e, 'E_PLUGIN_API_VERSION')).toBe(true);
    expect(asked).toEqual(['@cocokit/arch-future', 'cocokit-arch-future']);
    expect(e.message).toContain('apiVersion 99');
    expect(e.message).toContain(`${SUPPORTED_API_VERSIONS.min}..${SUPPORTED_API_VERSIONS.max}`);
    expect(e.message).toContain('upgrade @cocokit/sdk');
    expect(e.attempts.at(-1)).toMatchObject({ place: 'cocokit-arch-future', outcome: 'invalid' });
    expect(registry.get('future')).toBeUndefined();
  });

  it('refuses a plugin of an unsupported apiVersion passed as an object or registered, at once', async () => {
    const future = await fixturePlugin('cocokit-arch-future');
    expect(isArchPluginError(archPluginErrorOf(() => openKvm({ archs: [future] })), 'E_PLUGIN_API_VERSION')).toBe(true);
    const registry = createArchRegistry();
    expect(isArchPluginError(archPluginErrorOf(() => registry.register(future)), 'E_PLUGIN_API_VERSION')).toBe(true);
    expect(isArchPluginError(archPluginErrorOf(() => registerArch(future)), 'E_PLUGIN_API_VERSION')).toBe(true);
    expect(registry.get('future')).toBeUndefined();
    expect(defaultArchRegistry.get('future')).toBeUndefined();
  });

  it('refuses an installed package whose plugin does not serve the type asked for', async () => {
    const e = await archPluginRejectionOf(openKvm({ hostBytes: 1 << 30, registry: createArchRegistry(), importer: fixtureImporter() }).createVm({ type: 'wrongtype' }));
    expect(isArchPluginError(e, 'E_PLUGIN_INVALID')).toBe(true);
    expect(e.message).toContain("serves 'other', not 'wrongtype'");
  });
});

describe("listArchs: the application's direct dependencies that opt in with cocokit.arch", () => {
  /** The listing, as [package, version, vmTypes, dependency field, registered]. */
  const rows = (listing: Awaited<ReturnType<typeof listArchs>>) =>
    listing.map((l) => [l.package, l.version, l.vmTypes, l.dependencyField, l.registered]);

  const DECLARED = [
    ['@cocokit/arch-alpha', '1.0.0', ['alpha'], 'dependencies', false],
    ['@cocokit/arch-delta', '0.1.0', ['delta'], 'dependencies', false],
    ['cocokit-arch-alpha', '1.0.0', ['alpha'], 'dependencies', false],
    ['cocokit-arch-delta', '1.0.0', ['delta'], 'dependencies', false],
    ['cocokit-arch-future', '9.0.0', ['future'], 'devDependencies', false],
    ['cocokit-arch-gamma', '1.2.3', ['gamma'], 'dependencies', false],
    ['cocokit-arch-malformed', '1.0.0', ['malformed'], 'optionalDependencies', false],
    ['cocokit-arch-throws', '1.0.0', ['throws'], 'devDependencies', false],
    ['cocokit-arch-wrongtype', '1.0.0', ['wrongtype'], 'optionalDependencies', false],
  ];

  it('lists every direct dependency declaring cocokit.arch, from package.json alone', async () => {
    const listed = await listInstalledArchs(appDir, { registry: createArchRegistry() });
    expect(rows(listed)).toEqual(DECLARED);
    const names = listed.map((l) => l.package);
    // Installed and opted in, but not a direct dependency: never a crawl of node_modules.
    expect(names).not.toContain('cocokit-arch-transitive');
    // A direct dependency named like a plugin, without the opt-in field; and an ordinary one.
    expect(names).not.toContain('cocokit-arch-noflag');
    expect(names).not.toContain('plain-dep');
  });

  it('listArchs() reads the same through a PackageJsonSource, on the process-wide registry', async () => {
    expect(rows(await listArchs(await nodeDiscovery(appDir)))).toEqual(DECLARED);
    // Platform-neutral: the source can be any pair of package.json readers, here in memory.
    const source: PackageJsonSource = {
      appPackageJson: { dependencies: { 'cocokit-arch-gamma': '*' }, devDependencies: { 'left-pad': '*' } },
      readPackageJson: async (name) => (name === 'cocokit-arch-gamma' ? { version: '2.0.0', cocokit: { arch: ['gamma'] } } : { version: '1.0.0' }),
    };
    expect(rows(await listArchs(source))).toEqual([['cocokit-arch-gamma', '2.0.0', ['gamma'], 'dependencies', false]]);
  });

  it('shows which listed plugins are in the registry: registered in process, or resolved by createVm', async () => {
    const registry = createArchRegistry();
    const source = await nodeDiscovery(appDir);
    await openKvm({ hostBytes: 1 << 30, registry, importer: nodeImporter(appDir) }).createVm({ type: 'gamma' });
    registry.register(await fixturePlugin('cocokit-arch-transitive'));
    const listed = await registry.list(source);
    expect(listed.find((l) => l.package === 'cocokit-arch-gamma')).toMatchObject({ plugin: 'gamma', registered: true, dependencyField: 'dependencies' });
    // Registered by hand: listed without a package, since no import named it.
    expect(listed.find((l) => l.plugin === 'transitive')).toMatchObject({ package: undefined, registered: true, dependencyField: undefined });
    expect(listed.filter((l) => l.registered)).toHaveLength(2);
  });

  it('lists no plugins of a package that is itself a plugin but does not depend on any', async () => {
    expect(await listInstalledArchs(`${appDir}node_modules/cocokit-arch-gamma`, { registry: createArchRegistry() })).toEqual([]);
  });
});
