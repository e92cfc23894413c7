// PostgreSQL membership table: one version row per cluster and one row per
// silo, shared by every silo of the cluster through a `pg` pool. Each
// compare-and-swap is one transaction that locks the cluster's version row.

import { randomUUID } from 'node:crypto';
import type { Pool, PoolClient } from 'pg';
import { GranaryError, MembershipError } from '../../errors.ts';
import type {
  MembershipContext,
  MembershipSnapshot,
  MembershipTable,
  SiloEntry,
  TableVersion,
} from '../../membership/table.ts';
import { siloId } from '../../membership/table.ts';
import { siloEntryOfRow, type SiloRow } from '../sql-rows.ts';
import { alreadyOpen, causeOf, NOT_OPEN, quote, wrapError } from '../shared.ts';
import {
  checkTable,
  createPool,
  validateConnectionOptions,
  withTransaction,
  type ConnectionSettings,
} from './common.ts';

/** Options of `postgresMembership`. */
export interface PostgresMembershipOptions {
  /** Where the database is, e.g. `postgres://user:secret@db:5432/granary`. Required. */
  readonly connectionString: string;
  /**
   * Prepended to the table names (letters, digits, `_`; at most 40
   * characters), so several clusters or test runs can share one database.
   * Default `granary_`: tables `granary_membership` and `granary_membership_version`.
   */
  readonly tablePrefix?: string;
  /** Most connections the provider's pool opens. Default 4. */
  readonly poolSize?: number;
  /** How long to wait for a connection (a new one, or a free one of the pool), in ms, before a call fails. Default 10 000. */
  readonly connectionTimeoutMs?: number;
  /** How long to wait for the answer to one query, in ms, before a call fails. Default 30 000. */
  readonly queryTimeoutMs?: number;
}

