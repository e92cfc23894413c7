// SQLite event log: the events of journaled grains, one row per event, and
// their latest snapshots, in one database file (better-sqlite3), safe for
// several processes on one host to share (WAL, busy timeout). The version
// check and the rows of an append are one IMMEDIATE transaction, and the
// primary key holds the version, so an event version is never written twice.

import type Database from 'better-sqlite3';
import { checkTable, openSqlite, validateFileOptions } from './open.ts';
import { ErrorCodes, GranaryError, InconsistentStateError, StorageError } from '../../errors.ts';
import { causeOf, NOT_OPEN, quote, wrapError } from '../shared.ts';
import { logRowOf } from '../sql-rows.ts';
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

/** Options of `sqliteEventLog`. */
export interface SqliteEventLogOptions {
  /**
   * The database file, e.g. `.granary/events.db` (it may be the file of
   * `sqliteStorage`); its folder is created if missing. `:memory:` gives a
   * database private to this log. Required.
   */
  readonly path: string;
  /**
   * Prepended to the table names (letters, digits, `_`), so several clusters
   * or test runs can share one file. Default `granary_`: tables
   * `granary_events` and `granary_event_snapshots`.
   */
  readonly tablePrefix?: string;
  /** How long to wait for a lock held by another connection or process, in ms. Default 5000. */
  readonly busyTimeoutMs?: number;
}

/** Defaults of the optional `SqliteEventLogOptions` fields. */
export const sqliteEventLogDefaults: Readonly<Required<Omit<SqliteEventLogOptions, 'path'>>> = {
  tablePrefix: 'granary_',
  busyTimeoutMs: 5000,
};

const EVENT_COLUMNS = ['grain_type', 'grain_key', 'log_name', 'version', 'payload', 'format_version', 'created_at'];
const SNAPSHOT_COLUMNS = ['grain_type', 'grain_key', 'log_name', 'version', 'payload', 'format_version', 'updated_at'];

/**
 * An event log on an SQLite database file (kind `sqlite`). Creates its tables
 * on `init`; opens the file there, not here.
 */
export function sqliteEventLog(options: SqliteEventLogOptions): EventLog {
  return new SqliteEventLog(validate(options));
}

/**
 * The open connection of a log made by `sqliteEventLog`, or undefined if it
 * is not open. Only for tests that need to reach into the tables (e.g. to
 * plant a corrupt row in a `:memory:` database); not part of the public API.
 */
export function sqliteEventLogDatabaseForTests(log: EventLog): Database.Database | undefined {
  return log instanceof SqliteEventLog ? log.databaseForTests : undefined;
}

interface Settings {
  readonly path: string;
  readonly events: string;
  readonly snapshots: string;
  readonly busyTimeoutMs: number;
}

interface Row {
  readonly version: unknown;
  readonly payload: unknown;
  readonly format_version: unknown;
}

type Key = [grainType: string, grainKey: string, logName: string];

/** Prepared once per open database. */
interface Statements {
  /** The snapshot and the rows after it, read in one transaction. */
  readonly read: (key: Key) => { snapshot: Row | undefined; events: Row[] };
  readonly range: Database.Statement<[...Key, number, number], Row>;
  /** Appends under the version rule; the new version, or the version found instead. */
  readonly append: (
    key: Key,
    payloads: readonly Uint8Array[],
    expected: number,
  ) => { ok: true; version: number } | { ok: false; found: number };
  /** Keeps a snapshot unless a newer one is kept; false (with the version found) for a version past the end of the stream. */
  readonly snapshot: (key: Key, version: number, payload: Uint8Array) => { ok: true } | { ok: false; found: number };
}

class SqliteEventLog implements EventLog {
  readonly kind = 'sqlite';
  #settings: Settings;
  #name = '(not initialised)';
  #db: Database.Database | undefined;
  #statements: Statements | undefined;
  #serializer: ProviderContext['serializer'] | undefined;

  constructor(settings: Settings) {
    this.#settings = settings;
  }

  get databaseForTests(): Database.Database | undefined {
    return this.#db;
  }

