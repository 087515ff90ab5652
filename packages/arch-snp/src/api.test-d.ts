/** Type test: the plugin's declarations reach the sdk's lookups, and its results are the contract's shapes. */
import type { ArchGuestApiOf, ArchGuestKernel, ArchVm, ArchVmApiOf, CostName, GuestAccess, GuestException, GuestNpf, TraceFields } from '@cocokit/sdk';
import { describe, expectTypeOf, it } from 'vitest';
import type { PvalidateResult, SnpArchVm, SnpGuestApi, SnpNpf, SnpVmApi } from './index.js';

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

describe('snp and the contract', () => {
  it('is an ArchVm whose new hooks are all present', () => {
    expectTypeOf<SnpArchVm>().toMatchTypeOf<ArchVm>();
    expectTypeOf<SnpArchVm['guestKernel']>().toEqualTypeOf<ArchGuestKernel>();
    expectTypeOf<SnpArchVm['guestAccess']>().toEqualTypeOf<(access: GuestAccess) => 'ok' | GuestException | GuestNpf>();
    expectTypeOf<SnpArchVm['destroy']>().toEqualTypeOf<() => void>();
  });
  it('hands back NPFs the core and the guest kernel can use as GuestNpf steps', () => {
    expectTypeOf<SnpNpf>().toMatchTypeOf<GuestNpf>();
    expectTypeOf<Extract<PvalidateResult, { kind: 'npf' }>>().toMatchTypeOf<GuestNpf>();
  });
});
