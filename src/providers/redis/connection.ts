// Connection handling shared by the Redis providers (storage, membership,
// reminders): their connection options, how they connect and close, how they
// log an outage, and what to do with a connection on which a command timed out.

import { Redis } from 'ioredis';
import { ConfigurationError } from '../../errors.ts';
import type { Logger } from '../../observability/logger.ts';

/** The connection options every Redis provider takes. */
export interface ConnectionOptions {
  readonly url: string;
  readonly keyPrefix?: string;
  readonly connectTimeoutMs?: number;
  readonly commandTimeoutMs?: number;
}

/** A provider's defaults of the optional connection options. */
export type ConnectionDefaults = Readonly<Required<Omit<ConnectionOptions, 'url'>>>;

/** The checked connection options. */
export interface ConnectionSettings {
  readonly url: string;
  /** The URL with any password replaced, for messages and logs. */
  readonly safeUrl: string;
  readonly keyPrefix: string;
  readonly connectTimeoutMs: number;
  readonly commandTimeoutMs: number;
}

/**
 * Checks the connection options of provider function `fn` (named in the
 * messages), filling in `defaults`. `more` gets the key prefix, once it is
 * checked and before the time-outs are, and returns the provider's own
 * settings (any option of its own it checks).
 */
export function validateConnectionOptions<More extends object>(
  fn: string,
  options: ConnectionOptions,
  defaults: ConnectionDefaults,
  more: (keyPrefix: string) => More,
): ConnectionSettings & More {
  const { url } = options;
  if (typeof url !== 'string' || !/^rediss?:\/\//.test(url)) {
    throw new ConfigurationError(
      `${fn}: option url must be a Redis URL such as redis://127.0.0.1:6379, got ${JSON.stringify(url)}`,
    );
  }
  const keyPrefix = options.keyPrefix ?? defaults.keyPrefix;
  if (typeof keyPrefix !== 'string')
    throw new ConfigurationError(`${fn}: option keyPrefix must be a string, got ${JSON.stringify(keyPrefix)}`);
  const own = more(keyPrefix);
  const connectTimeoutMs = options.connectTimeoutMs ?? defaults.connectTimeoutMs;
  const commandTimeoutMs = options.commandTimeoutMs ?? defaults.commandTimeoutMs;
  for (const [name, value] of [
    ['connectTimeoutMs', connectTimeoutMs],
    ['commandTimeoutMs', commandTimeoutMs],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 1 || value > 0x7fffffff) {
      throw new ConfigurationError(
        `${fn}: option ${name} must be a whole number of ms from 1 to 2147483647, got ${value}`,
      );
    }
  }
  return { url, safeUrl: redact(url), keyPrefix, ...own, connectTimeoutMs, commandTimeoutMs };
}

/** A connection made by `createClient`, not connected yet. */
export interface Client {
  readonly redis: Redis;
  /** Call once the provider is set up: from then on a lost connection is made again. */
  opened(): void;
  /** After a failed set-up: disconnects, and returns what to report as the cause (the connection's last error, else `err`). */
  abandon(err: unknown): unknown;
}

/**
 * A connection to `settings.url` that fails fast rather than wait for Redis:
 * no offline queue, no retry of a command after a reconnect (a write whose
 * answer was lost must not run twice), and a deadline on every command. Once
 * `opened`, the connection itself keeps reconnecting in the background.
 */
export function createClient(settings: ConnectionSettings): Client {
  let lastError: unknown;
  let opened = false;
  const redis = new Redis(settings.url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    connectTimeout: settings.connectTimeoutMs,
    commandTimeout: settings.commandTimeoutMs,
    // No retry of the first connection: init fails at once and leaves no timer behind.
    retryStrategy: (times) => (opened ? Math.min(times * 50, 2000) : null),
  });
  // Without a listener an 'error' would crash the process.
  redis.on('error', (err: unknown) => {
    lastError = err;
  });
  return {
    redis,
    opened: () => {
      opened = true;
    },
    abandon: (err) => {
      if (redis.status !== 'end') redis.disconnect();
      return lastError ?? err;
    },
  };
}

