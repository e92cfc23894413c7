// In-memory event log: the events and snapshots of journaled grains as
// serialized bytes in a Map, for tests and single-process use. Bytes rather
// than objects, so a grain never shares an event or a snapshot with the store
// by reference, and every value goes through the codec as it would on disk.

import { InconsistentStateError, StorageError } from '../../errors.ts';
import { corruptState, errorMessage } from '../shared.ts';
import {
  checkRange,
  checkVersion,
  describeStream,
  type EventLog,
  type LogAddress,
  type LoggedEvent,
  type StoredLog,
} from '../../journal/log.ts';
import type { ProviderContext } from '../../storage/provider.ts';

/** One stream as stored: its events' bytes (index i holds version i + 1) and its latest snapshot. */
export interface MemoryStream {
  readonly events: readonly Uint8Array[];
  readonly snapshot: { readonly version: number; readonly bytes: Uint8Array } | undefined;
}

interface MutableStream {
  events: Uint8Array[];
  snapshot: { version: number; bytes: Uint8Array } | undefined;
}

/**
 * The streams behind one or more memory event logs. Each log has a private
 * store unless one is passed in; share one between logs (e.g. the silos of
 * one process, each with its own serializer) to let them see the same events.
 */
export class MemoryEventStore {
  #streams = new Map<string, MutableStream>();

  /** The stream at an address, or undefined if it has no event. */
  get(stream: LogAddress): MemoryStream | undefined {
    return this.#streams.get(streamKey(stream));
  }

  /**
   * Appends `bytes` if the stream is at `expectedVersion`; the new version, or
   * the version found instead. The store keeps `bytes` as given: do not
   * modify them afterwards.
   */
  append(
    stream: LogAddress,
    bytes: readonly Uint8Array[],
    expectedVersion: number,
  ): { ok: true; version: number } | { ok: false; found: number } {
    const key = streamKey(stream);
    const s = this.#streams.get(key);
    const found = s?.events.length ?? 0;
    if (found !== expectedVersion) return { ok: false, found };
    if (bytes.length === 0) return { ok: true, version: found };
    if (s === undefined) this.#streams.set(key, { events: [...bytes], snapshot: undefined });
    else s.events.push(...bytes);
    return { ok: true, version: found + bytes.length };
  }

  /**
   * Keeps `bytes` as the snapshot at `version` unless one of that version or
   * later is kept; refuses a version past the end of the stream, giving its version.
   */
  setSnapshot(stream: LogAddress, version: number, bytes: Uint8Array): { ok: true } | { ok: false; found: number } {
    const s = this.#streams.get(streamKey(stream));
    const found = s?.events.length ?? 0;
    if (s === undefined || version > found) return { ok: false, found };
    if (s.snapshot === undefined || s.snapshot.version < version) s.snapshot = { version, bytes };
    return { ok: true };
  }

  /** Replaces the bytes of one stored event (tools and tests); false if there is no such event. */
  replace(stream: LogAddress, version: number, bytes: Uint8Array): boolean {
    const s = this.#streams.get(streamKey(stream));
    if (s === undefined || !(version >= 1 && version <= s.events.length)) return false;
    s.events[version - 1] = bytes;
    return true;
  }

  /** Number of streams held. */
  get size(): number {
    return this.#streams.size;
  }
}

/** Options of `memoryEventLog`. */
export interface MemoryEventLogOptions {
  /** Where streams live; default: a new store private to this log. */
  readonly store?: MemoryEventStore;
}

/** An event log that keeps events in process memory (kind `memory`). */
export function memoryEventLog(options: MemoryEventLogOptions = {}): EventLog {
  return new MemoryEventLog(options.store ?? new MemoryEventStore());
}

class MemoryEventLog implements EventLog {
  readonly kind = 'memory';
  #store: MemoryEventStore;
  #ctx: ProviderContext | undefined;

  constructor(store: MemoryEventStore) {
    this.#store = store;
  }

