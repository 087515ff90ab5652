/** Type test: the plugin's declarations reach the sdk's lookups. */
import type { ArchGuestApiOf, ArchVmApiOf, CostName, TraceFields } from '@cocokit/sdk';
import { describe, expectTypeOf, it } from 'vitest';
import type { SnpGuestApi, SnpVmApi } from './index.js';

describe('snp augmentations', () => {
  it('types the vm and guest APIs of VM type snp', () => {
    expectTypeOf<ArchVmApiOf<'snp'>>().toEqualTypeOf<SnpVmApi>();
    expectTypeOf<ArchGuestApiOf<'snp'>>().toEqualTypeOf<SnpGuestApi>();
  });
  it('declares cost names and trace events', () => {
    expectTypeOf<'snp.rmpupdate'>().toMatchTypeOf<CostName>();
    expectTypeOf<TraceFields<'snp.psmash'>>().toEqualTypeOf<{ pfn: number; rc: number; why: string }>();
  });
});
