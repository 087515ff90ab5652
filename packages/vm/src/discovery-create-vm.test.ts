// What the core does with a plugin once it has one: a plugin whose createVm throws or returns an
// unusable ArchVm gives ArchPluginError E_PLUGIN_CREATE_VM and leaves no half-made VM (no VM in the
// list, no VMM process, no host memory, no host-access check), and KVM_CAP_VM_TYPES reports the
// types of plugins passed or registered. Plugins are fixtures (../test-fixtures/README.md).
import { afterEach, describe, expect, it } from 'vitest';
import {
  createArchRegistry,
  isArchPluginError,
  pfn,
  registerArch,
  uapi,
  unregisterArch,
  type ArchImporter,
  type ArchPlugin,
} from '@cocokit/sdk';
import { archPluginRejectionOf } from '@cocokit/sdk/testing';
import { openKvm, type Kvm } from './index.js';

const fixtures = new URL('../test-fixtures/', import.meta.url);
const packageUrl = (pkg: string): string => new URL(`app/node_modules/${pkg}/index.js`, fixtures).href;
const standInUrl = (file: string): string => new URL(`stand-ins/${file}`, fixtures).href;

async function load<T>(url: string): Promise<T> {
  return (await import(/* @vite-ignore */ url)) as T;
}
const fixturePlugin = async (pkg: string): Promise<ArchPlugin> => (await load<{ default: ArchPlugin }>(packageUrl(pkg))).default;
const x86 = (): Promise<Record<'fakeSev' | 'fakeSnp' | 'fakeTdx', ArchPlugin>> => load(standInUrl('x86.js'));
const owner = async (): Promise<ArchPlugin> => (await load<{ default: ArchPlugin }>(standInUrl('owner.js'))).default;

/** An importer mapping package names to fixture module files; anything else is not installed. */
function importerOf(map: Readonly<Record<string, string>>, asked: string[] = []): ArchImporter {
  return async (specifier) => {
    asked.push(specifier);
    const url = map[specifier];
    if (url === undefined) throw Object.assign(new Error(`Cannot find package '${specifier}'`), { code: 'ERR_MODULE_NOT_FOUND' });
    return import(/* @vite-ignore */ url);
  };
}


/** Everything a half-made VM could leave behind on the host. */
function leftovers(kvm: Kvm) {
  return {
    vms: kvm.vmList().map((vm) => vm.id),
    pids: kvm.host.processes().map((p) => p.pid),
    usedFrames: kvm.host.stats().usedFrames,
    // No check of a dead VM's arch may still stand between the host and its memory.
    hostWrite: kvm.host.checkHostAccess(pfn(0x1234), true),
  };
}

/** A host with one VM already running, so "unchanged" is not the same as "empty". */
async function busyKvm(options: Parameters<typeof openKvm>[0] = {}): Promise<Kvm> {
  const kvm = openKvm({ hostBytes: 1 << 30, registry: createArchRegistry(), ...options });
  await kvm.createVm({ type: 'sw-protected' });
  return kvm;
}

describe('a plugin whose createVm throws', () => {
  it('gives E_PLUGIN_CREATE_VM with what it threw as the cause, and leaves no half-made VM', async () => {
    const kvm = await busyKvm({ importer: importerOf({ 'cocokit-arch-throws': packageUrl('cocokit-arch-throws') }) });
    const before = leftovers(kvm);
    const e = await archPluginRejectionOf(kvm.createVm({ type: 'throws' }));
    expect(isArchPluginError(e, 'E_PLUGIN_CREATE_VM')).toBe(true);
    expect(e.subject).toBe('throws');
    expect(e.message).toContain('no throws hardware on this host');
    expect(e.cause).toBeInstanceOf(Error);
    expect((e.cause as Error).message).toBe('no throws hardware on this host');
    expect(leftovers(kvm)).toEqual(before);
    // No VM id was used up either: the next VM gets the one the failed VM would have had.
    expect((await kvm.createVm({ type: 'sw-protected' })).id).toBe(1);
    kvm.checkInvariants();
  });

  it('is refused the same way through createVmSync, for a plugin passed as an object', async () => {
    const kvm = await busyKvm({ archs: [await fixturePlugin('cocokit-arch-throws')] });
    const before = leftovers(kvm);
    let e: unknown;
    try {
      kvm.createVmSync({ type: 'throws' });
    } catch (err) {
      e = err;
    }
    expect(isArchPluginError(e, 'E_PLUGIN_CREATE_VM')).toBe(true);
    expect(leftovers(kvm)).toEqual(before);
  });

  it('hands the plugin archOptions as ctx.options, and wraps its refusal of them', async () => {
    const kvm = await busyKvm({ archs: [await fixturePlugin('cocokit-arch-malformed')] });
    const before = leftovers(kvm);
    const e = await archPluginRejectionOf(kvm.createVm({ type: 'malformed', archOptions: { shape: 'no-such-shape' } }));
    expect(isArchPluginError(e, 'E_PLUGIN_CREATE_VM')).toBe(true);
    expect(e.message).toContain('unknown shape no-such-shape');
    expect(leftovers(kvm)).toEqual(before);
  });
});

