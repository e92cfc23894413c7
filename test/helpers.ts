// Test helpers: wait on a condition or a diagnostics channel with a deadline,
// never a bare sleep used as synchronisation.

import diagnostics_channel from 'node:diagnostics_channel';
import { setTimeout as delay } from 'node:timers/promises';

/** Polls `check` until it returns true; fails naming `what` after `timeoutMs`. */
export async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await delay(5);
  }
}

/** Resolves with the first message on `channel` that matches `match`. */
export function nextEvent<T = Record<string, unknown>>(channel: string, match: (m: T) => boolean, timeoutMs = 5000): Promise<T> {
  const ch = diagnostics_channel.channel(channel);
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      ch.unsubscribe(on);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for an event on ${channel}`));
    }, timeoutMs);
    function on(m: unknown): void {
      if (!match(m as T)) return;
      clearTimeout(timer);
      ch.unsubscribe(on);
      resolve(m as T);
    }
    ch.subscribe(on);
  });
}

/** A promise with its settle functions, for gates in tests. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
