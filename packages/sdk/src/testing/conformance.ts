/**
 * The arch plugin conformance kit (DESIGN.md, "Conformance kit"): checks every plugin runs in its
 * own tests, in the manner of typescript-eslint's RuleTester. Each check is an exported function
 * that throws a {@link ConformanceError} on failure, so a check can be run (and seen to fail)
 * outside any test runner; {@link runArchConformance} wraps them in vitest `describe`/`it` blocks.
 *
 * These are the checks the sdk can make on its own: against a plugin's hooks, on a VM that
 * {@link createArchTestVm} builds (a real Sim, the kit's test host memory, a context shaped like
 * the core's). Checks that need a whole VM (conversions round-trip, zapped private mappings are
 * gone, the measurement covers every measured byte) need the core's VM and are not here yet.
 */
import { describe as vDescribe, it as vIt } from 'vitest';
import { isKvmError } from '../errors.js';
import { KVM_EXIT_HLT } from '../uapi.js';
import { createSim } from '../sim/sim.js';
import type { CostName } from '../sim/types.js';
import { gfn as toGfn, pfn as toPfn, type PageOrder } from '../units.js';
import type { ArchPlugin, ArchResult, ArchVm, HostFault, TableLevel } from '../arch/contract.js';
import { validateArchPlugin } from '../arch/define.js';
import { archCapabilitiesProblem, archVmShapeProblem } from '../arch/validate-vm.js';
import {
  BASE_GFN,
  BASE_PFN,
  DEFAULT_HOST_FRAMES,
  createArchTestVm,
  linkedTablesOf,
  tableKey,
  type ArchTestVm,
  type ArchTestVmOptions,
} from './test-vm.js';

/** The checks of the kit, by id. */
export const CONFORMANCE_CHECK_IDS = [
  'plugin-shape',
  'costs',
  'create-vm',
  'capabilities',
  'classify-fault',
  'max-mapping-level',
  'prepare-invalidate-balance',
  'no-host-access-to-private',
  'bad-inputs-refused',
  'private-tables',
  'measurement-before-finalize',
] as const;

/** The id of a conformance check. */
export type ConformanceCheckId = (typeof CONFORMANCE_CHECK_IDS)[number];

/**
 * Options of the kit: how each VM is built ({@link ArchTestVmOptions}, passed to
 * {@link createArchTestVm}; `hostFrames` must be at least 2^19 here, as the checks use pages from
 * 2^18 up) and which checks run.
 */
export interface ArchConformanceOptions extends ArchTestVmOptions {
  /**
   * Checks not to run, each with the reason (shown in the test report). A plugin that cannot meet a
   * check says why here rather than silently passing it.
   */
  readonly skip?: Partial<Readonly<Record<ConformanceCheckId, string>>>;
  /** The VM types to run the per-VM checks for (default: all the plugin serves). */
  readonly vmTypes?: readonly string[];
  /**
   * How to launch a VM of a plugin that measures (`capabilities.measurement`): the `populate` kind
   * whose contents are measured, and what must happen before the first `populate` (SNP:
   * `vmApi.launchStart(...)`). Required for the `measurement-before-finalize` check.
   */
  readonly launch?: {
    readonly measuredKind: string;
    begin?(vm: ArchVm): void;
  };
}

/** What a check found when it did not fail. */
export type CheckOutcome = { readonly status: 'passed' } | { readonly status: 'not-applicable'; readonly reason: string };

/** A failed conformance check: which check, which plugin and VM type, and what was wrong. */
export class ConformanceError extends Error {
  override readonly name = 'ConformanceError' as const;
  /** The check that failed. */
  readonly check: ConformanceCheckId;
  /** The plugin under test. */
  readonly plugin: string;
  /** The VM type the check ran for, for per-VM checks. */
  readonly vmType: string | undefined;

  constructor(check: ConformanceCheckId, plugin: string, vmType: string | undefined, detail: string, cause?: unknown) {
    super(`${plugin}${vmType ? ` [${vmType}]` : ''}: ${check}: ${detail}`, cause === undefined ? undefined : { cause });
    this.check = check;
    this.plugin = plugin;
    this.vmType = vmType;
  }
}

/** Whether `e` is a {@link ConformanceError} (optionally of `check`), by name rather than class. */
export function isConformanceError(e: unknown, check?: ConformanceCheckId): e is ConformanceError {
  if (typeof e !== 'object' || e === null) return false;
  const c = e as { name?: unknown; check?: unknown };
  return c.name === 'ConformanceError' && (check === undefined || c.check === check);
}

