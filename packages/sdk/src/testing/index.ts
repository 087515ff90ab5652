/**
 * `@cocokit/sdk/testing`: the arch plugin conformance kit every plugin runs in its own tests, the
 * test VM it builds (`createArchTestVm`: a plugin's VM with a context shaped like the core's, for
 * the plugin's own unit tests), a small sparse host memory, and `errnoOf` for tests of refusals.
 * Uses vitest (an optional peer dependency of the sdk).
 */
export { archPluginErrorOf, archPluginRejectionOf, errnoOf } from './errno.js';
export { ArchExitOutsideGuestError, ArchGuestExit, archExitOf, createArchTestVm } from './test-vm.js';
export type { ArchTestMapping, ArchTestVm, ArchTestVmOptions } from './test-vm.js';
export { createTestHostMemory } from './host-memory.js';
export type { TestHostMemory } from './host-memory.js';
export {
  ARCH_CONFORMANCE_CHECKS,
  CONFORMANCE_CHECK_IDS,
  ConformanceError,
  checkBadInputsRefused,
  checkCapabilities,
  checkClassifyFault,
  checkCosts,
  checkCreateVm,
  checkMaxMappingLevel,
  checkMeasurementBeforeFinalize,
  checkNoHostAccessToPrivate,
  checkPluginShape,
  checkPrepareInvalidateBalance,
  checkPrivateTables,
  isConformanceError,
  runArchConformance,
  runArchConformanceChecks,
} from './conformance.js';
export type {
  ArchConformanceCheck,
  ArchConformanceOptions,
  CheckOutcome,
  ConformanceCheckId,
  ConformanceResult,
  ConformanceRunner,
  ConformanceSubject,
} from './conformance.js';
