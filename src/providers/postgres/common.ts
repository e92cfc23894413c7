// What the PostgreSQL providers (storage, membership, reminders, event log)
// share: their connection options, their pool, and small helpers.

import { Pool } from 'pg';
import { ConfigurationError } from '../../errors.ts';
import type { Logger } from '../../observability/logger.ts';

/** The connection options every PostgreSQL provider takes. */
export interface ConnectionOptions {
  readonly connectionString: string;
  readonly tablePrefix?: string;
  readonly poolSize?: number;
  readonly connectionTimeoutMs?: number;
  readonly queryTimeoutMs?: number;
}

/** A provider's defaults of the optional connection options. */
export type ConnectionDefaults = Readonly<Required<Omit<ConnectionOptions, 'connectionString'>>>;

/** The checked connection options. */
export interface ConnectionSettings {
  readonly connectionString: string;
  /** The connection string with any password replaced, for messages and logs. */
  readonly safeConnection: string;
  readonly poolSize: number;
  readonly connectionTimeoutMs: number;
  readonly queryTimeoutMs: number;
}

/**
 * Checks the connection options of provider function `fn` (named in the
 * messages), filling in `defaults`. `more` gets the table prefix, once it is
 * checked and before the pool options are, and returns the provider's own
 * settings (its table names, and any option of its own it checks).
 */
export function validateConnectionOptions<More extends object>(
  fn: string,
  options: ConnectionOptions,
  defaults: ConnectionDefaults,
  more: (tablePrefix: string) => More,
): ConnectionSettings & More {
  const { connectionString } = options;
  if (typeof connectionString !== 'string' || connectionString === '') {
    throw new ConfigurationError(
      `${fn}: option connectionString must be a PostgreSQL connection string such as postgres://user@host:5432/db, got ${JSON.stringify(connectionString)}`,
    );
  }
  const tablePrefix = options.tablePrefix ?? defaults.tablePrefix;
  if (typeof tablePrefix !== 'string' || !/^[A-Za-z0-9_]{0,40}$/.test(tablePrefix)) {
    throw new ConfigurationError(
      `${fn}: option tablePrefix may hold only letters, digits and '_', at most 40 of them, got ${JSON.stringify(tablePrefix)}`,
    );
  }
  const own = more(tablePrefix);
  const poolSize = options.poolSize ?? defaults.poolSize;
  if (!Number.isSafeInteger(poolSize) || poolSize < 1) {
    throw new ConfigurationError(
      `${fn}: option poolSize must be a whole number of connections, 1 or more, got ${poolSize}`,
    );
  }
  const connectionTimeoutMs = options.connectionTimeoutMs ?? defaults.connectionTimeoutMs;
  const queryTimeoutMs = options.queryTimeoutMs ?? defaults.queryTimeoutMs;
  for (const [name, value] of [
    ['connectionTimeoutMs', connectionTimeoutMs],
    ['queryTimeoutMs', queryTimeoutMs],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 1 || value > 0x7fffffff) {
      throw new ConfigurationError(
        `${fn}: option ${name} must be a whole number of ms from 1 to 2147483647, got ${value}`,
      );
    }
  }
  return {
    connectionString,
    safeConnection: redact(connectionString),
    ...own,
    poolSize,
    connectionTimeoutMs,
    queryTimeoutMs,
  };
}

/** How a provider's pool is named on the server and says that an idle connection failed. */
export interface PoolLabel {
  /** The `application_name` the server shows, unless the connection string sets one. */
  readonly applicationName: string;
  readonly logger: Logger;
  /** Logged with the failure, after `database`. */
  readonly fields: Readonly<Record<string, unknown>>;
  /** Starts the log message, e.g. `postgres storage`. */
  readonly what: string;
}

/** A pool for `settings`. */
export function createPool(settings: ConnectionSettings, label: PoolLabel): Pool {
  const { connectionString, safeConnection, poolSize, connectionTimeoutMs, queryTimeoutMs } = settings;
  const pool = new Pool({
    connectionString,
    max: poolSize,
    connectionTimeoutMillis: connectionTimeoutMs,
    // The server cancels a statement that runs too long (a lock held elsewhere);
    // the client gives up on an answer that does not come (the pool then drops
    // that connection); keep-alive notices a peer that vanished without a word.
    statement_timeout: queryTimeoutMs,
    query_timeout: queryTimeoutMs,
    keepAlive: true,
    fallback_application_name: label.applicationName,
  });
  // An idle connection that fails (the server restarts or goes away) is
  // dropped and replaced by the pool; without a listener it would crash the process.
  pool.on('error', (err) => {
    label.logger.warn(
      { err, database: safeConnection, ...label.fields },
      `${label.what}: an idle connection failed; the pool replaces it`,
    );
  });
  return pool;
}

/** The connection string without its password, for messages and logs. */
export function redact(connectionString: string): string {
  try {
    const url = new URL(connectionString);
    if (url.password !== '') url.password = '***';
    url.searchParams.forEach((_, key) => {
      if (/pass/i.test(key)) url.searchParams.set(key, '***');
    });
    return url.toString();
  } catch {
    // key=value form
    return connectionString.replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/gi, '$1***');
  }
}

export function quote(identifier: string): string {
  return `"${identifier}"`;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
