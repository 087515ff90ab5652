/** The experiments the CLI offers, in the order `cocokit --help` lists them. */
import type { Experiment } from '../experiment.js';
import { acceptExperiment } from './accept.js';
import { bootExperiment } from './boot.js';
import { directmapExperiment } from './directmap.js';
import { launchExperiment } from './launch.js';

export { acceptExperiment, bootExperiment, directmapExperiment, launchExperiment };

/** Every experiment, by command order. */
export const experiments: readonly Experiment[] = [bootExperiment, acceptExperiment, launchExperiment, directmapExperiment] as readonly Experiment[];
