import { createSim } from '@cocokit/sdk';
import { createTestHostMemory } from '@cocokit/sdk/testing';
import { beforeEach, describe, expect, it } from 'vitest';
import { TDX_COSTS } from './costs.js';
import { TdxModule } from './module.js';
import { SEPT_STATE } from './sept.js';
import { TDX_OPERAND_ID, TDX_STATUS as S, tdxStatusName } from './status.js';

const G = 0x40000; // 1 GiB-aligned gfn
const P = 0x40000; // 1 GiB-aligned pfn

function setup(finalized = false) {
  const sim = createSim({ seed: 1 });
  sim.costs.register('tdx', TDX_COSTS);
  const host = createTestHostMemory(2 ** 20);
  const m = new TdxModule({ sim, host });
  if (finalized) expect(m.mrFinalize().status).toBe(S.TDX_SUCCESS);
  return { sim, host, m };
}

/** SEPT.ADD every level above `level` for `gfn` (what the MMU's linkPrivateTable calls do). */
function link(m: TdxModule, gfn: number, level = 0): void {
  for (let l = m.sept.rootLevel; l > level; l--) {
    const at = Math.floor(gfn / 512 ** l) * 512 ** l; // SEPT.ADD takes the GPA aligned to the entry's level
    if (m.sept.state(gfn, l) === SEPT_STATE.FREE) expect(tdxStatusName(m.septAdd(at, l))).toBe('TDX_SUCCESS');
  }
}

const name = (s: bigint) => tdxStatusName(s);

describe('TDH.MEM.SEPT.ADD', () => {
  it('links levels from the root down; a missing upper level is EPT_WALK_FAILED', () => {
    const { m } = setup();
    expect(name(m.septAdd(G, 1))).toBe('TDX_EPT_WALK_FAILED');
    expect(name(m.septAdd(0, 3))).toBe('TDX_SUCCESS');
    expect(name(m.septAdd(G, 2))).toBe('TDX_SUCCESS');
    expect(name(m.septAdd(G, 1))).toBe('TDX_SUCCESS');
    expect(m.sept.state(G, 1)).toBe(SEPT_STATE.NL_MAPPED);
    m.checkInvariants(undefined);
  });

  it('refuses an entry that is already linked (EPT_ENTRY_NOT_FREE) and bad levels (OPERAND_INVALID)', () => {
    const { m } = setup();
    link(m, G);
    expect(name(m.septAdd(G, 1))).toBe('TDX_EPT_ENTRY_NOT_FREE');
    expect(name(m.septAdd(G, 0))).toBe('TDX_OPERAND_INVALID');
    expect(name(m.septAdd(G, 4))).toBe('TDX_OPERAND_INVALID');
    expect(name(m.septAdd(-1, 1))).toBe('TDX_OPERAND_INVALID');
    expect(name(m.septAdd(2 ** 35, 1))).toBe('TDX_OPERAND_INVALID'); // the shared bit (47) in frames
  });

  it('walking through a blocked page table is GPA_RANGE_BLOCKED', () => {
    const { m } = setup();
    link(m, G, 1);
    expect(name(m.rangeBlock(G, 2))).toBe('TDX_SUCCESS');
    expect(name(m.septAdd(G, 1))).toBe('TDX_GPA_RANGE_BLOCKED');
  });

  it('returns OPERAND_BUSY (operand SEPT) when contention is injected, and changes nothing', () => {
    const { m } = setup();
    m.injectBusy('TDH.MEM.SEPT.ADD');
    expect(m.septAdd(0, 3)).toBe(S.TDX_OPERAND_BUSY | TDX_OPERAND_ID.SEPT);
    expect(m.sept.state(0, 3)).toBe(SEPT_STATE.FREE);
    expect(name(m.septAdd(0, 3))).toBe('TDX_SUCCESS');
  });
});

