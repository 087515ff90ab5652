import { describe, expect, it } from 'vitest';
import { KvmError } from '../errors.js';
import { gfn, pfn, type MappingLevel } from '../units.js';
import { archBusy, archError, archOk, type ArchExit, type ArchResult, type ArchVm, type ArchVmContext } from '../arch/contract.js';
import { defineArchPlugin } from '../arch/define.js';
import { errnoOf } from './errno.js';
import { ArchExitOutsideGuestError, ArchGuestExit, archExitOf, createArchTestVm } from './test-vm.js';

/**
 * An arch with a mirror root in the shape of TDX: tables linked once each (a second link is an
 * error), leaves at 4K or 2M, a split, and busy results on demand. Its guest operation exits
 * through `ctx.exit` when userspace enabled capability 7.
 */
function mirrorVm(ctx: ArchVmContext) {
  const tables = new Set<string>();
  const leaves = new Map<number, { pfn: number; level: MappingLevel }>();
  let busyLeft = 0;
  const busy = (): ArchResult | undefined => (busyLeft > 0 ? (busyLeft--, archBusy('contended')) : undefined);
  return {
    capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 1, mirrorRoot: true, privateRootLevel: 2, inPlaceConversion: false },
    linkPrivateTable(g, level) {
      const key = `${level}:${Math.floor(g / 512 ** level)}`;
      if (tables.has(key)) return archError('EEXIST', `table ${key} is linked`);
      const b = busy();
      if (b) return b;
      tables.add(key);
      return archOk();
    },
    setPrivateSpte(g, level, p) {
      if (leaves.has(g)) return archError('EEXIST', `gfn ${g} is mapped`);
      const b = busy();
      if (b) return b;
      leaves.set(g, { pfn: p, level });
      return archOk();
    },
    removePrivateSpte(g, level, p) {
      const leaf = leaves.get(g);
      if (leaf?.level !== level || leaf.pfn !== p) return archError('ENOENT', `gfn ${g} is not mapped to ${p} at level ${level}`);
      leaves.delete(g);
      return archOk();
    },
    splitPrivateSpte(g, level) {
      const leaf = leaves.get(g);
      if (!leaf || leaf.level !== level) return archError('EINVAL', 'no leaf to split');
      leaves.delete(g);
      tables.add(`${level}:${Math.floor(g / 512 ** level)}`);
      for (let i = 0; i < 512; i++) leaves.set(g + i, { pfn: leaf.pfn + i, level: (level - 1) as MappingLevel });
      return archOk();
    },
    populate(g, p) {
      ctx.mapPrivatePfn?.(g, p);
    },
    guestApi: {
      hypercall(nr: number): number {
        if (ctx.enabledCap(7) === undefined) return -1;
        return ctx.exit({ reason: 'HYPERCALL', nr, vcpu: ctx.vcpu });
      },
    },
    vmApi: {
      contend(n: number): void {
        busyLeft = n;
      },
      tables: (): number => tables.size,
    },
  } satisfies ArchVm;
}

const mirror = defineArchPlugin({ name: 'mirror', apiVersion: 1, vmTypes: ['mirror'], createVm: mirrorVm });

