/**
 * The guest layout the cross-package boot scenarios share (seed 000's boot): RAM, OVMF's DMA
 * pages flipped alternately, and the OS's working set, 2 MiB aligned, accepted in 2 MiB chunks on
 * first use with one write per page.
 */
export const MiB = 2 ** 20;
export const PAGE = 4096;
export const RAM = 16 * MiB;
export const DMA_GPA = 0x10_0000;
export const DMA_PAGES = 2;
export const TRANSFERS = 8;
export const WS_GPA = 4 * MiB;
export const WS_SIZE = 8 * MiB;
export const WS_PAGES = WS_SIZE / PAGE;
export const ACCEPT_CHUNK = 2 * MiB;
