// The reminder table: durable reminders, one row per grain and reminder name,
// as Orleans's IReminderTable. Rows carry the grain's ring hash so that each
// silo can load the reminders of its own ring ranges; every change of a row
// gets a new ETag, and removal is conditional on it.

import type { Logger } from '../observability/logger.ts';

/** One durable reminder. */
export interface ReminderEntry {
  /** The grain, `type/key`. */
  readonly grainId: string;
  /** The reminder's name, unique per grain. */
  readonly name: string;
  /** The grain id's ring hash (`hash32(grainId)`, an unsigned 32-bit integer): which silo fires it. */
  readonly grainHash: number;
  /** Epoch ms of the first tick, a whole number. */
  readonly startAt: number;
  /** Ms between ticks, a whole number, 1 or more. */
  readonly periodMs: number;
}

/** A reminder as stored, with the ETag of its row. */
export interface StoredReminder extends ReminderEntry {
  /** Opaque; changes with every upsert of the row and is never issued twice for it, not even after a remove. */
  readonly etag: string;
  /**
   * Epoch ms of the due time of the latest tick recorded as fired for this
   * row (`recordTick`); absent when none was recorded since the row was
   * (re)written by upsert.
   */
  readonly lastTickAt?: number;
}

/** What a table is given before first use. */
export interface ReminderContext {
  /** Reminders of other clusters in the same store are never seen. */
  readonly clusterId: string;
  readonly logger: Logger;
}

/**
 * A reminder table provider. Every implementation passes the conformance
 * suite in test/reminders/conformance.ts. Store errors throw a
 * `ReminderError` (code `GRANARY_REMINDERS`) naming the operation and the
 * provider; a row that cannot be read back is skipped with a warning naming
 * it, never a reason to fail the whole range. A row whose recorded
 * `lastTickAt` alone cannot be read back is returned without it, with a
 * warning: its reminder keeps firing (a taken-over tick may fire again, as
 * at-least-once delivery allows) rather than stop until re-registered.
 */
export interface ReminderTable {
  /** Short kind for messages and logs: `memory`, `sqlite`, `postgres`, `redis`. */
  readonly kind: string;
  /** Called before first use (again after close, to reopen); creates tables or keys if needed, and logs when it does. */
  init(ctx: ReminderContext): Promise<void>;
  /** Every reminder of one grain. */
  readGrain(grainId: string): Promise<StoredReminder[]>;
  /** One reminder, or undefined. */
  read(grainId: string, name: string): Promise<StoredReminder | undefined>;
  /**
   * The reminders whose grainHash lies in the ring range `(begin, end]`:
   * `begin < hash && hash <= end` when begin < end, and the wrapping range
   * `hash > begin || hash <= end` when begin >= end (begin === end: all).
   * begin and end are ring positions, whole numbers from 0 to 2^32-1; others
   * throw a ReminderError. The order of the rows is unspecified.
   */
  readRange(begin: number, end: number): Promise<StoredReminder[]>;
  /**
   * Inserts or replaces the reminder (grainId, name), with all its fields;
   * resolves to its new ETag, never one used before for that row. An entry
   * that cannot be kept exactly (grainHash not a whole number from 0 to
   * 2^32-1, startAt not a safe integer, periodMs not a whole number of 1 or
   * more) throws a ReminderError and changes nothing. The row's `lastTickAt`
   * is cleared, whatever the entry holds: a new registration starts afresh.
   */
  upsert(entry: ReminderEntry): Promise<string>;
  /**
   * Records that the tick of the reminder (grainId, name) due at `dueAt`
   * (epoch ms, a safe integer; others throw a ReminderError) was fired: it
   * becomes the row's `lastTickAt` if it is later than the one recorded, never
   * earlier. The row's ETag does not change (a tick is not a re-registration),
   * and an upsert clears what was recorded. A missing row is not an error
   * (the reminder was removed meanwhile): nothing is recorded, nothing made.
   */
  recordTick(grainId: string, name: string, dueAt: number): Promise<void>;
  /** Removes the reminder if its ETag is still `etag`; true if it was removed. */
  remove(grainId: string, name: string, etag: string): Promise<boolean>;
  /** Removes every reminder of this cluster (tests, tear-down); ETags issued afterwards still differ from those before. */
  clear(): Promise<void>;
  /** Releases connections and files. */
  close(): Promise<void>;
}
