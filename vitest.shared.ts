// Settings every package's vitest project shares: sibling packages resolve from src through the
// @cocokit/source export condition, so no test waits for a build.
import { defineProject } from 'vitest/config';

export function cocokitProject(name: string) {
  return defineProject({
    resolve: { conditions: ['@cocokit/source'] },
    ssr: { resolve: { conditions: ['@cocokit/source'] } },
    test: {
      name,
      include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
      typecheck: { enabled: true, include: ['src/**/*.test-d.ts'], tsconfig: './tsconfig.json' },
    },
  });
}
