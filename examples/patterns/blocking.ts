// Pattern: blocking the event loop in a turn, and yielding.
//
// A silo runs all its grains on one JavaScript thread. Turns interleave at
// `await`s; a synchronous loop has none, so while one grain crunches, no
// other grain on the silo runs a turn, no response is sent, no probe is
// answered (long enough, and the cluster declares the silo dead).
//
// Bad: the whole computation in one synchronous loop.
// Good: the same computation in chunks, with `await setImmediate()` between
// them, so the calls of other grains run between chunks. The grain itself
// still runs one turn at a time; only its neighbours stop waiting. For work of
// seconds, move it off the silo's thread altogether (a worker thread or
// another service) and await the result.

import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { Grain, grain } from 'granary';

/** Some CPU work: rounds `from` to `to` of an integer hash, continuing from `h`. */
export function hashRounds(h: number, from: number, to: number): number {
  for (let i = from; i < to; i++) h = Math.imul(h ^ i, 0x01000193) >>> 0;
  return h;
}

const seed = 0x811c9dc5;

// #region blocking
@grain('blockingReport')
export class BlockingReport extends Grain {
  async crunch(n: number): Promise<number> {
    return hashRounds(seed, 0, n); // nothing else on this silo runs until the loop ends
  }
}
// #endregion blocking

/** Rounds between yields: a chunk of about a millisecond or less. */
export const chunk = 200_000;

// #region yielding
@grain('yieldingReport')
export class YieldingReport extends Grain {
  async crunch(n: number): Promise<number> {
    let h = seed;
    for (let from = 0; from < n; from += chunk) {
      h = hashRounds(h, from, Math.min(n, from + chunk));
      await yieldToLoop(); // let other grains' turns run
    }
    return h;
  }
}
// #endregion yielding

/** Another grain on the same silo, whose calls should not wait for the report. */
@grain('ping')
export class Ping extends Grain {
  async ping(): Promise<number> {
    return Date.now();
  }
}

export const blockingGrains = [BlockingReport, YieldingReport, Ping];
