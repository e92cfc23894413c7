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

/** Some CPU work: `n` rounds of an integer hash, the same whichever way it runs. */
function step(h: number, i: number): number {
  return Math.imul(h ^ i, 0x01000193) >>> 0;
}

// #region blocking
@grain('blockingReport')
export class BlockingReport extends Grain {
  async crunch(n: number): Promise<number> {
    let h = 0x811c9dc5;
    for (let i = 0; i < n; i++) h = step(h, i); // nothing else on this silo runs until the loop ends
    return h;
  }
}
// #endregion blocking

/** Rounds between yields: a chunk of about a millisecond or less. */
export const chunk = 200_000;

// #region yielding
@grain('yieldingReport')
export class YieldingReport extends Grain {
  async crunch(n: number): Promise<number> {
    let h = 0x811c9dc5;
    for (let i = 0; i < n; i++) {
      h = step(h, i);
      if (i % chunk === chunk - 1) await yieldToLoop(); // let other grains' turns run
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
