// SQLite storage provider: grain state in one table of one database file
// (better-sqlite3), safe for several processes on one host to share (WAL,
// busy timeout), with the ETag check done atomically in SQL.

import type Database from 'better-sqlite3';
import { checkTable, openSqlite, validateFileOptions } from './open.ts';
import { ErrorCodes, GranaryError, InconsistentStateError, StorageError } from '../../errors.ts';
import { causeOf, corruptState, errorMessage, NOT_OPEN, quote, wrapError } from '../shared.ts';
import type { ProviderContext, StateAddress, StorageProvider, StoredState } from '../../storage/provider.ts';
import {
  FORMAT_VERSIONS,
  formatMismatch,
  formatOption,
  payloadFormat,
  type PayloadFormat,
  type StateFormat,
} from '../../storage/state-format.ts';

/** Options of `sqliteStorage`. */
export interface SqliteStorageOptions {
  /**
   * The database file, e.g. `.granary/state.db`; its folder is created if
   * missing. `:memory:` gives a database private to this provider. Required.
   */
  readonly path: string;
  /**
   * Prepended to the table names (letters, digits, `_`), so several clusters
   * or test runs can share one file. Default `granary_`: tables
   * `granary_storage` and `granary_storage_seq`.
   */
  readonly tablePrefix?: string;
  /** How long to wait for a lock held by another connection or process, in ms. Default 5000. */
  readonly busyTimeoutMs?: number;
  /**
   * How state is stored: `codec` (the silo's serializer: every value a grain call
   * can carry) or `json` (JSON text other tools can read; a value JSON cannot
   * hold fails the write with a SerializationError naming its path). Default `codec`.
   */
  readonly format?: StateFormat;
}

/** Defaults of the optional `SqliteStorageOptions` fields. */
export const sqliteStorageDefaults: Readonly<Required<Omit<SqliteStorageOptions, 'path'>>> = {
  tablePrefix: 'granary_',
  busyTimeoutMs: 5000,
  format: 'codec',
};

const COLUMNS = ['grain_type', 'grain_key', 'state_name', 'payload', 'version', 'format_version', 'updated_at'];

/**
 * A storage provider on an SQLite database file (kind `sqlite`). Creates its
 * tables on `init`; opens the file there, not here.
 */
export function sqliteStorage(options: SqliteStorageOptions): StorageProvider {
  return new SqliteStorage(validate(options));
}

/**
 * The open connection of a provider made by `sqliteStorage`, or undefined if
 * it is not open. Only for tests that need to reach into the table (e.g. to
 * plant a corrupt row in a `:memory:` database); not part of the public API.
 */
export function sqliteDatabaseForTests(provider: StorageProvider): Database.Database | undefined {
  return provider instanceof SqliteStorage ? provider.databaseForTests : undefined;
}

interface Settings {
  readonly path: string;
  readonly table: string;
  readonly seqTable: string;
  readonly busyTimeoutMs: number;
  readonly format: StateFormat;
}

interface Row {
  readonly rowid: number;
  readonly payload: unknown;
  readonly version: number;
  readonly format_version: unknown;
}

type Key = [grainType: string, grainKey: string, stateName: string];

/** Prepared once per open database. */
interface Statements {
  readonly select: Database.Statement<Key, Row>;
  /** Writes under the ETag rule; returns the new version. */
  readonly write: (address: StateAddress, bytes: Uint8Array, etag: string | null) => number;
  /** Deletes under the ETag rule. */
  readonly clear: (address: StateAddress, etag: string | null) => void;
}

class SqliteStorage implements StorageProvider {
  readonly kind = 'sqlite';
  #settings: Settings;
  #name = '(not initialised)';
  #db: Database.Database | undefined;
  #statements: Statements | undefined;
  #serializer: PayloadFormat | undefined;

  constructor(settings: Settings) {
    this.#settings = settings;
  }

  get databaseForTests(): Database.Database | undefined {
    return this.#db;
  }

