import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { archPluginRejectionOf } from '../testing/errno.js';
import { createArchRegistry, defaultArchImporter, type ArchImporter } from '../arch/registry.js';
import { findInstalledPackage, findPackageRoot, listInstalledArchs, nodeDiscovery, nodeImporter } from './discovery.js';

const fixtures = resolve(dirname(fileURLToPath(import.meta.url)), '../../test/fixtures');
const app = join(fixtures, 'app');
const hoistedApp = join(fixtures, 'hoisted/packages/app');


describe('finding packages on disk', () => {
  it('finds the nearest package.json at or above a directory', async () => {
    expect(await findPackageRoot(join(app, 'lib'))).toBe(app);
    expect(await findPackageRoot(app)).toBe(app);
  });
  it('finds an installed package the way Node does, walking up', async () => {
    expect(await findInstalledPackage('cocokit-arch-fixture', app)).toBe(join(app, 'node_modules/cocokit-arch-fixture'));
    expect(await findInstalledPackage('@cocokit/arch-scoped-fixture', join(app, 'lib'))).toBe(
      join(app, 'node_modules/@cocokit/arch-scoped-fixture'),
    );
    expect(await findInstalledPackage('cocokit-arch-hoisted', hoistedApp)).toBe(
      join(fixtures, 'hoisted/node_modules/cocokit-arch-hoisted'),
    );
    expect(await findInstalledPackage('not-installed-dep', app)).toBeUndefined();
  });
  it('refuses names that would step outside node_modules', async () => {
    for (const name of ['../app', '../../fixtures/app', '/etc', '@cocokit/../x', 'a/b/c']) {
      expect(await findInstalledPackage(name, app)).toBeUndefined();
    }
  });
});

describe('listInstalledArchs', () => {
  it("lists the app's direct dependencies that declare cocokit.arch, and nothing else", async () => {
    const listed = await listInstalledArchs(join(app, 'lib'), { registry: createArchRegistry() });
    expect(listed.map((l) => [l.package, l.version, l.vmTypes, l.dependencyField, l.registered])).toEqual([
      ['@cocokit/arch-scoped-fixture', '2.0.0-beta.1', ['scoped-fixture'], 'dependencies', false],
      ['cocokit-arch-broken', '0.0.1', ['broken'], 'devDependencies', false],
      ['cocokit-arch-fixture', '1.0.0', ['fixture'], 'dependencies', false],
      ['cocokit-arch-unbranded', '0.0.1', ['unbranded'], 'devDependencies', false],
    ]);
    // Installed, declares cocokit.arch, but the app does not depend on it: never a crawl.
    expect(listed.some((l) => l.package === 'cocokit-arch-transitive')).toBe(false);
  });

  it('finds dependencies installed in a parent node_modules', async () => {
    const listed = await listInstalledArchs(hoistedApp, { registry: createArchRegistry() });
    expect(listed).toEqual([
      {
        package: 'cocokit-arch-hoisted',
        version: '1.4.0',
        vmTypes: ['hoisted'],
        plugin: undefined,
        registered: false,
        dependencyField: 'dependencies',
      },
    ]);
  });

  it('marks what the registry already holds', async () => {
    const registry = createArchRegistry();
    await registry.resolve('fixture', { importer: nodeImporter(app) });
    const listed = await listInstalledArchs(app, { registry });
    expect(listed.find((l) => l.package === 'cocokit-arch-fixture')).toMatchObject({ registered: true, plugin: 'fixture' });
  });

  it('uses the process-wide registry by default', async () => {
    expect((await listInstalledArchs(hoistedApp)).map((l) => l.package)).toContain('cocokit-arch-hoisted');
  });

  describe('with a temporary app', () => {
    const dirs: string[] = [];
    afterAll(async () => {
      for (const d of dirs) await rm(d, { recursive: true, force: true });
    });
    it('says so when there is no package.json, and when it is not JSON', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'cocokit-discovery-'));
      dirs.push(dir);
      // tmpdir may sit below a directory with a package.json; only a bad file here is certain.
      await writeFile(join(dir, 'package.json'), '{ not json');
      const e = await archPluginRejectionOf(nodeDiscovery(dir));
      expect(e.code).toBe('E_PLUGIN_INVALID');
      expect(e.message).toContain(join(dir, 'package.json'));
    });
    it('refuses a filesystem root without a package.json', async () => {
      const root = resolve('/');
      if (await findPackageRoot(root)) return; // a package.json at / would make this moot
      const e = await archPluginRejectionOf(nodeDiscovery(root));
      expect(e.code).toBe('E_PLUGIN_NOT_FOUND');
    });
  });
});

