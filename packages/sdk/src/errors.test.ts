import { describe, expect, it } from 'vitest';
import { ERRNO, KvmError, ModelInvariantError, invariant, isKvmError, isModelInvariantError } from './errors.js';

describe('KvmError', () => {
  it('carries the errno name, its number, the operation and the reason', () => {
    const e = new KvmError('EEXIST', 'KVM_SET_USER_MEMORY_REGION2', 'overlaps slot 3', { slot: 3 });
    expect(e.errno).toBe('EEXIST');
    expect(e.errnoValue).toBe(17);
    expect(e.op).toBe('KVM_SET_USER_MEMORY_REGION2');
    expect(e.reason).toBe('overlaps slot 3');
    expect(e.data).toEqual({ slot: 3 });
    expect(e.message).toBe('KVM_SET_USER_MEMORY_REGION2: EEXIST: overlaps slot 3');
    expect(e.name).toBe('KvmError');
    expect(e).toBeInstanceOf(Error);
  });
  it('uses the Linux numbers', () => {
    expect(ERRNO.EINVAL).toBe(22);
    expect(ERRNO.EFAULT).toBe(14);
    expect(ERRNO.EAGAIN).toBe(11);
    expect(ERRNO.ENOMEM).toBe(12);
    expect(ERRNO.ENOSPC).toBe(28);
    expect(ERRNO.ENOTTY).toBe(25);
    expect(ERRNO.EHWPOISON).toBe(133);
  });
});

describe('isKvmError', () => {
  it('matches by name and errno, not by class, so two copies of the sdk agree', () => {
    const foreign = Object.assign(new Error('x'), { name: 'KvmError', errno: 'EINVAL' });
    expect(isKvmError(foreign)).toBe(true);
    expect(isKvmError(foreign, 'EINVAL')).toBe(true);
    expect(isKvmError(foreign, 'EFAULT')).toBe(false);
  });
  it('rejects other values', () => {
    expect(isKvmError(new Error('x'))).toBe(false);
    expect(isKvmError(null)).toBe(false);
    expect(isKvmError('EINVAL')).toBe(false);
    expect(isKvmError(new ModelInvariantError('i', 'd'))).toBe(false);
  });
});

describe('ModelInvariantError', () => {
  it('names the broken invariant', () => {
    const e = new ModelInvariantError('host.refcount-negative', 'pfn 7 at -1');
    expect(e.invariant).toBe('host.refcount-negative');
    expect(e.message).toContain('pfn 7 at -1');
    expect(isModelInvariantError(e)).toBe(true);
    expect(isModelInvariantError(new KvmError('EINVAL', 'op', 'r'))).toBe(false);
  });
  it('is thrown by invariant() only when the condition fails, building the detail lazily', () => {
    let built = 0;
    const detail = () => {
      built++;
      return 'detail';
    };
    expect(() => invariant(true, 'ok', detail)).not.toThrow();
    expect(built).toBe(0);
    expect(() => invariant(false, 'x.y', detail)).toThrow(ModelInvariantError);
    expect(built).toBe(1);
  });
});
