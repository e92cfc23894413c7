// The event log provider interface: where the events of journaled grains
// live. Like storage providers, event logs deal in values, serialize with the
// serializer the silo hands them at init, and own optimistic concurrency (here
// on the version of a stream rather than on an ETag).

import { ConfigurationError, type StorageCorruptError } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';
import type { ProviderContext } from '../storage/provider.ts';

/** Which log of which grain: one stream of events. */
export interface LogAddress {
  readonly grainType: string;
  readonly grainKey: string;
  readonly logName: string;
}

/** One event of a stream and the version it moved the stream to. */
export interface LoggedEvent {
  /** 1-based: the first event of a stream has version 1 (it moves the stream from 0 to 1). */
  readonly version: number;
  readonly event: unknown;
}

/** The state of a stream as of `version`, saved so that activation need not replay the events up to it. */
export interface LogSnapshot {
  readonly version: number;
  readonly state: unknown;
}

/** A stream as `read` gives it. */
export interface StoredLog {
  /** The latest snapshot, if one was written. */
  readonly snapshot?: LogSnapshot;
  /** The events after the snapshot (all of them when there is none), in version order. */
  readonly events: readonly LoggedEvent[];
  /** The version of the stream: that of its last event; 0 for a stream with none. */
  readonly version: number;
}

/**
 * An event log provider. Every implementation passes the conformance suite in
 * test/journal/conformance.ts.
 */
export interface EventLog {
  /** Short kind for messages and logs: `memory`, `sqlite`, `postgres`, ... */
  readonly kind: string;
  /** Called once by the silo before first use; creates tables if needed. */
  init(ctx: ProviderContext): Promise<void> | void;
  /**
   * Reads a stream: its latest snapshot and the events after it. An event or
   * snapshot that cannot be decoded fails with a `StorageError` (code
   * `GRANARY_STORAGE_CORRUPT`) naming the grain, the log, the provider and the
   * version of the row.
   */
  read(stream: LogAddress): Promise<StoredLog>;
  /**
   * Appends `events`, all or none, if the stream is at `expectedVersion`, and
   * resolves to the new version (`expectedVersion + events.length`). A stream
   * at another version fails with `InconsistentStateError` and gets nothing;
   * of several appends made at one version exactly one succeeds. No events:
   * only the version check.
   */
  append(stream: LogAddress, events: readonly unknown[], expectedVersion: number): Promise<number>;
  /**
   * Saves the state of the stream as of `version` (an event of the stream)
   * as its snapshot, unless a snapshot of that or a later version exists. A
   * version past the end of the stream fails with `InconsistentStateError`.
   * Events are kept: `readEvents` still gives them.
   */
  writeSnapshot(stream: LogAddress, version: number, state: unknown): Promise<void>;
  /**
   * The events that move the stream from version `from` to version `to`
   * (those with `from < version <= to`), in order; fewer when the stream
   * ends before `to`.
   */
  readEvents(stream: LogAddress, from: number, to: number): Promise<LoggedEvent[]>;
  /** Releases connections and files. */
  close(): Promise<void> | void;
}

/** What a journaled grain's activation gets from the runtime: its log and how to use it. */
export interface JournalBinding {
  readonly log: EventLog;
  /** The name the log is configured under on the silo. */
  readonly logName: string;
  readonly address: LogAddress;
  /** Snapshot every this many events; 0: never. */
  readonly snapshotEvery: number;
  readonly logger: Logger;
}

// ---- Helpers for providers ---------------------------------------------------

/** `type/key` and the log name, for messages: `account/alice log 'journal'`. */
export function describeStream(stream: LogAddress): string {
  return `grain ${stream.grainType}/${stream.grainKey} log '${stream.logName}'`;
}

/** Throws a ConfigurationError (the caller's mistake) unless `v` is a version: a whole number from `min` up. */
export function checkVersion(what: string, v: number, min = 0): void {
  if (!Number.isSafeInteger(v) || v < min) {
    throw new ConfigurationError(`${what} must be a whole number from ${min} up, got ${String(v)}`);
  }
}

/** Throws a ConfigurationError (the caller's mistake) unless `from` and `to` bound a range of versions. */
export function checkRange(from: number, to: number): void {
  checkVersion('readEvents: from', from);
  checkVersion('readEvents: to', to);
  if (to < from) throw new ConfigurationError(`readEvents: to (${to}) is before from (${from})`);
}

/** The format of the payload column that the SQL event logs of this version write and read. */
export const LOG_FORMAT_VERSION = 1;

/** An event or snapshot row of an SQL event log as the store gives it back, before it is checked. */
export interface LogRow {
  /** A number, or its decimal text (a PostgreSQL bigint). */
  readonly version: unknown;
  readonly payload: unknown;
  readonly format_version: unknown;
}

/** How `decodeLogRow` reads a row and reports one it cannot. */
export interface LogRowReader {
  readonly serializer: ProviderContext['serializer'];
  /** The store's name of the payload column's type, e.g. `bytea`, `a BLOB`. */
  readonly payloadType: string;
  /** The provider's error for the row: naming the grain, log, provider, table and version. */
  readonly corrupt: (problem: string, cause?: unknown) => StorageCorruptError;
}

/** The version and the decoded value (event or snapshot state) of a row; a row that cannot be read fails with `reader.corrupt`. */
export function decodeLogRow(row: LogRow, reader: LogRowReader): { version: number; value: unknown } {
  const version = typeof row.version === 'string' && /^[0-9]+$/.test(row.version) ? Number(row.version) : row.version;
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1)
    throw reader.corrupt(`its version is ${String(row.version)}, not a whole number from 1 up`);
  // Numbers as the driver gives them, whatever type parsers the application set.
  if (Number(row.format_version) !== LOG_FORMAT_VERSION) {
    throw reader.corrupt(
      `its format version is ${String(row.format_version)}, this Granary reads format ${LOG_FORMAT_VERSION}`,
    );
  }
  if (!(row.payload instanceof Uint8Array)) {
    throw reader.corrupt(
      `its payload is ${row.payload === null ? 'NULL' : typeof row.payload}, not ${reader.payloadType}`,
    );
  }
  try {
    return { version, value: reader.serializer.decode(row.payload) };
  } catch (err) {
    throw reader.corrupt(`cannot decode its payload: ${err instanceof Error ? err.message : String(err)}`, err);
  }
}
