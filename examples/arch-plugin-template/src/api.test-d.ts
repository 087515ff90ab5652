// Type tests: the augmentation in api.ts types a VM created with `type: 'toy'` with the toy APIs,
// although @cocokit/vm never imports this package, and holds the plugin to them.
import { describe, expectTypeOf, it } from 'vitest';
import { defineArchPlugin, type ArchGuestApiOf, type ArchVmApiOf } from '@cocokit/sdk';
import type { GuestContext, GuestSteps, Vm } from '@cocokit/vm';
import type { ToyAcceptResult, ToyGuestApi, ToyVmApi } from './index.js';

const caps = { privateMem: true, privateByDefault: true, maxPrivateLevel: 0, mirrorRoot: false, inPlaceConversion: true } as const;

describe('the toy APIs, by augmentation', () => {
  it('declares them for VM type toy', () => {
    expectTypeOf<ArchVmApiOf<'toy'>>().toEqualTypeOf<ToyVmApi>();
    expectTypeOf<ArchGuestApiOf<'toy'>>().toEqualTypeOf<ToyGuestApi>();
  });

  it('types vm.archApi and the guest program’s g.arch', () => {
    expectTypeOf<Vm<'toy'>['archApi']>().toEqualTypeOf<ToyVmApi>();
    expectTypeOf<GuestContext<'toy'>['arch']['accept']>().toEqualTypeOf<(gpa: number) => GuestSteps<ToyAcceptResult>>();
    expectTypeOf<GuestContext<'toy'>['arch']['share']>().returns.toEqualTypeOf<GuestSteps<number>>();
    // An undeclared type's API is unknown: narrow it yourself.
    expectTypeOf<Vm<'not-a-declared-type'>['archApi']>().toEqualTypeOf<unknown>();
  });

  it('holds any plugin serving toy to the declared APIs', () => {
    // @ts-expect-error a plugin for 'toy' must provide vmApi: ToyVmApi and guestApi: ToyGuestApi
    defineArchPlugin({ name: 'impostor', apiVersion: 1, vmTypes: ['toy'], createVm: () => ({ capabilities: caps }) });
  });
});
