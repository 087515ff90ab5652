import { describe, expect, it } from 'vitest';
import { KvmError, invariant } from '../errors.js';
import { gfn, type Pfn } from '../units.js';
import type { CostName } from '../sim/types.js';
import { defineArchPlugin } from '../arch/define.js';
import type { ArchCapabilities, ArchPlugin, ArchVm, ArchVmContext } from '../arch/contract.js';
import { archError, archOk } from '../arch/contract.js';
import {
  checkBadInputsRefused,
  checkCapabilities,
  checkClassifyFault,
  checkCreateVm,
  checkMaxMappingLevel,
  checkMeasurementBeforeFinalize,
  checkNoHostAccessToPrivate,
  checkPluginShape,
  checkPrepareInvalidateBalance,
  checkPrivateTables,
  isConformanceError,
  runArchConformance,
  runArchConformanceChecks,
  type ArchConformanceOptions,
  type ConformanceCheckId,
  type ConformanceRunner,
  type ConformanceSubject,
} from './conformance.js';
import { createArchTestVm } from './test-vm.js';


const SHARED_BIT = 47;

/**
 * A toy arch in the shape of SNP: prepare assigns pages to the guest (an RMP-like owned set),
 * invalidate gives them back, and the host faults on writing an owned page. Mutated by `flaws` to
 * build broken plugins.
 */
function toyVm(ctx: ArchVmContext, flaws: { noAlignCheck?: boolean; leakOnInvalidate?: boolean; hostAlwaysOk?: boolean } = {}) {
  const owned = new Set<number>();
  const maxPrivateLevel = ctx.vmType === 'toy-2m' ? 1 : 0;
  const capabilities: ArchCapabilities = {
    privateMem: true,
    privateByDefault: true,
    sharedGpaBit: SHARED_BIT,
    maxPrivateLevel,
    mirrorRoot: false,
    inPlaceConversion: true,
  };
  const vm: ArchVm = {
    capabilities,
    classifyFault({ gpa }) {
      const shared = Math.floor(gpa / 2 ** SHARED_BIT) % 2 === 1;
      const direct = shared ? gpa - 2 ** SHARED_BIT : gpa;
      return { gfn: gfn(Math.floor(direct / 4096)), private: !shared };
    },
    maxMappingLevel: (_g, _p, isPrivate) => (isPrivate ? maxPrivateLevel : 2),
    gmemPrepare(pfn, g, order) {
      const n = 2 ** order;
      // Check everything, then mutate: a refusal changes nothing.
      if (!flaws.noAlignCheck) {
        if (!Number.isSafeInteger(pfn) || pfn < 0 || pfn + n > ctx.host.nrFrames) {
          throw new KvmError('EINVAL', 'toy.gmemPrepare', `pfn ${pfn} (order ${order}) is outside host memory`);
        }
        if (pfn % n !== 0 || g % n !== 0) throw new KvmError('EINVAL', 'toy.gmemPrepare', `pfn/gfn not aligned to order ${order}`);
      }
      for (let p = pfn; p < pfn + n; p++) {
        if (owned.has(p)) throw new KvmError('EEXIST', 'toy.gmemPrepare', `pfn ${p} is already assigned`);
      }
      // A real plugin declares its names in CostNames; inside the sdk's own typecheck the declared
      // set is the sim tests' (see sim/cost-names.test-d.ts), so the toy casts.
      ctx.sim.charge('toy.assign' as CostName, n);
      for (let p = pfn; p < pfn + n; p++) owned.add(p);
    },
    gmemInvalidate(start, end) {
      if (flaws.leakOnInvalidate) return;
      for (let p: number = start; p < end; p++) owned.delete(p);
    },
    hostAccess(pfn: Pfn, write: boolean) {
      if (flaws.hostAlwaysOk || !write || !owned.has(pfn)) return 'ok';
      return { signal: 'SIGBUS', kind: 'rmp', reason: `pfn ${pfn} is assigned to the guest` };
    },
    checkInvariants() {
      for (const p of owned) invariant(Number.isInteger(p) && p >= 0 && p < ctx.host.nrFrames, 'toy.owned-in-range', () => `pfn ${p}`);
    },
  };
  return vm;
}

const toy = defineArchPlugin({
  name: 'toy',
  apiVersion: 1,
  vmTypes: ['toy', 'toy-2m'],
  costs: { 'toy.assign': { ns: 500, source: 'made up for the kit test', unit: 'per 4 KiB page' } },
  createVm: (ctx) => toyVm(ctx),
});

