// What the PostgreSQL providers (storage, membership, reminders, event log)
// share: their connection options, their pool, their transactions and the
// check of a table they find already there.

import { DatabaseError, Pool, type PoolClient } from 'pg';
import { ConfigurationError } from '../../errors.ts';
import type { Logger } from '../../observability/logger.ts';
import { asError, missingColumns, quote } from '../shared.ts';

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

/**
 * Runs `body` in BEGIN .. COMMIT on one connection of `pool` and returns what
 * it returns; rolls back instead if `commit` says not to keep it. Failures
 * are thrown as they come (the caller wraps them in its own error).
 *
 * What becomes of the connection after a failure depends on who failed:
 * - the server refused a statement (a DatabaseError that is not FATAL or
 *   PANIC: a unique violation, a serialization failure, a statement
 *   timeout): the connection is fine, so ROLLBACK ends the aborted
 *   transaction and the connection goes back to the pool for reuse;
 * - the connection failed (a socket error, a client-side query time-out, a
 *   FATAL from a backend that is going away): it is released as broken,
 *   which destroys it, and the server rolls the transaction back itself. No
 *   ROLLBACK: after a time-out it would queue behind the unanswered
 *   statement and wait out a time-out of its own;
 * - `body` threw an error of its own (not the database's): broken too. A
 *   statement of the body may still be in flight on the connection, and a
 *   ROLLBACK would queue behind it; a fresh connection costs less than that.
 */
export async function withTransaction<T>(
  pool: Pool,
  body: (client: PoolClient) => Promise<T>,
  commit: (result: T) => boolean = () => true,
): Promise<T> {
  const client = await pool.connect();
  // While checked out, a connection error is emitted on the client, not the pool;
  // without a listener it would crash the process.
  let lost: unknown;
  const onError = (err: unknown): void => {
    lost ??= err;
  };
  client.on('error', onError);
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const result = await body(client);
    await client.query(commit(result) ? 'COMMIT' : 'ROLLBACK');
    return result;
  } catch (err) {
    broken = lost === undefined && isRefusal(err) ? await rollback(client) : asError(lost ?? err);
    throw err;
  } finally {
    client.off('error', onError);
    client.release(broken ?? (lost === undefined ? undefined : asError(lost)));
  }
}

/** Whether `err` is the server refusing a statement on a connection that stays usable. */
function isRefusal(err: unknown): boolean {
  return err instanceof DatabaseError && err.severity !== 'FATAL' && err.severity !== 'PANIC';
}

/** Ends an aborted transaction; the error to release the connection with if that fails too, else undefined. */
async function rollback(client: PoolClient): Promise<Error | undefined> {
  try {
    await client.query('ROLLBACK');
    return undefined;
  } catch (err) {
    return asError(err);
  }
}

/**
 * The columns of table `name` (as the queries resolve it, search path and
 * all) with their types; undefined if there is no such table.
 */
export async function tableColumns(client: PoolClient, name: string): Promise<Map<string, string> | undefined> {
  const found = await client.query<{ attname: string | null; type: string | null }>(
    `SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type FROM (SELECT to_regclass($1) AS oid) t
     LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE t.oid IS NOT NULL`,
    [quote(name)],
  );
  if (found.rows.length === 0) return undefined;
  const columns = new Map<string, string>();
  for (const r of found.rows) if (r.attname !== null) columns.set(r.attname, r.type ?? '');
  return columns;
}

/**
 * Whether table `name` exists; if it does, checks it has the `required`
 * columns, throwing what `fail` makes of the problem if not.
 */
export async function checkTable(
  client: PoolClient,
  name: string,
  required: readonly string[],
  fail: (problem: string) => Error,
): Promise<boolean> {
  const columns = await tableColumns(client, name);
  if (columns === undefined) return false;
  const problem = missingColumns(name, new Set(columns.keys()), required);
  if (problem !== undefined) throw fail(problem);
  return true;
}
