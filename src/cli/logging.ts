// The log level of a command: `info`, or per subsystem `info,membership=debug`.
// It reaches the silo and the client the way their default logger reads it,
// as GRANARY_LOG_LEVEL, whichever source (flag, file, variable) gave it.

import { pino } from 'pino';
import { ConfigurationError } from '../errors.ts';
import { defaultLogger, type Logger } from '../observability/logger.ts';
import { mustBe, type Parse } from './options.ts';

const levels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/** `level`, `subsystem=level` or a comma-separated mix with at most one bare level. */
export const logLevel: Parse<string> = (value, where) => {
  const what = `a log level (${levels.join(', ')}) or per subsystem, e.g. 'info,membership=debug'`;
  if (typeof value !== 'string') throw mustBe(where, what, value);
  const parts = value.split(',').map((p) => p.trim());
  let bare = 0;
  for (const p of parts) {
    const m = /^(?:([A-Za-z][A-Za-z0-9_.-]*)=)?([a-z]+)$/.exec(p);
    if (m === null || !(levels as readonly string[]).includes(m[2] as string)) throw mustBe(where, what, value);
    if (m[1] === undefined) bare++;
  }
  if (bare > 1) throw mustBe(where, `${what}, with one level for all at most`, value);
  return parts.join(',');
};

/**
 * Makes `level` (or `fallback` when none was given, `where` naming its
 * source) the level of every default logger of this process, and returns one
 * for the command and the silo. A logger that does not take per-subsystem
 * levels gets the level for all, with a warning saying what was dropped.
 */
export function useLogLevel(
  level: string | undefined,
  fallback: string,
  where = 'GRANARY_LOG_LEVEL',
): { logger: Logger; warning?: string } {
  const wanted = level ?? fallback;
  process.env['GRANARY_LOG_LEVEL'] = wanted;
  try {
    current = defaultLogger();
    return { logger: current };
  } catch (e) {
    // A logger that reads subsystems refuses one it does not know: that is the user's to fix.
    if (e instanceof ConfigurationError) throw new ConfigurationError(`${where}: ${e.message}`);
    const all = wanted.split(',').find((p) => !p.includes('=')) ?? fallback;
    process.env['GRANARY_LOG_LEVEL'] = all;
    current = defaultLogger();
    return {
      logger: current,
      warning: `this version's logger takes no per-subsystem levels: everything logs at ${all} (asked: ${wanted})`,
    };
  }
}

/** The command's logger, once made. */
let current: Logger | undefined;

/** The part of a pino destination (a SonicBoom) that ending it needs. */
interface EndableStream {
  end(): void;
  once(event: 'close', listener: () => void): unknown;
}

/**
 * Writes out what the command's logger still holds, then ends it: call it
 * just before the process exits. pino writes asynchronously, and an exit
 * flushes what is queued at once but not a write under way, so without this
 * the last lines (why the process exits) can come out of order, or not at
 * all. Waits at most `ms`; a logger that is not pino's is left as it is.
 */
export async function flushLogs(ms = 1000): Promise<void> {
  const stream = (current as Record<symbol, unknown> | undefined)?.[pino.symbols.streamSym] as
    Partial<EndableStream> | undefined;
  if (typeof stream?.end !== 'function' || typeof stream.once !== 'function') return;
  const s = stream as EndableStream;
  let timer: NodeJS.Timeout | undefined;
  await new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
    s.once('close', resolve);
    try {
      s.end();
    } catch {
      resolve(); // already ended
    }
  });
  clearTimeout(timer);
}
