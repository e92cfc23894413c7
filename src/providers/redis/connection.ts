// Connection handling shared by the Redis providers (storage, membership,
// reminders): what to do with a connection on which a command timed out.

import type { Redis } from 'ioredis';

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
    if (isCommandTimeout(err) && drop.inUse() && redis.stream === stream && redis.status === 'ready' && !dropped.has(stream)) {
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