/** What a check is given. */
export interface ConformanceSubject {
  readonly plugin: ArchPlugin;
  /** The VM type, for per-VM checks. */
  readonly vmType: string;
  readonly options: ArchConformanceOptions;
}

/** One check of the kit. */
export interface ArchConformanceCheck {
  readonly id: ConformanceCheckId;
  /** What it checks, as a test title. */
  readonly title: string;
  /** Whether it runs once per VM type (otherwise once per plugin). */
  readonly perVmType: boolean;
  /** Runs the check: returns its outcome, or throws {@link ConformanceError}. */
  readonly run: (subject: ConformanceSubject) => CheckOutcome;
}

const PASSED: CheckOutcome = Object.freeze({ status: 'passed' });
const notApplicable = (reason: string): CheckOutcome => ({ status: 'not-applicable', reason });

/** Runs `f`, turning anything it throws into a {@link ConformanceError} of `check`. */
function guarded<T>(s: ConformanceSubject, check: ConformanceCheckId, what: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (isConformanceError(e)) throw e;
    throw new ConformanceError(check, s.plugin.name, s.vmType, `${what} threw ${errorText(e)}`, e);
  }
}

function errorText(e: unknown): string {
  if (typeof e === 'object' && e !== null && 'message' in e) {
    const name = 'name' in e ? String(e.name) : 'Error';
    return `${name}: ${String(e.message)}`;
  }
  return String(e);
}

function fail(s: ConformanceSubject, check: ConformanceCheckId, detail: string): never {
  throw new ConformanceError(check, s.plugin.name, s.vmType, detail);
}

function makeVm(s: ConformanceSubject, check: ConformanceCheckId): ArchTestVm {
  return guarded(s, check, 'createVm', () => createArchTestVm(s.plugin, s.vmType, s.options));
}

function invariants(s: ConformanceSubject, check: ConformanceCheckId, t: ArchTestVm, when: string): void {
  if (t.vm.checkInvariants) guarded(s, check, `checkInvariants ${when}`, () => t.vm.checkInvariants?.());
}


/** `plugin-shape`: the plugin is branded, well-formed and of a supported contract version. */
export function checkPluginShape(s: ConformanceSubject): CheckOutcome {
  guarded(s, 'plugin-shape', 'validation', () => validateArchPlugin(s.plugin, 'runArchConformance'));
  return PASSED;
}

/** `costs`: every cost has a finite ns >= 0 and a source, and registers in a real cost model. */
export function checkCosts(s: ConformanceSubject): CheckOutcome {
  const entries = Object.entries(s.plugin.costs);
  if (entries.length === 0) return notApplicable('the plugin registers no costs');
  for (const [name, def] of entries) {
    if (!Number.isFinite(def.ns) || def.ns < 0) fail(s, 'costs', `cost '${name}' has ns = ${def.ns}`);
    if (typeof def.source !== 'string' || def.source.trim() === '') {
      fail(s, 'costs', `cost '${name}' has no source: say where the default comes from`);
    }
  }
  const sim = createSim({ seed: s.options.seed ?? 1 });
  guarded(s, 'costs', 'registering the costs', () => sim.costs.register(s.plugin.name, s.plugin.costs));
  for (const [name, def] of entries) {
    // The plugin's names need not be declared in CostNames in the plugin's own compilation.
    const got = sim.costs.get(name as CostName);
    if (got !== def.ns) fail(s, 'costs', `cost '${name}' reads back as ${got}, not ${def.ns}`);
  }
  return PASSED;
}

/** `create-vm`: `createVm` returns capabilities, functions for hooks, objects for APIs, and sound invariants. */
export function checkCreateVm(s: ConformanceSubject): CheckOutcome {
  const t = makeVm(s, 'create-vm');
  const shape = archVmShapeProblem(t.vm);
  if (shape !== undefined) fail(s, 'create-vm', shape);
  invariants(s, 'create-vm', t, 'on a new VM');
  if (t.exits.length > 0) fail(s, 'create-vm', `createVm called ctx.exit(${t.exits[0]?.reason})`);
  // memoryRequest reads only the arch's own exits: a core exit (KVM_EXIT_HLT) is not a request.
  if (t.vm.memoryRequest !== undefined) {
    const hlt = { reason: 'HLT', exitReason: KVM_EXIT_HLT };
    const r = guarded(s, 'create-vm', 'memoryRequest of an HLT exit', () => t.vm.memoryRequest?.(hlt));
    if (r !== undefined) fail(s, 'create-vm', `memoryRequest reads an HLT exit as ${JSON.stringify(r)}; it must be undefined for exits that are not the arch's requests`);
  }
  return PASSED;
}

