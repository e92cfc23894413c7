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

// ---- Checking entries and reading rows back, for providers -------------------

/** The largest ring hash: hashes are unsigned 32-bit integers. */
export const MAX_RING_HASH = 0xffffffff;

/** Whether `n` is a ring position: a whole number from 0 to 2^32-1. */
export function isRingHash(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= MAX_RING_HASH;
}

/** `reminder "name" of grain "type/key"`, for messages. */
export function describeReminder(grainId: string, name: string): string {
  return `reminder ${JSON.stringify(name)} of grain ${JSON.stringify(grainId)}`;
}

/** Why an entry cannot be stored exactly as given (see `ReminderTable.upsert`), or undefined. */
export function reminderEntryProblem(e: ReminderEntry): string | undefined {
  if (typeof e.grainId !== 'string' || typeof e.name !== 'string') return 'grainId and name must be strings';
  if (!isRingHash(e.grainHash))
    return `grainHash must be a whole number from 0 to ${MAX_RING_HASH}, got ${e.grainHash}`;
  if (!Number.isSafeInteger(e.startAt)) return `startAt must be a whole number of epoch ms, got ${e.startAt}`;
  if (!Number.isSafeInteger(e.periodMs) || e.periodMs < 1)
    return `periodMs must be a whole number of ms, 1 or more, got ${e.periodMs}`;
  return undefined;
}

/**
 * A reminder row's fields as a store gives them back, before they are
 * checked. Numbers may come as numbers or as the decimal text of a whole
 * number (a PostgreSQL bigint, a Redis hash field); `lastTickAt` is null or
 * undefined when no tick was recorded.
 */
export interface ReminderRow {
  readonly grainId: unknown;
  readonly name: unknown;
  readonly grainHash: unknown;
  readonly startAt: unknown;
  readonly periodMs: unknown;
  readonly etag: unknown;
  readonly lastTickAt: unknown;
}

/** What a store calls each field of a row, for the problems `decodeReminderRow` reports. */
export type ReminderFieldNames = Readonly<Record<keyof ReminderRow, string>>;

/** The column names of the SQL reminder tables. */
export const reminderColumns: ReminderFieldNames = {
  grainId: 'grain_id',
  name: 'name',
  grainHash: 'grain_hash',
  startAt: 'start_at',
  periodMs: 'period_ms',
  etag: 'etag',
  lastTickAt: 'last_tick_at',
};

/**
 * A row read back: its reminder, with `lastTickProblem` when only its last
 * tick could not be read (the reminder comes without it, and keeps firing);
 * or, when the row cannot be read at all, the `problem` that says why.
 */
export type DecodedReminder =
  | { readonly reminder: StoredReminder; readonly lastTickProblem?: string }
  | { readonly reminder?: undefined; readonly problem: string };

/**
 * Checks a reminder row read back from a store. Returns what was wrong
 * rather than throw: a row that cannot be read is skipped with a warning by
 * the provider (see `ReminderTable`), never a reason to fail a whole range.
 */
export function decodeReminderRow(row: ReminderRow, names: ReminderFieldNames = reminderColumns): DecodedReminder {
  const { grainId, name, etag } = row;
  const grainHash = wholeNumber(row.grainHash);
  const startAt = wholeNumber(row.startAt);
  const periodMs = wholeNumber(row.periodMs);
  const got = (field: keyof ReminderRow): string => `got ${show(row[field])}`;
  if (typeof grainId !== 'string' || typeof name !== 'string')
    return { problem: `${names.grainId} and ${names.name} must be text` };
  if (typeof etag !== 'string' || etag === '')
    return { problem: `${names.etag} must be non-empty text, ${got('etag')}` };
  if (!isRingHash(grainHash))
    return { problem: `${names.grainHash} must be a whole number from 0 to ${MAX_RING_HASH}, ${got('grainHash')}` };
  if (!Number.isSafeInteger(startAt))
    return { problem: `${names.startAt} must be a whole number of epoch ms within ±2^53, ${got('startAt')}` };
  if (!Number.isSafeInteger(periodMs) || periodMs < 1)
    return { problem: `${names.periodMs} must be a whole number of ms, 1 or more, ${got('periodMs')}` };
  const reminder = { grainId, name, grainHash, startAt, periodMs, etag };
  if (row.lastTickAt === null || row.lastTickAt === undefined) return { reminder };
  const lastTickAt = wholeNumber(row.lastTickAt);
  if (Number.isSafeInteger(lastTickAt)) return { reminder: { ...reminder, lastTickAt } };
  // Read as no tick recorded rather than skip a row that can still fire: a
  // tick taken over may then fire again, as at-least-once delivery allows.
  return {
    reminder,
    lastTickProblem: `${names.lastTickAt} must be a whole number of epoch ms within ±2^53 or absent, ${got('lastTickAt')}`,
  };
}

/** A whole number given as a number or as its decimal text; NaN for anything else. */
function wholeNumber(value: unknown): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  if (typeof value === 'string' && /^-?[0-9]+$/.test(value)) return Number(value);
  return Number.NaN;
}

/** A value as a message shows it. */
function show(value: unknown): string {
  return typeof value === 'bigint' ? String(value) : value === undefined ? 'nothing' : JSON.stringify(value);
}

/** Why `(begin, end]` is not a ring range (see `ReminderTable.readRange`), or undefined. */
export function ringRangeProblem(begin: number, end: number): string | undefined {
  if (isRingHash(begin) && isRingHash(end)) return undefined;
  return `begin and end must be whole numbers from 0 to ${MAX_RING_HASH}, got ${begin} and ${end}`;
}