/** Says goodbye to Redis if it is still there, and drops the connection either way (no reconnect after). */
export async function closeClient(redis: Redis): Promise<void> {
  try {
    await redis.quit();
  } catch {
    // Not connected: nothing to say goodbye to.
  } finally {
    redis.disconnect();
  }
}

/** How `logOutages` logs. */
export interface OutageLog {
  readonly logger: Logger;
  /** Logged with every message, e.g. `{ redis: safeUrl, clusterId }`. */
  readonly fields: Readonly<Record<string, unknown>>;
  /** Starts every message, e.g. `redis membership`. */
  readonly what: string;
  readonly commandTimeoutMs: number;
  /** Whether `redis` is still the provider's connection. */
  readonly inUse: () => boolean;
}

/**
 * Logs the first error of an outage of `redis` and the recovery, not every
 * reconnect attempt. Returns what `sendCommand` calls when it drops the
 * connection after a time-out: it logs that, and the recovery then too.
 */
export function logOutages(redis: Redis, log: OutageLog): () => void {
  const { logger, fields, what } = log;
  let up = false;
  redis.on('error', (err: unknown) => {
    if (!up) return;
    up = false;
    logger.warn({ err, ...fields }, `${what}: connection lost; calls fail until it is back`);
  });
  redis.on('ready', () => {
    if (log.inUse() && !up) logger.info({ ...fields }, `${what}: connection back`);
    up = true;
  });
  return () => {
    // The new connection's 'ready' logs that it is back.
    up = false;
    logger.warn(
      { ...fields, commandTimeoutMs: log.commandTimeoutMs },
      `${what}: a command timed out; dropping the connection for a new one, calls fail until it is back`,
    );
  };
}

/** What ioredis rejects a command with when no answer came within its `commandTimeout`. */
const COMMAND_TIMED_OUT = 'Command timed out';

/** The sockets dropped already, so that commands timing out together drop (and log) one once. */
const dropped = new WeakSet<object>();

/** How `sendCommand` tells whether to drop a connection, and says that it does. */
export interface DropOnTimeout {
  /** Whether `redis` is still the provider's connection (not closed, not replaced). */
  readonly inUse: () => boolean;
  /** Called once per connection dropped, before it is dropped: to log it. */
  readonly onDrop: () => void;
}

/**
 * Sends one command. One that times out drops the connection it was sent on
 * and makes a new one: a Redis that stopped answering without closing the
 * connection (it vanished, or the network to it did) would otherwise keep
 * every later command waiting on it, and failing, until the operating
 * system gives up on the connection many minutes later, even once a Redis
 * answers again behind the same address. Commands waiting on the dropped
 * connection fail at once rather than pile up behind it.
 *
 * Only a connection still in use, still up and still the one the command
 * went out on is dropped: not one that was closed, or replaced meanwhile.
 */
export async function sendCommand<T>(redis: Redis, send: () => Promise<T>, drop: DropOnTimeout): Promise<T> {
  const stream = redis.stream;
  try {
    return await send();
  } catch (err) {
    if (
      isCommandTimeout(err) &&
      drop.inUse() &&
      redis.stream === stream &&
      redis.status === 'ready' &&
      !dropped.has(stream)
    ) {
      dropped.add(stream);
      drop.onDrop();
      // Reconnects, as after a lost connection: ends the socket (destroying it
      // if it does not close within ioredis's disconnectTimeout) and fails the
      // commands waiting on it.
      redis.disconnect(true);
    }
    throw err;
  }
}

/** Whether `err` is ioredis's time-out of one command. */
function isCommandTimeout(err: unknown): boolean {
  return err instanceof Error && err.message === COMMAND_TIMED_OUT;
}

/** The URL without its password, for messages and logs. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable Redis URL)';
  }
}
