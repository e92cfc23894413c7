// The logger Granary writes to: injected, structured (fields first, message
// second, as pino takes them), never global. A silo logs through one child per
// subsystem (`{ subsystem: 'membership' }`), each at a level of its own, set
// by the `logLevels` option or `GRANARY_LOG_LEVEL=info,membership=debug`.

import { pino } from 'pino';
import { ConfigurationError } from '../errors.ts';

type LogFn = (fields: object, message?: string) => void;

/** Any pino-compatible logger. */
export interface Logger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  child(bindings: object): Logger;
}

/** Log levels, from the most verbose; `silent` logs nothing. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/** One of `LOG_LEVELS`. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * The parts of a silo that log through a child logger of their own:
 * `silo` (start and stop), `runtime` (activations, calls, timers, idle
 * collection), `cluster` (remote calls, system calls, the drain), `membership`,
 * `directory`, `transport` (listeners and connections), `reminders`, `streams`,
 * `storage` (storage providers and event logs) and `http` (the health and
 * metrics endpoint).
 */
export const LOG_SUBSYSTEMS = [
  'silo',
  'runtime',
  'cluster',
  'membership',
  'directory',
  'transport',
  'reminders',
  'streams',
  'storage',
  'http',
] as const;

/** One of `LOG_SUBSYSTEMS`. */
export type LogSubsystem = (typeof LOG_SUBSYSTEMS)[number];

/** What `GRANARY_LOG_LEVEL` says: a level for the default logger, and levels of subsystems. */
export interface LogLevelSpec {
  /** The level before the first comma, if any: the default logger's. */
  readonly level: LogLevel | undefined;
  readonly subsystems: Readonly<Partial<Record<LogSubsystem, LogLevel>>>;
}

const levelSet: ReadonlySet<string> = new Set(LOG_LEVELS);
const subsystemSet: ReadonlySet<string> = new Set(LOG_SUBSYSTEMS);

/** Whether `value` is a log level. */
export function isLogLevel(value: unknown): value is LogLevel {
  return typeof value === 'string' && levelSet.has(value);
}

/** Whether `value` names a subsystem. */
export function isLogSubsystem(value: unknown): value is LogSubsystem {
  return typeof value === 'string' && subsystemSet.has(value);
}

/**
 * Reads `info`, `info,membership=debug,transport=warn` or `membership=debug`
 * (where from: `source`, for the error). Throws a ConfigurationError naming
 * the bad part.
 */
export function parseLogLevels(spec: string, source = 'GRANARY_LOG_LEVEL'): LogLevelSpec {
  let level: LogLevel | undefined;
  const subsystems: Partial<Record<LogSubsystem, LogLevel>> = {};
  for (const raw of spec.split(',')) {
    const part = raw.trim();
    if (part === '') continue;
    const eq = part.indexOf('=');
    const name = eq < 0 ? undefined : part.slice(0, eq).trim();
    const value = (eq < 0 ? part : part.slice(eq + 1)).trim().toLowerCase();
    if (!isLogLevel(value))
      throw new ConfigurationError(
        `${source}: '${part}' has no log level; levels: ${LOG_LEVELS.join(', ')} (e.g. info,membership=debug)`,
      );
    if (name === undefined) level = value;
    else if (isLogSubsystem(name)) subsystems[name] = value;
    else
      throw new ConfigurationError(`${source}: '${name}' is not a subsystem; subsystems: ${LOG_SUBSYSTEMS.join(', ')}`);
  }
  return { level, subsystems };
}

/** `GRANARY_LOG_LEVEL` read and checked; empty when it is not set. */
export function envLogLevels(): LogLevelSpec {
  const spec = process.env['GRANARY_LOG_LEVEL'];
  return spec === undefined ? { level: undefined, subsystems: {} } : parseLogLevels(spec);
}

/** The default logger: pino at the level `GRANARY_LOG_LEVEL` names first (default `info`) to stderr. */
export function defaultLogger(): Logger {
  return pino({ name: 'granary', level: envLogLevels().level ?? 'info' }, pino.destination(2));
}

/** A logger that drops everything (tests, benches). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

type ChildWithOptions = (bindings: object, options?: { level?: string }) => Logger;

/**
 * The child of `base` a subsystem logs through: its lines carry
 * `{ subsystem }`, and with `level` it logs at that level. A pino logger takes
 * the level as it is (a subsystem may then log below its parent's level);
 * another logger is filtered, which can only make it quieter.
 */
export function subsystemLogger(base: Logger, subsystem: LogSubsystem, level: LogLevel | undefined): Logger {
  if (level === undefined) return base.child({ subsystem });
  const child = (base.child as ChildWithOptions).call(base, { subsystem }, { level });
  if ((child as { level?: unknown }).level === level) return child;
  return filtered(child, LOG_LEVELS.indexOf(level));
}

const noop: LogFn = () => {};

/** `inner` with the calls below level `min` (an index into LOG_LEVELS) dropped. */
function filtered(inner: Logger, min: number): Logger {
  const at = (name: 'debug' | 'info' | 'warn' | 'error'): LogFn =>
    LOG_LEVELS.indexOf(name) >= min ? inner[name].bind(inner) : noop;
  return {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: (bindings) => filtered(inner.child(bindings), min),
  };
}
