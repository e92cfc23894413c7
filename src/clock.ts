// The clock the runtime is handed: every reading of time and every timer of
// membership, reminders, deadlines and idle collection goes through one, so
// tests can drive time (see `ManualClock` in granary/testing).

/** A timer made by a `Clock`. */
export interface ClockTimer {
  /** Stops the timer; calling it again does nothing. */
  cancel(): void;
  /** Lets the process exit while only this timer is waiting (Node's `unref`). */
  unref(): this;
  /** Keeps the process alive while this timer waits (the default). */
  ref(): this;
}

/** Where the runtime reads the time and sets timers. */
export interface Clock {
  /** Milliseconds since the Unix epoch, as `Date.now()`. */
  now(): number;
  /** Calls `fn` once after `ms` milliseconds. */
  setTimeout(fn: () => void, ms: number): ClockTimer;
  /** Calls `fn` every `ms` milliseconds until cancelled. */
  setInterval(fn: () => void, ms: number): ClockTimer;
}

class SystemTimer implements ClockTimer {
  readonly #t: NodeJS.Timeout;
  readonly #repeat: boolean;
  constructor(t: NodeJS.Timeout, repeat: boolean) {
    this.#t = t;
    this.#repeat = repeat;
  }
  cancel(): void {
    if (this.#repeat) clearInterval(this.#t);
    else clearTimeout(this.#t);
  }
  unref(): this {
    this.#t.unref();
    return this;
  }
  ref(): this {
    this.#t.ref();
    return this;
  }
}

/** The longest delay Node's timers take (2^31 - 1 ms, about 24.8 days); a longer one fires at once. */
export const MAX_TIMER_MS = 0x7fffffff;

/** The real clock: `Date.now()` and Node's timers. */
export const systemClock: Clock = Object.freeze({
  now: (): number => Date.now(),
  setTimeout: (fn: () => void, ms: number): ClockTimer => new SystemTimer(setTimeout(fn, ms), false),
  setInterval: (fn: () => void, ms: number): ClockTimer => new SystemTimer(setInterval(fn, ms), true),
});

/** Resolves after `ms` milliseconds of `clock` time. */
export function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.setTimeout(resolve, ms));
}
