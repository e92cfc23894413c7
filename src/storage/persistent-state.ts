// PersistentState<T>: a grain's declared state, loaded from its storage
// provider before onActivate runs, written back on `write()` under the
// optimistic-concurrency rule of its provider (ETags).

import { GranaryError, StorageError } from '../errors.ts';
import type { StateAddress, StorageProvider } from './provider.ts';

/** Options of `this.persistentState(name, options)`. */
export interface PersistentStateOptions<T> {
  /** Name of a configured storage provider. Default `default`. */
  storage?: string;
  /** The state of a grain that has no record yet. */
  initial: () => T;
}

/** A grain's persistent state. */
export interface PersistentState<T> {
  /** The current in-memory state; change it, then `write()`. */
  state: T;
  /** The ETag of the stored record this state was read from or written as; null when there is none. */
  readonly etag: string | null;
  /** Whether a stored record exists. */
  readonly recordExists: boolean;
  /** Re-reads the state from storage, replacing `state`. */
  read(): Promise<void>;
  /** Writes `state`. Fails with InconsistentStateError if the record changed since it was read. */
  write(): Promise<void>;
  /** Deletes the stored record and resets `state` to its initial value. */
  clear(): Promise<void>;
}

/** The runtime's implementation of PersistentState. */
export class PersistentStateImpl<T> implements PersistentState<T> {
  state: T;
  etag: string | null = null;
  recordExists = false;
  readonly #address: StateAddress;
  readonly #provider: StorageProvider;
  readonly #providerName: string;
  readonly #initial: () => T;

  constructor(address: StateAddress, provider: StorageProvider, providerName: string, initial: () => T) {
    this.#address = address;
    this.#provider = provider;
    this.#providerName = providerName;
    this.#initial = initial;
    this.state = initial();
  }

  #wrap(op: string, err: unknown): unknown {
    if (err instanceof GranaryError) return err;
    const a = this.#address;
    return new StorageError(
      `${op} of state '${a.stateName}' of grain ${a.grainType}/${a.grainKey} failed in storage provider '${this.#providerName}' (${this.#provider.kind}): ${(err as Error)?.message ?? String(err)}`,
      'GRANARY_STORAGE',
      { cause: err },
    );
  }

  async read(): Promise<void> {
    let r;
    try {
      r = await this.#provider.read(this.#address);
    } catch (e) {
      throw this.#wrap('read', e);
    }
    if (r.etag === null) {
      this.state = this.#initial();
      this.etag = null;
      this.recordExists = false;
    } else {
      this.state = r.state as T;
      this.etag = r.etag;
      this.recordExists = true;
    }
  }

  async write(): Promise<void> {
    try {
      this.etag = await this.#provider.write(this.#address, this.state, this.etag);
    } catch (e) {
      throw this.#wrap('write', e);
    }
    this.recordExists = true;
  }

  async clear(): Promise<void> {
    try {
      await this.#provider.clear(this.#address, this.etag);
    } catch (e) {
      throw this.#wrap('clear', e);
    }
    this.etag = null;
    this.recordExists = false;
    this.state = this.#initial();
  }
}
