// A storage provider with its operations counted and timed, for a silo with
// metrics on: the silo puts one in front of each configured provider. Plain
// counters, read by the metrics endpoint at scrape time.

import { CountsBy, LatencyHistogram, STORAGE_LATENCY_BUCKETS, failureCode } from '../observability/stats.ts';
import type { ProviderContext, StateAddress, StorageProvider, StoredState } from './provider.ts';

/** The storage operations counted. */
export const STORAGE_OPERATIONS = ['read', 'write', 'clear'] as const;

/** One of `STORAGE_OPERATIONS`. */
export type StorageOperation = (typeof STORAGE_OPERATIONS)[number];

/** Counts of one operation of one provider. */
export class OperationStats {
  /** Operations completed, failed ones included. */
  count = 0;
  /** Failed operations by error code (`GRANARY_INCONSISTENT_STATE` is a stale ETag). */
  readonly failures = new CountsBy();
  readonly latency = new LatencyHistogram(STORAGE_LATENCY_BUCKETS);
}

/** `inner`, with its reads, writes and clears counted and timed. */
export class MeteredStorage implements StorageProvider {
  readonly #inner: StorageProvider;
  readonly stats: Readonly<Record<StorageOperation, OperationStats>> = {
    read: new OperationStats(),
    write: new OperationStats(),
    clear: new OperationStats(),
  };

  constructor(inner: StorageProvider) {
    this.#inner = inner;
  }

  get kind(): string {
    return this.#inner.kind;
  }

  init(ctx: ProviderContext): Promise<void> | void {
    return this.#inner.init(ctx);
  }

  read(address: StateAddress): Promise<StoredState> {
    return timed(this.stats.read, () => this.#inner.read(address));
  }

  write(address: StateAddress, state: unknown, etag: string | null): Promise<string> {
    return timed(this.stats.write, () => this.#inner.write(address, state, etag));
  }

  clear(address: StateAddress, etag: string | null): Promise<void> {
    return timed(this.stats.clear, () => this.#inner.clear(address, etag));
  }

  close(): Promise<void> | void {
    return this.#inner.close();
  }
}

async function timed<T>(stats: OperationStats, op: () => Promise<T>): Promise<T> {
  const start = performance.now();
  try {
    return await op();
  } catch (e) {
    stats.failures.add(failureCode(e));
    throw e;
  } finally {
    stats.count++;
    stats.latency.observe(performance.now() - start);
  }
}
