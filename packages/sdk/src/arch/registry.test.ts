import { describe, expect, it } from 'vitest';
import { archPluginRejectionOf } from '../testing/errno.js';
import { defineArchPlugin } from './define.js';
import { isArchPluginError } from './errors.js';
import {
  archPackageNames,
  createArchRegistry,
  listArchs,
  registerArch,
  resolveArch,
  unregisterArch,
  type ArchImporter,
} from './registry.js';

const caps = {
  privateMem: false,
  privateByDefault: false,
  maxPrivateLevel: 0 as const,
  mirrorRoot: false,
  inPlaceConversion: false,
};
const make = (name: string, vmTypes: readonly string[]) =>
  defineArchPlugin({ name, apiVersion: 1, vmTypes, createVm: () => ({ capabilities: caps }) });

/** Rejects the way Node does for a package that is not installed. */
const notInstalled = (s: string) =>
  Object.assign(new Error(`Cannot find package '${s}' imported from /app/index.js`), { code: 'ERR_MODULE_NOT_FOUND' });

/** An importer over an in-memory set of packages; everything else is "not installed". */
function fakeImporter(packages: Record<string, () => unknown>, log: string[] = []): ArchImporter {
  return async (specifier) => {
    log.push(specifier);
    const load = packages[specifier];
    if (!load) throw notInstalled(specifier);
    return load();
  };
}


describe('registry: register, get, unregister', () => {
  it('registers a plugin under each of its VM types, idempotently', () => {
    const r = createArchRegistry();
    const p = make('twin', ['twin-a', 'twin-b']);
    r.register(p);
    r.register(p);
    expect(r.get('twin-a')).toBe(p);
    expect(r.get('twin-b')).toBe(p);
    expect(r.get('other')).toBeUndefined();
    expect(r.unregister('twin')).toBe(true);
    expect(r.get('twin-a')).toBeUndefined();
    expect(r.unregister(p)).toBe(false);
  });

  it('refuses a second plugin claiming a VM type or name, and changes nothing', () => {
    const r = createArchRegistry();
    r.register(make('first', ['shared']));
    let e: unknown;
    try {
      r.register(make('second', ['own', 'shared']));
    } catch (err) {
      e = err;
    }
    expect(isArchPluginError(e, 'E_PLUGIN_DUPLICATE')).toBe(true);
    expect((e as Error).message).toContain("'second'");
    expect((e as Error).message).toContain("'first'");
    expect(r.get('own')).toBeUndefined();
    expect(() => r.register(make('first', ['other']))).toThrow(/already registered/);
  });

  it('refuses an unbranded object', () => {
    const r = createArchRegistry();
    const { ...plain } = make('plain', ['plain']);
    const unbranded = { name: plain.name, apiVersion: 1, vmTypes: ['plain'], costs: {}, createVm: plain.createVm };
    expect(() => r.register(unbranded as never)).toThrow(/defineArchPlugin/);
  });

  it('only unregisters the plugin object it was given', () => {
    const r = createArchRegistry();
    const p = make('one', ['one']);
    r.register(p);
    expect(r.unregister(make('one', ['one']))).toBe(false);
    expect(r.get('one')).toBe(p);
  });
});

