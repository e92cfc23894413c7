// A clock that only moves when the test moves it: membership, reminders and
// deadlines handed one fire their timers on `advance`, so a test drives
// minutes of failure detection or reminder ticks without waiting for them.

import type { Clock, ClockTimer } from '../clock.ts';
import { ConfigurationError, TimeoutError } from '../errors.ts';

/** Options of `ManualClock.advanceUntil`. */
export interface AdvanceUntilOptions {
  /** Most clock time to move before failing, in ms. Default 3 600 000 (an hour). */
  maxMs?: number;
  /** Named in the error when the condition never holds. Default 'the condition'. */
  what?: string;
}

/** Defaults of `AdvanceUntilOptions`. */
export const advanceUntilDefaults: Required<AdvanceUntilOptions> = { maxMs: 3_600_000, what: 'the condition' };

/** Timers fired (or promise rounds) in one `runUntilIdle` before it concludes the work never settles. */
const IDLE_LIMIT = 10_000;

interface Pending {
  readonly seq: number;
  due: number;
  /** Ms between runs for an interval; undefined for a one-shot timer. */
  readonly every: number | undefined;
  readonly fn: () => void;
}

class ManualTimer implements ClockTimer {
  readonly #cancel: () => void;
  constructor(cancel: () => void) {
    this.#cancel = cancel;
  }
  cancel(): void {
    this.#cancel();
  }
  unref(): this {
    return this;
  }
  ref(): this {
    return this;
  }
}

/** Lets every promise callback queued so far run (and the ones they queue). */
function flushPromises(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * A `Clock` whose time moves only when told. Timers fire in due order (ties in
 * the order they were set); a timer set by a callback fires in the same
 * `advance` when it comes due within it. `unref`/`ref` do nothing. Delays are
 * taken as given (under 0 counts as 0; an interval runs at least every 1 ms):
 * unlike Node's timers, a delay beyond 2^31 - 1 ms does not wrap.
 */
export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #timers = new Map<number, Pending>();

  /** Starts at `startMs` (epoch ms). Default 1 January 2030, 00:00 UTC. */
  constructor(startMs: number = Date.UTC(2030, 0, 1)) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): ClockTimer {
    return this.#add(fn, delayOf(ms), undefined);
  }

  setInterval(fn: () => void, ms: number): ClockTimer {
    const every = Math.max(1, delayOf(ms));
    return this.#add(fn, every, every);
  }

  /** Timers set and not yet fired or cancelled (an interval counts until cancelled). */
  get pendingTimers(): number {
    return this.#timers.size;
  }

  /** When the next timer is due (epoch ms), or undefined with none pending. */
  nextDueAt(): number | undefined {
    return this.#next()?.due;
  }

  /**
   * Moves time forward by `ms`, firing every timer that comes due on the way at
   * its due time, in order. Promise callbacks do not run in between: use
   * `advanceAsync` when timers start asynchronous work that sets more timers.
   */
  advance(ms: number): void {
    const target = this.#now + nonNegative(ms, 'advance');
    for (let t = this.#next(); t !== undefined && t.due <= target; t = this.#next()) this.#fire(t);
    this.#now = target;
  }

  /**
   * Moves time forward by `ms` as `advance` does, but lets promise callbacks run
   * before the first timer, between timers and at the end, so work a timer
   * starts (a table read, a probe) finishes and its own timers are honoured.
   */
  async advanceAsync(ms: number): Promise<void> {
    const target = this.#now + nonNegative(ms, 'advanceAsync');
    await flushPromises();
    for (let t = this.#next(); t !== undefined && t.due <= target; t = this.#next()) {
      this.#fire(t);
      await flushPromises();
    }
    this.#now = target;
    await flushPromises();
  }

  /**
   * Without moving time, fires the timers already due and lets promise
   * callbacks run, again and again, until nothing is due and no callback queued
   * more work. Fails if that never happens (a callback keeps setting 0 ms timers).
   */
  async runUntilIdle(): Promise<void> {
    for (let rounds = 0; rounds < IDLE_LIMIT; rounds++) {
      await flushPromises();
      const t = this.#next();
      if (t === undefined || t.due > this.#now) return;
      this.#fire(t);
    }
    throw new TimeoutError(
      `ManualClock.runUntilIdle: still busy after ${IDLE_LIMIT} timers at the same instant; a callback keeps setting timers due now`,
    );
  }

  /**
   * Moves time forward by `ms` without firing anything, as when the process was
   * suspended or its event loop blocked: the timers that came due meanwhile fire,
   * late and reading the new time, at the next `advance`, `advanceAsync` or
   * `runUntilIdle`.
   */
  jump(ms: number): void {
    this.#now += nonNegative(ms, 'jump');
  }

  /**
   * Advances from timer to timer (as `advanceAsync`) until `condition` holds,
   * and resolves with the clock time that took, in ms. Fails, naming `what`, when
   * no timer is pending or the next one lies beyond `maxMs` and the condition
   * still does not hold.
   */
  async advanceUntil(condition: () => boolean | Promise<boolean>, options: AdvanceUntilOptions = {}): Promise<number> {
    const maxMs = options.maxMs ?? advanceUntilDefaults.maxMs;
    const what = options.what ?? advanceUntilDefaults.what;
    const start = this.#now;
    await flushPromises();
    for (;;) {
      if (await condition()) return this.#now - start;
      const next = this.#next();
      if (next === undefined)
        throw new TimeoutError(
          `ManualClock.advanceUntil: ${what} does not hold after ${this.#now - start} ms and no timer is pending`,
        );
      if (next.due > start + maxMs)
        throw new TimeoutError(`ManualClock.advanceUntil: ${what} does not hold after ${maxMs} ms of clock time`);
      await this.advanceAsync(Math.max(0, next.due - this.#now));
    }
  }

  #add(fn: () => void, ms: number, every: number | undefined): ClockTimer {
    const seq = ++this.#seq;
    this.#timers.set(seq, { seq, due: this.#now + ms, every, fn });
    return new ManualTimer(() => this.#timers.delete(seq));
  }

  #next(): Pending | undefined {
    let best: Pending | undefined;
    for (const t of this.#timers.values()) {
      if (best === undefined || t.due < best.due || (t.due === best.due && t.seq < best.seq)) best = t;
    }
    return best;
  }

  #fire(t: Pending): void {
    // A timer fired late (after `jump`) reads the later time, as Node's would.
    if (t.due > this.#now) this.#now = t.due;
    if (t.every === undefined) this.#timers.delete(t.seq);
    // As Node does, an interval counts its next run from when this one ran.
    else t.due = this.#now + t.every;
    t.fn();
  }
}

function delayOf(ms: number): number {
  return Number.isFinite(ms) && ms > 0 ? ms : 0;
}

function nonNegative(ms: number, method: string): number {
  if (!Number.isFinite(ms) || ms < 0)
    throw new ConfigurationError(
      `ManualClock.${method}: ms must be a finite number of ms, 0 or more, got ${String(ms)}`,
    );
  return ms;
}
