// The event log provider interface: where the events of journaled grains
// live. Like storage providers, event logs deal in values, serialize with the
// serializer the silo hands them at init, and own optimistic concurrency (here
// on the version of a stream rather than on an ETag).

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

/** Throws a RangeError unless `v` is a version: a whole number from 0 up. */
export function checkVersion(what: string, v: number, min = 0): void {
  if (!Number.isSafeInteger(v) || v < min) {
    throw new RangeError(`${what} must be a whole number from ${min} up, got ${String(v)}`);
  }
}

/** Throws a RangeError unless `from` and `to` bound a range of versions. */
export function checkRange(from: number, to: number): void {
  checkVersion('readEvents: from', from);
  checkVersion('readEvents: to', to);
  if (to < from) throw new RangeError(`readEvents: to (${to}) is before from (${from})`);
}
