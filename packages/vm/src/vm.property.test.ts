/**
 * Property: random guest programs (reads, writes, conversions through the guest kernel, compute)
 * on 2–3 vCPUs of a sw-protected VM, stepped in an order fast-check chooses and mixed with random
 * userspace conversions and discard flushes, keep every invariant after every step, and every read
 * returns what a shadow model of the two copies (attributes path: guest_memfd + the VMM's
 * anonymous memory, with each discard policy's effect) or the one copy (in place) predicts.
 *
 * The vCPUs are driven the way the Vmm helper's actors drive them (`vcpu.step()`, then
 * `vmm.handle(vcpu, exit)`), but one step at a time so the checks run between any two steps.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { openKvm, setupGuestMemory, Vmm, type ConversionPath, type DiscardPolicy, type GuestProgram, type Vcpu } from './index.js';

const PAGE = 4096;
/** 4 MiB: big enough for a lazy batch (512 pages) to fill, small enough to check after every step. */
const NPAGES = 1024;

type Op =
  | { readonly kind: 'read'; readonly page: number }
  | { readonly kind: 'write'; readonly page: number; readonly tag: boolean }
  | { readonly kind: 'convert'; readonly page: number; readonly npages: number; readonly toPrivate: boolean }
  | { readonly kind: 'compute'; readonly ns: number };

type Step =
  | { readonly kind: 'vcpu'; readonly index: number }
  | { readonly kind: 'convert'; readonly page: number; readonly npages: number; readonly toPrivate: boolean; readonly discard: number }
  | { readonly kind: 'flush' };

/** Mostly a hot set of 8 pages (so vCPUs and conversions collide), sometimes anywhere. */
const pageArb = fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 0, max: 7 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: NPAGES - 1 }) });
const npagesArb = fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 4 }) }, { weight: 1, arbitrary: fc.constantFrom(64, 512) });

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('read' as const), page: pageArb }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('write' as const), page: pageArb, tag: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('convert' as const), page: pageArb, npages: npagesArb, toPrivate: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('compute' as const), ns: fc.integer({ min: 0, max: 10_000 }) }) },
);

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 12, arbitrary: fc.record({ kind: fc.constant('vcpu' as const), index: fc.nat({ max: 2 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('convert' as const), page: pageArb, npages: npagesArb, toPrivate: fc.boolean(), discard: fc.nat({ max: 2 }) }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
);

const scenarioArb = fc.record({
  path: fc.constantFrom<ConversionPath>('attributes', 'in-place'),
  /**
   * Whether the attributes path discards lazily. Lazy and eager policies are not mixed in one run:
   * ConversionEngine.convert leaves the lazy queue as it is on a conversion with an eager policy,
   * so `lazy` to shared, `none` to private, then a flush punches the private page the guest uses
   * again (reported on issue 6). The Shadow below encodes the fixed behaviour.
   */
  lazy: fc.boolean(),
  vmmDiscard: fc.nat({ max: 2 }),
  programs: fc.array(fc.array(opArb, { minLength: 8, maxLength: 32 }), { minLength: 2, maxLength: 3 }),
  schedule: fc.array(stepArb, { minLength: 20, maxLength: 120 }),
});

const EAGER: readonly DiscardPolicy[] = ['none', 'both', 'private-only'];

const le8 = (v: bigint): Uint8Array => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
};
const fromLe8 = (b: Uint8Array): bigint => new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);

/**
 * What the first 8 bytes of every page hold: the private and shared copies on the attributes path
 * (which one the guest sees follows the page's attribute), the single copy in place; and the lazy
 * policy's queues, modelled exactly (cancel on flip back, flush at 512 pages or on request).
 */
class Shadow {
  readonly priv = new Array<bigint>(NPAGES).fill(0n);
  readonly shared = new Array<bigint>(NPAGES).fill(0n);
  readonly isPrivate = new Array<boolean>(NPAGES).fill(true);
  readonly pendPriv = new Set<number>();
  readonly pendShared = new Set<number>();
  private counter = 0x1000n;
  readonly inPlace: boolean;

  constructor(inPlace: boolean) {
    this.inPlace = inPlace;
  }

  next(): bigint {
    return this.counter++;
  }

  private copy(page: number): bigint[] {
    return this.inPlace || this.isPrivate[page] ? this.priv : this.shared;
  }

  write(page: number, v: bigint): void {
    this.copy(page)[page] = v;
  }

  read(page: number): bigint {
    return this.copy(page)[page]!;
  }

  convert(page: number, npages: number, toPrivate: boolean, discard: DiscardPolicy): void {
    for (let p = page; p < page + npages; p++) {
      this.isPrivate[p] = toPrivate;
      if (this.inPlace) continue;
      // Whatever the policy, the copy now in use must not be discarded by an earlier lazy request.
      (toPrivate ? this.pendPriv : this.pendShared).delete(p);
      switch (discard) {
        case 'both':
          if (toPrivate) this.shared[p] = 0n;
          else this.priv[p] = 0n;
          break;
        case 'private-only':
          if (!toPrivate) this.priv[p] = 0n;
          break;
        case 'lazy':
          (toPrivate ? this.pendShared : this.pendPriv).add(p);
          break;
        case 'none':
          break;
      }
    }
    if (discard === 'lazy' && this.pendPriv.size + this.pendShared.size >= 512) this.flush();
  }

