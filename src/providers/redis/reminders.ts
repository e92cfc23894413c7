// Redis reminder table (ioredis). Per cluster, under one hash tag: a sorted
// set of row ids scored by grain hash (range reads without scanning the
// server), a sorted set of the same ids by name (a grain's rows), a hash of
// rows, a hash of ETags, a hash of the latest ticks fired and an ETag counter.
// Every change is one Lua script, so each is atomic on the server.

import type { Redis } from 'ioredis';
import { GranaryError, ReminderError } from '../../errors.ts';
import { alreadyOpen, causeOf, errorMessage, NOT_OPEN, wrapError } from '../shared.ts';
import type { Logger } from '../../observability/logger.ts';
import type {
  ReminderContext,
  ReminderEntry,
  ReminderFieldNames,
  ReminderTable,
  StoredReminder,
} from '../../reminders/table.ts';
import { decodeReminderRow, describeReminder, reminderEntryProblem, ringRangeProblem } from '../../reminders/table.ts';
import {
  closeClient,
  createClient,
  logOutages,
  sendCommand,
  validateConnectionOptions,
  type ConnectionSettings,
} from './connection.ts';

/** Options of `redisReminders`. */
export interface RedisRemindersOptions {
  /** Where Redis is, e.g. `redis://:secret@cache:6379/0`. Required. */
  readonly url: string;
  /**
   * Prepended to every key, so several clusters or test runs can share one
   * Redis. Default `granary:`: keys `granary:reminders:{<clusterId>}:ring`,
   * `:grains`, `:rows`, `:etags`, `:ticks` and `:seq`.
   */
  readonly keyPrefix?: string;
  /** How long to wait for the connection to open, in ms. Default 10 000. */
  readonly connectTimeoutMs?: number;
  /** How long to wait for the answer to one command, in ms, before a call fails. Default 10 000. */
  readonly commandTimeoutMs?: number;
}

/** Defaults of the optional `RedisRemindersOptions` fields. */
export const redisRemindersDefaults: Readonly<Required<Omit<RedisRemindersOptions, 'url'>>> = {
  keyPrefix: 'granary:',
  connectTimeoutMs: 10_000,
  commandTimeoutMs: 10_000,
};

// KEYS of every script: 1 ring (sorted set: row id, score grain hash), 2
// grains (sorted set: row id, score 0, read by lexical range), 3 rows (hash:
// row id -> JSON {grainHash, startAt, periodMs}), 4 etags (hash: row id ->
// ETag), 5 seq (the last ETag issued), 6 ticks (hash: row id -> due time of
// the latest tick recorded, decimal epoch ms; no field: none). A row id is the
// JSON of [grainId, name], so all ids of one grain share the prefix
// `["<grainId>",`. ETags and ticks live apart from the rows so that no script
// decodes JSON, and a tick is recorded without touching the row or its ETag.

/** What this table calls the fields of a row, in the problems of rows that cannot be read back. */
const FIELDS: ReminderFieldNames = {
  grainId: 'grainId',
  name: 'name',
  grainHash: 'grainHash',
  startAt: 'startAt',
  periodMs: 'periodMs',
  etag: 'the ETag',
  lastTickAt: 'the latest tick',
};

/** Reads the rows, ETags and ticks of `ids` (in chunks: unpack has a limit) and returns {ids, rows, etags, ticks}. */
const FETCH = `
local function fetch(ids)
  local rows, etags, ticks = {}, {}, {}
  for i = 1, #ids, 1000 do
    local last = math.min(i + 999, #ids)
    local r = redis.call('HMGET', KEYS[3], unpack(ids, i, last))
    local e = redis.call('HMGET', KEYS[4], unpack(ids, i, last))
    local t = redis.call('HMGET', KEYS[6], unpack(ids, i, last))
    for j = 1, last - i + 1 do
      rows[#rows + 1] = r[j]
      etags[#etags + 1] = e[j]
      ticks[#ticks + 1] = t[j]
    end
  end
  return { ids, rows, etags, ticks }
end`;

/** ARGV: pairs of score bounds. The rows whose grain hash lies in any of them. */
const READ_RANGE = `${FETCH}
local ids = {}
for i = 1, #ARGV, 2 do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[i], ARGV[i + 1])) do ids[#ids + 1] = id end
end
return fetch(ids)`;

/** ARGV: lexical bounds. The rows of one grain. */
const READ_GRAIN = `${FETCH}
return fetch(redis.call('ZRANGEBYLEX', KEYS[2], ARGV[1], ARGV[2]))`;

/** ARGV: row id. One row. */
const READ_ONE = `${FETCH}
return fetch({ ARGV[1] })`;

