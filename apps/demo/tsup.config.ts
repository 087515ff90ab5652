import { cocokitBuild } from '../../tsup.shared.js';

// The CLI runs on Node: platform node so the bin keeps its shebang and node: imports resolve.
export default cocokitBuild({ index: 'src/index.ts', main: 'src/main.ts' }, { platform: 'node' });
