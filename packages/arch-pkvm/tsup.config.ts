import { cocokitBuild } from '../../tsup.shared.js';

export default cocokitBuild({ index: 'src/index.ts' });
