import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeFolio, folioDelta, folioFlags, folioOrder, withFlags } from './folio-map.js';

describe('page-cache entries', () => {
  it('decode to the delta, order and flags they were encoded from, negative deltas included', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
        fc.constantFrom(0, 9, 18),
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 0, max: 3 }),
        (delta, order, flags, other) => {
          const v = encodeFolio(delta, order, flags);
          expect([folioDelta(v), folioOrder(v), folioFlags(v)]).toEqual([delta, order, flags]);
          const w = withFlags(v, other);
          expect([folioDelta(w), folioOrder(w), folioFlags(w)]).toEqual([delta, order, other]);
        },
      ),
    );
  });

  it('keeps pfns far above 2^31 exact', () => {
    const v = encodeFolio(2 ** 38 + 5, 18, 3);
    expect(folioDelta(v)).toBe(2 ** 38 + 5);
    expect(folioOrder(v)).toBe(18);
  });
});
