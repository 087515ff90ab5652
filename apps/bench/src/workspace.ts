import { existsSync } from 'node:fs';
import path from 'node:path';

/** The directory holding pnpm-workspace.yaml at or above `from` (or `from` itself if none). */
export function workspaceRoot(from: string): string {
  let dir = path.resolve(from);
  for (;;) {
    if (existsSync(path.join(dir, 'pnpm-workspace.yaml'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) return path.resolve(from);
    dir = parent;
  }
}
