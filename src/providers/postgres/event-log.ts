// PostgreSQL event log: the events of journaled grains, one row per event, and
// their latest snapshots, shared by every silo of a cluster through a `pg`
// pool. An append checks the stream's version and inserts its rows in one
// transaction; the primary key holds the version, so of concurrent appends at
// one version exactly one commits (the others hit the key and roll back).

import type { Pool, PoolClient } from 'pg';
import { ErrorCodes, GranaryError, InconsistentStateError, StorageError } from '../../errors.ts';
import {
  checkRange,
  checkVersion,
  describeStream,
  LOG_FORMAT_VERSION,
  type LogSnapshot,
  type EventLog,
  type LogAddress,
  type LoggedEvent,
  type StoredLog,
} from '../../journal/log.ts';
import type { ProviderContext } from '../../storage/provider.ts';
import { causeOf, NOT_OPEN, quote, wrapError } from '../shared.ts';
import { logRowOf } from '../sql-rows.ts';
import {
  checkTable,
  createPool,
  validateConnectionOptions,
  withTransaction,
  type ConnectionSettings,
} from './common.ts';

/** Options of `postgresEventLog`. */
export interface PostgresEventLogOptions {
  /** Where the database is, e.g. `postgres://user:secret@db:5432/granary`. Required. */
  readonly connectionString: string;
  /**
   * Prepended to the table names (letters, digits, `_`; at most 40
   * characters), so several clusters or test runs can share one database.
   * Default `granary_`: tables `granary_events` and `granary_event_snapshots`.
   */
  readonly tablePrefix?: string;
  /** Most connections the log's pool opens. Default 10. */
  readonly poolSize?: number;
  /** How long to wait for a connection (a new one, or a free one of the pool), in ms, before a call fails. Default 5 000. */
  readonly connectionTimeoutMs?: number;
  /** How long one statement may take, in ms, before it fails. Default 10 000: below a grain call's default deadline. */
  readonly queryTimeoutMs?: number;
}

/** Defaults of the optional `PostgresEventLogOptions` fields. */
export const postgresEventLogDefaults: Readonly<Required<Omit<PostgresEventLogOptions, 'connectionString'>>> = {
  tablePrefix: 'granary_',
  poolSize: 10,
  connectionTimeoutMs: 5_000,
  queryTimeoutMs: 10_000,
};

const EVENT_COLUMNS = ['grain_type', 'grain_key', 'log_name', 'version', 'payload', 'format_version', 'created_at'];
const SNAPSHOT_COLUMNS = ['grain_type', 'grain_key', 'log_name', 'version', 'payload', 'format_version', 'updated_at'];

/** A UTF-16 surrogate that is not half of a pair: UTF-8 (and so PostgreSQL text) has no way to say it. */
const UNPAIRED_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** SQLSTATE of a unique violation: another append took the version first. */
const UNIQUE_VIOLATION = '23505';

/**
 * An event log on a PostgreSQL database (kind `postgres`). Connects and
 * creates its tables on `init`, not here.
 */
export function postgresEventLog(options: PostgresEventLogOptions): EventLog {
  return new PostgresEventLog(validate(options));
}

interface Settings extends ConnectionSettings {
  readonly events: string;
  readonly snapshots: string;
}

interface Row {
  /** True for the snapshot row of `read`. */
  readonly snapshot?: boolean;
  readonly version: unknown;
  readonly payload: unknown;
  readonly format_version: unknown;
}

/** The SQL of one table pair, made once per log. */
interface Queries {
  readonly read: string;
  readonly range: string;
  readonly last: string;
  readonly append: string;
  readonly snapshot: string;
}

class PostgresEventLog implements EventLog {
  readonly kind = 'postgres';
  #settings: Settings;
  #queries: Queries;
  #name = '(not initialised)';
  #pool: Pool | undefined;
  #serializer: ProviderContext['serializer'] | undefined;

  constructor(settings: Settings) {
    this.#settings = settings;
    this.#queries = queries(settings);
  }

