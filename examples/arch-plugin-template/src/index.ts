/**
 * cocokit-arch-toy: a template third-party arch plugin for cocokit. The default export is the
 * plugin; the rest is for VMMs, guest programs and tests that use the toy arch directly.
 */
export { default } from './plugin.js';
export { TOY_ACCEPT_NPF_LIMIT, TOY_UNACCEPTED_VECTOR, createToyGuestKernel, createToyVm } from './vm.js';
export { TOY_COSTS, TOY_COST_OWNER } from './costs.js';
export type { ToyAcceptResult, ToyArchVm, ToyGuestApi, ToyVmApi } from './api.js';