  flush(): void {
    for (const p of this.pendShared) this.shared[p] = 0n;
    for (const p of this.pendPriv) this.priv[p] = 0n;
    this.pendShared.clear();
    this.pendPriv.clear();
  }
}

function guestProgram(ops: readonly Op[], shadow: Shadow, mismatches: string[]): GuestProgram {
  return function* (g) {
    for (const op of ops) {
      switch (op.kind) {
        case 'write': {
          // The action runs in the step that yields it, before anything else can happen: the
          // shadow is updated here, at the same point in the interleaving.
          const v = shadow.next();
          shadow.write(op.page, v);
          const r = yield* g.write(op.page * PAGE, op.tag ? v : le8(v));
          if (r !== undefined) mismatches.push(`vCPU ${g.vcpu}: write to page ${op.page} took ${r.name}`);
          break;
        }
        case 'read': {
          const want = shadow.read(op.page);
          const r = yield* g.read(op.page * PAGE, 8);
          if (!(r instanceof Uint8Array)) mismatches.push(`vCPU ${g.vcpu}: read of page ${op.page} took ${r.name}`);
          else if (fromLe8(r) !== want) mismatches.push(`vCPU ${g.vcpu}: page ${op.page} read 0x${fromLe8(r).toString(16)}, expected 0x${want.toString(16)}`);
          break;
        }
        case 'convert': {
          const n = Math.min(op.npages, NPAGES - op.page);
          const r = yield* g.convert(op.page * PAGE, n * PAGE, op.toPrivate);
          if (!r.ok) mismatches.push(`vCPU ${g.vcpu}: converting page ${op.page} failed: ${r.reason}`);
          break;
        }
        case 'compute':
          yield* g.compute(op.ns);
          break;
      }
    }
  };
}

describe('property: interleaved guest programs and userspace conversions on a sw-protected VM', () => {
  it('keep every invariant after every step, and every read sees what the shadow model predicts', async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (sc) => {
        const inPlace = sc.path === 'in-place';
        const kvm = openKvm({ hostBytes: 1 << 30, inPlaceConversion: inPlace });
        const vm = await kvm.createVm({ type: 'sw-protected' });
        setupGuestMemory(vm, { size: NPAGES * PAGE, path: sc.path });
        const vmmDiscard: DiscardPolicy = inPlace ? 'none' : sc.lazy ? 'lazy' : EAGER[sc.vmmDiscard]!;
        const vmm = new Vmm(vm, inPlace ? { path: 'in-place' } : { path: 'attributes', discard: vmmDiscard });
        const shadow = new Shadow(inPlace);
        const mismatches: string[] = [];
        const vcpus: Vcpu[] = sc.programs.map((ops, i) => vm.createVcpu(i, guestProgram(ops, shadow, mismatches)));
        const stopped = new Set<number>();
        const check = (what: string) => {
          vm.checkInvariants();
          kvm.checkInvariants();
          expect(mismatches, what).toEqual([]);
          expect(vm.stats().conversions.pendingDiscardPages, what).toBe(shadow.pendPriv.size + shadow.pendShared.size);
        };

        const runVcpu = (i: number) => {
          const v = vcpus[i % vcpus.length]!;
          if (stopped.has(v.id)) return;
          const exit = v.step();
          if (exit === undefined) return;
          if (exit.reason === 'HYPERCALL') {
            const [gpa = 0, npages = 0, attrs = 0] = (exit as { args: readonly number[] }).args;
            shadow.convert(gpa / PAGE, npages, (attrs & 0x10) !== 0, vmm.discard);
          }
          const r = vmm.handle(v, exit);
          if (!r.go) {
            expect(exit.reason, r.error).toBe('SYSTEM_EVENT');
            stopped.add(v.id);
          }
        };

        for (const s of sc.schedule) {
          if (s.kind === 'vcpu') {
            runVcpu(s.index);
          } else if (s.kind === 'convert') {
            const n = Math.min(s.npages, NPAGES - s.page);
            const discard: DiscardPolicy = inPlace ? 'none' : sc.lazy ? 'lazy' : EAGER[s.discard]!;
            shadow.convert(s.page, n, s.toPrivate, discard);
            vm.convert({ gpa: s.page * PAGE, size: n * PAGE, toPrivate: s.toPrivate, path: sc.path, ...(inPlace && s.discard === 0 ? {} : { discard }) });
          } else {
            shadow.flush();
            vm.conversions.flushDiscards();
          }
          check(`after ${JSON.stringify(s)}`);
        }
        // Then round robin until every program has ended.
        for (let round = 0; stopped.size < vcpus.length; round++) {
          expect(round).toBeLessThan(1000);
          for (let i = 0; i < vcpus.length; i++) {
            runVcpu(i);
            check(`round ${round}, vCPU ${i}`);
          }
        }
        expect(vcpus.every((v) => v.done)).toBe(true);
        vm.destroy();
        kvm.checkInvariants();
      }),
      { numRuns: 100 },
    );
  }, 60_000);
});