  // Re-init after close is allowed, so a restarted silo can reuse the log.
  async init(ctx: ProviderContext): Promise<void> {
    this.#ctx = ctx;
  }

  async read(stream: LogAddress): Promise<StoredLog> {
    const ctx = this.#context(stream);
    const s = this.#store.get(stream);
    if (s === undefined) return { events: [], version: 0 };
    const events = this.#decodeEvents(ctx, stream, s, s.snapshot?.version ?? 0, s.events.length);
    if (s.snapshot === undefined) return { events, version: s.events.length };
    const { version, bytes } = s.snapshot;
    const state = this.#decode(ctx, stream, bytes, `snapshot at version ${version}`);
    return { snapshot: { version, state }, events, version: s.events.length };
  }

  async append(stream: LogAddress, events: readonly unknown[], expectedVersion: number): Promise<number> {
    checkVersion('append: expectedVersion', expectedVersion);
    const ctx = this.#context(stream);
    // Every event is encoded before any is stored: one that cannot be fails the append, which then stores nothing.
    // (Copies: the codec may return a view into a buffer it reuses.)
    const bytes = events.map((e) => new Uint8Array(ctx.serializer.encode(e)));
    const result = this.#store.append(stream, bytes, expectedVersion);
    if (!result.ok) {
      throw new InconsistentStateError(
        `append to ${describeStream(stream)} in memory event log '${ctx.name}' refused: expected version ${expectedVersion}, found ${result.found}`,
      );
    }
    return result.version;
  }

  async writeSnapshot(stream: LogAddress, version: number, state: unknown): Promise<void> {
    checkVersion('writeSnapshot: version', version, 1);
    const ctx = this.#context(stream);
    const bytes = new Uint8Array(ctx.serializer.encode(state));
    const result = this.#store.setSnapshot(stream, version, bytes);
    if (!result.ok) {
      throw new InconsistentStateError(
        `snapshot of ${describeStream(stream)} at version ${version} in memory event log '${ctx.name}' refused: the stream is at version ${result.found}`,
      );
    }
  }

  async readEvents(stream: LogAddress, from: number, to: number): Promise<LoggedEvent[]> {
    checkRange(from, to);
    const ctx = this.#context(stream);
    const s = this.#store.get(stream);
    if (s === undefined) return [];
    return this.#decodeEvents(ctx, stream, s, from, Math.min(to, s.events.length));
  }

  async close(): Promise<void> {
    this.#ctx = undefined;
  }

  /** Events `from < version <= to` of `s`. */
  #decodeEvents(ctx: ProviderContext, stream: LogAddress, s: MemoryStream, from: number, to: number): LoggedEvent[] {
    const out: LoggedEvent[] = [];
    for (let v = from + 1; v <= to; v++) {
      out.push({ version: v, event: this.#decode(ctx, stream, s.events[v - 1] as Uint8Array, `event version ${v}`) });
    }
    return out;
  }

  #decode(ctx: ProviderContext, stream: LogAddress, bytes: Uint8Array, row: string): unknown {
    try {
      // Decode a copy: a codec may hand out views into its input, which would let the grain write into the store.
      return ctx.serializer.decode(new Uint8Array(bytes));
    } catch (err) {
      throw corruptState(
        { what: `${row} of ${describeStream(stream)}`, provider: `memory event log '${ctx.name}'` },
        `cannot decode it: ${errorMessage(err)}`,
        err,
      );
    }
  }

  #context(stream: LogAddress): ProviderContext {
    if (this.#ctx === undefined) {
      throw new StorageError(
        `memory event log is not initialised (init() not called, or closed): cannot access ${describeStream(stream)}`,
      );
    }
    return this.#ctx;
  }
}

// JSON keeps the key unambiguous when names contain separators ('a/b' + 'c' vs 'a' + 'b/c').
function streamKey(stream: LogAddress): string {
  return JSON.stringify([stream.grainType, stream.grainKey, stream.logName]);
}
