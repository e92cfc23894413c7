// Deadlines of pending calls. Calls with the same timeout expire in the order
// they were made, so each timeout value keeps an intrusive FIFO list: O(1) to
// add and to remove. Time is counted in sweeps of one coarse timer rather than
// read from the clock per call: a call expires after the number of sweeps that
// covers its timeout, so a busy event loop can only lengthen a deadline,
// never shorten it. The sweep timer keeps the process alive while any call
// is pending (every call ends by its deadline, even in a script that does
// nothing but await it) and stops when none is.

import { systemClock, type Clock, type ClockTimer } from '../clock.ts';

/** What the tracker needs of a call: its timeout, its sweep count at creation, and the queue links. */
export interface DeadlineEntry {
  readonly timeoutMs: number;
  epoch: number;
  prev: DeadlineEntry | undefined;
  next: DeadlineEntry | undefined;
}

class Queue {
  head: DeadlineEntry | undefined = undefined;
  tail: DeadlineEntry | undefined = undefined;
  /** Sweeps a call of this queue lives. */
  sweeps: number;
  constructor(sweeps: number) {
    this.sweeps = sweeps;
  }
}

/** The deadline tracker of one runtime (or client). */
export class Deadlines<T extends DeadlineEntry> {
  readonly #queues = new Map<number, Queue>();
  #lastTimeout = -1;
  #last: Queue | undefined;
  #timer: ClockTimer | undefined;
  #sweepMs = 100;
  #count = 0;
  /** Sweeps so far; a message stores the value at its creation. */
  epoch = 0;
  readonly #onExpire: (m: T) => void;
  readonly #clock: Clock;

  constructor(onExpire: (m: T) => void, clock: Clock = systemClock) {
    this.#onExpire = onExpire;
    this.#clock = clock;
  }

  /** Calls being tracked. */
  get size(): number {
    return this.#count;
  }

  #queue(timeoutMs: number): Queue {
    let q = this.#queues.get(timeoutMs);
    if (q === undefined) {
      // Sweep often enough for the shortest timeout to be honoured within a quarter.
      const sweep = Math.max(5, Math.min(100, Math.floor(timeoutMs / 4)));
      if (sweep < this.#sweepMs) {
        this.#sweepMs = sweep;
        for (const [t, other] of this.#queues) other.sweeps = Math.ceil(t / sweep);
        if (this.#timer !== undefined) {
          this.#timer.cancel();
          this.#timer = undefined;
        }
      }
      q = new Queue(Math.ceil(timeoutMs / this.#sweepMs));
      this.#queues.set(timeoutMs, q);
    }
    this.#lastTimeout = timeoutMs;
    this.#last = q;
    return q;
  }

  add(m: T): void {
    const q = m.timeoutMs === this.#lastTimeout ? (this.#last as Queue) : this.#queue(m.timeoutMs);
    m.epoch = this.epoch;
    const t = q.tail;
    m.prev = t;
    m.next = undefined;
    if (t === undefined) q.head = m;
    else t.next = m;
    q.tail = m;
    this.#count++;
    if (this.#timer === undefined) this.#timer = this.#clock.setInterval(this.#sweep, this.#sweepMs);
  }

  remove(m: T): void {
    const q = m.timeoutMs === this.#lastTimeout ? this.#last : this.#queues.get(m.timeoutMs);
    if (q === undefined) return;
    const { prev, next } = m;
    if (prev === undefined) {
      if (q.head !== m) return; // not linked
      q.head = next;
    } else prev.next = next;
    if (next === undefined) q.tail = prev;
    else next.prev = prev;
    m.prev = undefined;
    m.next = undefined;
    this.#count--;
  }

  readonly #sweep = (): void => {
    const epoch = ++this.epoch;
    for (const q of this.#queues.values()) {
      let m = q.head;
      // Strictly more sweeps than needed: the first sweep may come at once after the call.
      while (m !== undefined && epoch - m.epoch > q.sweeps) {
        const next = m.next;
        this.remove(m as T);
        this.#onExpire(m as T);
        m = next;
      }
    }
    if (this.#count === 0 && this.#timer !== undefined) {
      this.#timer.cancel();
      this.#timer = undefined;
    }
  };

  /** Stops the sweep timer and hands back every call still tracked (the runtime stopped). */
  close(): T[] {
    this.#timer?.cancel();
    this.#timer = undefined;
    const left: T[] = [];
    for (const q of this.#queues.values()) {
      for (let m = q.head; m !== undefined;) {
        const next = m.next;
        this.remove(m as T);
        left.push(m as T);
        m = next;
      }
    }
    return left;
  }
}
