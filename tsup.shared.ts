// One factory for every package's build, so a later move from tsup (in maintenance) to tsdown
// touches this file only.
import { defineConfig, type Options } from 'tsup';

export function cocokitBuild(entry: Record<string, string>, extra: Partial<Options> = {}) {
  return defineConfig({
    entry,
    format: ['esm'],
    dts: true,
    sourcemap: true,
    clean: true,
    target: 'es2022',
    platform: 'neutral',
    treeshake: true,
    splitting: true,
    ...extra,
  });
}