  // Re-init after close opens a new pool, so a restarted silo can reuse the log.
  async init(ctx: ProviderContext): Promise<void> {
    if (this.#pool !== undefined) return;
    this.#name = ctx.name;
    this.#serializer = ctx.serializer;
    const { safeConnection, events, snapshots, poolSize, connectionTimeoutMs, queryTimeoutMs } = this.#settings;
    const pool = createPool(this.#settings, {
      applicationName: 'granary-event-log',
      logger: ctx.logger,
      fields: { events },
      what: 'postgres event log',
    });
    try {
      if (await this.#createSchema(pool))
        ctx.logger.info({ tables: [events, snapshots], database: safeConnection }, 'created event log tables');
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw this.#wrap(err, `cannot set up tables ${events} and ${snapshots}`);
    }
    this.#pool = pool;
    ctx.logger.debug(
      { database: safeConnection, events, snapshots, poolSize, connectionTimeoutMs, queryTimeoutMs },
      'postgres event log opened',
    );
  }

  async read(stream: LogAddress): Promise<StoredLog> {
    const { pool, serializer } = this.#use(stream);
    let rows: Row[];
    try {
      // One statement: the snapshot and the events after it come from one snapshot of the database.
      rows = (await pool.query<Row>(this.#queries.read, key(stream))).rows;
    } catch (err) {
      throw this.#wrap(err, `read of ${describeStream(stream)} failed`);
    }
    const first = rows[0];
    const events: LoggedEvent[] = [];
    for (const r of rows) if (r.snapshot !== true) events.push(this.#decodeEvent(stream, r, serializer));
    if (first?.snapshot !== true) return { events, version: events.at(-1)?.version ?? 0 };
    const snapshot = this.#decodeSnapshot(stream, first, serializer);
    return { snapshot, events, version: events.at(-1)?.version ?? snapshot.version };
  }

  async append(stream: LogAddress, events: readonly unknown[], expectedVersion: number): Promise<number> {
    checkVersion('append: expectedVersion', expectedVersion);
    const { pool, serializer } = this.#use(stream);
    // Outside the transaction: a value that cannot be serialized is the caller's error, not the store's.
    const payloads = events.map((e) => toBuffer(serializer.encode(e)));
    const versions = payloads.map((_, i) => expectedVersion + 1 + i);
    const refused = (found: string): InconsistentStateError =>
      new InconsistentStateError(
        `append to ${describeStream(stream)} in postgres event log '${this.#name}' refused: expected version ${expectedVersion}, found ${found}`,
      );
    let found: number | undefined;
    const ok = await this.#transaction(
      pool,
      `append to ${describeStream(stream)}`,
      async (client) => {
        found = parseCount((await client.query<{ last: unknown }>(this.#queries.last, key(stream))).rows[0]?.last);
        if (found !== expectedVersion) return false;
        if (payloads.length > 0) await client.query(this.#queries.append, [...key(stream), versions, payloads]);
        return true;
      },
      (err) =>
        isUniqueViolation(err)
          ? refused(`a later one (another append took version ${expectedVersion + 1} first)`)
          : undefined,
    );
    if (!ok) throw refused(String(found));
    return expectedVersion + payloads.length;
  }

  async writeSnapshot(stream: LogAddress, version: number, state: unknown): Promise<void> {
    checkVersion('writeSnapshot: version', version, 1);
    const { pool, serializer } = this.#use(stream);
    const payload = toBuffer(serializer.encode(state));
    let rows: { written: boolean; last: unknown }[];
    try {
      rows = (
        await pool.query<{ written: boolean; last: unknown }>(this.#queries.snapshot, [
          ...key(stream),
          version,
          payload,
        ])
      ).rows;
    } catch (err) {
      throw this.#wrap(err, `snapshot of ${describeStream(stream)} failed`);
    }
    const r = rows[0];
    if (r !== undefined && !r.written) {
      throw new InconsistentStateError(
        `snapshot of ${describeStream(stream)} at version ${version} in postgres event log '${this.#name}' refused: the stream is at version ${String(parseCount(r.last))}`,
      );
    }
  }

  async readEvents(stream: LogAddress, from: number, to: number): Promise<LoggedEvent[]> {
    checkRange(from, to);
    const { pool, serializer } = this.#use(stream);
    let rows: Row[];
    try {
      rows = (await pool.query<Row>(this.#queries.range, [...key(stream), from, to])).rows;
    } catch (err) {
      throw this.#wrap(err, `read of events ${from + 1} to ${to} of ${describeStream(stream)} failed`);
    }
    return rows.map((r) => this.#decodeEvent(stream, r, serializer));
  }

  async close(): Promise<void> {
    const pool = this.#pool;
    this.#pool = undefined;
    if (pool === undefined) return;
    try {
      await pool.end();
    } catch (err) {
      throw this.#wrap(err, 'close failed');
    }
  }

  /**
   * Runs `body` in one transaction; rolls back if it returns false or throws.
   * `refine` may turn a driver error into the error to throw.
   */
  async #transaction(
    pool: Pool,
    what: string,
    body: (client: PoolClient) => Promise<boolean>,
    refine?: (err: unknown) => Error | undefined,
  ): Promise<boolean> {
    try {
      return await withTransaction(pool, body, (ok) => ok);
    } catch (err) {
      throw refine?.(err) ?? this.#wrap(err, `${what} failed`);
    }
  }

  /**
   * Creates the tables if missing; true if this call created the events
   * table. An advisory lock makes concurrent creators (silos starting at
   * once) queue, so exactly one creates and logs.
   */
  async #createSchema(pool: Pool): Promise<boolean> {
    const { events, snapshots } = this.#settings;
    let created = false;
    await this.#transaction(pool, 'init', async (client) => {
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`granary event log ${events}`]);
      created = !(await this.#exists(client, events, EVENT_COLUMNS));
      await this.#exists(client, snapshots, SNAPSHOT_COLUMNS);
      await client.query(`CREATE TABLE IF NOT EXISTS ${quote(events)} (
        grain_type     text        NOT NULL,
        grain_key      text        NOT NULL,
        log_name       text        NOT NULL,
        version        bigint      NOT NULL CHECK (version >= 1),
        payload        bytea       NOT NULL,
        format_version integer     NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (grain_type, grain_key, log_name, version)
      )`);
      await client.query(`CREATE TABLE IF NOT EXISTS ${quote(snapshots)} (
        grain_type     text        NOT NULL,
        grain_key      text        NOT NULL,
        log_name       text        NOT NULL,
        version        bigint      NOT NULL CHECK (version >= 1),
        payload        bytea       NOT NULL,
        format_version integer     NOT NULL,
        updated_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (grain_type, grain_key, log_name)
      )`);
      return true;
    });
    return created;
  }

  /** Whether `name` exists (as the queries resolve it); if it does, that it has the columns this log needs. */
  async #exists(client: PoolClient, name: string, columns: readonly string[]): Promise<boolean> {
    return checkTable(client, name, columns, (problem) => this.#error(problem));
  }

  #use(stream: LogAddress): { pool: Pool; serializer: ProviderContext['serializer'] } {
    if (this.#pool === undefined || this.#serializer === undefined) {
      throw this.#error(`${NOT_OPEN}: cannot access ${describeStream(stream)}`);
    }
    if (
      stream.grainType.includes('\u0000') ||
      stream.grainKey.includes('\u0000') ||
      stream.logName.includes('\u0000')
    ) {
      throw new StorageError(
        `postgres event log '${this.#name}' cannot hold ${JSON.stringify(describeStream(stream))}: PostgreSQL text cannot contain the NUL character (\\u0000)`,
      );
    }
    // The driver sends an unpaired surrogate as U+FFFD: 'a\uD800' and 'a\uDC00' would be one stream, shared by two grains.
    if (
      UNPAIRED_SURROGATE.test(stream.grainType) ||
      UNPAIRED_SURROGATE.test(stream.grainKey) ||
      UNPAIRED_SURROGATE.test(stream.logName)
    ) {
      throw new StorageError(
        `postgres event log '${this.#name}' cannot hold ${JSON.stringify(describeStream(stream))}: PostgreSQL text cannot contain an unpaired UTF-16 surrogate ` +
          `(it would be stored as U+FFFD, the same for every such name)`,
      );
    }
    return { pool: this.#pool, serializer: this.#serializer };
  }

  #decodeEvent(stream: LogAddress, row: Row, serializer: ProviderContext['serializer']): LoggedEvent {
    const { version, value } = this.#decodeRow(stream, row, serializer, 'event', this.#settings.events);
    return { version, event: value };
  }

  #decodeSnapshot(stream: LogAddress, row: Row, serializer: ProviderContext['serializer']): LogSnapshot {
    const { version, value } = this.#decodeRow(stream, row, serializer, 'snapshot', this.#settings.snapshots);
    return { version, state: value };
  }

  #decodeRow(
    stream: LogAddress,
    row: Row,
    serializer: ProviderContext['serializer'],
    what: 'event' | 'snapshot',
    table: string,
  ): { version: number; value: unknown } {
    return logRowOf(row, stream, what, {
      serializer,
      payloadType: 'bytea',
      provider: `postgres event log '${this.#name}'`,
      table,
      place: this.#settings.safeConnection,
    });
  }

  #error(problem: string, cause?: unknown): StorageError {
    return new StorageError(
      `postgres event log '${this.#name}' (${this.#settings.safeConnection}): ${problem}`,
      ErrorCodes.Storage,
      causeOf(cause),
    );
  }