describe('TDH.MEM.PAGE.ADD', () => {
  it('FREE → MAPPED at 4K before finalize, copying the source into the TD page', () => {
    const { m, host } = setup();
    link(m, G);
    const bytes = new Uint8Array(4096).fill(7);
    expect(name(m.pageAdd(G, P, { kind: 'bytes', bytes }))).toBe('TDX_SUCCESS');
    expect(m.sept.entry(G, 0)).toEqual({ level: 0, gfn: G, state: SEPT_STATE.MAPPED, pfn: P });
    expect(host.readBytes(P as never, 0, 4)).toEqual(new Uint8Array([7, 7, 7, 7]));
    expect(m.ownerOf(P)).toBe(G);
    m.checkInvariants(undefined);
  });

  it('refuses a missing path, a used entry, an aliased pfn, and anything after finalize', () => {
    const { m } = setup();
    const zero = { kind: 'zero' } as const;
    expect(name(m.pageAdd(G, P, zero))).toBe('TDX_EPT_WALK_FAILED');
    link(m, G);
    expect(name(m.pageAdd(G, P, zero))).toBe('TDX_SUCCESS');
    expect(name(m.pageAdd(G, P + 1, zero))).toBe('TDX_EPT_ENTRY_NOT_FREE');
    expect(name(m.pageAdd(G + 1, P, zero))).toBe('TDX_PAGE_METADATA_INCORRECT');
    expect(name(m.pageAdd(G + 1, P + 1.5, zero))).toBe('TDX_OPERAND_INVALID');
    expect(m.mrFinalize().status).toBe(S.TDX_SUCCESS);
    expect(name(m.pageAdd(G + 1, P + 1, zero))).toBe('TDX_OP_STATE_INCORRECT');
    expect(m.pageAddCount).toBe(1);
    m.checkInvariants(1);
  });
});

describe('TDH.MEM.PAGE.AUG', () => {
  it('FREE → PENDING at 4K and 2M after finalize; refused before it', () => {
    const { m } = setup();
    link(m, G);
    expect(name(m.pageAug(G, 0, P))).toBe('TDX_OP_STATE_INCORRECT');
    m.mrFinalize();
    expect(name(m.pageAug(G, 0, P))).toBe('TDX_SUCCESS');
    expect(m.sept.state(G, 0)).toBe(SEPT_STATE.PENDING);
    link(m, G + 512, 1);
    expect(name(m.pageAug(G + 512, 1, P + 512))).toBe('TDX_SUCCESS');
    expect(m.sept.entry(G + 512, 1)).toMatchObject({ state: SEPT_STATE.PENDING, pfn: P + 512 });
    expect(m.ownerOf(P + 1000)).toBe(G + 1000);
    expect(m.stats().privatePages).toBe(513);
    m.checkInvariants(0);
  });

  it('refuses a mapped entry, a 2M leaf over a page table, misalignment, 1G and aliasing', () => {
    const { m } = setup(true);
    link(m, G);
    expect(name(m.pageAug(G, 0, P))).toBe('TDX_SUCCESS');
    expect(name(m.pageAug(G, 0, P + 1))).toBe('TDX_EPT_ENTRY_NOT_FREE');
    expect(name(m.pageAug(G, 1, P + 512))).toBe('TDX_EPT_ENTRY_NOT_FREE');
    expect(name(m.pageAug(G + 1, 0, P))).toBe('TDX_PAGE_METADATA_INCORRECT');
    expect(name(m.pageAug(G + 1, 1, P))).toBe('TDX_OPERAND_INVALID');
    expect(name(m.pageAug(G, 2, P))).toBe('TDX_OPERAND_INVALID');
    expect(name(m.pageAug(G + 2 ** 18, 0, P + 7))).toBe('TDX_EPT_WALK_FAILED');
  });
});

