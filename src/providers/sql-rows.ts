// The rows of the SQL stores (PostgreSQL and SQLite): the same columns in
// both, so one decoder each for membership and reminder rows. Values come as
// each driver gives them; the domain decoders check every one.

import type { MembershipError } from '../errors.ts';
import type { SiloEntry } from '../membership/table.ts';
import { decodeSiloEntry } from '../membership/table.ts';
import type { Logger } from '../observability/logger.ts';
import { decodeReminderRow, type StoredReminder } from '../reminders/table.ts';
import { decodeLogRow, describeStream, type LogAddress, type LogRow } from '../journal/log.ts';
import type { ProviderContext } from '../storage/provider.ts';
import { corruptState } from './shared.ts';

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

/** Where an event-log row was read, for its messages. */
export interface LogRowSource {
  readonly serializer: ProviderContext['serializer'];
  /** The store's name of the payload column's type, e.g. `bytea`, `a BLOB`. */
  readonly payloadType: string;
  /** Starts the messages, e.g. `postgres event log 'default'`. */
  readonly provider: string;
  readonly table: string;
  /** The database or file, for the messages. */
  readonly place: string;
}

/**
 * The version and value of an event or snapshot row (`what`) of `stream`; a
 * row that cannot be read fails with StorageCorruptError naming the grain,
 * the provider, the table and the version.
 */
export function logRowOf(
  row: LogRow,
  stream: LogAddress,
  what: 'event' | 'snapshot',
  source: LogRowSource,
): { version: number; value: unknown } {
  return decodeLogRow(row, {
    serializer: source.serializer,
    payloadType: source.payloadType,
    corrupt: (problem, cause) =>
      corruptState(
        {
          what: `${what} of ${describeStream(stream)}`,
          provider: source.provider,
          where: `table ${source.table}, version ${String(row.version)}, ${source.place}`,
        },
        problem,
        cause,
      ),
  });
}
