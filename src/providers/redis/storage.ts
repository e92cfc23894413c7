// Redis storage provider: one hash per record (payload, version,
// format_version, updated_at) through ioredis. Each write and clear is one Lua
// script, so the ETag check is atomic on the server; versions (ETags) come
// from one counter (INCR), so they are never reused.

import type { Redis } from 'ioredis';
import { ErrorCodes, GranaryError, InconsistentStateError, StorageError } from '../../errors.ts';
import { causeOf, corruptState, errorMessage, NOT_OPEN, wrapError } from '../shared.ts';
import type { ProviderContext, StateAddress, StorageProvider, StoredState } from '../../storage/provider.ts';
import {
  formatMismatch,
  formatOption,
  payloadFormat,
  type PayloadFormat,
  type StateFormat,
} from '../../storage/state-format.ts';
import {
  closeClient,
  createClient,
  logOutages,
  sendCommand,
  validateConnectionOptions,
  type ConnectionSettings,
} from './connection.ts';

/** Options of `redisStorage`. */
export interface RedisStorageOptions {
  /** Where Redis is, e.g. `redis://:secret@cache:6379/0`. Required. */
  readonly url: string;
  /**
   * Prepended to every key, so several clusters or test runs can share one
   * Redis. Default `granary:`: a record at `granary:storage:["<grain type>","<grain key>","<state name>"]`,
   * the version counter at `granary:storage:etag`.
   */
  readonly keyPrefix?: string;
  /**
   * How state is stored: `codec` (the silo's serializer; carries Map, Set,
   * Date, BigInt, grain references...) or `json` (JSON text, readable with
   * `HGET <key> payload`; a state JSON cannot hold fails its write). Default `codec`.
   */
  readonly format?: StateFormat;
  /** How long to wait for the connection to open, in ms. Default 5 000. */
  readonly connectTimeoutMs?: number;
  /**
   * How long to wait for the answer to one command, in ms, before a read or
   * write fails. Default 10 000: below a grain call's default deadline, so a
   * caller sees the storage failure rather than a timeout.
   */
  readonly commandTimeoutMs?: number;
}

/** Defaults of the optional `RedisStorageOptions` fields. */
export const redisStorageDefaults: Readonly<Required<Omit<RedisStorageOptions, 'url'>>> = {
  keyPrefix: 'granary:',
  format: 'codec',
  connectTimeoutMs: 5_000,
  commandTimeoutMs: 10_000,
};

// Every script touches the record's key and (writes) the counter's key: this
// provider needs one Redis (with replicas or not), not Redis Cluster, where
// those keys would live in different slots.

/**
 * KEYS: record, counter. ARGV: expected version ('' for none), payload,
 * format version, updated_at. Returns {1, new version} or {0, found version
 * or '', 1 if a record exists}. A counter behind the record's version (the
 * counter key was lost) moves past it, so the record's next ETag is new.
 */
const WRITE = `
local found = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '' then
  if found or redis.call('EXISTS', KEYS[1]) == 1 then return {0, found or '', 1} end
elseif found ~= ARGV[1] then
  return {0, found or '', redis.call('EXISTS', KEYS[1])}
end
local v = redis.call('INCR', KEYS[2])
local n = found and tonumber(found)
if n and n >= v then
  v = n + 1
  redis.call('SET', KEYS[2], string.format('%d', v))
end
local version = string.format('%d', v)
redis.call('HSET', KEYS[1], 'payload', ARGV[2], 'version', version, 'format_version', ARGV[3], 'updated_at', ARGV[4])
return {1, version}`;

/** KEYS: record. ARGV: expected version ('' for none). Returns {1} or {0, found version or '', 1 if a record exists}. */
const CLEAR = `
local found = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '' then
  if not found and redis.call('EXISTS', KEYS[1]) == 0 then return {1} end
  return {0, found or '', 1}
end
if found ~= ARGV[1] then return {0, found or '', redis.call('EXISTS', KEYS[1])} end
redis.call('DEL', KEYS[1])
return {1}`;

type Outcome = [ok: number, found?: string, exists?: number];

/** The scripts, as defineCommand adds them to the connection. */
interface Scripts {
  granaryStorageWrite(
    record: string,
    counter: string,
    etag: string,
    payload: Buffer,
    formatVersion: string,
    updatedAt: string,
  ): Promise<Outcome>;
  granaryStorageClear(record: string, etag: string): Promise<Outcome>;
}

/** A version this provider could have issued. */
const ETAG = /^[1-9][0-9]{0,17}$/;

/**
 * A storage provider on Redis (kind `redis`). Connects on `init`, not here.
 */