describe('RANGE.BLOCK, TRACK, PAGE.REMOVE', () => {
  let m: TdxModule;
  beforeEach(() => {
    m = setup(true).m;
    link(m, G);
    expect(name(m.pageAug(G, 0, P))).toBe('TDX_SUCCESS');
  });

  it('PENDING → PENDING_BLOCKED → (TRACK, kick) → FREE, returning the page to the host', () => {
    expect(name(m.rangeBlock(G, 0))).toBe('TDX_SUCCESS');
    expect(m.sept.state(G, 0)).toBe(SEPT_STATE.PENDING_BLOCKED);
    expect(name(m.track())).toBe('TDX_SUCCESS');
    m.kickVcpus();
    expect(name(m.pageRemove(G, 0))).toBe('TDX_SUCCESS');
    expect(m.sept.state(G, 0)).toBe(SEPT_STATE.FREE);
    expect(m.ownerOf(P)).toBeUndefined();
    m.checkInvariants(0);
  });

  it('MAPPED (accepted) → BLOCKED → FREE the same way', () => {
    expect(m.accept(G, 0)).toEqual({ kind: 'status', status: S.TDX_SUCCESS });
    expect(name(m.rangeBlock(G, 0))).toBe('TDX_SUCCESS');
    expect(m.sept.state(G, 0)).toBe(SEPT_STATE.BLOCKED);
    m.track();
    m.kickVcpus();
    expect(name(m.pageRemove(G, 0))).toBe('TDX_SUCCESS');
  });

  it('REMOVE of an unblocked leaf is GPA_RANGE_NOT_BLOCKED; before TRACK it is TLB_TRACKING_NOT_DONE', () => {
    expect(name(m.pageRemove(G, 0))).toBe('TDX_GPA_RANGE_NOT_BLOCKED');
    m.rangeBlock(G, 0);
    expect(name(m.pageRemove(G, 0))).toBe('TDX_TLB_TRACKING_NOT_DONE');
    m.track();
    expect(name(m.pageRemove(G, 0))).toBe('TDX_TLB_TRACKING_NOT_DONE'); // vCPUs not kicked yet
    m.kickVcpus();
    expect(name(m.pageRemove(G, 0))).toBe('TDX_SUCCESS');
    expect(name(m.pageRemove(G, 0))).toBe('TDX_EPT_ENTRY_STATE_INCORRECT|0x1');
  });

  it('BLOCK twice is the warning GPA_RANGE_ALREADY_BLOCKED; BLOCK of FREE is STATE_INCORRECT with operand RCX', () => {
    m.rangeBlock(G, 0);
    expect(name(m.rangeBlock(G, 0))).toBe('TDX_GPA_RANGE_ALREADY_BLOCKED');
    expect(m.rangeBlock(G + 1, 0)).toBe(S.TDX_EPT_ENTRY_STATE_INCORRECT | TDX_OPERAND_ID.RCX);
  });

  it('UNBLOCK restores the leaf; UNBLOCK of an unblocked leaf is refused', () => {
    m.rangeBlock(G, 0);
    expect(name(m.rangeUnblock(G, 0))).toBe('TDX_SUCCESS');
    expect(m.sept.state(G, 0)).toBe(SEPT_STATE.PENDING);
    expect(name(m.rangeUnblock(G, 0))).toBe('TDX_EPT_ENTRY_STATE_INCORRECT|0x1');
    m.checkInvariants(0);
  });

  it('a second TRACK before the vCPUs were kicked is PREVIOUS_TLB_EPOCH_BUSY', () => {
    expect(name(m.track())).toBe('TDX_SUCCESS');
    expect(name(m.track())).toBe('TDX_PREVIOUS_TLB_EPOCH_BUSY');
    m.kickVcpus();
    expect(name(m.track())).toBe('TDX_SUCCESS');
    expect(m.epoch).toBe(2);
  });

  it('before finalize no vCPU ran, so REMOVE needs no TRACK (tdx_track returns early)', () => {
    const fresh = setup().m;
    link(fresh, G);
    fresh.pageAdd(G, P, { kind: 'zero' });
    fresh.rangeBlock(G, 0);
    expect(name(fresh.pageRemove(G, 0))).toBe('TDX_SUCCESS');
  });
});

