// The logger Granary writes to: injected, structured (fields first, message
// second, as pino takes them), never global.

import { pino } from 'pino';

type LogFn = (fields: object, message?: string) => void;

/** Any pino-compatible logger. */
export interface Logger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  child(bindings: object): Logger;
}

/** The default logger: pino at `GRANARY_LOG_LEVEL` (default `info`) to stderr. */
export function defaultLogger(): Logger {
  return pino({ name: 'granary', level: process.env['GRANARY_LOG_LEVEL'] ?? 'info' }, pino.destination(2));
}

/** A logger that drops everything (tests, benches). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
