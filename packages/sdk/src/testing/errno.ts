/** Helpers for tests of refusals: which errno a call was refused with, which plugin error a load or creation failed with. */
import { isArchPluginError, type ArchPluginError } from '../arch/errors.js';
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

/**
 * The {@link ArchPluginError} `f` throws. Returning, or throwing anything else, fails the test
 * (the other error is rethrown), so a test of a plugin refusal never passes on a crash.
 */
export function archPluginErrorOf(f: () => unknown): ArchPluginError {
  try {
    f();
  } catch (e) {
    if (isArchPluginError(e)) return e;
    throw e;
  }
  throw new Error('expected an ArchPluginError, but the call returned');
}

/** The {@link ArchPluginError} `p` rejects with; as {@link archPluginErrorOf}, for promises. */
export async function archPluginRejectionOf(p: Promise<unknown>): Promise<ArchPluginError> {
  try {
    await p;
  } catch (e) {
    if (isArchPluginError(e)) return e;
    throw e;
  }
  throw new Error('expected an ArchPluginError, but the promise resolved');
}
