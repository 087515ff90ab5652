/**
 * `@cocokit/sdk/testing`: the arch plugin conformance kit every plugin runs in its own tests, and a
 * small sparse host memory for plugin tests. Uses vitest (an optional peer dependency of the sdk).
 */
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
