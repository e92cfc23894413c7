// Redis membership table: per cluster, a version hash, a hash of rows and a
// hash of I-am-alive times (ioredis). Every change is one Lua script, so each
// compare-and-swap is atomic on the server.

import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { GranaryError, MembershipError } from '../../errors.ts';
import { alreadyOpen, causeOf, errorMessage, NOT_OPEN, wrapError } from '../shared.ts';
import type {
  MembershipContext,
  MembershipSnapshot,
  MembershipTable,
  SiloEntry,
  SiloRow,
  TableVersion,
} from '../../membership/table.ts';
import { decodeSiloEntry, siloId } from '../../membership/table.ts';
import {
  closeClient,
  createClient,
  logOutages,
  sendCommand,
  validateConnectionOptions,
  type ConnectionSettings,
} from './connection.ts';

/** Options of `redisMembership`. */
export interface RedisMembershipOptions {
  /** Where Redis is, e.g. `redis://:secret@cache:6379/0`. Required. */
  readonly url: string;
  /**
   * Prepended to every key, so several clusters or test runs can share one
   * Redis. Default `granary:`: keys `granary:membership:{<clusterId>}:version`, `:rows` and `:alive`.
   */
  readonly keyPrefix?: string;
  /** How long to wait for the connection to open, in ms. Default 10 000. */
  readonly connectTimeoutMs?: number;
  /** How long to wait for the answer to one command, in ms, before a call fails. Default 10 000. */
  readonly commandTimeoutMs?: number;
}

/** Defaults of the optional `RedisMembershipOptions` fields. */
export const redisMembershipDefaults: Readonly<Required<Omit<RedisMembershipOptions, 'url'>>> = {
  keyPrefix: 'granary:',
  connectTimeoutMs: 10_000,
  commandTimeoutMs: 10_000,
};

/** The ETag of the version of a cluster that has no version hash (only after `deleteCluster`); never issued otherwise. */
const NO_VERSION_ETAG = '0';

// KEYS of every script: 1 version hash {version, etag}, 2 rows hash (silo id ->
// JSON {etag, entry without iAmAliveAt}), 3 alive hash (silo id -> iAmAliveAt).
// iAmAliveAt lives apart so that updateIAmAlive is one HSET that cannot lose a
// concurrent update, and so that no script re-encodes JSON (cjson would turn
// [] into {} and round numbers). A missing version hash reads as version 0
// with NO_VERSION_ETAG.

/** ARGV: etag. Creates the version hash at version 0 unless it exists; 1 if it did. */
const ENSURE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'version', '0', 'etag', ARGV[1])
return 1`;

/** The three hashes, flat, read at one moment. */
const READ = `return { redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]) }`;

/** ARGV: version etag read, next version, new version etag, silo id, row JSON, iAmAliveAt[, row etag read]. */
const CHANGE_HEAD = `
if (redis.call('HGET', KEYS[1], 'etag') or '${NO_VERSION_ETAG}') ~= ARGV[1] then return 0 end`;
const CHANGE_TAIL = `
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[6])
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'etag', ARGV[3])
return 1`;
const INSERT = `${CHANGE_HEAD}
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then return 0 end${CHANGE_TAIL}`;
const UPDATE = `${CHANGE_HEAD}
local row = redis.call('HGET', KEYS[2], ARGV[4])
if not row or cjson.decode(row).etag ~= ARGV[7] then return 0 end${CHANGE_TAIL}`;

/** KEYS: rows, alive. ARGV: silo id, iAmAliveAt. Only for a silo that has a row. */
const ALIVE = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1`;

/** KEYS: rows, alive. ARGV: cut-off. Deletes Dead rows last alive before it; returns how many. */
const CLEANUP = `
local before = tonumber(ARGV[1])
local rows = redis.call('HGETALL', KEYS[1])
local deleted = 0
for i = 1, #rows, 2 do
  local id = rows[i]
  local at = tonumber(redis.call('HGET', KEYS[2], id))
  if cjson.decode(rows[i + 1]).entry.status == 'Dead' and at ~= nil and at < before then
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    deleted = deleted + 1
  end
end
return deleted`;

/** The scripts, as defineCommand adds them to the connection. */
interface Scripts {
  granaryMembershipEnsure(version: string, etag: string): Promise<number>;
  granaryMembershipRead(version: string, rows: string, alive: string): Promise<[string[], string[], string[]]>;
  granaryMembershipInsert(version: string, rows: string, alive: string, ...args: string[]): Promise<number>;
  granaryMembershipUpdate(version: string, rows: string, alive: string, ...args: string[]): Promise<number>;
  granaryMembershipAlive(rows: string, alive: string, id: string, at: string): Promise<number>;
  granaryMembershipCleanup(rows: string, alive: string, before: string): Promise<number>;
}

/**
 * A membership table in Redis (kind `redis`). Connects and creates the
 * cluster's version on `init`, not here.
 */
export function redisMembership(options: RedisMembershipOptions): MembershipTable {
  return new RedisMembership(validate(options));
}

type Settings = ConnectionSettings;