describe('a plugin whose createVm returns an unusable ArchVm', () => {
  const refuse = async (shape: string) => {
    const kvm = await busyKvm({ archs: [await fixturePlugin('cocokit-arch-malformed')] });
    const before = leftovers(kvm);
    const e = await archPluginRejectionOf(kvm.createVm({ type: 'malformed', archOptions: { shape } }));
    return { e, before, after: leftovers(kvm) };
  };

  for (const shape of ['null', 'no-capabilities', 'capabilities-not-object']) {
    it(`refuses ${shape} with E_PLUGIN_CREATE_VM and leaves nothing behind`, async () => {
      const { e, before, after } = await refuse(shape);
      expect(isArchPluginError(e, 'E_PLUGIN_CREATE_VM')).toBe(true);
      expect(e.message).toContain('malformed');
      expect(after).toEqual(before);
    });
  }

  for (const shape of ['hook-not-function', 'mirror-root-without-hooks']) {
    it(`leaves nothing behind when ${shape} is refused`, async () => {
      const { after, before } = await refuse(shape);
      expect(after).toEqual(before);
    });
  }

  // Known gaps (see the vm package's discovery report): the core checks only that `capabilities` is
  // an object. These ArchVms are created (empty capabilities, a level of 7, a hostAccess or
  // guestKernel that is not callable: each fails later, deep in a hook) or refused with another
  // error (a TypeError from binding a hook that is not a function; createMmu's EINVAL for a mirror
  // root without its hooks). Each test fails today and is marked so; drop `.fails` once the core
  // validates the ArchVm it gets (as the conformance kit's create-vm and capabilities checks do).
  for (const shape of [
    'empty-capabilities',
    'level-out-of-range',
    'hook-not-function',
    'host-access-not-function',
    'guest-kernel-not-object',
    'mirror-root-without-hooks',
  ]) {
    it(`refuses ${shape} with E_PLUGIN_CREATE_VM`, async () => {
      const { e, before, after } = await refuse(shape);
      expect(isArchPluginError(e, 'E_PLUGIN_CREATE_VM')).toBe(true);
      expect(after).toEqual(before);
    });
  }
});

describe('a VM refused after its arch exists', () => {
  /** A host with one owner VM; `destroyed` counts arch destroy calls. */
  async function ownerHost() {
    const counter = { destroyed: 0 };
    const kvm = await busyKvm({ archs: [await owner()] });
    const archOptions = { onDestroy: () => void counter.destroyed++ };
    return { kvm, counter, archOptions };
  }

  it('has an owner VM hold host state while it lives, and give it all back on destroy', async () => {
    const { kvm, counter, archOptions } = await ownerHost();
    const before = leftovers(kvm);
    const vm = await kvm.createVm({ type: 'owner', archOptions });
    expect(kvm.host.checkHostAccess(pfn(0x1234), true)).toMatchObject({ signal: 'SIGBUS', kind: 'stage2' });
    vm.destroy();
    expect(counter.destroyed).toBe(1);
    expect(leftovers(kvm)).toEqual(before);
  });

  // Known gap (see the report): when a layer made after the arch fails (here an extension's setup),
  // the Vm constructor does not undo what it made: the arch's host-access check stays installed, the
  // MMU's root page stays allocated, and the arch is never destroyed.
  it('undoes the arch, its host-access check and the MMU when an extension fails to set up', async () => {
    const { kvm, counter, archOptions } = await ownerHost();
    const before = leftovers(kvm);
    const broken = { name: 'broken', setup: () => { throw new Error('extension setup failed'); } };
    await expect(kvm.createVm({ type: 'owner', archOptions, extensions: [broken] })).rejects.toThrow('extension setup failed');
    expect(leftovers(kvm)).toEqual(before);
    expect(counter.destroyed).toBe(1);
  });
});

