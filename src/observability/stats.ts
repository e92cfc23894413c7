// Plain counters that the busy paths write and the metrics endpoint reads at
// scrape time: numbers in fields and arrays, no metrics library and no
// allocation per count. Made only when a silo has metrics on.

import { ErrorCodes, GranaryError } from '../errors.ts';

/** Upper bounds, in seconds, of the latency buckets of grain calls (a local call takes microseconds). */
export const CALL_LATENCY_BUCKETS = [
  0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30,
] as const;

/** Upper bounds, in seconds, of the latency buckets of storage operations. */
export const STORAGE_LATENCY_BUCKETS = [
  0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
] as const;

/** A latency histogram in plain numbers: observations by bucket, their count and their sum. */
export class LatencyHistogram {
  /** Upper bounds of the buckets, in seconds, as the metrics show them. */
  readonly bounds: readonly number[];
  /** The same in milliseconds, which is what `observe` takes. */
  readonly #boundsMs: Float64Array;
  /** Observations per bucket, not cumulative; the last slot counts those above every bound. */
  readonly counts: Float64Array;
  count = 0;
  sumMs = 0;

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.#boundsMs = Float64Array.from(bounds, (b) => b * 1000);
    this.counts = new Float64Array(bounds.length + 1);
  }

  /**
   * Records an observation of `ms` milliseconds (a difference of
   * `performance.now()` readings) that stands for `weight` of them: a sample
   * of one in `weight`.
   */
  observe(ms: number, weight = 1): void {
    const b = this.#boundsMs;
    let i = 0;
    while (i < b.length && ms > (b[i] as number)) i++;
    (this.counts[i] as number) += weight;
    this.count += weight;
    this.sumMs += ms * weight;
  }
}

/** Most distinct values a `CountsBy` keeps; the rest are counted under `other`. */
const MAX_DISTINCT = 32;

/**
 * Counts by a short label value (an error code, a reason). Keeps at most 32
 * values, so a label never grows without bound; the others count as `other`.
 */
export class CountsBy {
  readonly #counts = new Map<string, number>();

  add(value: string, n = 1): void {
    const m = this.#counts;
    const cur = m.get(value);
    if (cur !== undefined) m.set(value, cur + n);
    else if (m.size < MAX_DISTINCT) m.set(value, n);
    else m.set('other', (m.get('other') ?? 0) + n);
  }

  /** Counts by value. */
  entries(): IterableIterator<[string, number]> {
    return this.#counts.entries();
  }

  get total(): number {
    let t = 0;
    for (const n of this.#counts.values()) t += n;
    return t;
  }
}

/**
 * The label value of a failure: a GranaryError's `code` (an application's own
 * subclasses included), `GRANARY_ERROR` for any other error.
 */
export function failureCode(err: unknown): string {
  return err instanceof GranaryError ? err.code : ErrorCodes.Error;
}