/** ARGV: row id, grain hash, row JSON. Returns the new ETag. A new registration starts afresh: no tick recorded. */
const UPSERT = `
local etag = string.format('%d', redis.call('INCR', KEYS[5]))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[1], etag)
redis.call('HDEL', KEYS[6], ARGV[1])
return etag`;

/**
 * ARGV: row id, due time (decimal, a safe integer). Records it if the row
 * exists (has an ETag) and it is later than the tick recorded; 1 if it did.
 * A recorded value that is not a decimal whole number within ±2^53 (see
 * decodeReminderRow) counts as none, so a tick mends it. Safe integers compare exactly
 * as Lua numbers (doubles).
 */
const RECORD_TICK = `
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 0 then return 0 end
local recorded = redis.call('HGET', KEYS[6], ARGV[1])
if recorded and string.match(recorded, '^%-?%d+$') then
  local n = tonumber(recorded)
  if n and n >= -${Number.MAX_SAFE_INTEGER} and n <= ${Number.MAX_SAFE_INTEGER} and n >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[6], ARGV[1], ARGV[2])
return 1`;

/** ARGV: row id, ETag. 1 if the row had that ETag and is gone. */
const REMOVE = `
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
return 1`;

/** What a read script returns: row ids, and per id its row JSON, its ETag and its latest tick (null if missing). */
type Fetched = [string[], Array<string | null>, Array<string | null>, Array<string | null>];

/** The scripts, as defineCommand adds them to the connection; every one takes the six keys first. */
interface Scripts {
  granaryRemindersReadRange(...args: string[]): Promise<Fetched>;
  granaryRemindersReadGrain(...args: string[]): Promise<Fetched>;
  granaryRemindersReadOne(...args: string[]): Promise<Fetched>;
  granaryRemindersUpsert(...args: string[]): Promise<string>;
  granaryRemindersRecordTick(...args: string[]): Promise<number>;
  granaryRemindersRemove(...args: string[]): Promise<number>;
}

/**
 * A reminder table in Redis (kind `redis`). Connects and creates the
 * cluster's ETag counter on `init`, not here.
 */
export function redisReminders(options: RedisRemindersOptions): ReminderTable {
  return new RedisReminders(validate(options));
}

type Settings = ConnectionSettings;

interface Keys {
  readonly ring: string;
  readonly grains: string;
  readonly rows: string;
  readonly etags: string;
  readonly seq: string;
  readonly ticks: string;
}

class RedisReminders implements ReminderTable {
  readonly kind = 'redis';
  #settings: Settings;
  #clusterId: string | undefined;
  #logger: Logger | undefined;
  #redis: (Redis & Scripts) | undefined;
  #keys: Keys | undefined;
  /** Logs that a command timed out and its connection is dropped. */
  #onDrop: () => void = () => undefined;

  constructor(settings: Settings) {
    this.#settings = settings;
  }