const flawed = (name: string, flaws: Parameters<typeof toyVm>[1]) =>
  defineArchPlugin({ name, apiVersion: 1, vmTypes: [name], costs: toy.costs, createVm: (ctx) => toyVm(ctx, flaws) });

const subject = (plugin: ArchPlugin, options: ArchConformanceOptions = {}): ConformanceSubject => ({
  plugin,
  vmType: plugin.vmTypes[0] ?? plugin.name,
  options,
});

/** The check ids that failed, for a plugin. */
function failures(plugin: ArchPlugin, options: ArchConformanceOptions = {}): ConformanceCheckId[] {
  return runArchConformanceChecks(plugin, options)
    .filter((r) => r.outcome.status === 'failed')
    .map((r) => r.check);
}

function failureOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (isConformanceError(e)) return e.message;
    throw e;
  }
  throw new Error('expected the check to fail');
}

/**
 * A toy arch in the shape of TDX: private tables live in a "trusted" store the plugin owns (linked
 * tables and leaves), the host may not write a page mapped private, and populate before finalize
 * feeds a measurement (FNV-1a over gfn and contents, enough to tell launches apart). `flaws` break it.
 */
function mirrorVm(ctx: ArchVmContext, flaws: { keepOnRemove?: boolean; measureNothing?: boolean; populateAfterFinalize?: boolean } = {}) {
  const tables = new Set<string>();
  const leaves = new Map<number, number>();
  const held = new Set<number>();
  let hash = 0x811c9dc5;
  let finalized = false;
  const mix = (byte: number) => {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  };
  const vm: ArchVm = {
    capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: true, privateRootLevel: 3, inPlaceConversion: false, measurement: 'toy-digest' },
    linkPrivateTable(g, level) {
      const key = `${level}:${g}`;
      if (g < 0 || tables.has(key)) return archError('EINVAL', `table ${key} is not linkable`);
      tables.add(key);
      return archOk();
    },
    setPrivateSpte(g, level, pfn) {
      if (level !== 0 || g < 0 || pfn < 0 || pfn >= ctx.host.nrFrames) return archError('EINVAL', 'only in-range 4K leaves');
      if (!tables.has(`1:${Math.floor(g / 512) * 512}`)) return archError('EIO', 'no table under the leaf');
      if (leaves.has(g)) return archError('EIO', `gfn ${g} is already mapped`);
      leaves.set(g, pfn);
      held.add(pfn);
      return archOk();
    },
    removePrivateSpte(g, _level, pfn) {
      if (leaves.get(g) !== pfn) return archError('EIO', `gfn ${g} does not map pfn ${pfn}`);
      leaves.delete(g);
      if (!flaws.keepOnRemove) held.delete(pfn);
      return archOk();
    },
    hostAccess: (pfn: Pfn, write: boolean) => (write && held.has(pfn) ? { signal: 'SIGBUS', kind: 'integrity', reason: `pfn ${pfn} is private` } : 'ok'),
    populate(g, pfn, src, kind) {
      if (finalized && !flaws.populateAfterFinalize) throw new KvmError('EINVAL', 'toy.populate', 'the launch is over');
      if (leaves.get(g) !== pfn) throw new KvmError('ENOENT', 'toy.populate', `gfn ${g} is not mapped to pfn ${pfn}`);
      if (flaws.measureNothing || kind !== 'measured') return;
      for (const b of [g % 256, Math.floor(g / 256) % 256]) mix(b);
      if (src?.kind === 'bytes') for (const b of src.bytes) mix(b);
    },
    finalize() {
      if (finalized) throw new KvmError('EINVAL', 'toy.finalize', 'already finalized');
      finalized = true;
      return { kind: 'toy-digest', digest: Uint8Array.of(hash >>> 24, (hash >>> 16) & 255, (hash >>> 8) & 255, hash & 255) };
    },
  };
  return vm;
}

const toyMirror = defineArchPlugin({ name: 'toy-mirror', apiVersion: 1, vmTypes: ['toy-mirror'], createVm: (ctx) => mirrorVm(ctx) });
const flawedMirror = (name: string, flaws: Parameters<typeof mirrorVm>[1]) =>
  defineArchPlugin({ name, apiVersion: 1, vmTypes: [name], createVm: (ctx) => mirrorVm(ctx, flaws) });
const mirrorLaunch: ArchConformanceOptions = { launch: { measuredKind: 'measured' } };

// The suite as a plugin would run it: real describe/it blocks.
runArchConformance(toy);
runArchConformance(toyMirror, mirrorLaunch);

