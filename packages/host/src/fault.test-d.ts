import type { ArchVm } from '@cocokit/sdk';
import { describe, expectTypeOf, it } from 'vitest';
import type { HostAccessCheck } from './fault.js';

describe('HostAccessCheck', () => {
  it("accepts an arch plugin's hostAccess hook as it is", () => {
    expectTypeOf<NonNullable<ArchVm['hostAccess']>>().toExtend<HostAccessCheck>();
  });
});
