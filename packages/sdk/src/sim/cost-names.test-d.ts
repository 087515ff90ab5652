/**
 * Type test: a package declares the costs it charges by augmenting `CostNames` on the public entry
 * (exactly as a separate package would: `declare module '@cocokit/sdk'`), and from then on a cost
 * name that nobody declared fails to compile.
 *
 * The augmentation is program-wide, like any module augmentation: inside this package's typecheck,
 * the names below are the declared set, so sdk tests that charge must use (or add) `sdk.test.*`
 * names here.
 */
import { describe, expectTypeOf, it } from 'vitest';
import { createSim } from '@cocokit/sdk';
import type { CostName, Sim } from '@cocokit/sdk';

declare module '@cocokit/sdk' {
  interface CostNames {
    'sdk.test.op': true;
    'sdk.test.a': true;
    'sdk.test.b': true;
  }
}

describe('CostNames augmentation', () => {
  it('narrows CostName to the declared names', () => {
    expectTypeOf<CostName>().toEqualTypeOf<'sdk.test.op' | 'sdk.test.a' | 'sdk.test.b'>();
  });

  it('makes charging an undeclared name a compile error', () => {
    const sim: Sim = createSim();
    expectTypeOf(sim.charge).parameter(0).toEqualTypeOf<CostName>();
    // Declared names compile (not run: nothing is registered in a type test).
    const ok = () => sim.charge('sdk.test.op', 2);
    // @ts-expect-error 'sdk.test.typo' is not a declared cost name
    const typo = () => sim.charge('sdk.test.typo');
    // @ts-expect-error a plain string is not a declared cost name either
    const dynamic = (name: string) => sim.charge(name);
    expectTypeOf(ok).returns.toBeVoid();
    expectTypeOf(typo).returns.toBeVoid();
    expectTypeOf(dynamic).returns.toBeVoid();
    expectTypeOf(sim.costs.get).parameter(0).toEqualTypeOf<CostName>();
  });
});