export function redisStorage(options: RedisStorageOptions): StorageProvider {
  return new RedisStorage(validate(options));
}

interface Settings extends ConnectionSettings {
  readonly counterKey: string;
  readonly format: StateFormat;
}

class RedisStorage implements StorageProvider {
  readonly kind = 'redis';
  #settings: Settings;
  #name = '(not initialised)';
  #redis: (Redis & Scripts) | undefined;
  #format: PayloadFormat | undefined;
  /** Logs that a command timed out and its connection is dropped. */
  #onDrop: () => void = () => undefined;

  constructor(settings: Settings) {
    this.#settings = settings;
  }

  // Re-init after close opens a new connection, so a restarted silo can reuse the provider.
  async init(ctx: ProviderContext): Promise<void> {
    if (this.#redis !== undefined) return;
    this.#name = ctx.name;
    const { safeUrl, counterKey, format, connectTimeoutMs, commandTimeoutMs } = this.#settings;
    const client = createClient(this.#settings);
    const { redis } = client;
    const onDrop = logOutages(redis, {
      logger: ctx.logger,
      fields: { redis: safeUrl },
      what: 'redis storage',
      commandTimeoutMs,
      inUse: () => this.#redis === redis,
    });
    redis.defineCommand('granaryStorageWrite', { numberOfKeys: 2, lua: WRITE });
    redis.defineCommand('granaryStorageClear', { numberOfKeys: 1, lua: CLEAR });
    try {
      await redis.connect();
      // Of several silos starting at once, one creates the counter (and logs).
      if ((await redis.set(counterKey, '0', 'NX')) === 'OK')
        ctx.logger.info({ key: counterKey, redis: safeUrl }, 'created storage counter');
    } catch (err) {
      const cause = client.abandon(err);
      throw this.#error(`cannot reach Redis or set up key ${counterKey}: ${errorMessage(cause)}`, cause);
    }
    client.opened();
    this.#onDrop = onDrop;
    this.#redis = redis as Redis & Scripts;
    this.#format = payloadFormat(format, ctx.serializer);
    ctx.logger.debug(
      { redis: safeUrl, keyPrefix: this.#settings.keyPrefix, format, connectTimeoutMs, commandTimeoutMs },
      'redis storage opened',
    );
  }

  async read(address: StateAddress): Promise<StoredState> {
    const { redis, format } = this.#use(address);
    const key = this.#key(address);
    let fields: Array<Buffer | null>;
    try {
      fields = await this.#command(redis, () => redis.hmgetBuffer(key, 'payload', 'version', 'format_version'));
    } catch (err) {
      if (isWrongType(err))
        throw this.#corrupt(address, key, `the key holds a ${await this.#typeOf(key)}, not a hash`, err);
      throw this.#wrap(err, `read of ${describe(address)} failed`);
    }
    const [payload, versionField, formatField] = fields;
    if (payload == null && versionField == null && formatField == null) return { state: undefined, etag: null };
    const version = versionField?.toString('latin1');
    if (version === undefined || !ETAG.test(version)) {
      throw this.#corrupt(
        address,
        key,
        `its version is ${version === undefined ? 'missing' : JSON.stringify(version)}, not a positive whole number`,
      );
    }
    const formatText = formatField?.toString('latin1');
    if (formatText === undefined)
      throw this.#corrupt(address, key, `version ${version}: its format_version is missing`);
    if (formatText !== String(format.version)) {
      const found = /^[0-9]{1,9}$/.test(formatText) ? Number(formatText) : JSON.stringify(formatText);
      throw this.#corrupt(address, key, `version ${version}: ${formatMismatch(found, format.format)}`);
    }
    if (payload == null) throw this.#corrupt(address, key, `version ${version}: its payload is missing`);
    try {
      return { state: format.decode(payload), etag: version };
    } catch (err) {
      throw this.#corrupt(
        address,
        key,
        `version ${version}: cannot decode its ${format.format} payload: ${errorMessage(err)}`,
        err,
      );
    }
  }

  async write(address: StateAddress, state: unknown, etag: string | null): Promise<string> {
    const { redis, format } = this.#use(address);
    const key = this.#key(address);
    // Outside the try: a value that cannot be serialized is the caller's error, not the store's.
    const encoded = format.encode(state, `${describe(address)} to redis storage '${this.#name}'`);
    // ioredis sends a Buffer as bytes but would turn another Uint8Array into text.
    const payload = Buffer.isBuffer(encoded)
      ? encoded
      : Buffer.from(encoded.buffer, encoded.byteOffset, encoded.byteLength);
    // An ETag this provider cannot have issued matches nothing; '' must not pass for "no record".
    const expected = etag === null ? '' : ETAG.test(etag) ? etag : 'none';
    let outcome: Outcome;
    try {
      outcome = await this.#command(redis, () =>
        redis.granaryStorageWrite(
          key,
          this.#settings.counterKey,
          expected,
          payload,
          String(format.version),
          String(Date.now()),
        ),
      );
    } catch (err) {
      throw this.#wrap(err, `write of ${describe(address)} failed`);
    }
    const [ok, found, exists] = outcome;
    if (ok === 1 && found !== undefined) return found;
    throw this.#conflict('write', address, etag, found, exists);
  }