/** `capabilities`: the declared capabilities are well-formed and consistent with the hooks present. */
export function checkCapabilities(s: ConformanceSubject): CheckOutcome {
  const { vm } = makeVm(s, 'capabilities');
  const problem = archCapabilitiesProblem(vm);
  if (problem !== undefined) fail(s, 'capabilities', problem);
  return PASSED;
}

/** `classify-fault`: faults map to integral gfns; a shared GPA bit is stripped and means shared. */
export function checkClassifyFault(s: ConformanceSubject): CheckOutcome {
  const t = makeVm(s, 'classify-fault');
  const { vm } = t;
  if (!vm.classifyFault) return notApplicable('no classifyFault hook');
  const g = BASE_GFN + 3;
  const gpa = g * 4096 + 0x123;
  const plain = guarded(s, 'classify-fault', `classifyFault(0x${gpa.toString(16)})`, () =>
    vm.classifyFault?.({ gpa, access: 'write' }),
  );
  if (!plain || !Number.isSafeInteger(plain.gfn) || plain.gfn < 0 || typeof plain.private !== 'boolean') {
    fail(s, 'classify-fault', `classifyFault returned ${JSON.stringify(plain)}, not { gfn: integer, private: boolean }`);
  }
  if (!vm.capabilities.privateMem && plain.private) fail(s, 'classify-fault', 'a VM without privateMem classified a fault as private');
  const bit = vm.capabilities.sharedGpaBit;
  if (bit !== undefined) {
    if (plain.gfn !== g || !plain.private) {
      fail(s, 'classify-fault', `gpa 0x${gpa.toString(16)} without the shared bit must be private gfn ${g}, got ${JSON.stringify(plain)}`);
    }
    const shared = gpa + 2 ** bit; // arithmetic: bit may be above 31
    const r = guarded(s, 'classify-fault', `classifyFault(0x${shared.toString(16)})`, () =>
      vm.classifyFault?.({ gpa: shared, access: 'read' }),
    );
    if (!r || r.gfn !== g || r.private) {
      fail(s, 'classify-fault', `gpa 0x${shared.toString(16)} (shared bit ${bit} set) must be shared gfn ${g}, got ${JSON.stringify(r)}`);
    }
  }
  invariants(s, 'classify-fault', t, 'after classifying faults');
  return PASSED;
}

/** `max-mapping-level`: levels are 0..2, and private ones never exceed `capabilities.maxPrivateLevel`. */
export function checkMaxMappingLevel(s: ConformanceSubject): CheckOutcome {
  const t = makeVm(s, 'max-mapping-level');
  const { vm } = t;
  if (!vm.maxMappingLevel) return notApplicable('no maxMappingLevel hook');
  for (const isPrivate of vm.capabilities.privateMem ? [true, false] : [false]) {
    const level = guarded(s, 'max-mapping-level', 'maxMappingLevel', () =>
      vm.maxMappingLevel?.(toGfn(BASE_GFN), toPfn(BASE_PFN), isPrivate),
    );
    if (level !== 0 && level !== 1 && level !== 2) {
      fail(s, 'max-mapping-level', `maxMappingLevel returned ${String(level)}; a level is 0, 1 or 2`);
    }
    if (isPrivate && level > vm.capabilities.maxPrivateLevel) {
      fail(s, 'max-mapping-level', `private level ${level} exceeds capabilities.maxPrivateLevel ${vm.capabilities.maxPrivateLevel}`);
    }
  }
  invariants(s, 'max-mapping-level', t, 'after maxMappingLevel');
  return PASSED;
}

/** Orders the kit prepares at: 4K always, 2M when the arch maps private 2M pages. */
function orders(vm: ArchVm): PageOrder[] {
  return vm.capabilities.maxPrivateLevel >= 1 ? [0, 9] : [0];
}

function access(vm: ArchVm, p: number, write: boolean): 'ok' | HostFault {
  return vm.hostAccess ? vm.hostAccess(toPfn(p), write) : 'ok';
}

/**
 * `prepare-invalidate-balance`: a prepared folio, once invalidated, is the host's again: the
 * plugin's invariants hold at each step, the host may read and write every page, and it can be
 * prepared again (nothing leaked).
 */
