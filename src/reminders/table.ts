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
  /** Epoch ms of the first tick. */
  readonly startAt: number;
  /** Ms between ticks. */
  readonly periodMs: number;
}

/** A reminder as stored, with the ETag of its row. */
export interface StoredReminder extends ReminderEntry {
  readonly etag: string;
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
 * it, never a reason to fail the whole range.
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
   */
  readRange(begin: number, end: number): Promise<StoredReminder[]>;
  /** Inserts or replaces the reminder (grainId, name); resolves to its new ETag, never one used before for that row. */
  upsert(entry: ReminderEntry): Promise<string>;
  /** Removes the reminder if its ETag is still `etag`; true if it was removed. */
  remove(grainId: string, name: string, etag: string): Promise<boolean>;
  /** Removes every reminder of this cluster (tests, tear-down). */
  clear(): Promise<void>;
  /** Releases connections and files. */
  close(): Promise<void>;
}