describe('createArchTestVm: the vCPU and exits', () => {
  it('sets ctx.vcpu inside onVcpu (nested, restored after), where ctx.exit throws ArchGuestExit; outside it throws ArchExitOutsideGuestError', () => {
    const t = createArchTestVm(mirror, 'mirror', { enabledCaps: { 7: 1 } });
    expect(t.ctx.vcpu).toBeUndefined();
    expect(t.onVcpu(2, () => [t.ctx.vcpu, t.onVcpu(3, () => t.ctx.vcpu), t.ctx.vcpu])).toEqual([2, 3, 2]);
    expect(t.ctx.vcpu).toBeUndefined();
    let inside: unknown;
    try {
      t.onVcpu(1, () => t.vm.guestApi.hypercall(12));
    } catch (e) {
      inside = e;
    }
    expect(inside).toBeInstanceOf(ArchGuestExit);
    expect(inside).toMatchObject({ name: 'ArchGuestExit', vcpu: 1, exit: { reason: 'HYPERCALL', nr: 12, vcpu: 1 } });
    expect(t.ctx.vcpu).toBeUndefined();
    expect(() => t.vm.guestApi.hypercall(13)).toThrow(ArchExitOutsideGuestError);
    expect(t.exits.map((e: ArchExit) => e['nr'])).toEqual([12, 13]);
  });

  it('setVcpu sets ctx.vcpu until the next call', () => {
    const t = createArchTestVm(mirror, 'mirror', { enabledCaps: { 7: 1 } });
    t.setVcpu(4);
    expect(t.ctx.vcpu).toBe(4);
    expect(() => t.vm.guestApi.hypercall(1)).toThrow(ArchGuestExit);
    t.setVcpu(undefined);
    expect(() => t.vm.guestApi.hypercall(1)).toThrow(ArchExitOutsideGuestError);
  });

  it('archExitOf finds the exit in either signal, by name, and nothing in other errors', () => {
    const exit = { reason: 'X' };
    expect(archExitOf(new ArchGuestExit(exit, 0))).toBe(exit);
    expect(archExitOf(new ArchExitOutsideGuestError(exit))).toBe(exit);
    expect(archExitOf({ name: 'ArchGuestExit', exit })).toBe(exit);
    expect(archExitOf(new Error('X'))).toBeUndefined();
    expect(archExitOf(undefined)).toBeUndefined();
  });

  it('answers ctx.enabledCap from enabledCaps, then from enableCap', () => {
    const t = createArchTestVm(mirror, 'mirror');
    expect(t.vm.guestApi.hypercall(1)).toBe(-1);
    t.enableCap(7, 0);
    expect(t.ctx.enabledCap(7)).toBe(0);
    expect(() => t.vm.guestApi.hypercall(1)).toThrow(ArchExitOutsideGuestError);
  });

  it('records markBugged reasons and hands vmOptions in ctx.options, frozen', () => {
    const t = createArchTestVm(mirror, 'mirror', { vmOptions: { a: 1 } });
    t.ctx.markBugged('boom');
    expect(t.bugs).toEqual(['boom']);
    expect(t.ctx.options).toEqual({ a: 1 });
    expect(Object.isFrozen(t.ctx.options)).toBe(true);
  });
});

