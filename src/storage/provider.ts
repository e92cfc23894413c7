// The storage provider interface: where persistent grain state lives.
// Providers deal in values; they serialize with the serializer the silo hands
// them at init, and they own optimistic concurrency (ETags).

import type { Logger } from '../observability/logger.ts';

/** Which state of which grain. */
export interface StateAddress {
  readonly grainType: string;
  readonly grainKey: string;
  readonly stateName: string;
}

/** A record as read from a store. `etag` is null and `state` undefined when there is no record. */
export interface StoredState {
  readonly state: unknown;
  readonly etag: string | null;
}

/** Turns state into bytes and back. The silo's serializer keeps grain references working. */
export interface StateSerializer {
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}

/** What a provider is given before first use. */
export interface ProviderContext {
  /** The name the provider is configured under, e.g. `default`. */
  readonly name: string;
  readonly logger: Logger;
  readonly serializer: StateSerializer;
}

/**
 * A storage provider. Every implementation passes the conformance suite in
 * test/storage/conformance.ts.
 */
export interface StorageProvider {
  /** Short kind for messages and logs: `memory`, `sqlite`, ... */
  readonly kind: string;
  /** Called once by the silo before first use; creates tables if needed. */
  init(ctx: ProviderContext): Promise<void> | void;
  /**
   * Reads a record. A record that exists but cannot be decoded fails with a
   * `StorageError` (code `GRANARY_STORAGE_CORRUPT`) naming grain, provider and row.
   */
  read(address: StateAddress): Promise<StoredState>;
  /**
   * Writes a record if `etag` matches the stored one (null: only if there is
   * no record). Resolves to the new ETag. A mismatch fails with
   * `InconsistentStateError` and changes nothing.
   */
  write(address: StateAddress, state: unknown, etag: string | null): Promise<string>;
  /** Deletes a record under the same ETag rule as `write`. */
  clear(address: StateAddress, etag: string | null): Promise<void>;
  /** Releases connections and files. */
  close(): Promise<void> | void;
}