interface Keys {
  readonly version: string;
  readonly rows: string;
  readonly alive: string;
}

/** The JSON of a row in the rows hash. */
interface StoredRow {
  readonly etag: string;
  readonly entry: Omit<SiloEntry, 'iAmAliveAt'>;
}

class RedisMembership implements MembershipTable {
  readonly kind = 'redis';
  #settings: Settings;
  #clusterId: string | undefined;
  #redis: (Redis & Scripts) | undefined;
  #keys: Keys | undefined;
  /** Logs that a command timed out and its connection is dropped. */
  #onDrop: () => void = () => undefined;

  constructor(settings: Settings) {
    this.#settings = settings;
  }

  // Re-init after close opens a new connection, so a restarted silo can reuse the provider.
  async init(ctx: MembershipContext): Promise<void> {
    if (this.#redis !== undefined) {
      if (ctx.clusterId === this.#clusterId) return;
      throw this.#error('init', alreadyOpen(this.#clusterId));
    }
    this.#clusterId = ctx.clusterId;
    const { safeUrl, keyPrefix, connectTimeoutMs, commandTimeoutMs } = this.#settings;
    const client = createClient(this.#settings);
    const { redis } = client;
    const onDrop = logOutages(redis, {
      logger: ctx.logger,
      fields: { redis: safeUrl, clusterId: ctx.clusterId },
      what: 'redis membership',
      commandTimeoutMs,
      inUse: () => this.#redis === redis,
    });
    const scripts = defineScripts(redis);
    const keys = clusterKeys(keyPrefix, ctx.clusterId);
    try {
      await redis.connect();
      if ((await scripts.granaryMembershipEnsure(keys.version, randomUUID())) === 1) {
        ctx.logger.info({ key: keys.version, redis: safeUrl }, 'created membership version');
      }
    } catch (err) {
      const cause = client.abandon(err);
      throw this.#error('init', `cannot reach Redis or set up key ${keys.version}: ${errorMessage(cause)}`, cause);
    }
    client.opened();
    this.#redis = scripts;
    this.#keys = keys;
    this.#onDrop = onDrop;
    ctx.logger.debug(
      { redis: safeUrl, keys, connectTimeoutMs, commandTimeoutMs, clusterId: ctx.clusterId },
      'redis membership opened',
    );
  }

  async readAll(): Promise<MembershipSnapshot> {
    const { redis, keys } = this.#use('readAll');
    let read: [string[], string[], string[]];
    try {
      read = await this.#command(redis, () => redis.granaryMembershipRead(keys.version, keys.rows, keys.alive));
    } catch (err) {
      throw this.#wrap(err, 'readAll');
    }
    const [versionFlat, rowsFlat, aliveFlat] = read;
    const version = pairs(versionFlat);
    const alive = pairs(aliveFlat);
    const entries = [...pairs(rowsFlat)].map(([id, json]) => this.#decode(id, json, alive.get(id)));
    const number = version.get('version');
    const etag = version.get('etag');
    if (number === undefined || etag === undefined) return { version: { version: 0, etag: NO_VERSION_ETAG }, entries };
    return { version: { version: Number(number), etag }, entries };
  }

  async insert(entry: SiloEntry, next: TableVersion): Promise<boolean> {
    const { redis, keys } = this.#use('insert');
    try {
      return (
        (await this.#command(redis, () =>
          redis.granaryMembershipInsert(keys.version, keys.rows, keys.alive, ...changeArgs(entry, next)),
        )) === 1
      );
    } catch (err) {
      throw this.#wrap(err, 'insert', `silo ${siloId(entry)}`);
    }
  }

  async update(entry: SiloEntry, etag: string, next: TableVersion): Promise<boolean> {
    const { redis, keys } = this.#use('update');
    try {
      return (
        (await this.#command(redis, () =>
          redis.granaryMembershipUpdate(keys.version, keys.rows, keys.alive, ...changeArgs(entry, next), etag),
        )) === 1
      );
    } catch (err) {
      throw this.#wrap(err, 'update', `silo ${siloId(entry)}`);
    }
  }

  async updateIAmAlive(address: string, generation: number, at: number): Promise<void> {
    const { redis, keys } = this.#use('updateIAmAlive');
    const id = siloId({ address, generation });
    try {
      await this.#command(redis, () => redis.granaryMembershipAlive(keys.rows, keys.alive, id, String(at)));
    } catch (err) {
      throw this.#wrap(err, 'updateIAmAlive', `silo ${id}`);
    }
  }

  async cleanupDefunct(before: number): Promise<number> {
    const { redis, keys } = this.#use('cleanupDefunct');
    // Lua's tonumber reads neither Infinity nor NaN.
    if (Number.isNaN(before)) throw this.#error('cleanupDefunct', 'the cut-off is NaN');
    const cutOff = Number.isFinite(before) ? String(before) : before > 0 ? '1e308' : '-1e308';
    try {
      return await this.#command(redis, () => redis.granaryMembershipCleanup(keys.rows, keys.alive, cutOff));
    } catch (err) {
      throw this.#wrap(err, 'cleanupDefunct');
    }
  }

  async deleteCluster(): Promise<void> {
    const { redis, keys } = this.#use('deleteCluster');
    try {
      await this.#command(redis, () => redis.del(keys.version, keys.rows, keys.alive));
    } catch (err) {
      throw this.#wrap(err, 'deleteCluster');
    }
  }

  async close(): Promise<void> {
    const redis = this.#redis;
    this.#redis = undefined;
    this.#keys = undefined;
    if (redis === undefined) return;
    await closeClient(redis);
  }

  /**
   * Sends one command; one that times out drops its connection for a new one
   * (see sendCommand), so that a Redis that stopped answering on an open
   * connection does not keep this silo from writing I-am-alive or reading
   * the table until the operating system gives up on the connection.
   */
  #command<T>(redis: Redis, send: () => Promise<T>): Promise<T> {
    return sendCommand(redis, send, { inUse: () => this.#redis === redis, onDrop: this.#onDrop });
  }

  #decode(id: string, json: string, alive: string | undefined): { entry: SiloEntry; etag: string } {
    const corrupt = (problem: string, cause?: unknown): MembershipError =>
      this.#error('readAll', `corrupt row ${id} in ${this.#keys?.rows ?? 'the rows hash'}: ${problem}`, cause);
    let stored: unknown;
    try {
      stored = JSON.parse(json);
    } catch (err) {
      throw corrupt(`not JSON: ${errorMessage(err)}`, err);
    }
    if (typeof stored !== 'object' || stored === null) throw corrupt('not a JSON object');
    const { etag, entry } = stored as { etag?: unknown; entry?: unknown };
    if (typeof etag !== 'string' || typeof entry !== 'object' || entry === null) throw corrupt('lacks etag or entry');
    // A JSON array is an array by now: its text here would be a string held in the JSON, not the array.
    const { suspicions } = entry as { suspicions?: unknown };
    if (typeof suspicions === 'string') throw corrupt('bad suspicions: a string, not a JSON array');
    if (alive === undefined) throw corrupt('its I-am-alive time is missing');
    return { entry: decodeSiloEntry({ ...(entry as SiloRow), iAmAliveAt: alive }, corrupt), etag };
  }

  #use(op: string): { redis: Redis & Scripts; keys: Keys } {
    if (this.#redis === undefined || this.#keys === undefined) {
      throw this.#error(op, `the table is ${NOT_OPEN}`);
    }
    return { redis: this.#redis, keys: this.#keys };
  }

  #error(op: string, problem: string, cause?: unknown): MembershipError {
    return new MembershipError(
      `redis membership (cluster ${JSON.stringify(this.#clusterId)}, ${this.#settings.safeUrl}): ${op} failed: ${problem}`,
      causeOf(cause),
    );
  }