  async clear(address: StateAddress, etag: string | null): Promise<void> {
    const { redis } = this.#use(address);
    const expected = etag === null ? '' : ETAG.test(etag) ? etag : 'none';
    let outcome: Outcome;
    try {
      outcome = await this.#command(redis, () => redis.granaryStorageClear(this.#key(address), expected));
    } catch (err) {
      throw this.#wrap(err, `clear of ${describe(address)} failed`);
    }
    const [ok, found, exists] = outcome;
    if (ok !== 1) throw this.#conflict('clear', address, etag, found, exists);
  }

  async close(): Promise<void> {
    const redis = this.#redis;
    this.#redis = undefined;
    this.#format = undefined;
    if (redis === undefined) return;
    await closeClient(redis);
  }

  /**
   * Sends one command; one that times out drops its connection for a new one
   * (see sendCommand), so that a Redis that stopped answering on an open
   * connection does not keep every later read and write failing until the
   * operating system gives up on the connection.
   */
  #command<T>(redis: Redis, send: () => Promise<T>): Promise<T> {
    return sendCommand(redis, send, { inUse: () => this.#redis === redis, onDrop: this.#onDrop });
  }

  /**
   * The key of a record. JSON makes it unambiguous when names contain the
   * separator, and keeps names apart that UTF-8 would not (JSON escapes
   * unpaired surrogates).
   */
  #key(address: StateAddress): string {
    return `${this.#settings.keyPrefix}storage:${JSON.stringify([address.grainType, address.grainKey, address.stateName])}`;
  }

  async #typeOf(key: string): Promise<string> {
    try {
      return await (this.#redis?.type(key) ?? Promise.resolve('(unknown type)'));
    } catch {
      return 'value of another type';
    }
  }

  #conflict(
    op: 'write' | 'clear',
    address: StateAddress,
    etag: string | null,
    found: string | undefined,
    exists: number | undefined,
  ): InconsistentStateError {
    const foundText =
      exists !== 1 ? 'none (no record)' : found === undefined || found === '' ? 'a record without a version' : found;
    return new InconsistentStateError(
      `${op} of grain ${grainName(address)} state '${address.stateName}' in redis storage '${this.#name}' refused: ` +
        `expected etag ${etag ?? 'none (no record)'}, found ${foundText}`,
    );
  }

  #use(address: StateAddress): { redis: Redis & Scripts; format: PayloadFormat } {
    if (this.#redis === undefined || this.#format === undefined) {
      throw this.#error(`${NOT_OPEN}: cannot access ${describe(address)}`);
    }
    return { redis: this.#redis, format: this.#format };
  }

  #corrupt(address: StateAddress, key: string, problem: string, cause?: unknown): StorageError {
    return corruptState(
      {
        what: `state for ${describe(address)}`,
        provider: `redis storage '${this.#name}'`,
        where: `key ${key}, ${this.#settings.safeUrl}`,
      },
      problem,
      cause,
    );
  }

  #error(problem: string, cause?: unknown): StorageError {
    return new StorageError(
      `redis storage '${this.#name}' (${this.#settings.safeUrl}): ${problem}`,
      ErrorCodes.Storage,
      causeOf(cause),
    );
  }

  /** Granary errors pass through; driver errors become a StorageError that names provider and server. */
  #wrap(err: unknown, what: string): GranaryError {
    return wrapError(err, what, (problem, cause) => this.#error(problem, cause));
  }
}

function isWrongType(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('WRONGTYPE');
}

function validate(options: RedisStorageOptions): Settings {
  return validateConnectionOptions('redisStorage', options, redisStorageDefaults, (keyPrefix) => ({
    counterKey: `${keyPrefix}storage:etag`,
    format: formatOption('redisStorage', options.format),
  }));
}

function grainName(address: StateAddress): string {
  return `${address.grainType}/${address.grainKey}`;
}

function describe(address: StateAddress): string {
  return `grain ${grainName(address)} state '${address.stateName}'`;
}
