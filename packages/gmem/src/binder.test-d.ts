import { expectTypeOf, test } from 'vitest';
import type { GuestMemfdBinder } from '@cocokit/memslot';
import type { GmemBinder } from './gmem-vm.js';

test("gmem's binder satisfies memslot's GuestMemfdBinder", () => {
  expectTypeOf<GmemBinder>().toExtend<GuestMemfdBinder>();
});
