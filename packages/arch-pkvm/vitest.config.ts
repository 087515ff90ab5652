import { cocokitProject } from '../../vitest.shared.js';

export default cocokitProject('@cocokit/arch-pkvm');