  // Re-init after close opens a new connection, so a restarted silo can reuse the provider.
  async init(ctx: ReminderContext): Promise<void> {
    if (this.#redis !== undefined) {
      if (ctx.clusterId === this.#clusterId) return;
      throw this.#error('init', alreadyOpen(this.#clusterId));
    }
    this.#clusterId = ctx.clusterId;
    this.#logger = ctx.logger;
    const { safeUrl, keyPrefix, connectTimeoutMs, commandTimeoutMs } = this.#settings;
    const client = createClient(this.#settings);
    const { redis } = client;
    const onDrop = logOutages(redis, {
      logger: ctx.logger,
      fields: { redis: safeUrl, clusterId: ctx.clusterId },
      what: 'redis reminders',
      commandTimeoutMs,
      inUse: () => this.#redis === redis,
    });
    const scripts = defineScripts(redis);
    const keys = clusterKeys(keyPrefix, ctx.clusterId);
    try {
      await redis.connect();
      // The counter outlives clear(), so that no ETag is issued twice; making it is this table's only set-up.
      if ((await redis.set(keys.seq, '0', 'NX')) === 'OK')
        ctx.logger.info({ key: keys.seq, redis: safeUrl }, 'created reminder keys');
    } catch (err) {
      const cause = client.abandon(err);
      throw this.#error('init', `cannot reach Redis or set up key ${keys.seq}: ${errorMessage(cause)}`, cause);
    }
    client.opened();
    this.#redis = scripts;
    this.#keys = keys;
    this.#onDrop = onDrop;
    ctx.logger.debug(
      { redis: safeUrl, keys, connectTimeoutMs, commandTimeoutMs, clusterId: ctx.clusterId },
      'redis reminders opened',
    );
  }

  async readGrain(grainId: string): Promise<StoredReminder[]> {
    const { redis, keys } = this.#use('readGrain');
    // Every id of the grain starts with `["<grainId>",`; the upper bound is that prefix with its last character (`,`) moved on by one.
    const prefix = rowId(grainId, '').slice(0, -3);
    let fetched: Fetched;
    try {
      fetched = await this.#command(redis, () =>
        redis.granaryRemindersReadGrain(...keyList(keys), `[${prefix}`, `(${prefix.slice(0, -1)}-`),
      );
    } catch (err) {
      throw this.#wrap(err, 'readGrain', `grain ${JSON.stringify(grainId)}`);
    }
    return this.#decodeAll(fetched).filter((r) => r.grainId === grainId);
  }

  async read(grainId: string, name: string): Promise<StoredReminder | undefined> {
    const { redis, keys } = this.#use('read');
    let fetched: Fetched;
    try {
      fetched = await this.#command(redis, () => redis.granaryRemindersReadOne(...keyList(keys), rowId(grainId, name)));
    } catch (err) {
      throw this.#wrap(err, 'read', describeReminder(grainId, name));
    }
    return this.#decodeAll(fetched)[0];
  }

  async readRange(begin: number, end: number): Promise<StoredReminder[]> {
    const { redis, keys } = this.#use('readRange');
    const rangeProblem = ringRangeProblem(begin, end);
    if (rangeProblem !== undefined) throw this.#error('readRange', rangeProblem);
    // (begin, end]; when begin >= end it wraps: (begin, top] and [bottom, end]; begin === end is the whole ring.
    const bounds =
      begin < end
        ? [`(${begin}`, String(end)]
        : begin === end
          ? ['-inf', '+inf']
          : [`(${begin}`, '+inf', '-inf', String(end)];
    let fetched: Fetched;
    try {
      fetched = await this.#command(redis, () => redis.granaryRemindersReadRange(...keyList(keys), ...bounds));
    } catch (err) {
      throw this.#wrap(err, 'readRange', `range (${begin}, ${end}]`);
    }
    return this.#decodeAll(fetched);
  }

  async upsert(entry: ReminderEntry): Promise<string> {
    const { redis, keys } = this.#use('upsert');
    const what = describeReminder(entry.grainId, entry.name);
    const problem = reminderEntryProblem(entry);
    if (problem !== undefined) throw this.#error('upsert', `${what}: ${problem}`);
    const row = JSON.stringify({ grainHash: entry.grainHash, startAt: entry.startAt, periodMs: entry.periodMs });
    try {
      return String(
        await this.#command(redis, () =>
          redis.granaryRemindersUpsert(
            ...keyList(keys),
            rowId(entry.grainId, entry.name),
            String(entry.grainHash),
            row,
          ),
        ),
      );
    } catch (err) {
      throw this.#wrap(err, 'upsert', what);
    }
  }

