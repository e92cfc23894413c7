// The hottest grains of a silo, from a bounded sample of its calls: a
// Space-Saving top-K (Metwally et al.) over one call in HOT_SAMPLE on
// average, with forward decay so the counts are recent rates rather than
// totals since the start. A call not sampled pays one counter decrement in
// the meter of its grain type (see runtime/call-meter.ts); a sampled one a Map
// lookup and a few steps in a min-heap of the K counters (the lightest is
// the one a new grain replaces).

/** Calls per sample, on average: the gap to the next sample is drawn from 1 to 2 × HOT_SAMPLE - 1. */
export const HOT_SAMPLE = 16;

/** Grains the table keeps. */
export const HOT_CAPACITY = 64;

/** The decay's time constant, in ms: a rate is that of about the last 5 seconds (the page's rate window). */
export const HOT_DECAY_MS = 5000;

/** Past this many time constants since the landmark, weights are brought back down (no overflow). */
const RENORMALIZE_AFTER = 40;

/** The gap to the next sampled call: uniform from 1 to 2 × HOT_SAMPLE - 1 (mean HOT_SAMPLE), so no call pattern aliases with it. */
export function nextSampleGap(): number {
  return 1 + Math.floor(Math.random() * (2 * HOT_SAMPLE - 1));
}

interface Counter {
  grain: string;
  /** Decayed sample weight, in units of the landmark. */
  weight: number;
  /** What the grain may have inherited from the one it replaced (Space-Saving's overestimate). */
  error: number;
  /** Its index in the heap. */
  at: number;
}

/** One hot grain: its estimated calls per second, which overstates it by `error` at most. */
export interface HotGrain {
  readonly grain: string;
  readonly rate: number;
  readonly error: number;
  /** Its part of the sampled calls of its grain type on this silo, from 0 to 1. */
  readonly share: number;
}

/** A silo's sample of its grain calls. */
export class HotGrains {
  readonly #byGrain = new Map<string, Counter>();
  /** The counters as a min-heap on weight: the lightest first. */
  readonly #heap: Counter[] = [];
  /** Decayed sample weight of every grain type (all its grains, not only the hot ones). */
  readonly #byType = new Map<string, { weight: number }>();
  readonly #capacity: number;
  readonly #decayMs: number;
  /** Time (performance.now()) at which a sample weighs 1. */
  #landmark: number;
  /** When sampling began: a young sample has had less time to add up, and its rates are scaled for it. */
  readonly #born: number;

  constructor(capacity = HOT_CAPACITY, decayMs = HOT_DECAY_MS, now = performance.now()) {
    this.#capacity = capacity;
    this.#decayMs = decayMs;
    this.#landmark = now;
    this.#born = now;
  }

  /** A sampled call to `grain` (`type/key`) of grain type `type` at `now` (performance.now()). */
  sample(grain: string, type: string, now = performance.now()): void {
    let age = (now - this.#landmark) / this.#decayMs;
    if (age > RENORMALIZE_AFTER) {
      this.#renormalize(now);
      age = 0;
    }
    const w = Math.exp(age);
    const t = this.#byType.get(type);
    if (t !== undefined) t.weight += w;
    else this.#byType.set(type, { weight: w });
    const c = this.#byGrain.get(grain);
    if (c !== undefined) {
      c.weight += w;
      this.#down(c.at);
      return;
    }
    const heap = this.#heap;
    if (heap.length < this.#capacity) {
      const n: Counter = { grain, weight: w, error: 0, at: heap.length };
      heap.push(n);
      this.#byGrain.set(grain, n);
      this.#up(n.at);
      return;
    }
    // Space-Saving: the new grain takes the place of the lightest, inheriting its weight as its error.
    const m = heap[0] as Counter;
    this.#byGrain.delete(m.grain);
    m.grain = grain;
    m.error = m.weight;
    m.weight += w;
    this.#byGrain.set(grain, m);
    this.#down(0);
  }

  #up(i: number): void {
    const heap = this.#heap;
    const c = heap[i] as Counter;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = heap[p] as Counter;
      if (parent.weight <= c.weight) break;
      heap[i] = parent;
      parent.at = i;
      i = p;
    }
    heap[i] = c;
    c.at = i;
  }

  #down(i: number): void {
    const heap = this.#heap;
    const n = heap.length;
    const c = heap[i] as Counter;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const child = r < n && (heap[r] as Counter).weight < (heap[l] as Counter).weight ? r : l;
      const lighter = heap[child] as Counter;
      if (lighter.weight >= c.weight) break;
      heap[i] = lighter;
      lighter.at = i;
      i = child;
    }
    heap[i] = c;
    c.at = i;
  }

  #renormalize(now: number): void {
    const f = Math.exp(-(now - this.#landmark) / this.#decayMs);
    for (const c of this.#byGrain.values()) {
      c.weight *= f;
      c.error *= f;
    }
    for (const t of this.#byType.values()) t.weight *= f;
    this.#landmark = now;
  }

  /**
   * calls/s of a decayed weight at `now`: a steady rate r, sampled for a time
   * t, leaves a weight of r × decay × (1 - e^(-t/decay)) / HOT_SAMPLE.
   */
  #rate(weight: number, now: number): number {
    const filled = Math.max(1e-3, 1 - Math.exp(-(now - this.#born) / this.#decayMs));
    return (weight * Math.exp(-(now - this.#landmark) / this.#decayMs) * HOT_SAMPLE * 1000) / (this.#decayMs * filled);
  }

  /** The `n` hottest grains now, hottest first. */
  top(n: number, now = performance.now()): HotGrain[] {
    return [...this.#byGrain.values()]
      .sort((a, b) => b.weight - a.weight)
      .slice(0, n)
      .map((c) => {
        const type = this.#byType.get(c.grain.slice(0, c.grain.indexOf('/')))?.weight ?? 0;
        return {
          grain: c.grain,
          rate: this.#rate(c.weight, now),
          error: this.#rate(c.error, now),
          share: type > 0 ? Math.min(1, c.weight / type) : 1,
        };
      });
  }

  /** Drops `grain` (its activation here ended): a grain that moved is hot where it runs now, not here. */
  forget(grain: string): void {
    const c = this.#byGrain.get(grain);
    if (c === undefined) return;
    this.#byGrain.delete(grain);
    const heap = this.#heap;
    const last = heap.pop() as Counter;
    if (last === c) return;
    heap[c.at] = last;
    last.at = c.at;
    this.#down(last.at);
    this.#up(last.at);
  }

  /** The estimated calls/s of `grain`, or undefined when it is not in the table (not among the hot grains). */
  rateOf(grain: string, now = performance.now()): number | undefined {
    const c = this.#byGrain.get(grain);
    return c === undefined ? undefined : this.#rate(c.weight, now);
  }
}
