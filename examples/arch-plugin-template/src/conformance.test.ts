// The sdk's conformance kit: the checks every plugin runs in its own tests. Checks that do not apply
// to the toy (no classifyFault, no private tables, no measurement) report themselves as skipped
// with the reason; none is skipped by hand.
import { runArchConformance } from '@cocokit/sdk/testing';
import toy from './index.js';

runArchConformance(toy);