  // Re-init after close reopens the file, so a restarted silo can reuse the provider.
  async init(ctx: ProviderContext): Promise<void> {
    if (this.#db !== undefined) return;
    this.#name = ctx.name;
    this.#serializer = payloadFormat(this.#settings.format, ctx.serializer);
    const { path, table } = this.#settings;
    const db = this.#open();
    try {
      if (this.#createSchema(db)) ctx.logger.info({ table, path }, 'created storage table');
      this.#statements = this.#prepare(db);
    } catch (err) {
      db.close();
      throw this.#wrap(err, `cannot set up table ${table}`);
    }
    this.#db = db;
    ctx.logger.debug({ path, table, busyTimeoutMs: this.#settings.busyTimeoutMs }, 'sqlite storage opened');
  }

  async read(address: StateAddress): Promise<StoredState> {
    const { statements, serializer } = this.#use(address);
    let row: Row | undefined;
    try {
      row = statements.select.get(address.grainType, address.grainKey, address.stateName);
    } catch (err) {
      throw this.#wrap(err, `read of grain ${grainName(address)} state '${address.stateName}' failed`);
    }
    if (row === undefined) return { state: undefined, etag: null };
    if (row.format_version !== serializer.version) {
      throw this.#corrupt(address, row, formatMismatch(row.format_version, serializer.format));
    }
    if (!(row.payload instanceof Uint8Array)) {
      throw this.#corrupt(
        address,
        row,
        `its payload is ${row.payload === null ? 'NULL' : typeof row.payload}, not a BLOB`,
      );
    }
    try {
      return { state: serializer.decode(row.payload), etag: String(row.version) };
    } catch (err) {
      throw this.#corrupt(address, row, `cannot decode its ${serializer.format} payload: ${errorMessage(err)}`, err);
    }
  }

  async write(address: StateAddress, state: unknown, etag: string | null): Promise<string> {
    const { statements, serializer } = this.#use(address);
    // Outside the try: a value that cannot be serialized is the caller's error, not the store's.
    const bytes = serializer.encode(
      state,
      `grain ${grainName(address)} state '${address.stateName}' in sqlite storage '${this.#name}'`,
    );
    try {
      return String(statements.write(address, bytes, etag));
    } catch (err) {
      throw this.#wrap(err, `write of grain ${grainName(address)} state '${address.stateName}' failed`);
    }
  }

  async clear(address: StateAddress, etag: string | null): Promise<void> {
    const { statements } = this.#use(address);
    try {
      statements.clear(address, etag);
    } catch (err) {
      throw this.#wrap(err, `clear of grain ${grainName(address)} state '${address.stateName}' failed`);
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
      throw this.#wrap(err, 'close failed');
    }
  }

  #open(): Database.Database {
    const { path, busyTimeoutMs } = this.#settings;
    return openSqlite(path, busyTimeoutMs, (err, what) => this.#wrap(err, what));
  }

  /** Creates the tables if missing; true if this call created the storage table. */
  #createSchema(db: Database.Database): boolean {
    const { table, seqTable } = this.#settings;
    // IMMEDIATE: of several processes starting at once, exactly one creates (and logs).
    return db
      .transaction((): boolean => {
        const exists = checkTable(db, table, COLUMNS, (problem) => this.#error(problem));
        if (!exists) {
          db.exec(`CREATE TABLE ${quote(table)} (
          grain_type     TEXT    NOT NULL,
          grain_key      TEXT    NOT NULL,
          state_name     TEXT    NOT NULL,
          payload        BLOB    NOT NULL,
          version        INTEGER NOT NULL,
          format_version INTEGER NOT NULL,
          updated_at     INTEGER NOT NULL,
          PRIMARY KEY (grain_type, grain_key, state_name)
        )`);
        }
        // One counter for the whole table, so that a version (ETag) is never
        // reused, not even by a record that is cleared and written again.
        db.exec(`CREATE TABLE IF NOT EXISTS ${quote(seqTable)} (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        value INTEGER NOT NULL
      )`);
        db.exec(
          `INSERT OR IGNORE INTO ${quote(seqTable)} (id, value) SELECT 1, COALESCE(MAX(version), 0) FROM ${quote(table)}`,
        );
        return !exists;
      })
      .immediate();
  }

  #prepare(db: Database.Database): Statements {
    const t = quote(this.#settings.table);
    const where = 'grain_type = ? AND grain_key = ? AND state_name = ?';
    const select = db.prepare<Key, Row>(`SELECT rowid, payload, version, format_version FROM ${t} WHERE ${where}`);
    const selectVersion = db.prepare<Key, number>(`SELECT version FROM ${t} WHERE ${where}`).pluck();
    const nextVersion = db
      .prepare<[], number>(
        `UPDATE ${quote(this.#settings.seqTable)} SET value = value + 1 WHERE id = 1 RETURNING value`,
      )
      .pluck();
    const insert = db.prepare<[...Key, Uint8Array, number, number]>(
      `INSERT INTO ${t} (grain_type, grain_key, state_name, payload, version, format_version, updated_at)
       VALUES (?, ?, ?, ?, ?, ${this.#settings.format === 'json' ? FORMAT_VERSIONS.json : FORMAT_VERSIONS.codec}, ?)
       ON CONFLICT (grain_type, grain_key, state_name) DO NOTHING`,
    );
    const update = db.prepare<[Uint8Array, number, number, ...Key, number]>(
      `UPDATE ${t} SET payload = ?, version = ?, format_version = ${this.#settings.format === 'json' ? FORMAT_VERSIONS.json : FORMAT_VERSIONS.codec}, updated_at = ? WHERE ${where} AND version = ?`,
    );
    const del = db.prepare<[...Key, number]>(`DELETE FROM ${t} WHERE ${where} AND version = ?`);

    const conflict = (op: 'write' | 'clear', address: StateAddress, etag: string | null): InconsistentStateError => {
      const found = selectVersion.get(address.grainType, address.grainKey, address.stateName);
      return new InconsistentStateError(
        `${op} of grain ${grainName(address)} state '${address.stateName}' in sqlite storage '${this.#name}' refused: ` +
          `expected etag ${etag ?? 'none (no record)'}, found ${found === undefined ? 'none (no record)' : String(found)}`,
      );
    };
    // Each runs in an IMMEDIATE transaction: the conditional statement is what
    // decides, the transaction makes the version counter and the "found" ETag
    // of a conflict message exact. Throwing rolls everything back.
    const write = db.transaction((address: StateAddress, bytes: Uint8Array, etag: string | null): number => {
      const key: Key = [address.grainType, address.grainKey, address.stateName];
      const version = nextVersion.get();
      if (version === undefined) throw new StorageError(`table ${this.#settings.seqTable} has no counter row`);
      const now = Date.now();
      if (etag === null) {
        if (insert.run(...key, bytes, version, now).changes === 1) return version;
      } else {
        const expected = parseEtag(etag);
        if (expected !== undefined && update.run(bytes, version, now, ...key, expected).changes === 1) return version;
      }
      throw conflict('write', address, etag);
    });
    const clear = db.transaction((address: StateAddress, etag: string | null): void => {
      const key: Key = [address.grainType, address.grainKey, address.stateName];
      if (etag === null) {
        if (selectVersion.get(...key) === undefined) return;
      } else {
        const expected = parseEtag(etag);
        if (expected !== undefined && del.run(...key, expected).changes === 1) return;
      }
      throw conflict('clear', address, etag);
    });
    return {
      select,
      write: (address, bytes, etag) => write.immediate(address, bytes, etag),
      clear: (address, etag) => clear.immediate(address, etag),
    };
  }

  #use(address: StateAddress): { statements: Statements; serializer: PayloadFormat } {
    if (this.#statements === undefined || this.#serializer === undefined) {
      throw this.#error(`${NOT_OPEN}: cannot access grain ${grainName(address)} state '${address.stateName}'`);
    }
    return { statements: this.#statements, serializer: this.#serializer };
  }

  #corrupt(address: StateAddress, row: Row, problem: string, cause?: unknown): StorageError {
    const { table, path } = this.#settings;
    return corruptState(
      {
        what: `state for grain ${grainName(address)} state '${address.stateName}'`,
        provider: `sqlite storage '${this.#name}'`,
        where: `table ${table} rowid ${row.rowid}, version ${row.version}, file ${path}`,
      },
      problem,
      cause,
    );
  }

  #error(problem: string, cause?: unknown): StorageError {
    return new StorageError(
      `sqlite storage '${this.#name}' (${this.#settings.path}): ${problem}`,
      ErrorCodes.Storage,
      causeOf(cause),
    );
  }

  /** Granary errors pass through; driver errors become a StorageError that names provider and file. */
  #wrap(err: unknown, what: string): GranaryError {
    return wrapError(err, what, (problem, cause) => this.#error(problem, cause));
  }
}

function validate(options: SqliteStorageOptions): Settings {
  const { path, tablePrefix, busyTimeoutMs } = validateFileOptions('sqliteStorage', options, sqliteStorageDefaults);
  const format = formatOption('sqliteStorage', options.format);
  return { path, table: `${tablePrefix}storage`, seqTable: `${tablePrefix}storage_seq`, busyTimeoutMs, format };
}

/** An ETag this provider could have issued, as its version; undefined for anything else (it matches no row). */
function parseEtag(etag: string): number | undefined {
  if (!/^[0-9]{1,15}$/.test(etag)) return undefined;
  return Number(etag);
}

function grainName(address: StateAddress): string {
  return `${address.grainType}/${address.grainKey}`;
}
