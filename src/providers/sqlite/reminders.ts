// SQLite reminder table: the silos of one host (several processes) share one
// database file (better-sqlite3, WAL, busy timeout). One row per cluster,
// grain and reminder name, indexed by the grain's ring hash; ETags come from a
// counter row bumped in the same BEGIN IMMEDIATE transaction as the upsert.
// The latest tick fired is a column of the row that an upsert clears and a
// recorded tick only moves forward, without a new ETag.

import type Database from 'better-sqlite3';
import { openSqlite, tableColumns, validateFileOptions } from './open.ts';
import { GranaryError, ReminderError } from '../../errors.ts';
import { reminderOfRow, type ReminderRow } from '../sql-rows.ts';
import { alreadyOpen, causeOf, missingColumns, NOT_OPEN, quote, wrapError } from '../shared.ts';
import type { Logger } from '../../observability/logger.ts';
import type { ReminderContext, ReminderEntry, ReminderTable, StoredReminder } from '../../reminders/table.ts';
import { describeReminder, reminderEntryProblem, ringRangeProblem } from '../../reminders/table.ts';

/** Options of `sqliteReminders`. */
export interface SqliteRemindersOptions {
  /**
   * The database file, e.g. `.granary/cluster.db`; its folder is created if
   * missing. Every silo of the host must name the same file. `:memory:`
   * gives a table private to this provider. Required.
   */
  readonly path: string;
  /**
   * Prepended to the table names (letters, digits, `_`), so several
   * clusters or test runs can share one file. Default `granary_`: tables
   * `granary_reminders` and `granary_reminders_etag` (the ETag counter).
   */
  readonly tablePrefix?: string;
  /** How long to wait for a lock held by another connection or process, in ms. Default 5000. */
  readonly busyTimeoutMs?: number;
}

/** Defaults of the optional `SqliteRemindersOptions` fields. */
export const sqliteRemindersDefaults: Readonly<Required<Omit<SqliteRemindersOptions, 'path'>>> = {
  tablePrefix: 'granary_',
  busyTimeoutMs: 5000,
};

/** The columns a reminder table of this provider must have. */
const ROW_COLUMNS = ['cluster_id', 'grain_id', 'name', 'grain_hash', 'start_at', 'period_ms', 'etag'];
/** Added after the first tables were made: added to a table that lacks it, rather than refusing the table. */
const LAST_TICK_COLUMN = 'last_tick_at';
const COUNTER_COLUMNS = ['id', 'last'];

/**
 * A reminder table in an SQLite database file (kind `sqlite`). Creates its
 * tables on `init`; opens the file there, not here.
 */
export function sqliteReminders(options: SqliteRemindersOptions): ReminderTable {
  return new SqliteReminders(validate(options));
}

interface Settings {
  readonly path: string;
  readonly table: string;
  readonly counterTable: string;
  readonly busyTimeoutMs: number;
}

/** A row as read, before it is checked. */
type Row = ReminderRow;

/** Prepared once per open database; each runs as one statement or in its own transaction. */
interface Statements {
  readonly readGrain: (clusterId: string, grainId: string) => Row[];
  readonly read: (clusterId: string, grainId: string, name: string) => Row | undefined;
  readonly readRange: (clusterId: string, begin: number, end: number) => Row[];
  readonly upsert: (clusterId: string, entry: ReminderEntry) => string;
  readonly recordTick: (clusterId: string, grainId: string, name: string, dueAt: number) => void;
  readonly remove: (clusterId: string, grainId: string, name: string, etag: string) => boolean;
  readonly clear: (clusterId: string) => void;
}

class SqliteReminders implements ReminderTable {
  readonly kind = 'sqlite';
  #settings: Settings;
  #clusterId: string | undefined;
  #logger: Logger | undefined;
  #db: Database.Database | undefined;
  #statements: Statements | undefined;

  constructor(settings: Settings) {
    this.#settings = settings;
  }

