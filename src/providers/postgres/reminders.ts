// PostgreSQL reminder table: one row per cluster, grain and reminder name,
// indexed by the grain's ring hash, shared by every silo of the cluster
// through a `pg` pool. Every call is one statement; ETags come from a
// sequence, so none is ever issued twice. The latest tick fired is a column of
// the row that an upsert clears and a recorded tick only moves forward,
// without a new ETag.

import type { Pool, PoolClient } from 'pg';
import { GranaryError, ReminderError } from '../../errors.ts';
import type { Logger } from '../../observability/logger.ts';
import type { ReminderContext, ReminderEntry, ReminderTable, StoredReminder } from '../../reminders/table.ts';
import { describeReminder, MAX_RING_HASH, reminderEntryProblem, ringRangeProblem } from '../../reminders/table.ts';
import { reminderOfRow, type ReminderRow } from '../sql-rows.ts';
import { alreadyOpen, causeOf, missingColumns, NOT_OPEN, quote, wrapError } from '../shared.ts';
import {
  createPool,
  tableColumns,
  validateConnectionOptions,
  withTransaction,
  type ConnectionSettings,
} from './common.ts';

/** Options of `postgresReminders`. */
export interface PostgresRemindersOptions {
  /** Where the database is, e.g. `postgres://user:secret@db:5432/granary`. Required. */
  readonly connectionString: string;
  /**
   * Prepended to the names of the table, its index and its ETag sequence
   * (letters, digits, `_`; at most 40 characters), so several clusters or
   * test runs can share one database. Default `granary_`: table
   * `granary_reminders`, index `granary_reminders_hash`, sequence `granary_reminders_etag`.
   */
  readonly tablePrefix?: string;
  /** Most connections the provider's pool opens. Default 4. */
  readonly poolSize?: number;
  /** How long to wait for a connection (a new one, or a free one of the pool), in ms, before a call fails. Default 10 000. */
  readonly connectionTimeoutMs?: number;
  /** How long to wait for the answer to one query, in ms, before a call fails. Default 30 000. */
  readonly queryTimeoutMs?: number;
}

/** Defaults of the optional `PostgresRemindersOptions` fields. */
export const postgresRemindersDefaults: Readonly<Required<Omit<PostgresRemindersOptions, 'connectionString'>>> = {
  tablePrefix: 'granary_',
  poolSize: 4,
  connectionTimeoutMs: 10_000,
  queryTimeoutMs: 30_000,
};

/** The columns a reminder table of this provider must have. */
const ROW_COLUMNS = ['cluster_id', 'grain_id', 'name', 'grain_hash', 'start_at', 'period_ms', 'etag'];
/** Added after the first tables were made: added to a table that lacks it, rather than refusing the table. */
const LAST_TICK_COLUMN = 'last_tick_at';

/**
 * A reminder table in a PostgreSQL database (kind `postgres`). Connects and
 * creates its table on `init`, not here.
 */
export function postgresReminders(options: PostgresRemindersOptions): ReminderTable {
  return new PostgresReminders(validate(options));
}

interface Settings extends ConnectionSettings {
  readonly table: string;
  readonly index: string;
  readonly sequence: string;
}

/** A row as the driver gives it (bigint as text by default, or whatever type parsers the application set), before it is checked. */
type Row = ReminderRow;

/** The SQL of one table, made once per provider. */
interface Queries {
  readonly readGrain: string;
  readonly read: string;
  readonly readInside: string;
  readonly readWrapping: string;
  readonly upsert: string;
  readonly recordTick: string;
  readonly remove: string;
  readonly clear: string;
}

class PostgresReminders implements ReminderTable {
  readonly kind = 'postgres';
  #settings: Settings;
  #queries: Queries;
  #clusterId: string | undefined;
  #logger: Logger | undefined;
  #pool: Pool | undefined;

  constructor(settings: Settings) {
    this.#settings = settings;
    this.#queries = queries(settings);
  }