export function checkPrepareInvalidateBalance(s: ConformanceSubject): CheckOutcome {
  const id = 'prepare-invalidate-balance';
  const t = makeVm(s, id);
  const { vm } = t;
  if (!vm.gmemPrepare) return notApplicable('no gmemPrepare hook');
  if (!vm.gmemInvalidate) fail(s, id, 'gmemPrepare without gmemInvalidate: prepared pages could never be given back');
  for (const order of orders(vm)) {
    const n = 2 ** order;
    for (let round = 1; round <= 2; round++) {
      const what = `round ${round}, order ${order} at pfn 0x${BASE_PFN.toString(16)}`;
      guarded(s, id, `gmemPrepare (${what})`, () => vm.gmemPrepare?.(toPfn(BASE_PFN), toGfn(BASE_GFN), order));
      invariants(s, id, t, `after gmemPrepare (${what})`);
      guarded(s, id, `gmemInvalidate (${what})`, () => vm.gmemInvalidate?.(toPfn(BASE_PFN), toPfn(BASE_PFN + n)));
      invariants(s, id, t, `after gmemInvalidate (${what})`);
      for (let p = BASE_PFN; p < BASE_PFN + n; p++) {
        for (const write of [false, true]) {
          const r = guarded(s, id, `hostAccess(0x${p.toString(16)})`, () => access(vm, p, write));
          if (r !== 'ok') {
            fail(s, id, `after gmemInvalidate the host still cannot ${write ? 'write' : 'read'} pfn 0x${p.toString(16)} (${what}): ${JSON.stringify(r)}`);
          }
        }
      }
    }
  }
  return PASSED;
}

function isHostFault(r: unknown): r is HostFault {
  if (typeof r !== 'object' || r === null) return false;
  const f = r as Partial<HostFault>;
  return (f.signal === 'SIGBUS' || f.signal === 'SIGSEGV') && typeof f.kind === 'string' && typeof f.reason === 'string' && f.reason !== '';
}

/**
 * `no-host-access-to-private`: once prepared (private), a page cannot be written by the host: the
 * access is a {@link HostFault} (SIGBUS/SIGSEGV with a kind and reason), and the neighbouring,
 * unprepared page stays accessible.
 */
export function checkNoHostAccessToPrivate(s: ConformanceSubject): CheckOutcome {
  const id = 'no-host-access-to-private';
  const t = makeVm(s, id);
  const { vm } = t;
  if (!vm.capabilities.privateMem) return notApplicable('the arch has no private memory');
  if (!vm.hostAccess) return notApplicable('no hostAccess hook: the arch does not model host access faults');
  if (!vm.gmemPrepare) return notApplicable('no gmemPrepare hook: pages never become private through the sdk-level hooks');
  guarded(s, id, 'gmemPrepare', () => vm.gmemPrepare?.(toPfn(BASE_PFN), toGfn(BASE_GFN), 0));
  const r = guarded(s, id, 'hostAccess', () => vm.hostAccess?.(toPfn(BASE_PFN), true));
  if (r === 'ok') fail(s, id, `the host may write pfn 0x${BASE_PFN.toString(16)} after gmemPrepare made it private`);
  if (!isHostFault(r)) fail(s, id, `hostAccess returned ${JSON.stringify(r)}, not 'ok' or { signal, kind, reason }`);
  const next = guarded(s, id, 'hostAccess', () => vm.hostAccess?.(toPfn(BASE_PFN + 1), true));
  if (next !== 'ok') fail(s, id, `gmemPrepare of one page also took pfn 0x${(BASE_PFN + 1).toString(16)} from the host`);
  invariants(s, id, t, 'with a prepared page');
  if (vm.gmemInvalidate) guarded(s, id, 'gmemInvalidate', () => vm.gmemInvalidate?.(toPfn(BASE_PFN), toPfn(BASE_PFN + 1)));
  return PASSED;
}

/** Everything the kit can observe of a VM's state around `pfns`. */
function observe(t: ArchTestVm, pfns: readonly number[]): string {
  const hostAccess = pfns.map((p) => {
    try {
      return JSON.stringify([access(t.vm, p, false), access(t.vm, p, true)]);
    } catch (e) {
      return `threw ${errorText(e)}`;
    }
  });
  return JSON.stringify({ hostAccess, hostMutations: t.host.mutations, exits: t.exits.length });
}

function isRefusal(r: unknown): boolean {
  return typeof r === 'object' && r !== null && (r as ArchResult).status === 'error';
}