  // Re-init after close reopens the file, so a restarted silo can reuse the provider.
  async init(ctx: ReminderContext): Promise<void> {
    if (this.#db !== undefined) {
      if (ctx.clusterId === this.#clusterId) return;
      throw this.#error('init', alreadyOpen(this.#clusterId));
    }
    this.#clusterId = ctx.clusterId;
    this.#logger = ctx.logger;
    const { path, table, counterTable, busyTimeoutMs } = this.#settings;
    const db = openSqlite(path, busyTimeoutMs, (err, what) => this.#wrap(err, 'init', what));
    try {
      const schema = this.#createSchema(db);
      if (schema === 'created') ctx.logger.info({ tables: [table, counterTable], path }, 'created reminder tables');
      if (schema === 'upgraded')
        ctx.logger.info({ table, column: LAST_TICK_COLUMN, path }, 'added a column to the reminder table');
      this.#statements = this.#prepare(db);
    } catch (err) {
      db.close();
      throw this.#wrap(err, 'init', `cannot set up tables ${table} and ${counterTable}`);
    }
    this.#db = db;
    ctx.logger.debug({ path, table, counterTable, busyTimeoutMs, clusterId: ctx.clusterId }, 'sqlite reminders opened');
  }

  async readGrain(grainId: string): Promise<StoredReminder[]> {
    const { statements, clusterId } = this.#use('readGrain');
    let rows: Row[];
    try {
      rows = statements.readGrain(clusterId, grainId);
    } catch (err) {
      throw this.#wrap(err, 'readGrain', `grain ${JSON.stringify(grainId)}`);
    }
    return this.#decodeAll(rows);
  }

  async read(grainId: string, name: string): Promise<StoredReminder | undefined> {
    const { statements, clusterId } = this.#use('read');
    let row: Row | undefined;
    try {
      row = statements.read(clusterId, grainId, name);
    } catch (err) {
      throw this.#wrap(err, 'read', describeReminder(grainId, name));
    }
    return row === undefined ? undefined : this.#decode(row);
  }

  async readRange(begin: number, end: number): Promise<StoredReminder[]> {
    const { statements, clusterId } = this.#use('readRange');
    const rangeProblem = ringRangeProblem(begin, end);
    if (rangeProblem !== undefined) throw this.#error('readRange', rangeProblem);
    let rows: Row[];
    try {
      rows = statements.readRange(clusterId, begin, end);
    } catch (err) {
      throw this.#wrap(err, 'readRange', `range (${begin}, ${end}]`);
    }
    return this.#decodeAll(rows);
  }

  async upsert(entry: ReminderEntry): Promise<string> {
    const { statements, clusterId } = this.#use('upsert');
    const problem = reminderEntryProblem(entry);
    if (problem !== undefined)
      throw this.#error('upsert', `${describeReminder(entry.grainId, entry.name)}: ${problem}`);
    try {
      return statements.upsert(clusterId, entry);
    } catch (err) {
      throw this.#wrap(err, 'upsert', describeReminder(entry.grainId, entry.name));
    }
  }

  async recordTick(grainId: string, name: string, dueAt: number): Promise<void> {
    const { statements, clusterId } = this.#use('recordTick');
    if (!Number.isSafeInteger(dueAt))
      throw this.#error(
        'recordTick',
        `${describeReminder(grainId, name)}: dueAt must be a whole number of epoch ms, got ${String(dueAt)}`,
      );
    try {
      statements.recordTick(clusterId, grainId, name, dueAt);
    } catch (err) {
      throw this.#wrap(err, 'recordTick', describeReminder(grainId, name));
    }
  }

  async remove(grainId: string, name: string, etag: string): Promise<boolean> {
    const { statements, clusterId } = this.#use('remove');
    try {
      return statements.remove(clusterId, grainId, name, etag);
    } catch (err) {
      throw this.#wrap(err, 'remove', describeReminder(grainId, name));
    }
  }

  async clear(): Promise<void> {
    const { statements, clusterId } = this.#use('clear');
    try {
      statements.clear(clusterId);
    } catch (err) {
      throw this.#wrap(err, 'clear');
    }
  }

  async close(): Promise<void> {
    const db = this.#db;
    this.#db = undefined;
    this.#statements = undefined;
    if (db === undefined) return;
    try {
      db.close();
    } catch (err) {
      throw this.#wrap(err, 'close');
    }
  }

  /**
   * Creates the tables if missing: `created` if this call created the
   * reminder table, `upgraded` if it added the last_tick_at column to one
   * made before it existed, else `existed`.
   */
  #createSchema(db: Database.Database): 'created' | 'upgraded' | 'existed' {
    const { table, counterTable } = this.#settings;
    // IMMEDIATE: of several processes starting at once, exactly one creates (and logs).
    return db
      .transaction((): 'created' | 'upgraded' | 'existed' => {
        const columns = this.#columns(db, table, ROW_COLUMNS);
        this.#columns(db, counterTable, COUNTER_COLUMNS);
        // Times are epoch ms; grain_hash an unsigned 32-bit ring hash (SQLite
        // integers are 64-bit); etag the counter's value as text, compared as
        // text; last_tick_at the due time of the latest tick recorded, NULL for none.
        db.exec(`CREATE TABLE IF NOT EXISTS ${quote(table)} (
        cluster_id   TEXT    NOT NULL,
        grain_id     TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        grain_hash   INTEGER NOT NULL,
        start_at     INTEGER NOT NULL,
        period_ms    INTEGER NOT NULL,
        etag         TEXT    NOT NULL,
        last_tick_at INTEGER,
        PRIMARY KEY (cluster_id, grain_id, name)
      )`);
        const upgraded = columns !== undefined && !columns.has(LAST_TICK_COLUMN);
        if (upgraded) db.exec(`ALTER TABLE ${quote(table)} ADD COLUMN ${LAST_TICK_COLUMN} INTEGER`);
        db.exec(`CREATE INDEX IF NOT EXISTS ${quote(`${table}_hash`)} ON ${quote(table)} (cluster_id, grain_hash)`);
        // One row: the last ETag issued, for every cluster of the table, so that none is issued twice.
        db.exec(`CREATE TABLE IF NOT EXISTS ${quote(counterTable)} (
        id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
        last INTEGER NOT NULL
      )`);
        db.exec(`INSERT INTO ${quote(counterTable)} (id, last) VALUES (1, 0) ON CONFLICT (id) DO NOTHING`);
        return columns === undefined ? 'created' : upgraded ? 'upgraded' : 'existed';
      })
      .immediate();
  }