  // Re-init after close opens a new pool, so a restarted silo can reuse the provider.
  async init(ctx: ReminderContext): Promise<void> {
    if (this.#pool !== undefined) {
      if (ctx.clusterId === this.#clusterId) return;
      throw this.#error('init', alreadyOpen(this.#clusterId));
    }
    this.#clusterId = ctx.clusterId;
    this.#logger = ctx.logger;
    const { safeConnection, table, sequence, poolSize, connectionTimeoutMs, queryTimeoutMs } = this.#settings;
    const pool = createPool(this.#settings, {
      applicationName: 'granary-reminders',
      logger: ctx.logger,
      fields: { clusterId: ctx.clusterId },
      what: 'postgres reminders',
    });
    try {
      const schema = await this.#createSchema(pool);
      if (schema === 'created')
        ctx.logger.info({ table, sequence, database: safeConnection }, 'created reminder table');
      if (schema === 'upgraded')
        ctx.logger.info(
          { table, column: LAST_TICK_COLUMN, database: safeConnection },
          'added a column to the reminder table',
        );
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw this.#wrap(err, 'init', `cannot set up table ${table} and sequence ${sequence}`);
    }
    this.#pool = pool;
    ctx.logger.debug(
      {
        database: safeConnection,
        table,
        sequence,
        poolSize,
        connectionTimeoutMs,
        queryTimeoutMs,
        clusterId: ctx.clusterId,
      },
      'postgres reminders opened',
    );
  }

