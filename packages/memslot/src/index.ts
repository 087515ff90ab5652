/**
 * @cocokit/memslot: KVM memslots with `KVM_SET_USER_MEMORY_REGION2` semantics, gfn lookup, the VM's
 * memory attributes, dirty logs, x86 mixed-attribute huge-page tracking and slot-change
 * notifications.
 */
export {
  Memslots,
  X86_64_TASK_SIZE_MAX,
} from './memslots.js';
export type {
  AttributeRange,
  MemoryAttributesListener,
  MemslotChange,
  MemslotChangeKind,
  MemslotExtensionFlag,
  MemslotListener,
  MemslotsConfig,
} from './memslots.js';
export type { Memslot, MemslotGmem } from './memslot.js';
export type {
  GuestMemfdBindCheck,
  GuestMemfdBinder,
  GuestMemfdBindRequest,
  GuestMemfdBinding,
} from './binder.js';
export { HUGE_LEVELS, pagesPerHugepage } from './lpage.js';
export type { HugeLevel } from './lpage.js';
export { MEMSLOT_COSTS, MEMSLOT_COST_OWNER } from './costs.js';