  /** The columns of table `name`, undefined if there is none; if there is one, checks it has the columns this provider needs. */
  #columns(db: Database.Database, name: string, columns: readonly string[]): Set<string> | undefined {
    const found = tableColumns(db, name);
    if (found === undefined) return undefined;
    const missing = missingColumns(name, found, columns);
    if (missing !== undefined) throw this.#error('init', missing);
    return found;
  }

  #prepare(db: Database.Database): Statements {
    const t = quote(this.#settings.table);
    const c = quote(this.#settings.counterTable);
    const columns = 'grain_id, name, grain_hash, start_at, period_ms, etag, last_tick_at';
    const selectGrain = db.prepare<[string, string], Row>(
      `SELECT ${columns} FROM ${t} WHERE cluster_id = ? AND grain_id = ?`,
    );
    const selectOne = db.prepare<[string, string, string], Row>(
      `SELECT ${columns} FROM ${t} WHERE cluster_id = ? AND grain_id = ? AND name = ?`,
    );
    const selectInside = db.prepare<[string, number, number], Row>(
      `SELECT ${columns} FROM ${t} WHERE cluster_id = ? AND grain_hash > ? AND grain_hash <= ?`,
    );
    // begin >= end: the range wraps past the top of the ring (begin === end: the whole ring).
    const selectWrapping = db.prepare<[string, number, number], Row>(
      `SELECT ${columns} FROM ${t} WHERE cluster_id = ? AND (grain_hash > ? OR grain_hash <= ?)`,
    );
    const nextEtag = db.prepare<[], { last: number }>(`UPDATE ${c} SET last = last + 1 WHERE id = 1 RETURNING last`);
    // A new registration starts afresh: no tick recorded.
    const upsertRow = db.prepare<[string, string, string, number, number, number, string]>(
      `INSERT INTO ${t} (cluster_id, grain_id, name, grain_hash, start_at, period_ms, etag, last_tick_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)
       ON CONFLICT (cluster_id, grain_id, name) DO UPDATE SET
         grain_hash = excluded.grain_hash, start_at = excluded.start_at, period_ms = excluded.period_ms, etag = excluded.etag,
         last_tick_at = NULL`,
    );
    // One statement, so atomic: moves last_tick_at forward only, and never touches the ETag. A value
    // that is not a whole number of safe size (see decodeReminderRow) counts as none, so a tick mends it.
    const recordTickRow = db.prepare<[number, string, string, string, number]>(
      `UPDATE ${t} SET last_tick_at = ? WHERE cluster_id = ? AND grain_id = ? AND name = ?
       AND NOT (typeof(last_tick_at) = 'integer' AND last_tick_at BETWEEN ${-Number.MAX_SAFE_INTEGER} AND ${Number.MAX_SAFE_INTEGER} AND last_tick_at >= ?)`,
    );
    const deleteRow = db.prepare<[string, string, string, string]>(
      `DELETE FROM ${t} WHERE cluster_id = ? AND grain_id = ? AND name = ? AND etag = ?`,
    );
    const deleteAll = db.prepare<[string]>(`DELETE FROM ${t} WHERE cluster_id = ?`);

    // IMMEDIATE takes the write lock before the counter moves, so the counter
    // and the row change together and no other process can slip in between.
    const upsert = db.transaction((clusterId: string, e: ReminderEntry): string => {
      const counter = nextEtag.get();
      if (counter === undefined) {
        throw this.#error(
          'upsert',
          `${describeReminder(e.grainId, e.name)}: the ETag counter row of table ${this.#settings.counterTable} is missing`,
        );
      }
      const etag = String(counter.last);
      upsertRow.run(clusterId, e.grainId, e.name, e.grainHash, e.startAt, e.periodMs, etag);
      return etag;
    });
    return {
      readGrain: (clusterId, grainId) => selectGrain.all(clusterId, grainId),
      read: (clusterId, grainId, name) => selectOne.get(clusterId, grainId, name),
      readRange: (clusterId, begin, end) => (begin < end ? selectInside : selectWrapping).all(clusterId, begin, end),
      upsert: (clusterId, entry) => upsert.immediate(clusterId, entry),
      recordTick: (clusterId, grainId, name, dueAt) => void recordTickRow.run(dueAt, clusterId, grainId, name, dueAt),
      remove: (clusterId, grainId, name, etag) => deleteRow.run(clusterId, grainId, name, etag).changes === 1,
      clear: (clusterId) => void deleteAll.run(clusterId),
    };
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
    const where = { clusterId: this.#clusterId, path: this.#settings.path, table: this.#settings.table };
    return reminderOfRow(row, where, this.#logger);
  }

  #use(op: string): { statements: Statements; clusterId: string } {
    if (this.#statements === undefined || this.#clusterId === undefined) {
      throw this.#error(op, `the table is ${NOT_OPEN}`);
    }
    return { statements: this.#statements, clusterId: this.#clusterId };
  }

  #error(op: string, problem: string, cause?: unknown): ReminderError {
    return new ReminderError(
      `sqlite reminders (cluster ${JSON.stringify(this.#clusterId)}, file ${this.#settings.path}, table ${this.#settings.table}): ${op} failed: ${problem}`,
      causeOf(cause),
    );
  }

  /** Granary errors pass through; driver errors become a ReminderError that names the operation, cluster and file. */
  #wrap(err: unknown, op: string, what?: string): GranaryError {
    return wrapError(err, what, (problem, cause) => this.#error(op, problem, cause));
  }
}

function validate(options: SqliteRemindersOptions): Settings {
  const { path, tablePrefix, busyTimeoutMs } = validateFileOptions('sqliteReminders', options, sqliteRemindersDefaults);
  return { path, table: `${tablePrefix}reminders`, counterTable: `${tablePrefix}reminders_etag`, busyTimeoutMs };
}
