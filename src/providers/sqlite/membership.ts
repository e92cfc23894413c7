// SQLite membership table: the silos of one host (several processes) share
// one database file (better-sqlite3, WAL, busy timeout); every
// compare-and-swap runs in one BEGIN IMMEDIATE transaction.

import { randomUUID } from 'node:crypto';
import type Database from 'better-sqlite3';
import { checkTable, openSqlite, validateFileOptions } from './open.ts';
import { GranaryError, MembershipError } from '../../errors.ts';
import { siloEntryOfRow, type SiloRow } from '../sql-rows.ts';
import { alreadyOpen, causeOf, NOT_OPEN, quote, wrapError } from '../shared.ts';
import type {
  MembershipContext,
  MembershipSnapshot,
  MembershipTable,
  SiloEntry,
  TableVersion,
} from '../../membership/table.ts';
import { siloId } from '../../membership/table.ts';

/** Options of `sqliteMembership`. */
export interface SqliteMembershipOptions {
  /**
   * The database file, e.g. `.granary/cluster.db`; its folder is created if
   * missing. Every silo of the host must name the same file. `:memory:`
   * gives a table private to this provider. Required.
   */
  readonly path: string;
  /**
   * Prepended to the table names (letters, digits, `_`), so several
   * clusters or test runs can share one file. Default `granary_`: tables
   * `granary_membership` and `granary_membership_version`.
   */
  readonly tablePrefix?: string;
  /** How long to wait for a lock held by another connection or process, in ms. Default 5000. */
  readonly busyTimeoutMs?: number;
}

/** Defaults of the optional `SqliteMembershipOptions` fields. */
export const sqliteMembershipDefaults: Readonly<Required<Omit<SqliteMembershipOptions, 'path'>>> = {
  tablePrefix: 'granary_',
  busyTimeoutMs: 5000,
};

/** The ETag of the version of a cluster that has no version row (only after `deleteCluster`); never issued otherwise. */
const NO_VERSION_ETAG = '0';

const ROW_COLUMNS = [
  'cluster_id',
  'silo_id',
  'address',
  'generation',
  'status',
  'gateway_address',
  'host_name',
  'started_at',
  'i_am_alive_at',
  'suspicions',
  'etag',
];
const VERSION_COLUMNS = ['cluster_id', 'version', 'etag'];

/**
 * A membership table in an SQLite database file (kind `sqlite`). Creates its
 * tables on `init`; opens the file there, not here.
 */
export function sqliteMembership(options: SqliteMembershipOptions): MembershipTable {
  return new SqliteMembership(validate(options));
}

interface Settings {
  readonly path: string;
  readonly table: string;
  readonly versionTable: string;
  readonly busyTimeoutMs: number;
}

interface VersionRow {
  readonly version: number;
  readonly etag: string;
}

interface EntryRow extends SiloRow {
  readonly silo_id: string;
}

/** Prepared once per open database; each runs in its own transaction (or is one statement). */
interface Statements {
  readonly readAll: (clusterId: string) => { version: VersionRow | undefined; rows: EntryRow[] };
  readonly insert: (clusterId: string, entry: SiloEntry, next: TableVersion) => boolean;
  readonly update: (clusterId: string, entry: SiloEntry, etag: string, next: TableVersion) => boolean;
  readonly updateIAmAlive: (clusterId: string, id: string, at: number) => void;
  readonly cleanupDefunct: (clusterId: string, before: number) => number;
  readonly deleteCluster: (clusterId: string) => void;
}

class SqliteMembership implements MembershipTable {
  readonly kind = 'sqlite';
  #settings: Settings;
  #clusterId: string | undefined;
  #db: Database.Database | undefined;
  #statements: Statements | undefined;

  constructor(settings: Settings) {
    this.#settings = settings;
  }

