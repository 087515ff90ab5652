export { runSuite, printReport } from './suite.js';
export type { BenchReport, BenchResult, SuiteContext, TaskOptions } from './suite.js';
export { machineInfo, currentCommit } from './machine.js';
export type { MachineInfo } from './machine.js';
export { workspaceRoot } from './workspace.js';
export { heapUsed } from './heap.js';
