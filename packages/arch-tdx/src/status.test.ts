import { describe, expect, it } from 'vitest';
import { TDVMCALL_STATUS, TDX_OPERAND_ID, TDX_STATUS as S, isTdxError, isTdxOperandBusy, seamcallToArchResult, tdvmcallStatusName, tdxStatusName } from './status.js';

describe('TDX status codes', () => {
  it('names codes, with the operand id when set', () => {
    expect(tdxStatusName(S.TDX_OPERAND_BUSY | TDX_OPERAND_ID.SEPT)).toBe('TDX_OPERAND_BUSY|0x92');
    expect(tdxStatusName(S.TDX_EPT_WALK_FAILED)).toBe('TDX_EPT_WALK_FAILED');
    expect(tdxStatusName(0x1234n)).toBe('0x1234');
    expect(tdvmcallStatusName(TDVMCALL_STATUS.RETRY)).toBe('TDVMCALL_STATUS_RETRY');
    expect(tdvmcallStatusName(0x42n)).toBe('0x42');
  });

  it('tells errors (bit 63) from warnings', () => {
    expect(isTdxError(S.TDX_EPT_ENTRY_STATE_INCORRECT)).toBe(true);
    expect(isTdxError(S.TDX_PAGE_ALREADY_ACCEPTED)).toBe(false);
    expect(isTdxError(S.TDX_GPA_RANGE_ALREADY_BLOCKED)).toBe(false);
    expect(isTdxOperandBusy(S.TDX_OPERAND_BUSY | TDX_OPERAND_ID.TD_EPOCH)).toBe(true);
  });

  it('maps to what KVM does: success ok, OPERAND_BUSY busy (retry), anything else a KVM_BUG_ON error', () => {
    expect(seamcallToArchResult('TDH.MEM.PAGE.AUG', S.TDX_SUCCESS)).toEqual({ status: 'ok' });
    expect(seamcallToArchResult('TDH.MEM.PAGE.AUG', S.TDX_OPERAND_BUSY | TDX_OPERAND_ID.SEPT).status).toBe('busy');
    expect(seamcallToArchResult('TDH.MEM.PAGE.AUG', S.TDX_EPT_ENTRY_NOT_FREE)).toMatchObject({ status: 'error', errno: 'EIO' });
  });
});