/**
 * `bad-inputs-refused`: inputs the core never sends (folios misaligned to their order, pfns outside
 * host memory, non-integers, misaligned huge mappings) are refused — with {@link KvmError} from
 * `gmemPrepare`, with KvmError or an `error` {@link ArchResult} from the private-table hooks — and
 * change nothing the kit can see (host access, host memory, invariants).
 */
export function checkBadInputsRefused(s: ConformanceSubject): CheckOutcome {
  const id = 'bad-inputs-refused';
  const t = makeVm(s, id);
  const { vm } = t;
  const cases: Array<{ what: string; call: () => unknown; result: boolean }> = [];
  const P = BASE_PFN;
  const G = BASE_GFN;
  const nr = t.host.nrFrames;
  if (vm.gmemPrepare) {
    const prep = vm.gmemPrepare.bind(vm);
    cases.push(
      { what: `gmemPrepare(pfn 0x${(P + 1).toString(16)}, order 9): pfn not 2M-aligned`, call: () => prep(toPfn(P + 1), toGfn(G), 9), result: false },
      { what: `gmemPrepare(gfn 0x${(G + 1).toString(16)}, order 9): gfn not 2M-aligned`, call: () => prep(toPfn(P), toGfn(G + 1), 9), result: false },
      { what: `gmemPrepare(pfn ${nr}): outside host memory`, call: () => prep(toPfn(nr), toGfn(G), 0), result: false },
      { what: 'gmemPrepare(pfn -1)', call: () => prep(toPfn(-1), toGfn(G), 0), result: false },
      { what: 'gmemPrepare(pfn 1.5)', call: () => prep(toPfn(1.5), toGfn(G), 0), result: false },
    );
  }
  if (vm.setPrivateSpte) {
    const set = vm.setPrivateSpte.bind(vm);
    cases.push(
      { what: `setPrivateSpte(gfn 0x${(G + 1).toString(16)}, level 1): gfn not 2M-aligned`, call: () => set(toGfn(G + 1), 1, toPfn(P)), result: true },
      { what: `setPrivateSpte(pfn 0x${(P + 1).toString(16)}, level 1): pfn not 2M-aligned`, call: () => set(toGfn(G), 1, toPfn(P + 1)), result: true },
    );
  }
  if (vm.linkPrivateTable) {
    const link = vm.linkPrivateTable.bind(vm);
    cases.push({ what: 'linkPrivateTable(gfn -1)', call: () => link(toGfn(-1), 1), result: true });
  }
  if (cases.length === 0) return notApplicable('no hook the kit can feed bad inputs to (gmemPrepare, setPrivateSpte, linkPrivateTable)');
  const watched = [P, P + 1, P + 511, P + 512];
  for (const c of cases) {
    const before = observe(t, watched);
    let refused = false;
    let outcome = 'returned normally';
    try {
      const r = c.call();
      if (c.result && isRefusal(r)) refused = true;
      else outcome = `returned ${JSON.stringify(r)}`;
    } catch (e) {
      if (isKvmError(e)) refused = true;
      else outcome = `threw ${errorText(e)} (a refusal is a KvmError${c.result ? " or archError(...)" : ''})`;
    }
    if (!refused) fail(s, id, `${c.what} was not refused: it ${outcome}`);
    const after = observe(t, watched);
    if (after !== before) fail(s, id, `${c.what} was refused but changed state: before ${before}, after ${after}`);
    invariants(s, id, t, `after refusing ${c.what}`);
  }
  return PASSED;
}

/** Maps `g` → `p` at 4K through the private-table hooks as the TDP MMU does, failing the check on any refusal. */
function mapThroughMirror(s: ConformanceSubject, id: ConformanceCheckId, vm: ArchVm, g: number, p: number): void {
  // The kit's proxy of the VM records each table linked, whoever links it.
  const linked = linkedTablesOf(vm);
  for (let level = vm.capabilities.privateRootLevel ?? 3; level >= 1; level--) {
    if (linked.has(tableKey(g, level))) continue;
    const base = Math.floor(g / 512 ** level) * 512 ** level;
    const r = guarded(s, id, `linkPrivateTable(level ${level})`, () => vm.linkPrivateTable?.(toGfn(base), level as TableLevel));
    if (r?.status !== 'ok') fail(s, id, `linkPrivateTable(level ${level}) returned ${JSON.stringify(r)}`);
  }
  const r = guarded(s, id, 'setPrivateSpte', () => vm.setPrivateSpte?.(toGfn(g), 0, toPfn(p)));
  if (r?.status !== 'ok') fail(s, id, `setPrivateSpte(level 0) returned ${JSON.stringify(r)}`);
}