  // Re-init after close reopens the file, so a restarted silo can reuse the provider.
  async init(ctx: MembershipContext): Promise<void> {
    if (this.#db !== undefined) {
      if (ctx.clusterId === this.#clusterId) return;
      throw this.#error('init', alreadyOpen(this.#clusterId));
    }
    this.#clusterId = ctx.clusterId;
    const { path, table, versionTable, busyTimeoutMs } = this.#settings;
    const db = this.#open();
    try {
      if (this.#createSchema(db, ctx.clusterId))
        ctx.logger.info({ tables: [table, versionTable], path }, 'created membership tables');
      this.#statements = this.#prepare(db);
    } catch (err) {
      db.close();
      throw this.#wrap(err, 'init', `cannot set up tables ${table} and ${versionTable}`);
    }
    this.#db = db;
    ctx.logger.debug(
      { path, table, versionTable, busyTimeoutMs, clusterId: ctx.clusterId },
      'sqlite membership opened',
    );
  }

  async readAll(): Promise<MembershipSnapshot> {
    const { statements, clusterId } = this.#use('readAll');
    let read: ReturnType<Statements['readAll']>;
    try {
      read = statements.readAll(clusterId);
    } catch (err) {
      throw this.#wrap(err, 'readAll');
    }
    return {
      version:
        read.version === undefined
          ? { version: 0, etag: NO_VERSION_ETAG }
          : { version: read.version.version, etag: read.version.etag },
      entries: read.rows.map((row) => this.#decode(row)),
    };
  }

  async insert(entry: SiloEntry, next: TableVersion): Promise<boolean> {
    const { statements, clusterId } = this.#use('insert');
    try {
      return statements.insert(clusterId, entry, next);
    } catch (err) {
      throw this.#wrap(err, 'insert', `silo ${siloId(entry)}`);
    }
  }

  async update(entry: SiloEntry, etag: string, next: TableVersion): Promise<boolean> {
    const { statements, clusterId } = this.#use('update');
    try {
      return statements.update(clusterId, entry, etag, next);
    } catch (err) {
      throw this.#wrap(err, 'update', `silo ${siloId(entry)}`);
    }
  }

  async updateIAmAlive(address: string, generation: number, at: number): Promise<void> {
    const { statements, clusterId } = this.#use('updateIAmAlive');
    const id = siloId({ address, generation });
    try {
      statements.updateIAmAlive(clusterId, id, at);
    } catch (err) {
      throw this.#wrap(err, 'updateIAmAlive', `silo ${id}`);
    }
  }

  async cleanupDefunct(before: number): Promise<number> {
    const { statements, clusterId } = this.#use('cleanupDefunct');
    try {
      return statements.cleanupDefunct(clusterId, before);
    } catch (err) {
      throw this.#wrap(err, 'cleanupDefunct');
    }
  }

  async deleteCluster(): Promise<void> {
    const { statements, clusterId } = this.#use('deleteCluster');
    try {
      statements.deleteCluster(clusterId);
    } catch (err) {
      throw this.#wrap(err, 'deleteCluster');
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

  #open(): Database.Database {
    const { path, busyTimeoutMs } = this.#settings;
    return openSqlite(path, busyTimeoutMs, (err, what) => this.#wrap(err, 'init', what));
  }

  /** Creates the tables if missing and the cluster's version row; true if this call created the tables. */
  #createSchema(db: Database.Database, clusterId: string): boolean {
    const { table, versionTable } = this.#settings;
    // IMMEDIATE: of several processes starting at once, exactly one creates (and logs).
    return db
      .transaction((): boolean => {
        const created = !this.#exists(db, table, ROW_COLUMNS);
        this.#exists(db, versionTable, VERSION_COLUMNS);
        db.exec(`CREATE TABLE IF NOT EXISTS ${quote(versionTable)} (
        cluster_id TEXT    NOT NULL PRIMARY KEY,
        version    INTEGER NOT NULL,
        etag       TEXT    NOT NULL
      )`);
        // Times are epoch ms; suspicions a JSON array of {by, at}.
        db.exec(`CREATE TABLE IF NOT EXISTS ${quote(table)} (
        cluster_id      TEXT    NOT NULL,
        silo_id         TEXT    NOT NULL,
        address         TEXT    NOT NULL,
        generation      INTEGER NOT NULL,
        status          TEXT    NOT NULL CHECK (status IN ('Joining', 'Active', 'ShuttingDown', 'Dead')),
        gateway_address TEXT,
        host_name       TEXT    NOT NULL,
        started_at      INTEGER NOT NULL,
        i_am_alive_at   INTEGER NOT NULL,
        suspicions      TEXT    NOT NULL,
        etag            TEXT    NOT NULL,
        PRIMARY KEY (cluster_id, silo_id)
      )`);
        db.prepare(
          `INSERT INTO ${quote(versionTable)} (cluster_id, version, etag) VALUES (?, 0, ?) ON CONFLICT (cluster_id) DO NOTHING`,
        ).run(clusterId, randomUUID());
        return created;
      })
      .immediate();
  }

  /** Whether `name` exists; if it does, that it has the columns this provider needs. */
  #exists(db: Database.Database, name: string, columns: readonly string[]): boolean {
    return checkTable(db, name, columns, (problem) => this.#error('init', problem));
  }

  #prepare(db: Database.Database): Statements {
    const t = quote(this.#settings.table);
    const v = quote(this.#settings.versionTable);
    const selectVersion = db.prepare<[string], VersionRow>(`SELECT version, etag FROM ${v} WHERE cluster_id = ?`);
    const selectRows = db.prepare<[string], EntryRow>(
      `SELECT silo_id, address, generation, status, gateway_address, host_name, started_at, i_am_alive_at, suspicions, etag
       FROM ${t} WHERE cluster_id = ?`,
    );
    const setVersion = db.prepare<[string, number, string]>(
      `INSERT INTO ${v} (cluster_id, version, etag) VALUES (?, ?, ?)
       ON CONFLICT (cluster_id) DO UPDATE SET version = excluded.version, etag = excluded.etag`,
    );
    // address .. etag, in column order.
    type Fields = [string, number, string, string | null, string, number, number, string, string];
    const insertRow = db.prepare<[string, string, ...Fields]>(
      `INSERT INTO ${t} (cluster_id, silo_id, address, generation, status, gateway_address, host_name, started_at, i_am_alive_at, suspicions, etag)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (cluster_id, silo_id) DO NOTHING`,
    );
    const updateRow = db.prepare<[...Fields, string, string, string]>(
      `UPDATE ${t} SET address = ?, generation = ?, status = ?, gateway_address = ?, host_name = ?,
         started_at = ?, i_am_alive_at = ?, suspicions = ?, etag = ?
       WHERE cluster_id = ? AND silo_id = ? AND etag = ?`,
    );
    const setAlive = db.prepare<[number, string, string]>(
      `UPDATE ${t} SET i_am_alive_at = ? WHERE cluster_id = ? AND silo_id = ?`,
    );
    const deleteDefunct = db.prepare<[string, number]>(
      `DELETE FROM ${t} WHERE cluster_id = ? AND status = 'Dead' AND i_am_alive_at < ?`,
    );
    const deleteRows = db.prepare<[string]>(`DELETE FROM ${t} WHERE cluster_id = ?`);
    const deleteVersion = db.prepare<[string]>(`DELETE FROM ${v} WHERE cluster_id = ?`);

    const fields = (e: SiloEntry): Fields => [
      e.address,
      e.generation,
      e.status,
      e.gatewayAddress,
      e.hostName,
      e.startedAt,
      e.iAmAliveAt,
      JSON.stringify(e.suspicions.map((s) => ({ by: s.by, at: s.at }))),
      randomUUID(),
    ];
    const versionIs = (clusterId: string, etag: string): boolean =>
      (selectVersion.get(clusterId)?.etag ?? NO_VERSION_ETAG) === etag;

    // Each check reads inside the transaction that writes, and IMMEDIATE takes
    // the write lock before the read, so no other process can slip in between.
    const insert = db.transaction((clusterId: string, entry: SiloEntry, next: TableVersion): boolean => {
      if (!versionIs(clusterId, next.etag)) return false;
      if (insertRow.run(clusterId, siloId(entry), ...fields(entry)).changes !== 1) return false;
      setVersion.run(clusterId, next.version, randomUUID());
      return true;
    });
    const update = db.transaction((clusterId: string, entry: SiloEntry, etag: string, next: TableVersion): boolean => {
      if (!versionIs(clusterId, next.etag)) return false;
      if (updateRow.run(...fields(entry), clusterId, siloId(entry), etag).changes !== 1) return false;
      setVersion.run(clusterId, next.version, randomUUID());
      return true;
    });
    // Deferred: a read transaction, so that version and rows come from one snapshot.
    const readAll = db.transaction((clusterId: string) => ({
      version: selectVersion.get(clusterId),
      rows: selectRows.all(clusterId),
    }));
    const deleteCluster = db.transaction((clusterId: string): void => {
      deleteRows.run(clusterId);
      deleteVersion.run(clusterId);
    });
    return {
      readAll: (clusterId) => readAll(clusterId),
      insert: (clusterId, entry, next) => insert.immediate(clusterId, entry, next),
      update: (clusterId, entry, etag, next) => update.immediate(clusterId, entry, etag, next),
      updateIAmAlive: (clusterId, id, at) => void setAlive.run(at, clusterId, id),
      cleanupDefunct: (clusterId, before) => deleteDefunct.run(clusterId, before).changes,
      deleteCluster: (clusterId) => deleteCluster.immediate(clusterId),
    };
  }

  #decode(row: EntryRow): { entry: SiloEntry; etag: string } {
    return siloEntryOfRow(row, (problem, cause) =>
      this.#error('readAll', `corrupt row ${row.silo_id} in table ${this.#settings.table}: ${problem}`, cause),
    );
  }

  #use(op: string): { statements: Statements; clusterId: string } {
    if (this.#statements === undefined || this.#clusterId === undefined) {
      throw this.#error(op, `the table is ${NOT_OPEN}`);
    }
    return { statements: this.#statements, clusterId: this.#clusterId };
  }

  #error(op: string, problem: string, cause?: unknown): MembershipError {
    return new MembershipError(
      `sqlite membership (cluster ${JSON.stringify(this.#clusterId)}, file ${this.#settings.path}): ${op} failed: ${problem}`,
      causeOf(cause),
    );
  }

  /** Granary errors pass through; driver errors become a MembershipError that names the operation, cluster and file. */
  #wrap(err: unknown, op: string, what?: string): GranaryError {
    return wrapError(err, what, (problem, cause) => this.#error(op, problem, cause));
  }
}

function validate(options: SqliteMembershipOptions): Settings {
  const { path, tablePrefix, busyTimeoutMs } = validateFileOptions(
    'sqliteMembership',
    options,
    sqliteMembershipDefaults,
  );
  return { path, table: `${tablePrefix}membership`, versionTable: `${tablePrefix}membership_version`, busyTimeoutMs };
}