describe('registry: resolve', () => {
  it('answers from the registry without importing', async () => {
    const r = createArchRegistry();
    const p = make('reg', ['reg']);
    r.register(p);
    const log: string[] = [];
    expect(await r.resolve('reg', { importer: fakeImporter({}, log) })).toBe(p);
    expect(log).toEqual([]);
  });

  it('imports exactly @cocokit/arch-<type>, then cocokit-arch-<type>, and caches the result', async () => {
    const r = createArchRegistry();
    const p = make('third', ['third']);
    const log: string[] = [];
    const importer = fakeImporter({ 'cocokit-arch-third': () => ({ default: p }) }, log);
    expect(await r.resolve('third', { importer })).toBe(p);
    expect(log).toEqual(['@cocokit/arch-third', 'cocokit-arch-third']);
    expect(await r.resolve('third', { importer })).toBe(p);
    expect(log).toHaveLength(2);
    expect(r.get('third')).toBe(p);
    expect(archPackageNames('third')).toEqual(['@cocokit/arch-third', 'cocokit-arch-third']);
  });

  it('prefers the scoped package', async () => {
    const r = createArchRegistry();
    const scoped = make('dual', ['dual']);
    const log: string[] = [];
    const importer = fakeImporter(
      { '@cocokit/arch-dual': () => ({ default: scoped }), 'cocokit-arch-dual': () => ({ default: make('x', ['dual']) }) },
      log,
    );
    expect(await r.resolve('dual', { importer })).toBe(scoped);
    expect(log).toEqual(['@cocokit/arch-dual']);
  });

  it('shares one import between concurrent resolutions', async () => {
    const r = createArchRegistry();
    const p = make('conc', ['conc']);
    const log: string[] = [];
    const importer = fakeImporter({ '@cocokit/arch-conc': () => ({ default: p }) }, log);
    const [a, b] = await Promise.all([r.resolve('conc', { importer }), r.resolve('conc', { importer })]);
    expect(a).toBe(p);
    expect(b).toBe(p);
    expect(log).toEqual(['@cocokit/arch-conc']);
  });

  it('names every place looked when nothing is found', async () => {
    const r = createArchRegistry();
    r.register(make('here', ['here']));
    const e = await archPluginRejectionOf(r.resolve('nowhere', { importer: fakeImporter({}) }));
    expect(e.code).toBe('E_PLUGIN_NOT_FOUND');
    expect(e.subject).toBe('nowhere');
    expect(e.attempts.map((a) => [a.place, a.outcome])).toEqual([
      ['registry', 'absent'],
      ['@cocokit/arch-nowhere', 'absent'],
      ['cocokit-arch-nowhere', 'absent'],
    ]);
    expect(e.message).toContain('registered: here');
    expect(e.message).toContain('@cocokit/arch-nowhere: not installed');
    expect(e.message).toContain('cocokit-arch-nowhere: not installed');
  });

  it('refuses VM types that are not lowercase identifiers without importing anything', async () => {
    const r = createArchRegistry();
    const log: string[] = [];
    for (const t of ['../x', '@evil/x', 'X', '', 'a/b', 'file:///x']) {
      const e = await archPluginRejectionOf(r.resolve(t, { importer: fakeImporter({}, log) }));
      expect(e.code).toBe('E_PLUGIN_NOT_FOUND');
    }
    expect(log).toEqual([]);
  });

  it('tells installed-but-invalid from not installed, and does not fall through to the next package', async () => {
    const r = createArchRegistry();
    const log: string[] = [];
    const importer = fakeImporter(
      {
        '@cocokit/arch-bad': () => ({ default: { name: 'bad' } }),
        'cocokit-arch-bad': () => ({ default: make('bad', ['bad']) }),
      },
      log,
    );
    const e = await archPluginRejectionOf(r.resolve('bad', { importer }));
    expect(e.code).toBe('E_PLUGIN_INVALID');
    expect(e.attempts.at(-1)).toMatchObject({ place: '@cocokit/arch-bad', outcome: 'invalid' });
    expect(e.message).toContain('installed but cannot be used');
    expect(e.message).toContain('Not tried: cocokit-arch-bad');
    expect(log).toEqual(['@cocokit/arch-bad']);
    expect(r.get('bad')).toBeUndefined();
  });

  it('reports a missing default export, a wrong apiVersion and a plugin for other types', async () => {
    const r = createArchRegistry();
    const forged = { ...make('future', ['future']), apiVersion: 2, [Symbol.for('cocokit.arch-plugin')]: 2 };
    const importer = fakeImporter({
      'cocokit-arch-nodefault': () => ({ plugin: make('nodefault', ['nodefault']) }),
      'cocokit-arch-future': () => ({ default: forged }),
      'cocokit-arch-elsewhere': () => ({ default: make('other', ['other']) }),
    });
    const noDefault = await archPluginRejectionOf(r.resolve('nodefault', { importer }));
    expect(noDefault.code).toBe('E_PLUGIN_INVALID');
    expect(noDefault.message).toContain('no default export');
    const future = await archPluginRejectionOf(r.resolve('future', { importer }));
    expect(future.code).toBe('E_PLUGIN_API_VERSION');
    expect(future.message).toContain('apiVersion 2');
    const elsewhere = await archPluginRejectionOf(r.resolve('elsewhere', { importer }));
    expect(elsewhere.code).toBe('E_PLUGIN_INVALID');
    expect(elsewhere.message).toContain("serves 'other', not 'elsewhere'");
  });

  it('does not swallow an error thrown while importing an installed package', async () => {
    const r = createArchRegistry();
    const boom = new TypeError('x is not a function');
    // A package that imports a missing dependency of its own is installed, not absent.
    const transitive = Object.assign(new Error("Cannot find package 'left-pad' imported from /app/node_modules/cocokit-arch-dep/index.js"), {
      code: 'ERR_MODULE_NOT_FOUND',
    });
    const importer = fakeImporter({
      '@cocokit/arch-throws': () => {
        throw boom;
      },
      'cocokit-arch-dep': () => {
        throw transitive;
      },
    });
    const e = await archPluginRejectionOf(r.resolve('throws', { importer }));
    expect(e.code).toBe('E_PLUGIN_INVALID');
    expect(e.cause).toBe(boom);
    expect(e.message).toContain('threw while importing: x is not a function');
    const dep = await archPluginRejectionOf(r.resolve('dep', { importer }));
    expect(dep.cause).toBe(transitive);
    expect(dep.attempts.map((a) => a.outcome)).toEqual(['absent', 'absent', 'invalid']);
    // After a failure nothing is cached: a fixed install resolves.
    const fixed = make('throws', ['throws']);
    expect(await r.resolve('throws', { importer: fakeImporter({ '@cocokit/arch-throws': () => ({ default: fixed }) }) })).toBe(
      fixed,
    );
  });

  it('refuses an imported plugin whose other VM type is already served', async () => {
    const r = createArchRegistry();
    r.register(make('owner', ['taken']));
    const importer = fakeImporter({ '@cocokit/arch-fresh': () => ({ default: make('greedy', ['fresh', 'taken']) }) });
    const e = await archPluginRejectionOf(r.resolve('fresh', { importer }));
    expect(e.code).toBe('E_PLUGIN_DUPLICATE');
  });

  it('uses import() by default (nothing installed under these names here)', async () => {
    const r = createArchRegistry();
    const e = await archPluginRejectionOf(r.resolve('surely-absent'));
    expect(e.code).toBe('E_PLUGIN_NOT_FOUND');
    expect(e.attempts.map((a) => a.outcome)).toEqual(['absent', 'absent', 'absent']);
  });
});

