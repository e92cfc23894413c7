// Grains the dashboard's tests drive: a counter with persistent state (the
// inspector), a reminded grain, and a grain whose calls can be held in its
// mailbox (the queue warning). Also loaded by silo processes.

import { Grain, GranaryError, grain, readOnly, type ReminderTick } from 'granary';

@grain('dash.counter')
export class DashCounter extends Grain {
  readonly count = this.persistentState<{ value: number }>('count', { initial: () => ({ value: 0 }) });

  async increment(by = 1): Promise<number> {
    this.count.state.value += by;
    await this.count.write();
    return this.count.state.value;
  }

  @readOnly
  async get(): Promise<number> {
    return this.count.state.value;
  }
}

/** A grain whose calls do no I/O: cheap to hammer. */
@grain('dash.ping')
export class DashPing extends Grain {
  n = 0;
  async ping(): Promise<number> {
    return ++this.n;
  }

  async fail(): Promise<never> {
    throw new GranaryError('refused on purpose', 'APP_REFUSED');
  }
}

@grain('dash.reminded')
export class DashReminded extends Grain {
  async remind(periodMs: number): Promise<void> {
    await this.registerReminder('tick', { dueMs: 60_000, periodMs });
  }

  async receiveReminder(_name: string, _tick: ReminderTick): Promise<void> {}
}

let gate: Promise<void> = Promise.resolve();
let open: () => void = () => {};

/** Holds every `getTotal` until `releaseQueue()`: calls pile up in the grain's mailbox. */
export function holdQueue(): void {
  gate = new Promise((r) => (open = r));
}

export function releaseQueue(): void {
  open();
}

@grain('dash.queue')
export class DashQueue extends Grain {
  /** Reads, but is not marked @readOnly: the advice should say so. */
  async getTotal(): Promise<number> {
    await gate;
    return 1;
  }
}
