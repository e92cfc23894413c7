// In-memory storage provider: grain state as serialized bytes in a Map, for
// tests and single-process use. Storing bytes rather than objects means a
// grain never shares its state with the store (or another grain) by reference.

import { InconsistentStateError, StorageError } from '../../errors.ts';
import { corruptState, errorMessage } from '../shared.ts';
import type { ProviderContext, StateAddress, StorageProvider, StoredState } from '../../storage/provider.ts';

/** One stored record: the serialized state and its ETag. */
export interface MemoryRecord {
  readonly bytes: Uint8Array;
  readonly etag: string;
}

/** The outcome of a conditional change to a `MemoryStore`: the new ETag, or the ETag found instead of the expected one. */
export type StoreResult<Ok> = ({ readonly ok: true } & Ok) | { readonly ok: false; readonly found: string | null };

/**
 * The records behind one or more memory storage providers. Each provider has
 * a private store unless one is passed in; share a store between providers
 * (e.g. the silos of one process, each with its own serializer) to let them
 * see the same state. ETags are increasing integers, unique within the store,
 * so an ETag is never reused, not even after a record is cleared and re-created.
 */
export class MemoryStore {
  #records = new Map<string, MemoryRecord>();
  #lastEtag = 0;

  /** The record at an address, or undefined if there is none. */
  get(address: StateAddress): MemoryRecord | undefined {
    return this.#records.get(recordKey(address));
  }

  /**
   * Stores `bytes` if `etag` is the record's ETag (null: only if there is no
   * record) and returns the new ETag. The store keeps `bytes` as given: do
   * not modify them afterwards.
   */
  compareAndSet(address: StateAddress, etag: string | null, bytes: Uint8Array): StoreResult<{ readonly etag: string }> {
    const key = recordKey(address);
    const found = this.#records.get(key)?.etag ?? null;
    if (found !== etag) return { ok: false, found };
    const next = String(++this.#lastEtag);
    this.#records.set(key, { bytes, etag: next });
    return { ok: true, etag: next };
  }

  /** Deletes the record if `etag` is its ETag (null: succeeds only if there is no record). */
  compareAndDelete(address: StateAddress, etag: string | null): StoreResult<object> {
    const key = recordKey(address);
    const found = this.#records.get(key)?.etag ?? null;
    if (found !== etag) return { ok: false, found };
    this.#records.delete(key);
    return { ok: true };
  }

  /** Number of records held. */
  get size(): number {
    return this.#records.size;
  }
}

/** Options of `memoryStorage`. */
export interface MemoryStorageOptions {
  /** Where records live; default: a new store private to this provider. */
  readonly store?: MemoryStore;
}

/** A storage provider that keeps state in process memory (kind `memory`). */
export function memoryStorage(options: MemoryStorageOptions = {}): StorageProvider {
  return new MemoryStorage(options.store ?? new MemoryStore());
}

class MemoryStorage implements StorageProvider {
  readonly kind = 'memory';
  #store: MemoryStore;
  #ctx: ProviderContext | undefined;

  constructor(store: MemoryStore) {
    this.#store = store;
  }

  // Re-init after close is allowed, so a restarted silo can reuse the provider.
  async init(ctx: ProviderContext): Promise<void> {
    this.#ctx = ctx;
  }

  async read(address: StateAddress): Promise<StoredState> {
    const ctx = this.#context(address);
    const record = this.#store.get(address);
    if (record === undefined) return { state: undefined, etag: null };
    let state: unknown;
    try {
      // Decode a copy: a codec may hand out views into its input (node:v8
      // and msgpackr do for binary data), which would let the grain write
      // into the store. (`new Uint8Array` copies; Buffer#slice would not.)
      state = ctx.serializer.decode(new Uint8Array(record.bytes));
    } catch (err) {
      throw corruptState(
        {
          what: `state for grain ${grainName(address)} state '${address.stateName}'`,
          provider: `memory storage '${ctx.name}'`,
          where: `record ${recordKey(address)}, etag ${record.etag}`,
        },
        `cannot decode it: ${errorMessage(err)}`,
        err,
      );
    }
    return { state, etag: record.etag };
  }

  async write(address: StateAddress, state: unknown, etag: string | null): Promise<string> {
    const ctx = this.#context(address);
    // Copy: the codec may return a view into a buffer it reuses or that is
    // much larger than the value.
    const bytes = new Uint8Array(ctx.serializer.encode(state));
    const result = this.#store.compareAndSet(address, etag, bytes);
    if (!result.ok) throw conflict('write', address, ctx.name, etag, result.found);
    return result.etag;
  }

  async clear(address: StateAddress, etag: string | null): Promise<void> {
    const ctx = this.#context(address);
    const result = this.#store.compareAndDelete(address, etag);
    if (!result.ok) throw conflict('clear', address, ctx.name, etag, result.found);
  }

  async close(): Promise<void> {
    this.#ctx = undefined;
  }

  #context(address: StateAddress): ProviderContext {
    if (this.#ctx === undefined) {
      throw new StorageError(
        `memory storage is not initialised (init() not called, or closed): cannot access grain ${grainName(address)} state '${address.stateName}'`,
      );
    }
    return this.#ctx;
  }
}

// JSON keeps the key unambiguous when names contain separators ('a/b' + 'c' vs 'a' + 'b/c').
function recordKey(address: StateAddress): string {
  return JSON.stringify([address.grainType, address.grainKey, address.stateName]);
}

function grainName(address: StateAddress): string {
  return `${address.grainType}/${address.grainKey}`;
}

function conflict(
  op: 'write' | 'clear',
  address: StateAddress,
  name: string,
  expected: string | null,
  found: string | null,
): InconsistentStateError {
  return new InconsistentStateError(
    `${op} of grain ${grainName(address)} state '${address.stateName}' in memory storage '${name}' refused: ` +
      `expected etag ${expected ?? 'none (no record)'}, found ${found ?? 'none (no record)'}`,
  );
}
