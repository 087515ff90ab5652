/** A helper for tests of refusals: which errno a call was refused with. */
import { isKvmError, type Errno } from '../errors.js';

/**
 * The errno of the {@link KvmError} `f` throws, or `undefined` when it returns. Anything else it
 * throws (a bug, a ModelInvariantError) is rethrown, so a test asserting an errno never mistakes a
 * crash for a refusal.
 *
 * @example
 * expect(errnoOf(() => file.fallocate(0, 0, 4096))).toBe('EOPNOTSUPP');
 */
export function errnoOf(f: () => unknown): Errno | undefined {
  try {
    f();
  } catch (e) {
    if (isKvmError(e)) return e.errno;
    throw e;
  }
  return undefined;
}
