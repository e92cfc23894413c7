// Deadlines of pending calls. Calls with the same timeout expire in the order
// they were made, so each timeout value keeps an intrusive FIFO list: O(1) to
// add and to remove, and one coarse sweep timer for all of them.

import type { Message } from './message.ts';

class Queue {
  head: Message | undefined = undefined;
  tail: Message | undefined = undefined;
}

/** The deadline tracker of one runtime. */
export class Deadlines {
  readonly #queues = new Map<number, Queue>();
  #lastTimeout = -1;
  #last: Queue | undefined;
  #timer: NodeJS.Timeout | undefined;
  #sweepMs = 100;
  #count = 0;
  readonly #onExpire: (m: Message) => void;

  constructor(onExpire: (m: Message) => void) {
    this.#onExpire = onExpire;
  }

  /** Calls being tracked. */
  get size(): number {
    return this.#count;
  }

  add(m: Message): void {
    let q: Queue | undefined;
    if (m.timeoutMs === this.#lastTimeout) q = this.#last;
    else {
      q = this.#queues.get(m.timeoutMs);
      if (q === undefined) {
        q = new Queue();
        this.#queues.set(m.timeoutMs, q);
        // Sweep often enough for the shortest timeout to be honoured closely.
        const sweep = Math.max(5, Math.min(100, Math.floor(m.timeoutMs / 4)));
        if (sweep < this.#sweepMs) {
          this.#sweepMs = sweep;
          if (this.#timer !== undefined) {
            clearInterval(this.#timer);
            this.#timer = undefined;
          }
        }
      }
      this.#lastTimeout = m.timeoutMs;
      this.#last = q;
    }
    const t = (q as Queue).tail;
    m.prev = t;
    m.next = undefined;
    if (t === undefined) (q as Queue).head = m;
    else t.next = m;
    (q as Queue).tail = m;
    this.#count++;
    if (this.#timer === undefined) {
      this.#timer = setInterval(this.#sweep, this.#sweepMs);
      this.#timer.unref();
    }
  }

  remove(m: Message): void {
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
    const now = Date.now();
    for (const q of this.#queues.values()) {
      let m = q.head;
      while (m !== undefined && m.deadline <= now) {
        const next = m.next;
        this.remove(m);
        this.#onExpire(m);
        m = next;
      }
    }
    if (this.#count === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  };

  /** Stops the sweep timer (the runtime is stopping). */
  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
