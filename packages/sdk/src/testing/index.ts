/**
 * `@cocokit/sdk/testing`: the arch plugin conformance kit every plugin runs in its own tests, a
 * small sparse host memory for plugin tests, and `errnoOf` for tests of refusals. Uses vitest (an
 * optional peer dependency of the sdk).
 */
export { errnoOf } from './errno.js';
export { createTestHostMemory } from './host-memory.js';
export type { TestHostMemory } from './host-memory.js';
export {
  ARCH_CONFORMANCE_CHECKS,
  ArchExitOutsideGuestError,
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
  createArchTestVm,
  isConformanceError,
  runArchConformance,
  runArchConformanceChecks,
} from './conformance.js';
export type {
  ArchConformanceCheck,
  ArchConformanceOptions,
  ArchTestVm,
  CheckOutcome,
  ConformanceCheckId,
  ConformanceResult,
  ConformanceRunner,
  ConformanceSubject,
} from './conformance.js';