  /** Granary errors pass through; driver errors become a MembershipError that names the operation, cluster and server. */
  #wrap(err: unknown, op: string, what?: string): GranaryError {
    return wrapError(err, what, (problem, cause) => this.#error(op, problem, cause));
  }
}

function defineScripts(redis: Redis): Redis & Scripts {
  redis.defineCommand('granaryMembershipEnsure', { numberOfKeys: 1, lua: ENSURE });
  redis.defineCommand('granaryMembershipRead', { numberOfKeys: 3, lua: READ });
  redis.defineCommand('granaryMembershipInsert', { numberOfKeys: 3, lua: INSERT });
  redis.defineCommand('granaryMembershipUpdate', { numberOfKeys: 3, lua: UPDATE });
  redis.defineCommand('granaryMembershipAlive', { numberOfKeys: 2, lua: ALIVE });
  redis.defineCommand('granaryMembershipCleanup', { numberOfKeys: 2, lua: CLEANUP });
  return redis as Redis & Scripts;
}

/** The keys of a cluster. The hash tag keeps them in one slot, as a script on Redis Cluster needs. */
function clusterKeys(keyPrefix: string, clusterId: string): Keys {
  const base = `${keyPrefix}membership:{${clusterId}}`;
  return { version: `${base}:version`, rows: `${base}:rows`, alive: `${base}:alive` };
}

/** ARGV 1-6 of INSERT and UPDATE: the version check, the new version, the row with a new ETag. */
function changeArgs(e: SiloEntry, next: TableVersion): string[] {
  const stored: StoredRow = {
    etag: randomUUID(),
    entry: {
      address: e.address,
      generation: e.generation,
      status: e.status,
      gatewayAddress: e.gatewayAddress,
      hostName: e.hostName,
      startedAt: e.startedAt,
      suspicions: e.suspicions.map((s) => ({ by: s.by, at: s.at })),
    },
  };
  return [next.etag, String(next.version), randomUUID(), siloId(e), JSON.stringify(stored), String(e.iAmAliveAt)];
}

function pairs(flat: string[]): Map<string, string> {
  const map = new Map<string, string>();
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const key = flat[i];
    const value = flat[i + 1];
    if (key !== undefined && value !== undefined) map.set(key, value);
  }
  return map;
}

function validate(options: RedisMembershipOptions): Settings {
  return validateConnectionOptions('redisMembership', options, redisMembershipDefaults, () => ({}));
}
