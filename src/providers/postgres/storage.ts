// PostgreSQL storage provider: grain state in one table shared by every silo
// of a cluster through a `pg` pool. Each write and clear is one statement that
// checks the ETag itself, so the check is atomic without an explicit
// transaction; ETags come from a sequence, so they are never reused.

import type { Pool, PoolClient } from 'pg';
import { ErrorCodes, GranaryError, InconsistentStateError, StorageError } from '../../errors.ts';
import type { ProviderContext, StateAddress, StorageProvider, StoredState } from '../../storage/provider.ts';
import {
  formatMismatch,
  formatOption,
  payloadFormat,
  type PayloadFormat,
  type StateFormat,
} from '../../storage/state-format.ts';
import {
  causeOf,
  corruptState,
  errorMessage,
  foreignTable,
  missingColumns,
  NOT_OPEN,
  quote,
  wrapError,
} from '../shared.ts';
import {
  createPool,
  tableColumns,
  validateConnectionOptions,
  withTransaction,
  type ConnectionSettings,
} from './common.ts';

/** Options of `postgresStorage`. */
export interface PostgresStorageOptions {
  /** Where the database is, e.g. `postgres://user:secret@db:5432/granary`. Required. */
  readonly connectionString: string;
  /**
   * Prepended to the names of the table and its sequence (letters, digits,
   * `_`; at most 40 characters), so several clusters or test runs can share
   * one database. Default `granary_`: table `granary_storage`, sequence
   * `granary_storage_version`.
   */
  readonly tablePrefix?: string;
  /**
   * How state is stored: `codec` (the silo's serializer; carries Map, Set,
   * Date, BigInt, grain references...) or `json` (JSON text, readable with
   * `convert_from(payload, 'UTF8')::jsonb`; a state JSON cannot hold fails
   * its write). Default `codec`.
   */
  readonly format?: StateFormat;
  /** Most connections the provider's pool opens. Default 10. */
  readonly poolSize?: number;
  /**
   * How long to wait for a connection (a new one, or a free one of the pool),
   * in ms, before a read or write fails. Default 5 000.
   */
  readonly connectionTimeoutMs?: number;
  /**
   * How long one statement may take, in ms, before it fails (the server
   * cancels it; the client stops waiting for an answer that does not come).
   * Default 10 000: below a grain call's default deadline, so a caller sees
   * the storage failure rather than a timeout.
   */
  readonly queryTimeoutMs?: number;
}

/** Defaults of the optional `PostgresStorageOptions` fields. */
export const postgresStorageDefaults: Readonly<Required<Omit<PostgresStorageOptions, 'connectionString'>>> = {
  tablePrefix: 'granary_',
  format: 'codec',
  poolSize: 10,
  connectionTimeoutMs: 5_000,
  queryTimeoutMs: 10_000,
};

/** The columns of the table and the types this provider reads them as. */
const COLUMNS: Readonly<Record<string, readonly string[]>> = {
  grain_type: ['text'],
  grain_key: ['text'],
  state_name: ['text'],
  payload: ['bytea'],
  version: ['bigint'],
  format_version: ['integer', 'smallint', 'bigint'],
  updated_at: ['timestamp with time zone'],
};

/** A version this provider could have issued: a positive bigint. */
const ETAG = /^[1-9][0-9]{0,17}$/;

/**
 * A storage provider on a PostgreSQL database (kind `postgres`). Connects and
 * creates its table on `init`, not here.
 */
export function postgresStorage(options: PostgresStorageOptions): StorageProvider {
  return new PostgresStorage(validate(options));
}

interface Settings extends ConnectionSettings {
  readonly table: string;
  readonly sequence: string;
  readonly format: StateFormat;
}

interface Row {
  readonly payload: unknown;
  readonly version: unknown;
  readonly format_version: unknown;
}

/** The SQL of one table, made once per provider. */
interface Queries {
  readonly select: string;
  readonly selectVersion: string;
  readonly insert: string;
  readonly update: string;
  readonly delete: string;
}

class PostgresStorage implements StorageProvider {
  readonly kind = 'postgres';
  #settings: Settings;
  #queries: Queries;
  #name = '(not initialised)';
  #pool: Pool | undefined;
  #format: PayloadFormat | undefined;

