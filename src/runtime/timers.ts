// Grain timers: in-memory, gone with the activation. Each tick is a turn of
// the grain, queued like a call, so it never runs beside a call unless the
// grain is reentrant or the timer interleaves. The period counts from the end
// of a tick, so slow ticks never pile up.

import type { Clock, ClockTimer } from '../clock.ts';
import { ConfigurationError } from '../errors.ts';
import type { TimerHandle, TimerOptions } from '../grain/grain.ts';
import type { MethodInfo } from '../grain/options.ts';
import { Message, MessageKind, type TickOwner } from '../messaging/message.ts';
import type { Logger } from '../observability/logger.ts';

/** What a timer needs of the activation it belongs to. */
export interface TimerHost {
  readonly idStr: string;
  readonly logger: Logger;
  readonly clock: Clock;
  /** Delivers the tick as a turn, like a call. */
  receive(msg: Message): void;
  /** The timer was disposed: forget it. */
  timerDisposed(t: GrainTimer): void;
}

/** One registered timer of an activation. */
export class GrainTimer implements TimerHandle, TickOwner {
  readonly #act: TimerHost;
  readonly #method: MethodInfo;
  readonly #periodMs: number;
  readonly keepAlive: boolean;
  #handle: ClockTimer | undefined;
  #disposed = false;

  constructor(act: TimerHost, callback: () => unknown, options: TimerOptions) {
    const due = options.dueMs ?? 0;
    const period = options.periodMs ?? 0;
    const MAX = 2_147_483_647; // setTimeout's limit; beyond it Node fires at once
    if (!(due >= 0 && due <= MAX) || !(period >= 0 && period <= MAX)) {
      throw new ConfigurationError(
        `registerTimer of ${act.idStr}: dueMs and periodMs must be numbers of ms from 0 to ${MAX}, got ${String(options.dueMs)} and ${String(options.periodMs)}`,
      );
    }
    this.#act = act;
    this.#periodMs = period;
    this.keepAlive = options.keepAlive === true;
    this.#method = {
      name: `timer:${callback.name || 'anonymous'}`,
      fn: callback as (...a: unknown[]) => unknown,
      readOnly: false,
      alwaysInterleave: options.interleave === true,
      oneWay: false,
    };
    this.#schedule(due);
  }

  #schedule(ms: number): void {
    // A grain's timer does not keep the process alive: its silo does, while it runs.
    this.#handle = this.#act.clock.setTimeout(this.#fire, ms).unref();
  }

  readonly #fire = (): void => {
    this.#handle = undefined;
    if (this.#disposed) return;
    const m = new Message(MessageKind.Tick, this.#act.idStr, this.#method, [], undefined, undefined, 0);
    m.tick = this;
    this.#act.receive(m);
  };

  tickDone(error: unknown): void {
    if (error !== undefined)
      this.#act.logger.warn({ grain: this.#act.idStr, timer: this.#method.name, err: error }, 'timer tick threw');
    if (this.#disposed) return;
    if (this.#periodMs > 0) this.#schedule(this.#periodMs);
    else this.dispose();
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#handle?.cancel();
    this.#handle = undefined;
    this.#act.timerDisposed(this);
  }
}