  /** Granary errors pass through; driver errors become a StorageError that names the log and database. */
  #wrap(err: unknown, what: string): GranaryError {
    return wrapError(err, what, (problem, cause) => this.#error(problem, cause));
  }
}

function queries(settings: Settings): Queries {
  const e = quote(settings.events);
  const s = quote(settings.snapshots);
  const where = 'grain_type = $1 AND grain_key = $2 AND log_name = $3';
  return {
    read: `WITH snap AS (SELECT version, payload, format_version FROM ${s} WHERE ${where})
      SELECT true AS snapshot, version, payload, format_version FROM snap
      UNION ALL
      SELECT false, version, payload, format_version FROM ${e}
        WHERE ${where} AND version > COALESCE((SELECT version FROM snap), 0)
      ORDER BY 1 DESC, 2`,
    range: `SELECT version, payload, format_version FROM ${e} WHERE ${where} AND version > $4 AND version <= $5 ORDER BY version`,
    last: `SELECT COALESCE(MAX(version), 0) AS last FROM ${e} WHERE ${where}`,
    append: `INSERT INTO ${e} (grain_type, grain_key, log_name, version, payload, format_version)
      SELECT $1, $2, $3, v, p, ${LOG_FORMAT_VERSION} FROM unnest($4::bigint[], $5::bytea[]) AS u(v, p)`,
    // Written only if the version is an event of the stream, and only over an older snapshot.
    // Says whether the version exists, and the stream's version, in one statement.
    snapshot: `WITH ev AS (SELECT EXISTS (SELECT 1 FROM ${e} WHERE ${where} AND version = $4) AS present),
      up AS (
        INSERT INTO ${s} (grain_type, grain_key, log_name, version, payload, format_version)
        SELECT $1, $2, $3, $4, $5, ${LOG_FORMAT_VERSION} FROM ev WHERE ev.present
        ON CONFLICT (grain_type, grain_key, log_name) DO UPDATE
        SET version = excluded.version, payload = excluded.payload, format_version = excluded.format_version, updated_at = now()
        WHERE ${s}.version < excluded.version
        RETURNING 1
      )
      SELECT ev.present AS written, (SELECT COALESCE(MAX(version), 0) FROM ${e} WHERE ${where}) AS last FROM ev`,
  };
}

function parseCount(v: unknown): number {
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : NaN;
}

function isUniqueViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === UNIQUE_VIOLATION;
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function validate(options: PostgresEventLogOptions): Settings {
  return validateConnectionOptions('postgresEventLog', options, postgresEventLogDefaults, (prefix) => ({
    events: `${prefix}events`,
    snapshots: `${prefix}event_snapshots`,
  }));
}

function key(stream: LogAddress): [string, string, string] {
  return [stream.grainType, stream.grainKey, stream.logName];
}
