import type { ArchGuestApiOf, ArchVmApiOf, CostName, TraceFields } from '@cocokit/sdk';
import { expectTypeOf, test } from 'vitest';
import type { TdxGuestApi, TdxVmApi } from './index.js';

test('the plugin declares its VM and guest APIs, costs and trace events to the sdk', () => {
  expectTypeOf<ArchVmApiOf<'tdx'>>().toEqualTypeOf<TdxVmApi>();
  expectTypeOf<ArchGuestApiOf<'tdx'>>().toEqualTypeOf<TdxGuestApi>();
  expectTypeOf<'tdx.page_aug'>().toExtend<CostName>();
  expectTypeOf<TraceFields<'tdx.page_aug'>>().toEqualTypeOf<{ gfn: number; pfn: number; level: number }>();
});
