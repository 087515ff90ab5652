import { mergeConfig } from 'vitest/config';
import { cocokitProject } from '../../vitest.shared.js';

export default mergeConfig(cocokitProject('cocokit-arch-toy'), {
  test: {
    // test/discovery.test.ts imports the built package through an application's node_modules, as
    // Node would; let Vite load it (instead of Node) so its @cocokit/sdk import resolves in the
    // workspace from source like every other import of the tests.
    server: { deps: { inline: [/node_modules\/cocokit-arch-toy\/dist\//] } },
  },
});