  // Re-init after close reopens the file, so a restarted silo can reuse the log.
  async init(ctx: ProviderContext): Promise<void> {
    if (this.#db !== undefined) return;
    this.#name = ctx.name;
    this.#serializer = ctx.serializer;
    const { path, events, snapshots } = this.#settings;
    const db = this.#open();
    try {
      if (this.#createSchema(db)) ctx.logger.info({ tables: [events, snapshots], path }, 'created event log tables');
      this.#statements = this.#prepare(db);
    } catch (err) {
      db.close();
      throw this.#wrap(err, `cannot set up tables ${events} and ${snapshots}`);
    }
    this.#db = db;
    ctx.logger.debug(
      { path, events, snapshots, busyTimeoutMs: this.#settings.busyTimeoutMs },
      'sqlite event log opened',
    );
  }

  async read(stream: LogAddress): Promise<StoredLog> {
    const { statements, serializer } = this.#use(stream);
    let rows: { snapshot: Row | undefined; events: Row[] };
    try {
      rows = statements.read(key(stream));
    } catch (err) {
      throw this.#wrap(err, `read of ${describeStream(stream)} failed`);
    }
    const events = rows.events.map((r) => this.#decodeEvent(stream, r, serializer));
    const snapshotRow = rows.snapshot;
    if (snapshotRow === undefined) return { events, version: events.at(-1)?.version ?? 0 };
    const snapshot = this.#decodeSnapshot(stream, snapshotRow, serializer);
    return { snapshot, events, version: events.at(-1)?.version ?? snapshot.version };
  }

  async append(stream: LogAddress, events: readonly unknown[], expectedVersion: number): Promise<number> {
    checkVersion('append: expectedVersion', expectedVersion);
    const { statements, serializer } = this.#use(stream);
    // Outside the try: a value that cannot be serialized is the caller's error, not the store's.
    const payloads = events.map((e) => serializer.encode(e));
    let result;
    try {
      result = statements.append(key(stream), payloads, expectedVersion);
    } catch (err) {
      throw this.#wrap(err, `append to ${describeStream(stream)} failed`);
    }
    if (!result.ok) {
      throw new InconsistentStateError(
        `append to ${describeStream(stream)} in sqlite event log '${this.#name}' refused: expected version ${expectedVersion}, found ${result.found}`,
      );
    }
    return result.version;
  }

  async writeSnapshot(stream: LogAddress, version: number, state: unknown): Promise<void> {
    checkVersion('writeSnapshot: version', version, 1);
    const { statements, serializer } = this.#use(stream);
    const payload = serializer.encode(state);
    let result;
    try {
      result = statements.snapshot(key(stream), version, payload);
    } catch (err) {
      throw this.#wrap(err, `snapshot of ${describeStream(stream)} failed`);
    }
    if (!result.ok) {
      throw new InconsistentStateError(
        `snapshot of ${describeStream(stream)} at version ${version} in sqlite event log '${this.#name}' refused: the stream is at version ${result.found}`,
      );
    }
  }

  async readEvents(stream: LogAddress, from: number, to: number): Promise<LoggedEvent[]> {
    checkRange(from, to);
    const { statements, serializer } = this.#use(stream);
    let rows: Row[];
    try {
      rows = statements.range.all(...key(stream), from, to);
    } catch (err) {
      throw this.#wrap(err, `read of events ${from + 1} to ${to} of ${describeStream(stream)} failed`);
    }
    return rows.map((r) => this.#decodeEvent(stream, r, serializer));
  }

  async close(): Promise<void> {
    const db = this.#db;
    this.#db = undefined;
    this.#statements = undefined;
    if (db === undefined) return;
    try {
      db.close();
    } catch (err) {
      throw this.#wrap(err, 'close failed');
    }
  }

  #open(): Database.Database {
    const { path, busyTimeoutMs } = this.#settings;
    return openSqlite(path, busyTimeoutMs, (err, what) => this.#wrap(err, what));
  }

  /** Creates the tables if missing; true if this call created the events table. */
  #createSchema(db: Database.Database): boolean {
    const { events, snapshots } = this.#settings;
    // IMMEDIATE: of several processes starting at once, exactly one creates (and logs).
    return db
      .transaction((): boolean => {
        const created = !this.#exists(db, events, EVENT_COLUMNS);
        this.#exists(db, snapshots, SNAPSHOT_COLUMNS);
        // WITHOUT ROWID: rows are kept in key order, so the events of a stream are one range of the table.
        db.exec(`CREATE TABLE IF NOT EXISTS ${quote(events)} (
        grain_type     TEXT    NOT NULL,
        grain_key      TEXT    NOT NULL,
        log_name       TEXT    NOT NULL,
        version        INTEGER NOT NULL,
        payload        BLOB    NOT NULL,
        format_version INTEGER NOT NULL,
        created_at     INTEGER NOT NULL,
        PRIMARY KEY (grain_type, grain_key, log_name, version)
      ) WITHOUT ROWID`);
        db.exec(`CREATE TABLE IF NOT EXISTS ${quote(snapshots)} (
        grain_type     TEXT    NOT NULL,
        grain_key      TEXT    NOT NULL,
        log_name       TEXT    NOT NULL,
        version        INTEGER NOT NULL,
        payload        BLOB    NOT NULL,
        format_version INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL,
        PRIMARY KEY (grain_type, grain_key, log_name)
      )`);
        return created;
      })
      .immediate();
  }

  /** Whether table `name` exists; if it does, that it has the columns this log needs. */
  #exists(db: Database.Database, name: string, columns: readonly string[]): boolean {
    return checkTable(db, name, columns, (problem) => this.#error(problem));
  }

  #prepare(db: Database.Database): Statements {
    const e = quote(this.#settings.events);
    const s = quote(this.#settings.snapshots);
    const where = 'grain_type = ? AND grain_key = ? AND log_name = ?';
    const selectSnapshot = db.prepare<Key, Row>(`SELECT version, payload, format_version FROM ${s} WHERE ${where}`);
    const after = db.prepare<[...Key, number], Row>(
      `SELECT version, payload, format_version FROM ${e} WHERE ${where} AND version > ? ORDER BY version`,
    );
    const range = db.prepare<[...Key, number, number], Row>(
      `SELECT version, payload, format_version FROM ${e} WHERE ${where} AND version > ? AND version <= ? ORDER BY version`,
    );
    const last = db.prepare<Key, number | null>(`SELECT MAX(version) FROM ${e} WHERE ${where}`).pluck();
    const hasVersion = db
      .prepare<[...Key, number], number>(`SELECT 1 FROM ${e} WHERE ${where} AND version = ?`)
      .pluck();
    const insert = db.prepare<[...Key, number, Uint8Array, number]>(
      `INSERT INTO ${e} (grain_type, grain_key, log_name, version, payload, format_version, created_at) VALUES (?, ?, ?, ?, ?, ${LOG_FORMAT_VERSION}, ?)`,
    );
    const upsertSnapshot = db.prepare<[...Key, number, Uint8Array, number]>(
      `INSERT INTO ${s} (grain_type, grain_key, log_name, version, payload, format_version, updated_at) VALUES (?, ?, ?, ?, ?, ${LOG_FORMAT_VERSION}, ?)
       ON CONFLICT (grain_type, grain_key, log_name) DO UPDATE
       SET version = excluded.version, payload = excluded.payload, format_version = excluded.format_version, updated_at = excluded.updated_at
       WHERE excluded.version > ${s}.version`,
    );

    // A deferred transaction: snapshot and events from one snapshot of the file.
    const read = db.transaction((k: Key) => {
      const snapshot = selectSnapshot.get(...k);
      const from = snapshot !== undefined && typeof snapshot.version === 'number' ? snapshot.version : 0;
      return { snapshot, events: after.all(...k, from) };
    });
    // IMMEDIATE: the version check and the inserts hold the write lock together; throwing rolls all back.
    const append = db.transaction(
      (
        k: Key,
        payloads: readonly Uint8Array[],
        expected: number,
      ): { ok: true; version: number } | { ok: false; found: number } => {
        const found = last.get(...k) ?? 0;
        if (found !== expected) return { ok: false, found };
        const now = Date.now();
        let version = expected;
        for (const p of payloads) insert.run(...k, ++version, p, now);
        return { ok: true, version };
      },
    );
    const snapshot = db.transaction(
      (k: Key, version: number, payload: Uint8Array): { ok: true } | { ok: false; found: number } => {
        if (hasVersion.get(...k, version) === undefined) return { ok: false, found: last.get(...k) ?? 0 };
        upsertSnapshot.run(...k, version, payload, Date.now());
        return { ok: true };
      },
    );
    return {
      read: (k) => read(k),
      range,
      append: (k, payloads, expected) => append.immediate(k, payloads, expected),
      snapshot: (k, version, payload) => snapshot.immediate(k, version, payload),
    };
  }

  #use(stream: LogAddress): { statements: Statements; serializer: ProviderContext['serializer'] } {
    if (this.#statements === undefined || this.#serializer === undefined) {
      throw this.#error(`${NOT_OPEN}: cannot access ${describeStream(stream)}`);
    }
    return { statements: this.#statements, serializer: this.#serializer };
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
      payloadType: 'a BLOB',
      provider: `sqlite event log '${this.#name}'`,
      table,
      place: `file ${this.#settings.path}`,
    });
  }

  #error(problem: string, cause?: unknown): StorageError {
    return new StorageError(
      `sqlite event log '${this.#name}' (${this.#settings.path}): ${problem}`,
      ErrorCodes.Storage,
      causeOf(cause),
    );
  }

  /** Granary errors pass through; driver errors become a StorageError that names the log and file. */
  #wrap(err: unknown, what: string): GranaryError {
    return wrapError(err, what, (problem, cause) => this.#error(problem, cause));
  }
}

function validate(options: SqliteEventLogOptions): Settings {
  const { path, tablePrefix, busyTimeoutMs } = validateFileOptions('sqliteEventLog', options, sqliteEventLogDefaults);
  return { path, events: `${tablePrefix}events`, snapshots: `${tablePrefix}event_snapshots`, busyTimeoutMs };
}

function key(stream: LogAddress): Key {
  return [stream.grainType, stream.grainKey, stream.logName];
}
