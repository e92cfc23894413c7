// The rows of the SQL stores (PostgreSQL and SQLite): the same columns in
// both, so one decoder each for membership and reminder rows. Values come as
// each driver gives them; the domain decoders check every one.

import type { MembershipError } from '../errors.ts';
import type { SiloEntry } from '../membership/table.ts';
import { decodeSiloEntry } from '../membership/table.ts';
import type { Logger } from '../observability/logger.ts';
import { decodeReminderRow, type StoredReminder } from '../reminders/table.ts';

/** A membership row's columns as read. */
export interface SiloRow {
  readonly silo_id: unknown;
  readonly address: unknown;
  readonly generation: unknown;
  readonly status: unknown;
  readonly gateway_address: unknown;
  readonly host_name: unknown;
  readonly started_at: unknown;
  readonly i_am_alive_at: unknown;
  readonly suspicions: unknown;
  readonly etag: unknown;
}

/**
 * The entry and etag of a membership row; `corrupt` makes the provider's
 * error for a row that cannot be read (it is given the problem, naming the field).
 */
export function siloEntryOfRow(
  row: SiloRow,
  corrupt: (problem: string, cause?: unknown) => MembershipError,
): { entry: SiloEntry; etag: string } {
  if (typeof row.etag !== 'string') throw corrupt(`etag must be text, got ${String(row.etag)}`);
  const entry = decodeSiloEntry(
    {
      address: row.address,
      generation: row.generation,
      status: row.status,
      gatewayAddress: row.gateway_address,
      hostName: row.host_name,
      startedAt: row.started_at,
      iAmAliveAt: row.i_am_alive_at,
      suspicions: row.suspicions,
    },
    corrupt,
  );
  return { entry, etag: row.etag };
}

/** A reminder row's columns as read. */
export interface ReminderRow {
  readonly grain_id: unknown;
  readonly name: unknown;
  readonly grain_hash: unknown;
  readonly start_at: unknown;
  readonly period_ms: unknown;
  readonly etag: unknown;
  readonly last_tick_at: unknown;
}

/**
 * The reminder of a row, or undefined (with a warning naming the row, `where`
 * telling the table and database) if the row cannot be read back: a bad row
 * is skipped, never fatal to the whole read.
 */
export function reminderOfRow(
  row: ReminderRow,
  where: Readonly<Record<string, unknown>>,
  logger: Logger | undefined,
): StoredReminder | undefined {
  const decoded = decodeReminderRow({
    grainId: row.grain_id,
    name: row.name,
    grainHash: row.grain_hash,
    startAt: row.start_at,
    periodMs: row.period_ms,
    etag: row.etag,
    lastTickAt: row.last_tick_at,
  });
  const fields = { ...where, grainId: row.grain_id, name: row.name };
  if (decoded.reminder === undefined) {
    logger?.warn({ ...fields, problem: decoded.problem }, 'skipped a reminder row that cannot be read back');
    return undefined;
  }
  if (decoded.lastTickProblem !== undefined) {
    logger?.warn(
      { ...fields, problem: decoded.lastTickProblem },
      'read a reminder row without its last tick, which cannot be read back',
    );
  }
  return decoded.reminder;
}
