/**
 * Parameter schemas the experiments share, so a size reads the same on the command line and in a
 * scenario file: `1GiB`, `1G`, `512MiB`, `4m` or a number of bytes.
 */
import bytes from 'bytes';
import { z } from 'zod';

/** Parses `1GiB` / `1G` / `1gb` / `4096` into bytes (1024-based, as the kernel's sizes are). */
export function parseSize(input: string | number): number {
  if (typeof input === 'number') return input;
  // bytes knows kb/mb/gb/tb; accept the IEC spellings and bare unit letters too.
  const normalized = input.trim().replace(/^(\d+(?:\.\d+)?)\s*([kmgtp])(?:i?b)?$/i, '$1$2b');
  const n = bytes.parse(normalized);
  if (n === null || !Number.isFinite(n)) throw new RangeError(`not a size: ${input}`);
  return n;
}

/** A size in bytes: a page-aligned positive safe integer, given as a number or a string like `1GiB`. */
export const byteSize = z
  .union([z.number(), z.string()])
  .transform((v, ctx) => {
    try {
      return parseSize(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  })
  .pipe(z.number().int().positive().multipleOf(4096, 'must be a multiple of 4 KiB'));

/** A count given as a number or a numeric string (command-line values arrive as strings). */
export const count = z.coerce.number().int().nonnegative();

/** Formats bytes for tables: `1 GiB`, `12.5 MiB`. */
export function formatSize(n: number): string {
  return bytes.format(n, { unitSeparator: ' ', decimalPlaces: 1 })?.replace(/([KMGTP])B$/, '$1iB') ?? String(n);
}
