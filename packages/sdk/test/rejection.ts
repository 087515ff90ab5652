import { isArchPluginError } from '../src/arch/errors.js';
import type { ArchPluginError } from '../src/arch/errors.js';

/** The ArchPluginError `p` rejects with; any other outcome fails the test. */
export async function rejection(p: Promise<unknown>): Promise<ArchPluginError> {
  try {
    await p;
  } catch (e) {
    if (isArchPluginError(e)) return e;
    throw e;
  }
  throw new Error('expected a rejection');
}