describe('the kit on a correct plugin', () => {
  it('passes every check, for every VM type', () => {
    const results = runArchConformanceChecks(toy);
    // The SNP-shaped toy has neither private tables of its own nor a measurement.
    expect(results.filter((r) => r.outcome.status !== 'passed').map((r) => r.check)).toEqual([
      'private-tables',
      'private-tables',
      'measurement-before-finalize',
      'measurement-before-finalize',
    ]);
    expect(results.filter((r) => r.check === 'bad-inputs-refused').map((r) => r.vmType)).toEqual(['toy', 'toy-2m']);
  });

  it('builds the VM on a real Sim with the costs registered, and a test host', () => {
    const t = createArchTestVm(toy, 'toy');
    t.vm.gmemPrepare?.(4 as Pfn, gfn(4), 0);
    expect(t.sim.now).toBe(500);
    expect(t.sim.costs.entries().find((e) => e.name === 'toy.assign')?.owner).toBe('toy');
    expect(t.host.nrFrames).toBe(2 ** 20);
    expect(() => t.ctx.exit({ reason: 'TOY' })).toThrow(/outside a guest operation/);
    expect(t.exits).toEqual([{ reason: 'TOY' }]);
  });

  it('reports checks that do not apply, and honours skips', () => {
    const minimal = defineArchPlugin({
      name: 'minimal',
      apiVersion: 1,
      vmTypes: ['minimal'],
      createVm: () => ({
        capabilities: { privateMem: false, privateByDefault: false, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false },
      }),
    });
    const results = runArchConformanceChecks(minimal, { skip: { capabilities: 'testing skips' } });
    expect(Object.fromEntries(results.map((r) => [r.check, r.outcome.status]))).toEqual({
      'plugin-shape': 'passed',
      costs: 'not-applicable',
      'create-vm': 'passed',
      capabilities: 'skipped',
      'classify-fault': 'not-applicable',
      'max-mapping-level': 'not-applicable',
      'prepare-invalidate-balance': 'not-applicable',
      'no-host-access-to-private': 'not-applicable',
      'bad-inputs-refused': 'not-applicable',
      'private-tables': 'not-applicable',
      'measurement-before-finalize': 'not-applicable',
    });
  });

  it('passes a plugin whose private tables live in a trusted component, and that measures', () => {
    const results = runArchConformanceChecks(toyMirror, mirrorLaunch);
    const status = Object.fromEntries(results.map((r) => [r.check, r.outcome.status]));
    expect(status['private-tables']).toBe('passed');
    expect(status['measurement-before-finalize']).toBe('passed');
    expect(results.filter((r) => r.outcome.status === 'failed')).toEqual([]);
  });

  it('refuses bad options', () => {
    expect(() => runArchConformanceChecks(toy, { skip: { 'no-such-check': 'x' } as never })).toThrow(/unknown check/);
    expect(() => runArchConformanceChecks(toy, { skip: { costs: '' } })).toThrow(/needs a reason/);
    expect(() => runArchConformanceChecks(toy, { vmTypes: ['tdx'] })).toThrow(/does not serve/);
    expect(() => runArchConformanceChecks(toy, { hostFrames: 100 })).toThrow(/hostFrames/);
  });

  it('registers describe/it blocks, skipped checks as skipped tests', () => {
    const log: string[] = [];
    const runner: ConformanceRunner = {
      describe: (name, body) => {
        log.push(`describe ${name}`);
        body();
      },
      it: (name) => log.push(`it ${name}`),
      skip: (name) => log.push(`skip ${name}`),
    };
    runArchConformance(toy, { skip: { costs: 'costs are checked elsewhere' }, vmTypes: ['toy'] }, runner);
    expect(log[0]).toBe('describe arch plugin conformance: toy');
    expect(log).toContain('skip costs: registers every cost with a default and a source (skipped: costs are checked elsewhere)');
    expect(log.filter((l) => l.startsWith('it '))).toHaveLength(10);
  });
});

