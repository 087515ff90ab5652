/**
 * The table of named costs (DESIGN.md, "The simulation kernel"). Packages register the names they
 * charge, each with a default and its source; users override any of them. A typo must fail loudly
 * rather than silently cost nothing, so unknown names are EINVAL everywhere — except overrides
 * given before the owning package registered (see {@link createCostModel}), which wait for it.
 */
import { KvmError } from '../errors.js';
import type { CostDef, CostEntry, CostModel, CostName } from './types.js';

interface MutableEntry {
  readonly name: string;
  readonly owner: string;
  readonly def: CostDef;
  /** The value `get` returns: the default or the override. */
  ns: number;
  overridden: boolean;
}

const validNs = (ns: unknown): ns is number => typeof ns === 'number' && Number.isFinite(ns) && ns >= 0;

/**
 * Creates a cost model.
 *
 * @param pending overrides to apply when their name is registered. They exist because a sim is
 *   created before the packages that run in it register their costs; {@link CostModel.pendingOverrides}
 *   lists the ones that never matched (a typo), so a harness can refuse them once setup is done.
 *   Their values are checked now (EINVAL). Later calls to `override` are strict: the name must be registered.
 */
export function createCostModel(pending: Readonly<Record<string, number>> = {}): CostModel {
  for (const [name, ns] of Object.entries(pending)) {
    if (!validNs(ns)) throw new KvmError('EINVAL', 'costs.override', `${name}: ${ns} ns is not a finite number >= 0`);
  }
  const waiting = new Map<string, number>(Object.entries(pending));
  const table = new Map<string, MutableEntry>();

  return {
    get(name: CostName): number {
      const e = table.get(name);
      if (e === undefined) throw new KvmError('EINVAL', 'costs.get', `no cost named '${name}' is registered`);
      return e.ns;
    },

    has(name: string): boolean {
      return table.has(name);
    },

    register(owner: string, defaults: Readonly<Record<string, CostDef>>): void {
      if (typeof owner !== 'string' || owner === '') {
        throw new KvmError('EINVAL', 'costs.register', 'owner must be a non-empty string');
      }
      const names = Object.keys(defaults);
      // Check everything before changing anything: a refused registration registers nothing.
      for (const name of names) {
        const def = defaults[name];
        if (name === '') throw new KvmError('EINVAL', 'costs.register', `${owner}: a cost name must not be empty`);
        if (def === undefined || !validNs(def.ns)) {
          throw new KvmError('EINVAL', 'costs.register', `${owner}: '${name}' needs a finite ns >= 0, got ${def?.ns}`);
        }
        if (typeof def.source !== 'string' || def.source.trim() === '') {
          throw new KvmError('EINVAL', 'costs.register', `${owner}: '${name}' needs a source (where the default comes from)`);
        }
        const old = table.get(name);
        // The same package may be set up twice (two VMs in one sim): identical registrations are
        // idempotent. Anything else is two owners disagreeing about one name.
        if (
          old !== undefined &&
          (old.owner !== owner || old.def.ns !== def.ns || old.def.source !== def.source || old.def.unit !== def.unit)
        ) {
          throw new KvmError(
            'EEXIST',
            'costs.register',
            `'${name}' is already registered by ${old.owner} (${old.def.ns} ns); ${owner} registers ${def.ns} ns`,
          );
        }
      }
      for (const name of names) {
        if (table.has(name)) continue;
        const def = defaults[name] as CostDef;
        const frozen: CostDef = def.unit === undefined ? { ns: def.ns, source: def.source } : { ns: def.ns, source: def.source, unit: def.unit };
        const entry: MutableEntry = { name, owner, def: frozen, ns: def.ns, overridden: false };
        const over = waiting.get(name);
        if (over !== undefined) {
          entry.ns = over;
          entry.overridden = true;
          waiting.delete(name);
        }
        table.set(name, entry);
      }
    },

    override(values: Readonly<Record<string, number>>): void {
      const names = Object.keys(values);
      for (const name of names) {
        if (!table.has(name)) throw new KvmError('EINVAL', 'costs.override', `no cost named '${name}' is registered`);
        const ns = values[name];
        if (!validNs(ns)) throw new KvmError('EINVAL', 'costs.override', `${name}: ${ns} ns is not a finite number >= 0`);
      }
      for (const name of names) {
        const e = table.get(name) as MutableEntry;
        e.ns = values[name] as number;
        e.overridden = true;
      }
    },

    entries(): CostEntry[] {
      return [...table.values()]
        .sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0))
        .map((e) => {
          const base = { name: e.name, owner: e.owner, ns: e.ns, defaultNs: e.def.ns, source: e.def.source, overridden: e.overridden };
          return e.def.unit === undefined ? base : { ...base, unit: e.def.unit };
        });
    },

    pendingOverrides(): string[] {
      return [...waiting.keys()].sort();
    },
  };
}