/**
 * `private-tables`: where private tables live in a trusted component (`mirrorRoot`), a page mapped
 * through the hooks is the guest's (the host may not write it), removing it gives it back (the host
 * may write it again) and the same pfn maps again (nothing leaked); a second leaf for a mapped gfn
 * and the removal of an unmapped gfn are refused with an `error` result that changes nothing the
 * kit can see. The plugin's invariants hold throughout. Runs after `finalize` where there is one,
 * so the runtime path (TDX PAGE.AUG) is the one exercised.
 */
export function checkPrivateTables(s: ConformanceSubject): CheckOutcome {
  const id = 'private-tables';
  const t = makeVm(s, id);
  const { vm } = t;
  if (!vm.capabilities.mirrorRoot) return notApplicable("no mirror root: private tables are the core's own");
  if (vm.finalize) guarded(s, id, 'finalize', () => vm.finalize?.());
  mapThroughMirror(s, id, vm, BASE_GFN, BASE_PFN);
  invariants(s, id, t, 'after mapping a private page');
  if (vm.hostAccess && access(vm, BASE_PFN, true) === 'ok') fail(s, id, 'the host may write a page mapped private');
  const watched = [BASE_PFN, BASE_PFN + 1, BASE_PFN + 7];
  const before = observe(t, watched);
  const again = guarded(s, id, 'setPrivateSpte (gfn already mapped)', () => vm.setPrivateSpte?.(toGfn(BASE_GFN), 0, toPfn(BASE_PFN + 1)));
  if (again?.status !== 'error') fail(s, id, `a second leaf for a mapped gfn returned ${JSON.stringify(again)}`);
  const stray = guarded(s, id, 'removePrivateSpte (gfn not mapped)', () => vm.removePrivateSpte?.(toGfn(BASE_GFN + 7), 0, toPfn(BASE_PFN + 7)));
  if (stray?.status !== 'error') fail(s, id, `removing an unmapped gfn returned ${JSON.stringify(stray)}`);
  if (observe(t, watched) !== before) fail(s, id, 'a refused private-table call changed state');
  invariants(s, id, t, 'after the refusals');
  // The refusals above may mark the VM bugged (KVM_BUG_ON in KVM), so the round trip runs on a fresh one.
  const t2 = makeVm(s, id);
  if (t2.vm.finalize) guarded(s, id, 'finalize', () => t2.vm.finalize?.());
  for (let round = 1; round <= 2; round++) {
    mapThroughMirror(s, id, t2.vm, BASE_GFN, BASE_PFN);
    const r = guarded(s, id, 'removePrivateSpte', () => t2.vm.removePrivateSpte?.(toGfn(BASE_GFN), 0, toPfn(BASE_PFN)));
    if (r?.status !== 'ok') fail(s, id, `round ${round}: removePrivateSpte returned ${JSON.stringify(r)}`);
    if (t2.vm.hostAccess && access(t2.vm, BASE_PFN, true) !== 'ok') fail(s, id, `round ${round}: the host cannot write the removed page`);
    invariants(s, id, t2, `after removal, round ${round}`);
  }
  return PASSED;
}

const hex = (digest: Uint8Array): string => Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');

/**
 * `measurement-before-finalize`: the measurement covers what `populate` put in before `finalize`
 * and nothing after it: the same launch twice gives the same digest, one changed measured byte
 * gives another, and both `populate` and a second `finalize` after `finalize` are refused with a
 * KvmError. Needs the `launch` option for a plugin that measures.
 */
