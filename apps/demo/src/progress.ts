/**
 * Progress bars (cli-progress) on stderr, shown only on a TTY, never under --json, and only for
 * work that has already taken more than a second — short runs print nothing but their result.
 */
import cliProgress from 'cli-progress';
import type { Progress } from './experiment.js';

/** Options of {@link createProgress}. */
export interface ProgressOptions {
  readonly stream: NodeJS.WriteStream;
  readonly enabled: boolean;
  /** Delay before a bar appears, ms. Default 1000. */
  readonly delayMs?: number;
  /** Clock, ms (tests). */
  readonly now?: () => number;
}

/** A {@link Progress} that draws a bar once the work has run past the delay. */
export function createProgress(o: ProgressOptions): Progress & { readonly shown: number } {
  const now = o.now ?? Date.now;
  const delay = o.delayMs ?? 1000;
  let bar: cliProgress.SingleBar | undefined;
  let label = '';
  let total = 0;
  let value = 0;
  let startedAt = 0;
  let active = false;
  let shown = 0;
  return {
    get shown() {
      return shown;
    },
    start(t, l) {
      bar?.stop();
      bar = undefined;
      [total, label, value, startedAt, active] = [t, l, 0, now(), o.enabled];
    },
    tick(n = 1) {
      if (!active) return;
      value += n;
      if (bar === undefined && now() - startedAt >= delay) {
        bar = new cliProgress.SingleBar(
          { stream: o.stream, format: `${label} [{bar}] {percentage}% | {value}/{total} | {duration_formatted}`, hideCursor: true, clearOnComplete: false },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, value);
        shown++;
      } else {
        bar?.update(value);
      }
    },
    stop() {
      bar?.stop();
      bar = undefined;
      active = false;
    },
  };
}
