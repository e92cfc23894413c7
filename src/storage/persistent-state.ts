// PersistentState<T>: a grain's declared state, loaded from its storage
// provider before onActivate runs, written back on `write()` under the
// optimistic-concurrency rule of its provider (ETags).

import { ErrorCodes, GranaryError, InconsistentStateError, StorageError } from '../errors.ts';
import { encode } from '../serialization/codec.ts';
import type { StateAddress, StorageProvider, StoredState } from './provider.ts';

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
  /**
   * Writes `state`. Fails with InconsistentStateError if the record changed
   * since it was read. After a write or clear that failed without knowing
   * whether it was stored (the connection broke mid-call), the next write or
   * clear first re-reads the record to find out, and carries on if the record
   * is as that call left it or as it found it.
   */
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
  /** The last write or clear, if it failed without saying whether it reached the store. */
  #unsettled: Unsettled | undefined;

  constructor(address: StateAddress, provider: StorageProvider, providerName: string, initial: () => T) {
    this.#address = address;
    this.#provider = provider;
    this.#providerName = providerName;
    this.#initial = initial;
    this.state = initial();
  }

  #wrap(op: string, err: unknown, note = ''): unknown {
    if (err instanceof GranaryError) return err;
    const a = this.#address;
    return new StorageError(
      `${op} of state '${a.stateName}' of grain ${a.grainType}/${a.grainKey} failed in storage provider '${this.#providerName}' (${this.#provider.kind})${note}: ${(err as Error)?.message ?? String(err)}`,
      ErrorCodes.Storage,
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
    this.#unsettled = undefined;
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
    await this.#settle('write');
    const etag = this.etag;
    try {
      this.etag = await this.#provider.write(this.#address, this.state, etag);
    } catch (e) {
      // `state` stays as it is: the grain can write it again.
      if (outcomeUnknown(e)) {
        // A copy: the codec may hand out a view into a buffer it reuses.
        const bytes = encodeOrUndefined(this.state);
        this.#unsettled = { op: 'write', etag, bytes: bytes === undefined ? undefined : new Uint8Array(bytes) };
      }
      throw this.#wrap('write', e);
    }
    this.recordExists = true;
  }

  async clear(): Promise<void> {
    await this.#settle('clear');
    const etag = this.etag;
    try {
      await this.#provider.clear(this.#address, etag);
    } catch (e) {
      if (outcomeUnknown(e)) this.#unsettled = { op: 'clear', etag };
      throw this.#wrap('clear', e);
    }
    this.etag = null;
    this.recordExists = false;
    this.state = this.#initial();
  }

  /**
   * After a write or clear whose outcome is unknown, finds out from the
   * stored record. ETags are never reused, so the record still carrying the
   * ETag that call was made with means it did not land. A record whose ETag
   * moved on holding exactly the state that write carried (or, for a clear,
   * no record) means it did land: adopt its ETag. Anything else is someone
   * else's change, as with a stale ETag.
   */
  async #settle(op: 'write' | 'clear'): Promise<void> {
    const unsettled = this.#unsettled;
    if (unsettled === undefined) return;
    let stored: StoredState;
    try {
      stored = await this.#provider.read(this.#address);
    } catch (e) {
      throw this.#wrap(op, e, ` (re-reading the record after a ${unsettled.op} whose outcome is unknown)`);
    }
    this.#unsettled = undefined;
    if (stored.etag === unsettled.etag) return;
    if (
      unsettled.op === 'write' &&
      stored.etag !== null &&
      unsettled.bytes !== undefined &&
      sameBytes(encodeOrUndefined(stored.state), unsettled.bytes)
    ) {
      this.etag = stored.etag;
      this.recordExists = true;
      return;
    }
    if (unsettled.op === 'clear' && stored.etag === null) {
      this.etag = null;
      this.recordExists = false;
      return;
    }
    const a = this.#address;
    throw new InconsistentStateError(
      `${op} of state '${a.stateName}' of grain ${a.grainType}/${a.grainKey} in storage provider '${this.#providerName}' (${this.#provider.kind}) refused: ` +
        `an earlier ${unsettled.op} failed without knowing whether it was stored, and the record changed since ` +
        `(etag ${unsettled.etag ?? 'none (no record)'} then, ${stored.etag ?? 'none (no record)'} now) to something that ${unsettled.op} did not leave; ` +
        `read() the state again`,
    );
  }
}

/** A write or clear that failed without saying whether it reached the store. */
type Unsettled =
  | { readonly op: 'write'; readonly etag: string | null; readonly bytes: Uint8Array | undefined }
  | { readonly op: 'clear'; readonly etag: string | null };

/**
 * Whether a failed write or clear may have been stored: the provider's store
 * failed (a broken connection, a timeout) rather than refusing it (a stale
 * ETag) or the state failing to serialize (nothing was sent).
 */
function outcomeUnknown(err: unknown): boolean {
  if (err instanceof InconsistentStateError) return false;
  return err instanceof StorageError || !(err instanceof GranaryError);
}

function encodeOrUndefined(value: unknown): Uint8Array | undefined {
  try {
    return encode(value, 'state');
  } catch {
    return undefined;
  }
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && Buffer.compare(a, b) === 0;
}
