/**
 * The one error class of plugin loading. A bad plugin is not a kernel refusal, so it is not a
 * `KvmError`: it carries a string `code` (the API) and a message that names the plugin, what was
 * looked for and where (the documentation). Matched by `name`/`code`, never `instanceof`, so two
 * copies of the sdk in one process still agree (tRPC's habit).
 */

/** The codes of {@link ArchPluginError}. */
export const ARCH_PLUGIN_ERROR_CODES = [
  /** The plugin (or what a package exported) is not a well-formed plugin, or threw while importing. */
  'E_PLUGIN_INVALID',
  /** The plugin's `apiVersion` is outside the range this sdk supports. */
  'E_PLUGIN_API_VERSION',
  /** No plugin serves the VM type: not registered, no package installed. */
  'E_PLUGIN_NOT_FOUND',
  /** Two different plugins claim the same name or VM type. */
  'E_PLUGIN_DUPLICATE',
  /** The plugin's `createVm` threw (or returned something unusable); no VM was created. */
  'E_PLUGIN_CREATE_VM',
] as const;

/** A code of {@link ArchPluginError}. */
export type ArchPluginErrorCode = (typeof ARCH_PLUGIN_ERROR_CODES)[number];

/** One place the loader looked for a plugin, and what it found there. */
export interface ArchLookupAttempt {
  /** `'registry'`, or the package specifier imported (`'@cocokit/arch-snp'`). */
  readonly place: string;
  /** `'absent'`: nothing there (not registered, not installed); `'invalid'`: something unusable. */
  readonly outcome: 'absent' | 'invalid';
  /** Why, in a few words. */
  readonly detail: string;
}

/** What an {@link ArchPluginError} is about. */
export interface ArchPluginErrorInit {
  /** The plugin name, package, or VM type the error is about. */
  readonly subject: string;
  /** Every place looked, in order (resolution errors only). */
  readonly attempts?: readonly ArchLookupAttempt[];
  /** The error that caused this one (e.g. what a package threw while being imported). */
  readonly cause?: unknown;
}

/**
 * Loading, registering or resolving an arch plugin failed.
 *
 * @example
 * if (isArchPluginError(e, 'E_PLUGIN_NOT_FOUND')) console.error(e.message);
 */
export class ArchPluginError extends Error {
  override readonly name = 'ArchPluginError' as const;
  /** What went wrong; match on it. */
  readonly code: ArchPluginErrorCode;
  /** The plugin name, package or VM type the error is about. */
  readonly subject: string;
  /** Every place looked, in order, for resolution errors; empty otherwise. */
  readonly attempts: readonly ArchLookupAttempt[];

  constructor(code: ArchPluginErrorCode, message: string, init: ArchPluginErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.code = code;
    this.subject = init.subject;
    this.attempts = init.attempts ?? [];
  }
}

/** Whether `e` is an {@link ArchPluginError} (optionally with `code`), by name rather than class. */
export function isArchPluginError(e: unknown, code?: ArchPluginErrorCode): e is ArchPluginError {
  if (typeof e !== 'object' || e === null) return false;
  const candidate = e as { name?: unknown; code?: unknown };
  if (candidate.name !== 'ArchPluginError' || typeof candidate.code !== 'string') return false;
  return code === undefined || candidate.code === code;
}