describe('PAGE.DEMOTE and PAGE.PROMOTE', () => {
  it('demotes a blocked, tracked 2M leaf into 512 4K leaves and promotes them back', () => {
    const { m } = setup(true);
    link(m, G, 1);
    expect(name(m.pageAug(G, 1, P))).toBe('TDX_SUCCESS');
    expect(name(m.pageDemote(G, 1))).toBe('TDX_GPA_RANGE_NOT_BLOCKED');
    m.rangeBlock(G, 1);
    expect(name(m.pageDemote(G, 1))).toBe('TDX_TLB_TRACKING_NOT_DONE');
    m.track();
    m.kickVcpus();
    expect(name(m.pageDemote(G, 1))).toBe('TDX_SUCCESS');
    expect(m.sept.state(G, 1)).toBe(SEPT_STATE.NL_MAPPED);
    expect(m.sept.entry(G + 511, 0)).toMatchObject({ state: SEPT_STATE.PENDING, pfn: P + 511 });
    m.checkInvariants(0);

    expect(name(m.pagePromote(G, 1))).toBe('TDX_GPA_RANGE_NOT_BLOCKED');
    m.rangeBlock(G, 1);
    m.track();
    m.kickVcpus();
    expect(name(m.pagePromote(G, 1))).toBe('TDX_SUCCESS');
    expect(m.sept.entry(G, 1)).toMatchObject({ state: SEPT_STATE.PENDING, pfn: P });
    expect(m.sept.count(0)).toBe(0);
    m.checkInvariants(0);
  });

  it('refuses PROMOTE when the 4K leaves are mixed (EPT_INVALID_PROMOTE_CONDITIONS)', () => {
    const { m } = setup(true);
    link(m, G, 1);
    m.pageAug(G, 1, P);
    m.rangeBlock(G, 1);
    m.track();
    m.kickVcpus();
    m.pageDemote(G, 1);
    expect(m.accept(G + 3, 0)).toEqual({ kind: 'status', status: S.TDX_SUCCESS });
    m.rangeBlock(G, 1);
    m.track();
    m.kickVcpus();
    expect(name(m.pagePromote(G, 1))).toBe('TDX_EPT_INVALID_PROMOTE_CONDITIONS');
    expect(name(m.pageDemote(G, 0))).toBe('TDX_OPERAND_INVALID');
  });
});

describe('TDH.MR.EXTEND and TDH.MR.FINALIZE', () => {
  it('extends only MAPPED pages, in 256-byte chunks, before finalize', () => {
    const { m } = setup();
    link(m, G);
    expect(name(m.mrExtend(G * 4096))).toBe('TDX_EPT_ENTRY_STATE_INCORRECT|0x1');
    m.pageAdd(G, P, { kind: 'zero' });
    expect(name(m.mrExtend(G * 4096 + 256))).toBe('TDX_SUCCESS');
    expect(name(m.mrExtend(G * 4096 + 128))).toBe('TDX_OPERAND_INVALID');
    expect(m.mrFinalize().digest).toHaveLength(48);
    expect(name(m.mrExtend(G * 4096))).toBe('TDX_OP_STATE_INCORRECT');
    expect(name(m.mrFinalize().status)).toBe('TDX_OP_STATE_INCORRECT');
  });
});

describe('costs and stats', () => {
  it('charges every SEAMCALL to the current actor, refused ones included', () => {
    const { m, sim } = setup();
    const before = sim.now;
    m.septAdd(G, 1); // refused: walk failed
    expect(sim.now - before).toBe(TDX_COSTS['tdx.sept_add'].ns);
    expect(m.stats().errors['TDH.MEM.SEPT.ADD']).toBe(1);
  });

  it('a 1 TiB TD costs nothing until mapped: one entry per level touched', () => {
    const { m } = setup(true);
    link(m, 2 ** 28 - 1); // the last 4K page of 1 TiB
    expect(m.stats().entries).toEqual([0, 1, 1, 1]);
  });
});
