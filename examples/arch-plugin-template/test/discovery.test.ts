// The plugin as a user meets it: installed next to @cocokit/vm, found by the core at run time with
// no change to the core, listed from the application's package.json, and booting a guest.
import { existsSync } from 'node:fs';
import { mkdtemp, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createArchRegistry, gfn, isArchPluginError, pfn, type ArchImporter } from '@cocokit/sdk';
import { listInstalledArchs, nodeImporter } from '@cocokit/sdk/node';
import { isGuestException, openKvm, runVmm, setupGuestMemory, type ConversionPath, type GuestProgram } from '@cocokit/vm';
import { firmwareBoot, touchWorkingSet } from '@cocokit/vm/guest';
import toy, { TOY_UNACCEPTED_VECTOR } from 'cocokit-arch-toy';

const MiB = 2 ** 20;
/** The template package's own directory. */
const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * An importer that records what the registry asked for and imports it from here. Inside the
 * workspace `cocokit-arch-toy` is this package itself (Node's and Vite's package self-reference),
 * resolved from source through the `@cocokit/source` condition; in an application it is the
 * installed package.
 */
function recordingImporter(asked: string[]): ArchImporter {
  return (specifier) => {
    asked.push(specifier);
    return import(/* @vite-ignore */ specifier);
  };
}

/** The toy arch's guest: a firmware that flips DMA pages, then an OS touching memory it accepts lazily. */
const bootThenWork: GuestProgram<'toy'> = function* (g) {
  yield* firmwareBoot(g, { dmaGpa: 0x10_0000, transfers: 8 });
  yield* touchWorkingSet(g, { gpa: 0x20_0000, size: 2 * MiB, accesses: 1024, acceptChunk: 64 * 1024 });
};

describe('discovery: the core finds cocokit-arch-toy by its name', () => {
  it('imports @cocokit/arch-toy, then cocokit-arch-toy, validates it and registers it', async () => {
    const registry = createArchRegistry();
    const asked: string[] = [];
    const kvm = openKvm({ hostBytes: 1 << 30, registry, importer: recordingImporter(asked) });
    expect(kvm.knownTypes()).not.toContain('toy');
    const vm = await kvm.createVm({ type: 'toy' });
    expect(asked).toEqual(['@cocokit/arch-toy', 'cocokit-arch-toy']);
    // The very module this file imports as `cocokit-arch-toy`.
    expect(registry.get('toy')).toBe(toy);
    expect(vm.type).toBe('toy');
    expect(vm.capabilities).toMatchObject({ privateMem: true, privateByDefault: true });
    // Resolved once: a second VM imports nothing.
    await kvm.createVm({ type: 'toy' });
    expect(asked).toHaveLength(2);
    expect(await registry.list()).toEqual([
      { package: 'cocokit-arch-toy', version: undefined, vmTypes: ['toy'], plugin: 'toy', registered: true, dependencyField: undefined },
    ]);
  });

  it("wraps the plugin's refusal of its options as E_PLUGIN_CREATE_VM, and leaves no VM behind", async () => {
    const kvm = openKvm({ hostBytes: 1 << 30, registry: createArchRegistry(), importer: recordingImporter([]) });
    const processes = kvm.host.processes().length;
    const e = await kvm.createVm({ type: 'toy', archOptions: { colour: 'blue' } }).catch((err: unknown) => err);
    expect(isArchPluginError(e, 'E_PLUGIN_CREATE_VM')).toBe(true);
    expect((e as Error).message).toContain('colour');
    expect(kvm.vmList()).toEqual([]);
    expect(kvm.host.processes()).toHaveLength(processes);
  });
});