describe('the kit on broken plugins', () => {
  it('fails a forged plugin of an unsupported apiVersion', () => {
    const forged = { ...toy, apiVersion: 9, [Symbol.for('cocokit.arch-plugin')]: 9 } as ArchPlugin;
    expect(failureOf(() => checkPluginShape(subject(forged)))).toMatch(/plugin-shape.*apiVersion 9/);
  });

  it('fails mirrorRoot without the private-table hooks, and a bad shared bit', () => {
    const noHooks = defineArchPlugin({
      name: 'mirror',
      apiVersion: 1,
      vmTypes: ['mirror'],
      createVm: () => ({
        capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: true, inPlaceConversion: false },
        setPrivateSpte: () => archOk(),
      }),
    });
    expect(failureOf(() => checkCapabilities(subject(noHooks)))).toContain('linkPrivateTable, removePrivateSpte are missing');
    const badBit = defineArchPlugin({
      name: 'bit',
      apiVersion: 1,
      vmTypes: ['bit'],
      createVm: () => ({
        capabilities: { privateMem: true, privateByDefault: false, sharedGpaBit: 52, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false },
      }),
    });
    expect(failureOf(() => checkCapabilities(subject(badBit)))).toContain('sharedGpaBit is 52');
  });

  it('fails a plugin that accepts a misaligned folio (and changes state doing so)', () => {
    const sloppy = flawed('sloppy', { noAlignCheck: true });
    expect(failureOf(() => checkBadInputsRefused(subject(sloppy)))).toMatch(/not 2M-aligned was not refused/);
    expect(failures(sloppy)).toEqual(['bad-inputs-refused']);
  });

  it('fails a plugin whose invalidate leaks pages', () => {
    const leaky = flawed('leaky', { leakOnInvalidate: true });
    expect(failureOf(() => checkPrepareInvalidateBalance(subject(leaky)))).toMatch(/still cannot write pfn/);
    expect(failures(leaky)).toEqual(['prepare-invalidate-balance']);
  });

  it('fails a plugin that lets the host write private pages', () => {
    const open = flawed('open', { hostAlwaysOk: true });
    expect(failureOf(() => checkNoHostAccessToPrivate(subject(open)))).toMatch(/host may write pfn/);
    expect(failures(open)).toEqual(['no-host-access-to-private']);
  });

  it('fails a plugin that exits from createVm, or whose hooks are not functions', () => {
    const exits = defineArchPlugin({
      name: 'exits',
      apiVersion: 1,
      vmTypes: ['exits'],
      createVm: (ctx) => ctx.exit({ reason: 'NOPE' }),
    });
    expect(failureOf(() => checkCreateVm(subject(exits)))).toMatch(/createVm threw ArchExitOutsideGuestError/);
    const notFn = defineArchPlugin({
      name: 'notfn',
      apiVersion: 1,
      vmTypes: ['notfn'],
      createVm: () =>
        ({
          capabilities: { privateMem: false, privateByDefault: false, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false },
          gmemPrepare: 'yes',
        }) as unknown as ArchVm,
    });
    expect(failureOf(() => checkCreateVm(subject(notFn)))).toContain('hook gmemPrepare is string');
  });

  it('fails a memoryRequest that is not a function, or that reads a core exit as a request', () => {
    const caps = { privateMem: true, privateByDefault: false, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: false } as const;
    const notFn = defineArchPlugin({ name: 'mrnotfn', apiVersion: 1, vmTypes: ['mrnotfn'], createVm: () => ({ capabilities: caps, memoryRequest: 1 }) as unknown as ArchVm });
    expect(failureOf(() => checkCreateVm(subject(notFn)))).toContain('hook memoryRequest is number');
    const greedy = defineArchPlugin({
      name: 'mrgreedy',
      apiVersion: 1,
      vmTypes: ['mrgreedy'],
      createVm: () => ({ capabilities: caps, memoryRequest: () => ({ op: 'discard' as const, gpa: 0, size: 4096 }) }),
    });
    expect(failureOf(() => checkCreateVm(subject(greedy)))).toMatch(/memoryRequest reads an HLT exit as .*must be undefined/);
    const fine = defineArchPlugin({ name: 'mrfine', apiVersion: 1, vmTypes: ['mrfine'], createVm: () => ({ capabilities: caps, memoryRequest: () => undefined }) });
    expect(checkCreateVm(subject(fine))).toEqual({ status: 'passed' });
  });

  it('fails a classifier that keeps the shared bit, and a level above maxPrivateLevel', () => {
    const wrong = defineArchPlugin({
      name: 'wrong',
      apiVersion: 1,
      vmTypes: ['wrong'],
      createVm: (ctx) => ({
        ...toyVm(ctx),
        classifyFault: ({ gpa }: { gpa: number }) => ({ gfn: gfn(Math.floor(gpa / 4096)), private: true }),
        maxMappingLevel: () => 2 as const,
      }),
    });
    expect(failureOf(() => checkClassifyFault(subject(wrong)))).toMatch(/must be shared gfn/);
    expect(failureOf(() => checkMaxMappingLevel(subject(wrong)))).toMatch(/private level 2 exceeds/);
  });

  it('fails a private-table hook that accepts a misaligned huge mapping', () => {
    const lax = defineArchPlugin({
      name: 'lax',
      apiVersion: 1,
      vmTypes: ['lax'],
      createVm: () => ({
        capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 1, mirrorRoot: true, inPlaceConversion: false },
        linkPrivateTable: (g) => (g < 0 ? archError('EINVAL', 'negative gfn') : archOk()),
        setPrivateSpte: () => archOk(),
        removePrivateSpte: () => archOk(),
      }),
    });
    expect(failureOf(() => checkBadInputsRefused(subject(lax)))).toMatch(/setPrivateSpte.*was not refused: it returned \{"status":"ok"\}/);
  });

  it('fails private tables that keep a page after it was removed', () => {
    const sticky = flawedMirror('sticky', { keepOnRemove: true });
    expect(failureOf(() => checkPrivateTables(subject(sticky, mirrorLaunch)))).toMatch(/round 1: the host cannot write the removed page/);
    expect(failures(sticky, mirrorLaunch)).toEqual(['private-tables']);
  });

  it('fails a measurement that ignores the measured bytes, and populate after finalize', () => {
    const blind = flawedMirror('blind', { measureNothing: true });
    expect(failureOf(() => checkMeasurementBeforeFinalize(subject(blind, mirrorLaunch)))).toMatch(/changing a measured byte did not change the digest/);
    const late = flawedMirror('late', { populateAfterFinalize: true });
    expect(failureOf(() => checkMeasurementBeforeFinalize(subject(late, mirrorLaunch)))).toMatch(/populate after finalize was not refused/);
    expect(failures(late, mirrorLaunch)).toEqual(['measurement-before-finalize']);
  });

  it('fails a measuring plugin run without the launch option, and a root level without a mirror root', () => {
    expect(failureOf(() => checkMeasurementBeforeFinalize(subject(toyMirror)))).toMatch(/pass the `launch` option/);
    const stray = defineArchPlugin({
      name: 'stray',
      apiVersion: 1,
      vmTypes: ['stray'],
      createVm: () => ({
        capabilities: { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: false, privateRootLevel: 4, inPlaceConversion: false },
      }),
    });
    expect(failureOf(() => checkCapabilities(subject(stray)))).toContain('privateRootLevel without mirrorRoot');
  });

  it('turns an unexpected throw into a failure of the check that saw it', () => {
    const throws = defineArchPlugin({
      name: 'throws',
      apiVersion: 1,
      vmTypes: ['throws'],
      createVm: (ctx) => ({
        ...toyVm(ctx),
        checkInvariants: () => {
          throw new Error('corrupt');
        },
      }),
    });
    const failed = runArchConformanceChecks(throws).filter((r) => r.outcome.status === 'failed');
    expect(failed.map((r) => r.check)).toContain('create-vm');
    const first = failed[0]?.outcome;
    expect(first?.status === 'failed' && first.error.message).toMatch(/checkInvariants on a new VM threw Error: corrupt/);
  });
});