  async recordTick(grainId: string, name: string, dueAt: number): Promise<void> {
    const { redis, keys } = this.#use('recordTick');
    const what = describeReminder(grainId, name);
    if (!Number.isSafeInteger(dueAt))
      throw this.#error('recordTick', `${what}: dueAt must be a whole number of epoch ms, got ${String(dueAt)}`);
    try {
      await this.#command(redis, () =>
        redis.granaryRemindersRecordTick(...keyList(keys), rowId(grainId, name), String(dueAt)),
      );
    } catch (err) {
      throw this.#wrap(err, 'recordTick', what);
    }
  }

  async remove(grainId: string, name: string, etag: string): Promise<boolean> {
    const { redis, keys } = this.#use('remove');
    try {
      return (
        (await this.#command(redis, () =>
          redis.granaryRemindersRemove(...keyList(keys), rowId(grainId, name), etag),
        )) === 1
      );
    } catch (err) {
      throw this.#wrap(err, 'remove', describeReminder(grainId, name));
    }
  }

  async clear(): Promise<void> {
    const { redis, keys } = this.#use('clear');
    try {
      // Not the counter: ETags issued after a clear must differ from those before.
      await this.#command(redis, () => redis.del(keys.ring, keys.grains, keys.rows, keys.etags, keys.ticks));
    } catch (err) {
      throw this.#wrap(err, 'clear');
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
   * connection does not keep every later call failing until the operating
   * system gives up on the connection.
   */
  #command<T>(redis: Redis, send: () => Promise<T>): Promise<T> {
    return sendCommand(redis, send, { inUse: () => this.#redis === redis, onDrop: this.#onDrop });
  }

  #decodeAll([ids, rows, etags, ticks]: Fetched): StoredReminder[] {
    const found: StoredReminder[] = [];
    ids.forEach((id, i) => {
      const r = this.#decode(id, rows[i] ?? null, etags[i] ?? null, ticks[i] ?? null);
      if (r !== undefined) found.push(r);
    });
    return found;
  }

  /** The reminder of a row, or undefined: silently if it is not there, with a warning naming it if it cannot be read back. */
  #decode(id: string, json: string | null, etag: string | null, tick: string | null): StoredReminder | undefined {
    if (json === null && etag === null) return undefined;
    const { grainId, name } = parseRowId(id);
    const where = { clusterId: this.#clusterId, redis: this.#settings.safeUrl, row: id, grainId, name };
    const skip = (problem: string): undefined => {
      this.#logger?.warn(
        { ...where, key: this.#keys?.rows, problem },
        'skipped a reminder row that cannot be read back',
      );
      return undefined;
    };
    if (grainId === undefined || name === undefined) return skip('the row id is not the JSON of [grainId, name]');
    if (json === null) return skip('the row is missing');
    if (etag === null || etag === '') return skip('the ETag is missing');
    let row: unknown;
    try {
      row = JSON.parse(json);
    } catch (err) {
      return skip(`not JSON: ${errorMessage(err)}`);
    }
    const { grainHash, startAt, periodMs } = (typeof row === 'object' && row !== null ? row : {}) as Record<
      string,
      unknown
    >;
    const decoded = decodeReminderRow({ grainId, name, grainHash, startAt, periodMs, etag, lastTickAt: tick }, FIELDS);
    if (decoded.reminder === undefined) return skip(decoded.problem);
    if (decoded.lastTickProblem !== undefined) {
      this.#logger?.warn(
        { ...where, key: this.#keys?.ticks, problem: decoded.lastTickProblem },
        'read a reminder row without its last tick, which cannot be read back',
      );
    }
    return decoded.reminder;
  }

  #use(op: string): { redis: Redis & Scripts; keys: Keys } {
    if (this.#redis === undefined || this.#keys === undefined) {
      throw this.#error(op, `the table is ${NOT_OPEN}`);
    }
    return { redis: this.#redis, keys: this.#keys };
  }

  #error(op: string, problem: string, cause?: unknown): ReminderError {
    return new ReminderError(
      `redis reminders (cluster ${JSON.stringify(this.#clusterId)}, ${this.#settings.safeUrl}): ${op} failed: ${problem}`,
      causeOf(cause),
    );
  }

  /** Granary errors pass through; driver errors become a ReminderError that names the operation, cluster and server. */
  #wrap(err: unknown, op: string, what?: string): GranaryError {
    return wrapError(err, what, (problem, cause) => this.#error(op, problem, cause));
  }
}

function defineScripts(redis: Redis): Redis & Scripts {
  redis.defineCommand('granaryRemindersReadRange', { numberOfKeys: 6, lua: READ_RANGE });
  redis.defineCommand('granaryRemindersReadGrain', { numberOfKeys: 6, lua: READ_GRAIN });
  redis.defineCommand('granaryRemindersReadOne', { numberOfKeys: 6, lua: READ_ONE });
  redis.defineCommand('granaryRemindersUpsert', { numberOfKeys: 6, lua: UPSERT });
  redis.defineCommand('granaryRemindersRecordTick', { numberOfKeys: 6, lua: RECORD_TICK });
  redis.defineCommand('granaryRemindersRemove', { numberOfKeys: 6, lua: REMOVE });
  return redis as Redis & Scripts;
}

/** The keys of a cluster. The hash tag keeps them in one slot, as a script on Redis Cluster needs. */
function clusterKeys(keyPrefix: string, clusterId: string): Keys {
  const base = `${keyPrefix}reminders:{${clusterId}}`;
  return {
    ring: `${base}:ring`,
    grains: `${base}:grains`,
    rows: `${base}:rows`,
    etags: `${base}:etags`,
    seq: `${base}:seq`,
    ticks: `${base}:ticks`,
  };
}

function keyList(keys: Keys): [string, string, string, string, string, string] {
  return [keys.ring, keys.grains, keys.rows, keys.etags, keys.seq, keys.ticks];
}

/** The grain id and name of a row id, each undefined if the id is not one `rowId` makes. */
function parseRowId(id: string): { grainId?: string; name?: string } {
  let key: unknown;
  try {
    key = JSON.parse(id);
  } catch {
    return {};
  }
  if (!Array.isArray(key) || key.length !== 2) return {};
  const [grainId, name] = key as unknown[];
  return typeof grainId === 'string' && typeof name === 'string' ? { grainId, name } : {};
}

/** The id of a row: unambiguous for any grain id and name, and every id of one grain starts with the same text. */
function rowId(grainId: string, name: string): string {
  return JSON.stringify([grainId, name]);
}

function validate(options: RedisRemindersOptions): Settings {
  return validateConnectionOptions('redisReminders', options, redisRemindersDefaults, () => ({}));
}