describe('resolving fixture packages', () => {
  it('resolves valid plugins through nodeImporter (exports, main, hoisted)', async () => {
    const registry = createArchRegistry();
    const fixture = await registry.resolve('fixture', { importer: nodeImporter(app) });
    expect(fixture.name).toBe('fixture');
    expect(fixture.costs['fixture.op']?.source).toBe('test fixture');
    expect((await registry.resolve('scoped-fixture', { importer: nodeImporter(app) })).name).toBe('scoped-fixture');
    expect((await registry.resolve('hoisted', { importer: nodeImporter(hoistedApp) })).name).toBe('hoisted');
    expect((await registry.list()).map((l) => l.package)).toEqual([
      '@cocokit/arch-scoped-fixture',
      'cocokit-arch-fixture',
      'cocokit-arch-hoisted',
    ]);
  });

  it('reports a package that is not installed as absent, naming every place', async () => {
    const e = await archPluginRejectionOf(createArchRegistry().resolve('transitive-not-here', { importer: nodeImporter(app) }));
    expect(e.code).toBe('E_PLUGIN_NOT_FOUND');
    expect(e.attempts.map((a) => a.outcome)).toEqual(['absent', 'absent', 'absent']);
  });

  it('reports an installed package that throws while importing, with what it threw', async () => {
    const e = await archPluginRejectionOf(createArchRegistry().resolve('broken', { importer: nodeImporter(app) }));
    expect(e.code).toBe('E_PLUGIN_INVALID');
    expect(e.attempts.at(-1)).toMatchObject({ place: 'cocokit-arch-broken', outcome: 'invalid' });
    expect(e.message).toContain('threw while importing');
    expect(String((e.cause as Error).message)).toContain('cocokit-fixture-missing-transitive');
  });

  it('reports an installed package whose export is not a plugin', async () => {
    const e = await archPluginRejectionOf(createArchRegistry().resolve('unbranded', { importer: nodeImporter(app) }));
    expect(e.code).toBe('E_PLUGIN_INVALID');
    expect(e.message).toContain('defineArchPlugin');
  });

  it('passes non-package specifiers to import() unchanged', async () => {
    const url = pathToFileURL(join(app, 'node_modules/plain-dep/index.js')).href;
    expect(((await nodeImporter(app)(url)) as { default: unknown }).default).toBe(42);
  });
});

describe('the default importer, on real files', () => {
  // Bare names resolve from the sdk's own location, where these fixtures are not installed, so the
  // candidates are mapped to file URLs; unmapped names go to the real import() and are absent.
  const importerFor =
    (map: Record<string, string>): ArchImporter =>
    (s) => {
      const file = map[s];
      return defaultArchImporter(file === undefined ? s : pathToFileURL(join(app, 'node_modules', file)).href);
    };

  it('loads a valid plugin and reports an absent scoped package as not installed', async () => {
    const plugin = await createArchRegistry().resolve('fixture', {
      importer: importerFor({ 'cocokit-arch-fixture': 'cocokit-arch-fixture/index.js' }),
    });
    expect(plugin.vmTypes).toEqual(['fixture']);
  });

  it('treats an installed package whose entry file is missing as broken, not absent', async () => {
    const e = await archPluginRejectionOf(
      createArchRegistry().resolve('fixture', { importer: importerFor({ 'cocokit-arch-fixture': 'cocokit-arch-fixture/gone.js' }) }),
    );
    expect(e.code).toBe('E_PLUGIN_INVALID');
    expect(e.attempts.at(-1)).toMatchObject({ place: 'cocokit-arch-fixture', outcome: 'invalid' });
  });

  it('tells a package that throws while importing from one that is absent', async () => {
    const e = await archPluginRejectionOf(
      createArchRegistry().resolve('broken', { importer: importerFor({ 'cocokit-arch-broken': 'cocokit-arch-broken/index.js' }) }),
    );
    expect(e.code).toBe('E_PLUGIN_INVALID');
    expect(e.attempts.map((a) => [a.place, a.outcome])).toEqual([
      ['registry', 'absent'],
      ['@cocokit/arch-broken', 'absent'],
      ['cocokit-arch-broken', 'invalid'],
    ]);
  });

  it('reports an installed but invalid package', async () => {
    const e = await archPluginRejectionOf(
      createArchRegistry().resolve('unbranded', {
        importer: importerFor({ '@cocokit/arch-unbranded': 'cocokit-arch-unbranded/index.js' }),
      }),
    );
    expect(e.code).toBe('E_PLUGIN_INVALID');
    expect(e.attempts.at(-1)?.place).toBe('@cocokit/arch-unbranded');
  });
});