describe('pre-fault permission (kvm->arch.pre_fault_allowed)', () => {
  it('is allowed for a VM that says nothing, and for one that forbids it only once it calls ctx.allowPreFault', () => {
    expect(createArchTestVm(defineArchPlugin({ name: 'toy', apiVersion: 1, vmTypes: ['toy'], createVm: (ctx) => toyVm(ctx) }), 'toy').preFaultAllowed).toBe(true);
    // SNP's shape: forbidden at creation (svm_vm_init), allowed by a successful launch finish (snp_launch_finish).
    const late = defineArchPlugin({
      name: 'late',
      apiVersion: 1,
      vmTypes: ['late'],
      createVm: (ctx) => {
        const v = toyVm(ctx);
        return {
          ...v,
          capabilities: { ...v.capabilities, preFaultAllowed: false },
          finalize: () => {
            ctx.allowPreFault?.();
            return undefined;
          },
        };
      },
    });
    const t = createArchTestVm(late, 'late');
    expect(t.preFaultAllowed).toBe(false);
    t.vm.finalize?.();
    expect(t.preFaultAllowed).toBe(true);
    t.ctx.allowPreFault?.();
    expect(t.preFaultAllowed).toBe(true);
    expect(() => checkCapabilities(subject(late))).not.toThrow();
  });

  it('fails the capabilities check for a preFaultAllowed that is not a boolean', () => {
    const odd = defineArchPlugin({
      name: 'odd',
      apiVersion: 1,
      vmTypes: ['odd'],
      createVm: (ctx) => {
        const v = toyVm(ctx);
        return { ...v, capabilities: { ...v.capabilities, preFaultAllowed: 'later' as unknown as boolean } };
      },
    });
    expect(failureOf(() => checkCapabilities(subject(odd)))).toContain('preFaultAllowed is later, not a boolean');
  });
});
