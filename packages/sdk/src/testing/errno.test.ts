import { describe, expect, it } from 'vitest';
import { KvmError, ModelInvariantError } from '../errors.js';
import { errnoOf } from './errno.js';

describe('errnoOf', () => {
  it('answers the errno of a refusal, and undefined when the call returns', () => {
    expect(errnoOf(() => {
      throw new KvmError('EAGAIN', 'op', 'pinned');
    })).toBe('EAGAIN');
    expect(errnoOf(() => 42)).toBeUndefined();
  });
  it('rethrows anything that is not a refusal', () => {
    expect(() => errnoOf(() => {
      throw new ModelInvariantError('x', 'broken');
    })).toThrow(/broken/);
    expect(() => errnoOf(() => {
      throw new TypeError('bug');
    })).toThrow(TypeError);
  });
});
