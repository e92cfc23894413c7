// Helpers shared by the PostgreSQL provider tests (and the Redis ones, through
// test/providers/redis/support.ts).

import type { Logger } from '../../../src/observability/logger.ts';

/** One call of a `recordingLogger`. */
export interface LogRecord {
  readonly level: string;
  readonly fields: Record<string, unknown>;
  readonly message: string | undefined;
}

/** A logger that appends every call to `records`. */
export function recordingLogger(records: LogRecord[] = []): Logger & { records: LogRecord[] } {
  const at = (level: string) => (fields: object, message?: string): void => {
    records.push({ level, fields: fields as Record<string, unknown>, message });
  };
  const logger = { records, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => logger };
  return logger;
}
