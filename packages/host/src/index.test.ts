import { describe, expect, it } from 'vitest';
import * as host from './index.js';

describe('@cocokit/host entry', () => {
  it('exports its public surface by name', () => {
    expect(Object.keys(host).sort()).toEqual(
      [
        'BuddyAllocator',
        'DEFAULT_HOST_BYTES',
        'DirectMap',
        'HOST_COSTS',
        'HOST_COST_OWNER',
        'Host',
        'MADV',
        'MAP',
        'MAX_ORDER',
        'MMAP_BASE',
        'MMAP_MIN_ADDR',
        'PROT',
        'PageContentsStore',
        'TASK_SIZE',
        'checkInvariants',
        'createHost',
        'processFault',
        'isProcessFault',
        'registerHostCosts',
      ].sort(),
    );
  });
});