export function checkMeasurementBeforeFinalize(s: ConformanceSubject): CheckOutcome {
  const id = 'measurement-before-finalize';
  const probe = makeVm(s, id).vm;
  if (!probe.capabilities.measurement) return notApplicable('the plugin declares no measurement');
  if (!probe.populate || !probe.finalize) fail(s, id, 'a measuring plugin needs populate and finalize hooks');
  const launch = s.options.launch;
  if (!launch) fail(s, id, "pass the `launch` option ({ measuredKind, begin? }) so the kit can launch a VM of this plugin");
  const run = (lastByte: number): { t: ArchTestVm; digest: string } => {
    const t = makeVm(s, id);
    if (launch.begin) guarded(s, id, 'launch.begin', () => launch.begin?.(t.vm));
    // With private tables in a trusted component where KVM_PRE_FAULT_MEMORY may map before the
    // launch ends (seed 001), the page is mapped first; otherwise `populate` maps it itself
    // (upstream TDX: tdx_gmem_post_populate → ctx.mapPrivatePfn).
    if (t.vm.capabilities.mirrorRoot && t.preFaultAllowed) mapThroughMirror(s, id, t.vm, BASE_GFN, BASE_PFN);
    const bytes = new Uint8Array(4096);
    bytes[4095] = lastByte;
    guarded(s, id, 'populate', () => t.vm.populate?.(toGfn(BASE_GFN), toPfn(BASE_PFN), { kind: 'bytes', bytes }, launch.measuredKind));
    const m = guarded(s, id, 'finalize', () => t.vm.finalize?.());
    if (!m || m.kind !== t.vm.capabilities.measurement) fail(s, id, `finalize returned ${m ? `a '${m.kind}' measurement` : 'nothing'}, not '${t.vm.capabilities.measurement}'`);
    invariants(s, id, t, 'after finalize');
    return { t, digest: hex(m.digest) };
  };
  const a = run(1);
  if (run(1).digest !== a.digest) fail(s, id, 'the same launch gave two digests');
  if (run(2).digest === a.digest) fail(s, id, 'changing a measured byte did not change the digest');
  const refusedAfterFinalize = (what: string, f: () => unknown): void => {
    const before = observe(a.t, [BASE_PFN, BASE_PFN + 1]);
    try {
      f();
    } catch (e) {
      if (!isKvmError(e)) fail(s, id, `${what} after finalize threw ${errorText(e)}, not a KvmError`);
      if (observe(a.t, [BASE_PFN, BASE_PFN + 1]) !== before) fail(s, id, `${what} after finalize was refused but changed state`);
      return;
    }
    fail(s, id, `${what} after finalize was not refused`);
  };
  // Map the page first where tables are the plugin's, so the only reason left to refuse is the finished launch.
  if (a.t.vm.capabilities.mirrorRoot) mapThroughMirror(s, id, a.t.vm, BASE_GFN + 1, BASE_PFN + 1);
  refusedAfterFinalize('populate', () => a.t.vm.populate?.(toGfn(BASE_GFN + 1), toPfn(BASE_PFN + 1), { kind: 'zero' }, launch.measuredKind));
  refusedAfterFinalize('finalize', () => a.t.vm.finalize?.());
  invariants(s, id, a.t, 'after the refusals');
  return PASSED;
}

/** Every check of the kit, in the order it runs them. */
export const ARCH_CONFORMANCE_CHECKS: readonly ArchConformanceCheck[] = [
  { id: 'plugin-shape', title: 'is a branded, valid plugin of a supported apiVersion', perVmType: false, run: checkPluginShape },
  { id: 'costs', title: 'registers every cost with a default and a source', perVmType: false, run: checkCosts },
  { id: 'create-vm', title: 'creates a VM with capabilities and well-formed hooks', perVmType: true, run: checkCreateVm },
  { id: 'capabilities', title: 'declares consistent capabilities', perVmType: true, run: checkCapabilities },
  { id: 'classify-fault', title: 'classifies faults (shared GPA bit stripped)', perVmType: true, run: checkClassifyFault },
  { id: 'max-mapping-level', title: 'caps private mappings at maxPrivateLevel', perVmType: true, run: checkMaxMappingLevel },
  { id: 'prepare-invalidate-balance', title: 'balances gmemPrepare with gmemInvalidate', perVmType: true, run: checkPrepareInvalidateBalance },
  { id: 'no-host-access-to-private', title: 'denies the host access to private memory', perVmType: true, run: checkNoHostAccessToPrivate },
  { id: 'bad-inputs-refused', title: 'refuses bad inputs with no state change', perVmType: true, run: checkBadInputsRefused },
  { id: 'private-tables', title: 'keeps private tables in its trusted component and gives pages back', perVmType: true, run: checkPrivateTables },
  { id: 'measurement-before-finalize', title: 'measures what was populated before finalize, and nothing after', perVmType: true, run: checkMeasurementBeforeFinalize },
];