describe('createArchTestVm: the private root', () => {
  it('follows the private-table hooks, whoever calls them: set, split, remove; ctx.translate answers from it', () => {
    const t = createArchTestVm(mirror, 'mirror');
    expect(t.vm.linkPrivateTable(gfn(0), 2)).toEqual(archOk());
    expect(t.vm.linkPrivateTable(gfn(0), 1)).toEqual(archOk());
    expect(t.vm.setPrivateSpte(gfn(512), 1, pfn(0x80000))).toEqual(archOk());
    expect(t.privateRoot.get(512 + 5)).toEqual({ pfn: 0x80005, level: 1 });
    expect(t.ctx.translate(gfn(512 + 5), 'private')).toEqual({ pfn: 0x80005, level: 1 });
    expect(t.ctx.translate(gfn(512 + 5), 'shared')).toBeUndefined();
    // A refused call changes nothing.
    expect(t.vm.setPrivateSpte(gfn(512), 0, pfn(1)).status).toBe('error');
    expect(t.privateRoot.get(512)).toEqual({ pfn: 0x80000, level: 1 });
    expect(t.vm.splitPrivateSpte(gfn(512), 1)).toEqual(archOk());
    expect(t.privateRoot.get(512 + 5)).toEqual({ pfn: 0x80005, level: 0 });
    expect(t.vm.removePrivateSpte(gfn(512 + 5), 0, pfn(0x80005))).toEqual(archOk());
    expect(t.ctx.translate(gfn(512 + 5), 'private')).toBeUndefined();
    expect(t.privateRoot.size).toBe(511);
  });

  it('ctx.mapPrivatePfn links only the tables nobody linked yet, retries busy, and maps the leaf', () => {
    const t = createArchTestVm(mirror, 'mirror');
    expect(t.vm.linkPrivateTable(gfn(0), 2)).toEqual(archOk());
    t.vm.vmApi.contend(2);
    t.ctx.mapPrivatePfn?.(gfn(7), pfn(0x90000));
    expect(t.vm.vmApi.tables()).toBe(2);
    expect(t.privateRoot.get(7)).toEqual({ pfn: 0x90000, level: 0 });
    // The table split out of a 2M leaf is linked too.
    t.vm.setPrivateSpte(gfn(1024), 1, pfn(0xa0000));
    t.vm.splitPrivateSpte(gfn(1024), 1);
    t.vm.removePrivateSpte(gfn(1030), 0, pfn(0xa0006));
    t.ctx.mapPrivatePfn?.(gfn(1030), pfn(0xb0000));
    expect(t.privateRoot.get(1030)).toEqual({ pfn: 0xb0000, level: 0 });
    expect(errnoOf(() => t.ctx.mapPrivatePfn?.(gfn(7), pfn(1)))).toBe('EEXIST');
  });

  it('keeps getters live and methods bound to the VM the plugin returned', () => {
    class ClassVm {
      #calls = 0;
      readonly capabilities = { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: true, inPlaceConversion: false } as const;
      get calls(): number {
        return this.#calls;
      }
      setPrivateSpte(): ArchResult {
        this.#calls++;
        return archOk();
      }
      checkInvariants(): void {
        if (this.#calls < 0) throw new Error('negative');
      }
    }
    const t = createArchTestVm(defineArchPlugin({ name: 'cls', apiVersion: 1, vmTypes: ['cls'], createVm: () => new ClassVm() }), 'cls');
    t.vm.setPrivateSpte();
    expect(t.vm.calls).toBe(1);
    expect(() => t.vm.checkInvariants()).not.toThrow();
    expect(t.privateRoot.size).toBe(0);
  });
});

describe('createArchTestVm: guest_memfd and host pages', () => {
  it("'offset' (default) backs gfn 2^18 + i with pfn 2^18 + i and refuses other gfns; 'allocate' takes a page on first use", () => {
    const offset = createArchTestVm(mirror, 'mirror');
    expect(offset.ctx.gmemPopulate?.(gfn(2 ** 18 + 1), 1, [null], 'k')).toBe(1);
    expect(offset.privateRoot.get(2 ** 18 + 1)?.pfn).toBe(2 ** 18 + 1);
    expect(errnoOf(() => offset.ctx.gmemPopulate?.(gfn(5), 1, [null], 'k'))).toBe('EINVAL');
    const alloc = createArchTestVm(mirror, 'mirror', { gmemBacking: 'allocate' });
    expect(alloc.ctx.gmemPopulate?.(gfn(5), 2, [null, null], 'k')).toBe(2);
    expect([alloc.privateRoot.get(5)?.pfn, alloc.privateRoot.get(6)?.pfn]).toEqual([2 ** 19, 2 ** 19 + 1]);
    expect(errnoOf(() => alloc.ctx.gmemPopulate?.(gfn(5), 1, [null], 'k'))).toBe('EEXIST');
    expect(alloc.allocPfn(1)).toBe(2 ** 19 + 512);
  });

  it('allocPfn aligns to the level and refuses when host memory is used up', () => {
    const t = createArchTestVm(mirror, 'mirror', { hostFrames: 2 ** 19 + 1024 });
    expect(t.allocPfn()).toBe(2 ** 19);
    expect(t.allocPfn(1)).toBe(2 ** 19 + 512);
    expect(() => t.allocPfn(1)).toThrow(/used up/);
  });

  it('maps into the kit itself for a VM without private-table hooks', () => {
    const plain = defineArchPlugin({
      name: 'plain',
      apiVersion: 1,
      vmTypes: ['plain'],
      createVm: () => ({ capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false } }),
    });
    const t = createArchTestVm(plain, 'plain');
    t.ctx.mapPrivatePfn?.(gfn(3), pfn(9));
    expect(t.ctx.translate(gfn(3), 'private')).toEqual({ pfn: 9, level: 0 });
    const none = createArchTestVm(
      defineArchPlugin({ name: 'none', apiVersion: 1, vmTypes: ['none'], createVm: () => ({ capabilities: { ...t.vm.capabilities, privateMem: false } }) }),
      'none',
    );
    expect(() => none.ctx.mapPrivatePfn?.(gfn(3), pfn(9))).toThrow(KvmError);
  });
});