/** Defaults of the optional `PostgresMembershipOptions` fields. */
export const postgresMembershipDefaults: Readonly<Required<Omit<PostgresMembershipOptions, 'connectionString'>>> = {
  tablePrefix: 'granary_',
  poolSize: 4,
  connectionTimeoutMs: 10_000,
  queryTimeoutMs: 30_000,
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

/** The range of a JavaScript Date, in epoch ms. */
const MAX_TIME = 8.64e15;

/**
 * A membership table in a PostgreSQL database (kind `postgres`). Connects and
 * creates its tables on `init`, not here.
 */
export function postgresMembership(options: PostgresMembershipOptions): MembershipTable {
  return new PostgresMembership(validate(options));
}

interface Settings extends ConnectionSettings {
  readonly table: string;
  readonly versionTable: string;
}

/** A row of the readAll query: the version columns, and a silo row's columns unless the cluster has none. */
interface ReadRow extends SiloRow {
  readonly version: unknown;
  readonly version_etag: unknown;
  readonly silo_id: string | null;
}

/** The SQL of one table pair, made once per provider. */
interface Queries {
  readonly readAll: string;
  readonly lockVersion: string;
  readonly addVersion: string;
  readonly setVersion: string;
  readonly insertRow: string;
  readonly updateRow: string;
  readonly setAlive: string;
  readonly deleteDefunct: string;
  readonly deleteCluster: string;
}

class PostgresMembership implements MembershipTable {
  readonly kind = 'postgres';
  #settings: Settings;
  #queries: Queries;
  #clusterId: string | undefined;
  #pool: Pool | undefined;

  constructor(settings: Settings) {
    this.#settings = settings;
    this.#queries = queries(settings);
  }

  // Re-init after close opens a new pool, so a restarted silo can reuse the provider.
  async init(ctx: MembershipContext): Promise<void> {
    if (this.#pool !== undefined) {
      if (ctx.clusterId === this.#clusterId) return;
      throw this.#error('init', alreadyOpen(this.#clusterId));
    }
    this.#clusterId = ctx.clusterId;
    const { safeConnection, table, versionTable, poolSize, connectionTimeoutMs, queryTimeoutMs } = this.#settings;
    const pool = createPool(this.#settings, {
      applicationName: 'granary-membership',
      logger: ctx.logger,
      fields: { clusterId: ctx.clusterId },
      what: 'postgres membership',
    });
    try {
      if (await this.#createSchema(pool, ctx.clusterId))
        ctx.logger.info({ tables: [table, versionTable], database: safeConnection }, 'created membership tables');
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw this.#wrap(err, 'init', `cannot set up tables ${table} and ${versionTable}`);
    }
    this.#pool = pool;
    ctx.logger.debug(
      {
        database: safeConnection,
        table,
        versionTable,
        poolSize,
        connectionTimeoutMs,
        queryTimeoutMs,
        clusterId: ctx.clusterId,
      },
      'postgres membership opened',
    );
  }

  async readAll(): Promise<MembershipSnapshot> {
    const { pool, clusterId } = this.#use('readAll');
    let rows: ReadRow[];
    try {
      rows = (await pool.query<ReadRow>(this.#queries.readAll, [clusterId])).rows;
    } catch (err) {
      throw this.#wrap(err, 'readAll');
    }
    const first = rows[0];
    const version: TableVersion =
      first === undefined || first.version === null
        ? { version: 0, etag: NO_VERSION_ETAG }
        : { version: Number(first.version), etag: String(first.version_etag) };
    return { version, entries: rows.filter((r) => r.silo_id !== null).map((r) => this.#decode(r)) };
  }

  async insert(entry: SiloEntry, next: TableVersion): Promise<boolean> {
    const { pool, clusterId } = this.#use('insert');
    const values = [clusterId, siloId(entry), ...fields(entry)];
    return this.#compareAndSwap(pool, clusterId, 'insert', entry, next, async (client) => {
      return (await client.query(this.#queries.insertRow, values)).rowCount === 1;
    });
  }

  async update(entry: SiloEntry, etag: string, next: TableVersion): Promise<boolean> {
    const { pool, clusterId } = this.#use('update');
    const values = [clusterId, siloId(entry), ...fields(entry), etag];
    return this.#compareAndSwap(pool, clusterId, 'update', entry, next, async (client) => {
      return (await client.query(this.#queries.updateRow, values)).rowCount === 1;
    });
  }

  async updateIAmAlive(address: string, generation: number, at: number): Promise<void> {
    const { pool, clusterId } = this.#use('updateIAmAlive');
    const id = siloId({ address, generation });
    try {
      await pool.query(this.#queries.setAlive, [clusterId, id, timestamp(at, 'at')]);
    } catch (err) {
      throw this.#wrap(err, 'updateIAmAlive', `silo ${id}`);
    }
  }

  async cleanupDefunct(before: number): Promise<number> {
    const { pool, clusterId } = this.#use('cleanupDefunct');
    // Outside the Date range, the cut-off is before or after every time a silo can have written.
    const cutOff = before >= MAX_TIME ? 'infinity' : before <= -MAX_TIME ? '-infinity' : timestamp(before, 'before');
    try {
      return (await pool.query(this.#queries.deleteDefunct, [clusterId, cutOff])).rowCount ?? 0;
    } catch (err) {
      throw this.#wrap(err, 'cleanupDefunct');
    }
  }

  async deleteCluster(): Promise<void> {
    const { pool, clusterId } = this.#use('deleteCluster');
    try {
      await pool.query(this.#queries.deleteCluster, [clusterId]);
    } catch (err) {
      throw this.#wrap(err, 'deleteCluster');
    }
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

  /**
   * Runs `change` in a transaction that holds the cluster's version row
   * locked, if the version's ETag is `next.etag`; moves the version to `next`
   * with a new ETag if `change` says it changed a row, and commits. Any other
   * outcome rolls back and returns false. Concurrent changes queue on the lock
   * and then see the new ETag, so of several made against one version exactly one wins.
   */
  async #compareAndSwap(
    pool: Pool,
    clusterId: string,
    op: string,
    entry: SiloEntry,
    next: TableVersion,
    change: (client: PoolClient) => Promise<boolean>,
  ): Promise<boolean> {
    const q = this.#queries;
    return this.#transaction(pool, op, `silo ${siloId(entry)}`, async (client) => {
      let current = (await client.query<{ etag: string }>(q.lockVersion, [clusterId])).rows[0];
      if (current === undefined) {
        // No version row (after deleteCluster): make one; concurrent makers wait on its key, then lock it.
        await client.query(q.addVersion, [clusterId, NO_VERSION_ETAG]);
        current = (await client.query<{ etag: string }>(q.lockVersion, [clusterId])).rows[0];
      }
      if (current?.etag !== next.etag || !(await change(client))) return false;
      await client.query(q.setVersion, [clusterId, next.version, randomUUID()]);
      return true;
    });
  }

  /** Runs `body` in one transaction; rolls back if it returns false or throws. */
  async #transaction(
    pool: Pool,
    op: string,
    what: string | undefined,
    body: (client: PoolClient) => Promise<boolean>,
  ): Promise<boolean> {
    try {
      return await withTransaction(pool, body, (ok) => ok);
    } catch (err) {
      throw this.#wrap(err, op, what);
    }
  }

  /**
   * Creates the tables if missing, and the cluster's version row; true if this
   * call created the tables. An advisory lock makes concurrent creators (silos
   * starting at once) queue, so exactly one creates and logs.
   */
  async #createSchema(pool: Pool, clusterId: string): Promise<boolean> {
    const { table, versionTable } = this.#settings;
    let created = false;
    await this.#transaction(pool, 'init', undefined, async (client) => {
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`granary membership ${table}`]);
      created = !(await this.#exists(client, table, ROW_COLUMNS));
      await this.#exists(client, versionTable, VERSION_COLUMNS);
      await client.query(`CREATE TABLE IF NOT EXISTS ${quote(versionTable)} (
        cluster_id text   NOT NULL PRIMARY KEY,
        version    bigint NOT NULL,
        etag       text   NOT NULL
      )`);
      await client.query(`CREATE TABLE IF NOT EXISTS ${quote(table)} (
        cluster_id      text        NOT NULL,
        silo_id         text        NOT NULL,
        address         text        NOT NULL,
        generation      bigint      NOT NULL,
        status          text        NOT NULL CHECK (status IN ('Joining', 'Active', 'ShuttingDown', 'Dead')),
        gateway_address text,
        host_name       text        NOT NULL,
        started_at      timestamptz NOT NULL,
        i_am_alive_at   timestamptz NOT NULL,
        suspicions      jsonb       NOT NULL,
        etag            text        NOT NULL,
        PRIMARY KEY (cluster_id, silo_id)
      )`);
      await client.query(
        `INSERT INTO ${quote(versionTable)} (cluster_id, version, etag) VALUES ($1, 0, $2) ON CONFLICT (cluster_id) DO NOTHING`,
        [clusterId, randomUUID()],
      );
      return true;
    });
    return created;
  }

  /** Whether `name` exists (as the queries resolve it); if it does, that it has the columns this provider needs. */
  async #exists(client: PoolClient, name: string, columns: readonly string[]): Promise<boolean> {
    return checkTable(client, name, columns, (problem) => this.#error('init', problem));
  }

  #decode(row: ReadRow): { entry: SiloEntry; etag: string } {
    return siloEntryOfRow(row, (problem, cause) =>
      this.#error('readAll', `corrupt row ${String(row.silo_id)} in table ${this.#settings.table}: ${problem}`, cause),
    );
  }

  #use(op: string): { pool: Pool; clusterId: string } {
    if (this.#pool === undefined || this.#clusterId === undefined) {
      throw this.#error(op, `the table is ${NOT_OPEN}`);
    }
    return { pool: this.#pool, clusterId: this.#clusterId };
  }

  #error(op: string, problem: string, cause?: unknown): MembershipError {
    return new MembershipError(
      `postgres membership (cluster ${JSON.stringify(this.#clusterId)}, ${this.#settings.safeConnection}, table ${this.#settings.table}): ${op} failed: ${problem}`,
      causeOf(cause),
    );
  }

  /** Granary errors pass through; driver errors become a MembershipError that names the operation, cluster and database. */
  #wrap(err: unknown, op: string, what?: string): GranaryError {
    return wrapError(err, what, (problem, cause) => this.#error(op, problem, cause));
  }
}

function queries(settings: Settings): Queries {
  const t = quote(settings.table);
  const v = quote(settings.versionTable);
  const ms = (column: string): string => `round(extract(epoch FROM m.${column}) * 1000)::float8 AS ${column}`;
  return {
    // One statement, so version and rows come from one snapshot; one row with
    // NULL silo columns when the cluster has no silo, none without a version row.
    readAll: `SELECT v.version, v.etag AS version_etag, m.silo_id, m.address, m.generation, m.status, m.gateway_address, m.host_name,
        ${ms('started_at')}, ${ms('i_am_alive_at')}, m.suspicions, m.etag
      FROM (SELECT $1::text AS cluster_id) c
      LEFT JOIN ${v} v ON v.cluster_id = c.cluster_id
      LEFT JOIN ${t} m ON m.cluster_id = c.cluster_id`,
    lockVersion: `SELECT etag FROM ${v} WHERE cluster_id = $1 FOR UPDATE`,
    addVersion: `INSERT INTO ${v} (cluster_id, version, etag) VALUES ($1, 0, $2) ON CONFLICT (cluster_id) DO NOTHING`,
    setVersion: `UPDATE ${v} SET version = $2, etag = $3 WHERE cluster_id = $1`,
    insertRow: `INSERT INTO ${t} (cluster_id, silo_id, address, generation, status, gateway_address, host_name, started_at, i_am_alive_at, suspicions, etag)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11)
      ON CONFLICT (cluster_id, silo_id) DO NOTHING`,
    updateRow: `UPDATE ${t} SET address = $3, generation = $4, status = $5, gateway_address = $6, host_name = $7,
        started_at = $8, i_am_alive_at = $9, suspicions = $10::jsonb, etag = $11
      WHERE cluster_id = $1 AND silo_id = $2 AND etag = $12`,
    setAlive: `UPDATE ${t} SET i_am_alive_at = $3 WHERE cluster_id = $1 AND silo_id = $2`,
    deleteDefunct: `DELETE FROM ${t} WHERE cluster_id = $1 AND status = 'Dead' AND i_am_alive_at < $2`,
    deleteCluster: `WITH gone AS (DELETE FROM ${t} WHERE cluster_id = $1) DELETE FROM ${v} WHERE cluster_id = $1`,
  };
}

/** The columns address .. etag of a row for `e`, with a new row ETag. */
function fields(e: SiloEntry): unknown[] {
  return [
    e.address,
    e.generation,
    e.status,
    e.gatewayAddress,
    e.hostName,
    timestamp(e.startedAt, 'startedAt'),
    timestamp(e.iAmAliveAt, 'iAmAliveAt'),
    JSON.stringify(e.suspicions.map((s) => ({ by: s.by, at: s.at }))),
    randomUUID(),
  ];
}

function timestamp(ms: number, name: string): Date {
  const date = new Date(ms);
  if (Number.isNaN(date.getTime()))
    throw new MembershipError(`postgres membership: ${name} ${ms} is not a time in epoch ms`);
  return date;
}

function validate(options: PostgresMembershipOptions): Settings {
  return validateConnectionOptions('postgresMembership', options, postgresMembershipDefaults, (prefix) => ({
    table: `${prefix}membership`,
    versionTable: `${prefix}membership_version`,
  }));
}