function checkOptions(plugin: ArchPlugin, options: ArchConformanceOptions): void {
  for (const [check, reason] of Object.entries(options.skip ?? {})) {
    if (!(CONFORMANCE_CHECK_IDS as readonly string[]).includes(check)) {
      throw new Error(`runArchConformance(${plugin.name}): skip names unknown check '${check}' (known: ${CONFORMANCE_CHECK_IDS.join(', ')})`);
    }
    if (typeof reason !== 'string' || reason.trim() === '') {
      throw new Error(`runArchConformance(${plugin.name}): skipping '${check}' needs a reason`);
    }
  }
  for (const t of options.vmTypes ?? []) {
    if (!plugin.vmTypes.includes(t)) throw new Error(`runArchConformance(${plugin.name}): the plugin does not serve VM type '${t}'`);
  }
  const frames = options.hostFrames ?? DEFAULT_HOST_FRAMES;
  if (!Number.isSafeInteger(frames) || frames < 2 * BASE_PFN) {
    throw new Error(`runArchConformance(${plugin.name}): hostFrames must be an integer >= ${2 * BASE_PFN}`);
  }
}

/** One check run by {@link runArchConformanceChecks}. */
export interface ConformanceResult {
  readonly check: ConformanceCheckId;
  readonly vmType: string | undefined;
  readonly outcome: CheckOutcome | { readonly status: 'skipped'; readonly reason: string } | { readonly status: 'failed'; readonly error: ConformanceError };
}

/**
 * Runs every check outside a test runner and reports each outcome (failures included, never
 * thrown): for tools, and to see the kit fail on a broken plugin.
 */
export function runArchConformanceChecks(plugin: ArchPlugin, options: ArchConformanceOptions = {}): ConformanceResult[] {
  checkOptions(plugin, options);
  const results: ConformanceResult[] = [];
  const vmTypes = options.vmTypes ?? plugin.vmTypes;
  for (const check of ARCH_CONFORMANCE_CHECKS) {
    for (const vmType of check.perVmType ? vmTypes : [undefined]) {
      const skip = options.skip?.[check.id];
      if (skip !== undefined) {
        results.push({ check: check.id, vmType, outcome: { status: 'skipped', reason: skip } });
        continue;
      }
      try {
        const outcome = check.run({ plugin, vmType: vmType ?? plugin.vmTypes[0] ?? plugin.name, options });
        results.push({ check: check.id, vmType, outcome });
      } catch (e) {
        const error = isConformanceError(e)
          ? e
          : new ConformanceError(check.id, plugin.name, vmType, `the check itself threw ${errorText(e)}`, e);
        results.push({ check: check.id, vmType, outcome: { status: 'failed', error } });
      }
    }
  }
  return results;
}

/** The test-runner functions {@link runArchConformance} registers checks with (vitest's, by default). */
export interface ConformanceRunner {
  describe(name: string, body: () => void): void;
  it(name: string, body: (ctx: { skip(note?: string): never }) => void): void;
  skip(name: string): void;
}

/**
 * Registers the conformance suite for `plugin` as vitest `describe`/`it` blocks; call it at the top
 * level of a plugin's test file:
 *
 * ```ts
 * import { runArchConformance } from '@cocokit/sdk/testing';
 * import snp from './index.js';
 * runArchConformance(snp, { skip: { 'classify-fault': 'SNP needs the C-bit, covered in fault.test.ts' } });
 * ```
 *
 * A check that does not apply to the plugin (e.g. no `gmemPrepare` hook) is reported as skipped
 * with the reason.
 */
export function runArchConformance(plugin: ArchPlugin, options: ArchConformanceOptions = {}, runner?: ConformanceRunner): void {
  checkOptions(plugin, options);
  const r = runner ?? vitestRunner;
  const vmTypes = options.vmTypes ?? plugin.vmTypes;
  r.describe(`arch plugin conformance: ${plugin.name}`, () => {
    for (const check of ARCH_CONFORMANCE_CHECKS) {
      for (const vmType of check.perVmType ? vmTypes : [undefined]) {
        const title = `${check.id}: ${check.title}${vmType && vmTypes.length > 1 ? ` [${vmType}]` : ''}`;
        const skip = options.skip?.[check.id];
        if (skip !== undefined) {
          r.skip(`${title} (skipped: ${skip})`);
          continue;
        }
        r.it(title, (ctx) => {
          const outcome = check.run({ plugin, vmType: vmType ?? plugin.vmTypes[0] ?? plugin.name, options });
          if (outcome.status === 'not-applicable') ctx.skip(`not applicable: ${outcome.reason}`);
        });
      }
    }
  });
}

const vitestRunner: ConformanceRunner = {
  describe: (name, body) => vDescribe(name, body),
  it: (name, body) => vIt(name, (ctx) => body(ctx)),
  skip: (name) => vIt.skip(name, () => undefined),
};