describe('KVM_CAP_VM_TYPES', () => {
  const bit = (n: number): number => 2 ** n;
  const BUILTIN = bit(uapi.KVM_X86_DEFAULT_VM) + bit(uapi.KVM_X86_SW_PROTECTED_VM);
  const registered: ArchPlugin[] = [];
  afterEach(() => {
    for (const p of registered.splice(0)) unregisterArch(p);
  });

  it('lists the built-in types when no plugin is known', () => {
    expect(openKvm({ registry: createArchRegistry() }).checkExtension(uapi.KVM_CAP_VM_TYPES)).toBe(BUILTIN);
  });

  it('adds the types of plugins passed as objects', async () => {
    const { fakeSnp, fakeTdx } = await x86();
    const kvm = openKvm({ registry: createArchRegistry(), archs: [fakeSnp, fakeTdx] });
    expect(kvm.checkExtension(uapi.KVM_CAP_VM_TYPES)).toBe(BUILTIN + bit(uapi.KVM_X86_SNP_VM) + bit(uapi.KVM_X86_TDX_VM));
  });

  it("adds the types registered in the kvm's registry, process-wide or its own", async () => {
    const { fakeSev, fakeTdx } = await x86();
    registerArch(fakeSev);
    registered.push(fakeSev);
    expect(openKvm().checkExtension(uapi.KVM_CAP_VM_TYPES)).toBe(BUILTIN + bit(uapi.KVM_X86_SEV_VM));
    const own = createArchRegistry();
    own.register(fakeTdx);
    // Its own registry only: the process-wide SEV stand-in is not this kvm's.
    expect(openKvm({ registry: own }).checkExtension(uapi.KVM_CAP_VM_TYPES)).toBe(BUILTIN + bit(uapi.KVM_X86_TDX_VM));
  });

  it('adds a type once createVm has resolved it by import (installed but unresolved is not known yet)', async () => {
    const asked: string[] = [];
    const kvm = openKvm({ hostBytes: 1 << 30, registry: createArchRegistry(), importer: importerOf({ 'cocokit-arch-snp': standInUrl('x86.js') }, asked) });
    expect(kvm.checkExtension(uapi.KVM_CAP_VM_TYPES)).toBe(BUILTIN);
    const vm = await kvm.createVm({ type: 'snp' });
    expect(asked).toEqual(['@cocokit/arch-snp', 'cocokit-arch-snp']);
    expect((vm.archApi as { origin?: string }).origin).toBe('fake-snp');
    expect(kvm.checkExtension(uapi.KVM_CAP_VM_TYPES)).toBe(BUILTIN + bit(uapi.KVM_X86_SNP_VM));
  });

  it('sets no bit for a type KVM_CREATE_VM has no number for, which is still a known type', async () => {
    const kvm = openKvm({ registry: createArchRegistry(), archs: [await fixturePlugin('cocokit-arch-gamma')] });
    expect(kvm.checkExtension(uapi.KVM_CAP_VM_TYPES)).toBe(BUILTIN);
    expect(kvm.knownTypes()).toEqual(['default', 'gamma', 'sw-protected']);
  });

  // Known gap (see the report): knownTypes() asks the registry only about a fixed list of names
  // ('sev', 'sev-es', 'snp', 'tdx', 'pkvm'), so a registered third-party type is missing.
  it('knows a registered type the core has no name for', async () => {
    const registry = createArchRegistry();
    registry.register(await fixturePlugin('cocokit-arch-gamma'));
    expect(openKvm({ registry }).knownTypes()).toContain('gamma');
  });
});