describe('listing: what the application declares', () => {
  let app: string;
  beforeAll(async () => {
    // An application that depends on the plugin, as `pnpm add cocokit-arch-toy` leaves it.
    app = await mkdtemp(join(tmpdir(), 'cocokit-toy-app-'));
    await writeFile(
      join(app, 'package.json'),
      JSON.stringify({ name: 'toy-app', private: true, type: 'module', dependencies: { 'cocokit-arch-toy': '^0.0.0', '@cocokit/vm': '*' } }),
    );
    await mkdir(join(app, 'node_modules'));
    await symlink(packageDir, join(app, 'node_modules', 'cocokit-arch-toy'), 'dir');
  });
  afterAll(async () => {
    await rm(app, { recursive: true, force: true });
  });

  it("lists the plugin from the application's direct dependencies by its cocokit.arch field", async () => {
    expect(await listInstalledArchs(app, { registry: createArchRegistry() })).toEqual([
      { package: 'cocokit-arch-toy', version: '0.0.0', vmTypes: ['toy'], plugin: undefined, registered: false, dependencyField: 'dependencies' },
    ]);
  });

  it('lists nothing from the plugin package itself: it does not depend on itself (never a crawl)', async () => {
    expect(await listInstalledArchs(packageDir, { registry: createArchRegistry() })).toEqual([]);
  });

  // nodeImporter resolves the package the way Node does for the application, through its exports'
  // `default` condition: the built dist/. Run `pnpm build` first to include this test.
  it.skipIf(!existsSync(join(packageDir, 'dist/index.js')))('loads the built package as the application resolves it, and boots on it', async () => {
    const registry = createArchRegistry();
    const kvm = openKvm({ hostBytes: 1 << 30, registry, importer: nodeImporter(app) });
    const vm = await kvm.createVm({ type: 'toy' });
    expect((await registry.list())[0]?.package).toBe('cocokit-arch-toy');
    // The plugin object came from dist/, a module apart from the source this file imports.
    expect(registry.get('toy')?.name).toBe('toy');
    expect(registry.get('toy')).not.toBe(toy);
    setupGuestMemory(vm, { size: 8 * MiB });
    vm.createVcpu(0, bootThenWork);
    const r = runVmm(vm);
    expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
  });
});

describe('a guest boots on the toy arch through runVmm', () => {
  const paths: ConversionPath[] = ['attributes', 'in-place'];
  for (const path of paths) {
    it(`runs the firmware DMA pattern and a lazily accepted working set (${path})`, async () => {
      const kvm = openKvm({ hostBytes: 1 << 30, inPlaceConversion: path === 'in-place', registry: createArchRegistry(), importer: recordingImporter([]) });
      const vm = await kvm.createVm({ type: 'toy' });
      setupGuestMemory(vm, { size: 8 * MiB, path });
      vm.createVcpu(0, bootThenWork);
      const r = runVmm(vm, { path });
      expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
      // 8 transfers x 2 conversions, each one KVM_HC_MAP_GPA_RANGE exit from share/unshare.
      expect(r.exits['HYPERCALL']).toBe(16);
      expect(r.conversions).toBe(16);
      // Touched pages are owned by the guest and accepted; the host may not write them.
      const api = vm.archApi;
      expect(api.ownedPages()).toBeGreaterThan(0);
      expect(api.acceptedPages()).toBeGreaterThan(0);
      // The working set's 512 pages, and the firmware's two DMA pages, accepted again when made private.
      expect(api.acceptedPages()).toBe(512 + 2);
      const leaf = vm.mmu.lookup(gfn(0x20_0000 / 4096), 'shared');
      if (leaf === undefined) throw new Error('the first page of the working set is not mapped');
      expect(api.isOwned(leaf.pfn)).toBe(true);
      expect(kvm.host.checkHostAccess(pfn(leaf.pfn), true)).toMatchObject({ signal: 'SIGBUS', kind: 'stage2' });
      vm.checkInvariants();
      kvm.checkInvariants();
      vm.destroy();
      expect(api.ownedPages()).toBe(0);
    });
  }

  it('raises #VE for an unaccepted private page; the guest accepts it and retries', async () => {
    const kvm = openKvm({ hostBytes: 1 << 30, registry: createArchRegistry(), importer: recordingImporter([]) });
    const vm = await kvm.createVm({ type: 'toy' });
    setupGuestMemory(vm, { size: 4 * MiB });
    const seen: number[] = [];
    vm.createVcpu(0, function* (g) {
      const first = yield* g.read(0x3000);
      if (!isGuestException(first)) throw new Error('an unaccepted page read without #VE');
      seen.push(first.vector);
      const r = yield* g.arch.accept(0x3000);
      if (r.status !== 'not-mapped' && r.status !== 'ok') throw new Error(`accept: ${r.status}`);
      const accepted = yield* g.accept(0x3000, 4096);
      if (!accepted.ok) throw new Error(accepted.reason);
      const w = yield* g.write(0x3000, new Uint8Array([1, 2, 3]));
      if (w !== undefined) throw new Error(`write after accept: ${w.name}`);
      const back = yield* g.read(0x3000, 3);
      if (isGuestException(back)) throw new Error(back.name);
      seen.push(...back);
    });
    const r = runVmm(vm);
    expect(r.ok, JSON.stringify(r.vcpus)).toBe(true);
    expect(seen).toEqual([TOY_UNACCEPTED_VECTOR, 1, 2, 3]);
  });
});