  constructor(settings: Settings) {
    this.#settings = settings;
    this.#queries = queries(settings);
  }

  // Re-init after close opens a new pool, so a restarted silo can reuse the provider.
  async init(ctx: ProviderContext): Promise<void> {
    if (this.#pool !== undefined) return;
    this.#name = ctx.name;
    const { safeConnection, table, sequence, format, poolSize, connectionTimeoutMs, queryTimeoutMs } = this.#settings;
    const pool = createPool(this.#settings, {
      applicationName: 'granary-storage',
      logger: ctx.logger,
      fields: { table },
      what: 'postgres storage',
    });
    try {
      if (await this.#createSchema(pool))
        ctx.logger.info({ table, sequence, database: safeConnection }, 'created storage table');
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw this.#wrap(err, `cannot set up table ${table}`);
    }
    this.#pool = pool;
    this.#format = payloadFormat(format, ctx.serializer);
    ctx.logger.debug(
      { database: safeConnection, table, sequence, format, poolSize, connectionTimeoutMs, queryTimeoutMs },
      'postgres storage opened',
    );
  }

  async read(address: StateAddress): Promise<StoredState> {
    const { pool, format } = this.#use(address);
    let row: Row | undefined;
    try {
      row = (await pool.query<Row>(this.#queries.select, key(address))).rows[0];
    } catch (err) {
      throw this.#wrap(err, `read of ${describe(address)} failed`);
    }
    if (row === undefined) return { state: undefined, etag: null };
    // Numbers as the driver gives them (bigint as text by default), whatever type parsers the application set.
    const version = String(row.version);
    if (Number(row.format_version) !== format.version) {
      throw this.#corrupt(address, version, formatMismatch(Number(row.format_version), format.format));
    }
    if (!(row.payload instanceof Uint8Array)) {
      throw this.#corrupt(
        address,
        version,
        `its payload is ${row.payload === null ? 'NULL' : typeof row.payload}, not bytea`,
      );
    }
    try {
      return { state: format.decode(row.payload), etag: version };
    } catch (err) {
      throw this.#corrupt(address, version, `cannot decode its ${format.format} payload: ${errorMessage(err)}`, err);
    }
  }

  async write(address: StateAddress, state: unknown, etag: string | null): Promise<string> {
    const { pool, format } = this.#use(address);
    // Outside the try: a value that cannot be serialized is the caller's error, not the store's.
    const payload = format.encode(state, this.#what(address));
    if (etag !== null && !ETAG.test(etag)) throw await this.#conflict(pool, 'write', address, etag);
    let rows: Array<{ version: unknown }>;
    try {
      rows =
        etag === null
          ? (await pool.query<{ version: unknown }>(this.#queries.insert, [...key(address), payload, format.version]))
              .rows
          : (
              await pool.query<{ version: unknown }>(this.#queries.update, [
                ...key(address),
                payload,
                format.version,
                etag,
              ])
            ).rows;
    } catch (err) {
      throw this.#wrap(err, `write of ${describe(address)} failed`);
    }
    const written = rows[0];
    if (written === undefined) throw await this.#conflict(pool, 'write', address, etag);
    return String(written.version);
  }

  async clear(address: StateAddress, etag: string | null): Promise<void> {
    const { pool } = this.#use(address);
    if (etag === null) {
      // Nothing to delete; only whether there is a record decides.
      if ((await this.#found(pool, 'clear', address)) === null) return;
      throw await this.#conflict(pool, 'clear', address, etag);
    }
    if (!ETAG.test(etag)) throw await this.#conflict(pool, 'clear', address, etag);
    let deleted: number;
    try {
      deleted = (await pool.query(this.#queries.delete, [...key(address), etag])).rowCount ?? 0;
    } catch (err) {
      throw this.#wrap(err, `clear of ${describe(address)} failed`);
    }
    if (deleted !== 1) throw await this.#conflict(pool, 'clear', address, etag);
  }

  async close(): Promise<void> {
    const pool = this.#pool;
    this.#pool = undefined;
    this.#format = undefined;
    if (pool === undefined) return;
    try {
      await pool.end();
    } catch (err) {
      throw this.#wrap(err, 'close failed');
    }
  }

  /** The version stored at `address`, or null if there is no record. */
  async #found(pool: Pool, op: 'write' | 'clear', address: StateAddress): Promise<string | null> {
    try {
      const row = (await pool.query<{ version: unknown }>(this.#queries.selectVersion, key(address))).rows[0];
      return row === undefined ? null : String(row.version);
    } catch (err) {
      throw this.#wrap(err, `${op} of ${describe(address)} failed`);
    }
  }

  /**
   * The error of a write or clear whose ETag did not match; reads the ETag
   * found for the message. The refusal stands if that read fails: it must not
   * turn into a StorageError, which would say the write may have landed.
   */
  async #conflict(
    pool: Pool,
    op: 'write' | 'clear',
    address: StateAddress,
    etag: string | null,
  ): Promise<InconsistentStateError> {
    let found: string;
    try {
      found = (await this.#found(pool, op, address)) ?? 'none (no record)';
    } catch (err) {
      found = `another (reading it failed: ${errorMessage(err)})`;
    }
    return new InconsistentStateError(
      `${op} of grain ${grainName(address)} state '${address.stateName}' in postgres storage '${this.#name}' refused: ` +
        `expected etag ${etag ?? 'none (no record)'}, found ${found}`,
    );
  }

  /**
   * Creates the table and the sequence if missing; true if this call created
   * the table. An advisory lock makes concurrent creators (silos starting at
   * once) queue, so exactly one creates and logs: CREATE TABLE IF NOT EXISTS
   * alone can fail with a duplicate key on the catalog when two run at once.
   */
  async #createSchema(pool: Pool): Promise<boolean> {
    const { table, sequence } = this.#settings;
    const t = quote(table);
    return withTransaction(pool, async (client) => {
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`granary storage ${table}`]);
      const tableExisted = await this.#checkTable(client);
      const sequenceExisted =
        ((await client.query<{ oid: unknown }>('SELECT to_regclass($1) AS oid', [quote(sequence)])).rows[0]?.oid ??
          null) !== null;
      // payload is bytea in both formats; JSON as its UTF-8 text. Not jsonb:
      // jsonb reorders object keys and refuses \u0000 in strings, so state
      // would not read back as written. Not a second, text column: one table
      // serves both formats, format_version tells them apart, and a record in
      // the other format fails as such rather than as a column of the wrong
      // type. Other tools read it with convert_from(payload, 'UTF8')::jsonb.
      await client.query(`CREATE TABLE IF NOT EXISTS ${t} (
        grain_type     text        NOT NULL,
        grain_key      text        NOT NULL,
        state_name     text        NOT NULL,
        payload        bytea       NOT NULL,
        version        bigint      NOT NULL,
        format_version integer     NOT NULL,
        updated_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (grain_type, grain_key, state_name)
      )`);
      // One counter for the whole table, so that a version (ETag) is never
      // reused, not even by a record that is cleared and written again. A
      // sequence is not rolled back: a failed write only skips a number.
      await client.query(`CREATE SEQUENCE IF NOT EXISTS ${quote(sequence)} AS bigint`);
      if (!sequenceExisted && tableExisted) {
        // The sequence was lost but the rows are not: carry on past their versions.
        await client.query(`SELECT setval($1::regclass, GREATEST((SELECT max(version) FROM ${t}), 1))`, [
          quote(sequence),
        ]);
      }
      return !tableExisted;
    });
  }

  /** Whether the table exists; if it does, that it has the columns this provider needs, of the types it reads. */
  async #checkTable(client: PoolClient): Promise<boolean> {
    const { table } = this.#settings;
    const types = await tableColumns(client, table);
    if (types === undefined) return false;
    const missing = missingColumns(table, new Set(types.keys()), Object.keys(COLUMNS));
    if (missing !== undefined) throw this.#error(missing);
    for (const [column, accepted] of Object.entries(COLUMNS)) {
      const type = types.get(column) ?? '';
      if (!accepted.includes(type)) {
        throw this.#error(foreignTable(table, `its column ${column} is ${type}, not ${accepted.join(' or ')}`));
      }
    }
    return true;
  }

  #use(address: StateAddress): { pool: Pool; format: PayloadFormat } {
    if (this.#pool === undefined || this.#format === undefined) {
      throw this.#error(`${NOT_OPEN}: cannot access ${describe(address)}`);
    }
    return { pool: this.#pool, format: this.#format };
  }

  /** Names the record for messages about its payload. */
  #what(address: StateAddress): string {
    return `${describe(address)} to postgres storage '${this.#name}'`;
  }

  #corrupt(address: StateAddress, version: string, problem: string, cause?: unknown): StorageError {
    const { table, safeConnection } = this.#settings;
    return corruptState(
      {
        what: `state for ${describe(address)}`,
        provider: `postgres storage '${this.#name}'`,
        where: `table ${table}, row ${rowName(address)}, version ${version}, ${safeConnection}`,
      },
      problem,
      cause,
    );
  }

  #error(problem: string, cause?: unknown): StorageError {
    return new StorageError(
      `postgres storage '${this.#name}' (${this.#settings.safeConnection}, table ${this.#settings.table}): ${problem}`,
      ErrorCodes.Storage,
      causeOf(cause),
    );
  }

  /** Granary errors pass through; driver errors become a StorageError that names provider, database and table. */
  #wrap(err: unknown, what: string): GranaryError {
    return wrapError(err, what, (problem, cause) => this.#error(problem, cause));
  }
}

function queries(settings: Settings): Queries {
  const t = quote(settings.table);
  const s = quote(settings.sequence);
  const where = 'grain_type = $1 AND grain_key = $2 AND state_name = $3';
  return {
    select: `SELECT payload, version, format_version FROM ${t} WHERE ${where}`,
    selectVersion: `SELECT version FROM ${t} WHERE ${where}`,
    // Of concurrent inserts of one key, one inserts; the others wait for it and then do nothing.
    insert: `INSERT INTO ${t} (grain_type, grain_key, state_name, payload, version, format_version, updated_at)
      VALUES ($1, $2, $3, $4, nextval('${s}'), $5, now())
      ON CONFLICT (grain_type, grain_key, state_name) DO NOTHING
      RETURNING version`,
    // A concurrent update of the row makes this one re-check the version on the new row, so it matches nothing.
    update: `UPDATE ${t} SET payload = $4, version = nextval('${s}'), format_version = $5, updated_at = now()
      WHERE ${where} AND version = $6
      RETURNING version`,
    delete: `DELETE FROM ${t} WHERE ${where} AND version = $4`,
  };
}

/**
 * The key columns of a record. PostgreSQL text holds neither NUL nor unpaired
 * UTF-16 surrogates (the driver would send U+FFFD, making two names one), so
 * names holding them are escaped: `\` as `\\`, NUL as `\0`, an unpaired
 * surrogate as `\uXXXX`. Names without `\`, NUL or unpaired surrogates (nearly
 * all) are stored as they are, readable by other tools.
 */
function key(address: StateAddress): [string, string, string] {
  return [column(address.grainType), column(address.grainKey), column(address.stateName)];
}

const NEEDS_ESCAPE = /[\\\0]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

function column(name: string): string {
  NEEDS_ESCAPE.lastIndex = 0;
  if (!NEEDS_ESCAPE.test(name)) return name;
  return name.replace(NEEDS_ESCAPE, (c) =>
    c === '\\' ? '\\\\' : c === '\0' ? '\\0' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

function validate(options: PostgresStorageOptions): Settings {
  return validateConnectionOptions('postgresStorage', options, postgresStorageDefaults, (prefix) => ({
    table: `${prefix}storage`,
    sequence: `${prefix}storage_version`,
    format: formatOption('postgresStorage', options.format),
  }));
}

function grainName(address: StateAddress): string {
  return `${address.grainType}/${address.grainKey}`;
}

function describe(address: StateAddress): string {
  return `grain ${grainName(address)} state '${address.stateName}'`;
}

/** The primary key of a record's row, for messages. */
function rowName(address: StateAddress): string {
  return `(${[address.grainType, address.grainKey, address.stateName].map((s) => JSON.stringify(s)).join(', ')})`;
}
