import { describe, expect, it } from 'vitest';
import { discoverArchPackages } from './discovery.js';
import { isArchPluginError } from './errors.js';

const manifests: Record<string, unknown> = {
  'cocokit-arch-a': { name: 'cocokit-arch-a', version: '1.2.3', cocokit: { arch: ['a'] } },
  '@cocokit/arch-b': { name: '@cocokit/arch-b', version: '0.1.0', cocokit: { arch: ['b', 'b-debug'] } },
  lodash: { name: 'lodash', version: '4.17.21' },
  'other-cocokit': { name: 'other-cocokit', cocokit: { extension: 'x' } },
  'dev-arch': { name: 'dev-arch', version: '0.0.1', cocokit: { arch: ['dev'] } },
};

describe('discoverArchPackages', () => {
  it('keeps direct dependencies that declare cocokit.arch, and looks up nothing else', async () => {
    const asked: string[] = [];
    const found = await discoverArchPackages({
      appPackageJson: {
        dependencies: { lodash: '^4', 'cocokit-arch-a': '^1', '@cocokit/arch-b': '*', 'not-installed': '1' },
        devDependencies: { 'dev-arch': '0.0.1', 'other-cocokit': '1' },
        peerDependencies: { 'ignored-peer': '1' },
      },
      readPackageJson: async (name) => {
        asked.push(name);
        return manifests[name];
      },
    });
    expect(found).toEqual([
      { package: '@cocokit/arch-b', version: '0.1.0', vmTypes: ['b', 'b-debug'], dependencyField: 'dependencies' },
      { package: 'cocokit-arch-a', version: '1.2.3', vmTypes: ['a'], dependencyField: 'dependencies' },
      { package: 'dev-arch', version: '0.0.1', vmTypes: ['dev'], dependencyField: 'devDependencies' },
    ]);
    expect(asked.sort()).toEqual(
      ['@cocokit/arch-b', 'cocokit-arch-a', 'dev-arch', 'lodash', 'not-installed', 'other-cocokit'].sort(),
    );
  });

  it('finds nothing in an app without dependencies', async () => {
    expect(await discoverArchPackages({ appPackageJson: { name: 'app' }, readPackageJson: async () => undefined })).toEqual(
      [],
    );
  });

  it('refuses a malformed cocokit.arch declaration, naming the package', async () => {
    for (const arch of [[], 'a', ['A'], ['../x'], [1]]) {
      let e: unknown;
      try {
        await discoverArchPackages({
          appPackageJson: { dependencies: { broken: '1' } },
          readPackageJson: async () => ({ name: 'broken', cocokit: { arch } }),
        });
      } catch (err) {
        e = err;
      }
      expect(isArchPluginError(e, 'E_PLUGIN_INVALID')).toBe(true);
      expect((e as Error).message).toContain('package broken');
    }
  });

  it('refuses an app package.json that is not an object', async () => {
    await expect(discoverArchPackages({ appPackageJson: null, readPackageJson: async () => undefined })).rejects.toThrow(
      /package.json is null/,
    );
  });
});
