import { cocokitBuild } from '../../tsup.shared.js';

export default cocokitBuild({
  index: 'src/index.ts',
  testing: 'src/testing/index.ts',
  node: 'src/node/index.ts',
});