  async readGrain(grainId: string): Promise<StoredReminder[]> {
    const { pool, clusterId } = this.#use('readGrain');
    return this.#decodeAll(
      await this.#query(pool, 'readGrain', `grain ${JSON.stringify(grainId)}`, this.#queries.readGrain, [
        clusterId,
        grainId,
      ]),
    );
  }

  async read(grainId: string, name: string): Promise<StoredReminder | undefined> {
    const { pool, clusterId } = this.#use('read');
    const rows = await this.#query(pool, 'read', describeReminder(grainId, name), this.#queries.read, [
      clusterId,
      grainId,
      name,
    ]);
    return rows[0] === undefined ? undefined : this.#decode(rows[0]);
  }

  async readRange(begin: number, end: number): Promise<StoredReminder[]> {
    const { pool, clusterId } = this.#use('readRange');
    const rangeProblem = ringRangeProblem(begin, end);
    if (rangeProblem !== undefined) throw this.#error('readRange', rangeProblem);
    // begin >= end: the range wraps past the top of the ring (begin === end: the whole ring).
    const sql = begin < end ? this.#queries.readInside : this.#queries.readWrapping;
    return this.#decodeAll(
      await this.#query(pool, 'readRange', `range (${begin}, ${end}]`, sql, [clusterId, begin, end]),
    );
  }

  async upsert(entry: ReminderEntry): Promise<string> {
    const { pool, clusterId } = this.#use('upsert');
    const what = describeReminder(entry.grainId, entry.name);
    const problem = reminderEntryProblem(entry);
    if (problem !== undefined) throw this.#error('upsert', `${what}: ${problem}`);
    const rows = await this.#query<{ etag: unknown }>(pool, 'upsert', what, this.#queries.upsert, [
      clusterId,
      entry.grainId,
      entry.name,
      entry.grainHash,
      entry.startAt,
      entry.periodMs,
    ]);
    const etag = rows[0]?.etag;
    if (typeof etag !== 'string') throw this.#error('upsert', `${what}: the database returned no ETag`);
    return etag;
  }

  async recordTick(grainId: string, name: string, dueAt: number): Promise<void> {
    const { pool, clusterId } = this.#use('recordTick');
    const what = describeReminder(grainId, name);
    if (!Number.isSafeInteger(dueAt))
      throw this.#error('recordTick', `${what}: dueAt must be a whole number of epoch ms, got ${String(dueAt)}`);
    await this.#query(pool, 'recordTick', what, this.#queries.recordTick, [clusterId, grainId, name, dueAt]);
  }

  async remove(grainId: string, name: string, etag: string): Promise<boolean> {
    const { pool, clusterId } = this.#use('remove');
    const rows = await this.#query(pool, 'remove', describeReminder(grainId, name), this.#queries.remove, [
      clusterId,
      grainId,
      name,
      etag,
    ]);
    return rows.length === 1;
  }

  async clear(): Promise<void> {
    const { pool, clusterId } = this.#use('clear');
    await this.#query(pool, 'clear', undefined, this.#queries.clear, [clusterId]);
  }

  async close(): Promise<void> {
    const pool = this.#pool;
    this.#pool = undefined;
    if (pool === undefined) return;
    try {
      await pool.end();
    } catch (err) {
      throw this.#wrap(err, 'close');
    }
  }

  async #query<R = Row>(
    pool: Pool,
    op: string,
    what: string | undefined,
    sql: string,
    values: unknown[],
  ): Promise<R[]> {
    try {
      return (await pool.query(sql, values)).rows as R[];
    } catch (err) {
      throw this.#wrap(err, op, what);
    }
  }

  /**
   * Creates the table, its index and the ETag sequence (owned by the table)
   * if missing: `created` if this call created the table, `upgraded` if it
   * added the last_tick_at column to one made before it existed, else
   * `existed`. An advisory lock makes concurrent creators (silos starting at
   * once) queue, so exactly one creates (or upgrades) and logs.
   */
  async #createSchema(pool: Pool): Promise<'created' | 'upgraded' | 'existed'> {
    const { table, index, sequence } = this.#settings;
    return withTransaction(pool, async (client) => {
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`granary reminders ${table}`]);
      const columns = await this.#columns(client, table);
      const created = columns === undefined;
      const sequenceExisted =
        ((await client.query<{ oid: unknown }>('SELECT to_regclass($1) AS oid', [quote(sequence)])).rows[0]?.oid ??
          null) !== null;
      await client.query(`CREATE SEQUENCE IF NOT EXISTS ${quote(sequence)} AS bigint`);
      // Times are epoch ms; grain_hash an unsigned 32-bit ring hash; etag the
      // sequence's value as text, compared as text; last_tick_at the due time
      // of the latest tick recorded, NULL for none.
      await client.query(`CREATE TABLE IF NOT EXISTS ${quote(table)} (
        cluster_id   text   NOT NULL,
        grain_id     text   NOT NULL,
        name         text   NOT NULL,
        grain_hash   bigint NOT NULL CHECK (grain_hash BETWEEN 0 AND ${MAX_RING_HASH}),
        start_at     bigint NOT NULL,
        period_ms    bigint NOT NULL,
        etag         text   NOT NULL,
        last_tick_at bigint,
        PRIMARY KEY (cluster_id, grain_id, name)
      )`);
      const upgraded = columns !== undefined && !columns.has(LAST_TICK_COLUMN);
      if (upgraded)
        await client.query(`ALTER TABLE ${quote(table)} ADD COLUMN IF NOT EXISTS ${LAST_TICK_COLUMN} bigint`);
      await client.query(`CREATE INDEX IF NOT EXISTS ${quote(index)} ON ${quote(table)} (cluster_id, grain_hash)`);
      if (!sequenceExisted) {
        // Owned by the table: dropping the table drops the sequence too.
        await client.query(`ALTER SEQUENCE ${quote(sequence)} OWNED BY ${quote(table)}.etag`);
        // The sequence was lost but the rows are not: carry on past their ETags, so none is issued again.
        if (!created) {
          await client.query(
            `SELECT setval($1::regclass, GREATEST((SELECT max(etag::bigint) FROM ${quote(table)} WHERE etag ~ '^[0-9]{1,18}$'), 1))`,
            [quote(sequence)],
          );
        }
      }
      return created ? 'created' : upgraded ? 'upgraded' : 'existed';
    });
  }

  /**
   * The columns of table `name` (as the queries resolve it), undefined if
   * there is none; if there is one, checks it has the columns this provider needs.
   */
  async #columns(client: PoolClient, name: string): Promise<Set<string> | undefined> {
    const columns = await tableColumns(client, name);
    if (columns === undefined) return undefined;
    const have = new Set(columns.keys());
    const missing = missingColumns(name, have, ROW_COLUMNS);
    if (missing !== undefined) throw this.#error('init', missing);
    return have;
  }

  #decodeAll(rows: readonly Row[]): StoredReminder[] {
    const found: StoredReminder[] = [];
    for (const row of rows) {
      const r = this.#decode(row);
      if (r !== undefined) found.push(r);
    }
    return found;
  }

  /** The reminder of a row, or undefined (with a warning naming the row) if the row cannot be read back. */
  #decode(row: Row): StoredReminder | undefined {
    const where = { clusterId: this.#clusterId, database: this.#settings.safeConnection, table: this.#settings.table };
    return reminderOfRow(row, where, this.#logger);
  }

  #use(op: string): { pool: Pool; clusterId: string } {
    if (this.#pool === undefined || this.#clusterId === undefined) {
      throw this.#error(op, `the table is ${NOT_OPEN}`);
    }
    return { pool: this.#pool, clusterId: this.#clusterId };
  }

  #error(op: string, problem: string, cause?: unknown): ReminderError {
    return new ReminderError(
      `postgres reminders (cluster ${JSON.stringify(this.#clusterId)}, ${this.#settings.safeConnection}, table ${this.#settings.table}): ${op} failed: ${problem}`,
      causeOf(cause),
    );
  }

  /** Granary errors pass through; driver errors become a ReminderError that names the operation, cluster and database. */
  #wrap(err: unknown, op: string, what?: string): GranaryError {
    return wrapError(err, what, (problem, cause) => this.#error(op, problem, cause));
  }
}

