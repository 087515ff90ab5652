#!/usr/bin/env node
/** The `cocokit` binary. */
import { createCli } from './cli.js';
import { experiments } from './experiments/index.js';

const cli = createCli(experiments, { stdout: process.stdout, stderr: process.stderr, cwd: process.cwd() });
process.exitCode = await cli.run(process.argv.slice(2));