describe('registry: list', () => {
  it('lists registered plugins and resolved packages', async () => {
    const r = createArchRegistry();
    r.register(make('local', ['local']));
    await r.resolve('pkg', { importer: fakeImporter({ 'cocokit-arch-pkg': () => ({ default: make('pkg', ['pkg']) }) }) });
    expect(await r.list()).toEqual([
      { package: 'cocokit-arch-pkg', version: undefined, vmTypes: ['pkg'], plugin: 'pkg', registered: true, dependencyField: undefined },
      { package: undefined, version: undefined, vmTypes: ['local'], plugin: 'local', registered: true, dependencyField: undefined },
    ]);
  });

  it('merges declared dependencies with what is registered', async () => {
    const r = createArchRegistry();
    await r.resolve('pkg', { importer: fakeImporter({ 'cocokit-arch-pkg': () => ({ default: make('pkg', ['pkg']) }) }) });
    const manifests: Record<string, unknown> = {
      'cocokit-arch-pkg': { name: 'cocokit-arch-pkg', version: '1.0.0', cocokit: { arch: ['pkg'] } },
      '@acme/arch': { name: '@acme/arch', version: '0.3.1', cocokit: { arch: ['acme'] } },
    };
    const listed = await r.list({
      appPackageJson: { dependencies: { 'cocokit-arch-pkg': '^1', '@acme/arch': '*' } },
      readPackageJson: async (name) => manifests[name],
    });
    expect(listed).toEqual([
      { package: '@acme/arch', version: '0.3.1', vmTypes: ['acme'], plugin: undefined, registered: false, dependencyField: 'dependencies' },
      { package: 'cocokit-arch-pkg', version: '1.0.0', vmTypes: ['pkg'], plugin: 'pkg', registered: true, dependencyField: 'dependencies' },
    ]);
  });
});

describe('the process-wide registry', () => {
  it('backs registerArch, resolveArch, listArchs and unregisterArch', async () => {
    const p = make('global-test', ['global-test']);
    registerArch(p);
    try {
      expect(await resolveArch('global-test')).toBe(p);
      expect((await listArchs()).some((l) => l.plugin === 'global-test')).toBe(true);
    } finally {
      expect(unregisterArch(p)).toBe(true);
    }
    expect((await listArchs()).some((l) => l.plugin === 'global-test')).toBe(false);
  });
});