function queries(settings: Settings): Queries {
  const t = quote(settings.table);
  const columns = 'grain_id, name, grain_hash, start_at, period_ms, etag, last_tick_at';
  return {
    readGrain: `SELECT ${columns} FROM ${t} WHERE cluster_id = $1 AND grain_id = $2`,
    read: `SELECT ${columns} FROM ${t} WHERE cluster_id = $1 AND grain_id = $2 AND name = $3`,
    readInside: `SELECT ${columns} FROM ${t} WHERE cluster_id = $1 AND grain_hash > $2 AND grain_hash <= $3`,
    // Two index range scans rather than one OR, which the planner may not split.
    readWrapping: `SELECT ${columns} FROM ${t} WHERE cluster_id = $1 AND grain_hash > $2
      UNION ALL SELECT ${columns} FROM ${t} WHERE cluster_id = $1 AND grain_hash <= $3`,
    // One statement: concurrent upserts of one reminder queue on its key, and each gets its own value of the sequence.
    // A new registration starts afresh: no tick recorded.
    upsert: `INSERT INTO ${t} (cluster_id, grain_id, name, grain_hash, start_at, period_ms, etag, last_tick_at)
      VALUES ($1, $2, $3, $4, $5, $6, nextval('${quote(settings.sequence)}')::text, NULL)
      ON CONFLICT (cluster_id, grain_id, name) DO UPDATE SET
        grain_hash = excluded.grain_hash, start_at = excluded.start_at, period_ms = excluded.period_ms, etag = excluded.etag,
        last_tick_at = NULL
      RETURNING etag`,
    // One statement, so atomic (concurrent ones queue on the row): moves last_tick_at forward only, and never
    // touches the ETag. A value beyond ±2^53 (see decodeReminderRow) counts as none, so a tick mends it.
    recordTick: `UPDATE ${t} SET last_tick_at = $4 WHERE cluster_id = $1 AND grain_id = $2 AND name = $3
      AND (last_tick_at IS NULL OR last_tick_at < $4 OR last_tick_at NOT BETWEEN ${-Number.MAX_SAFE_INTEGER} AND ${Number.MAX_SAFE_INTEGER})`,
    remove: `DELETE FROM ${t} WHERE cluster_id = $1 AND grain_id = $2 AND name = $3 AND etag = $4 RETURNING 1 AS removed`,
    clear: `DELETE FROM ${t} WHERE cluster_id = $1`,
  };
}

function validate(options: PostgresRemindersOptions): Settings {
  return validateConnectionOptions('postgresReminders', options, postgresRemindersDefaults, (prefix) => ({
    table: `${prefix}reminders`,
    index: `${prefix}reminders_hash`,
    sequence: `${prefix}reminders_etag`,
  }));
}
