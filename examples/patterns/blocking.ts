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
// still runs one turn at a time; only its neighbours stop waiting.
// Good, for work of seconds: off the silo's thread altogether, in a worker
// thread the grain owns, while its turn awaits the answer.

import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
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

// #region worker
/** The worker's program: the same hash function, run on each message. */
const workerSource = `
const { parentPort } = require('node:worker_threads');
${hashRounds.toString()}
parentPort.on('message', ({ h, from, to }) => parentPort.postMessage(hashRounds(h, from, to)));
`;

@grain('offloadedReport')
export class OffloadedReport extends Grain {
  #worker: Worker | undefined;

  override async onActivate(): Promise<void> {
    this.#worker = new Worker(workerSource, { eval: true });
  }

  override async onDeactivate(): Promise<void> {
    await this.#worker?.terminate();
  }

  async crunch(n: number): Promise<number> {
    const worker = this.#worker as Worker;
    // One report at a time per activation (turns), so the next message is this report's answer.
    return new Promise<number>((resolve, reject) => {
      const settle = (): void => void worker.off('message', answered).off('error', failed);
      const answered = (h: number): void => (settle(), resolve(h));
      const failed = (e: Error): void => (settle(), reject(e));
      worker.on('message', answered).on('error', failed);
      worker.postMessage({ h: seed, from: 0, to: n });
    });
  }
}
// #endregion worker

/** Another grain on the same silo, whose calls should not wait for the report. */
@grain('ping')
export class Ping extends Grain {
  async ping(): Promise<number> {
    return Date.now();
  }
}

export const blockingGrains = [BlockingReport, YieldingReport, OffloadedReport, Ping];
