// Grains for the tests that run silos as child processes.

import { randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { Grain, grain, statelessWorker, type ReminderTick } from 'granary';

/** A persistent counter that says where (which silo, which activation) it runs. */
@grain('pcounter')
export class PCounter extends Grain {
  readonly activation = randomUUID();
  readonly count = this.persistentState('count', { initial: () => ({ value: 0 }) });
  async add(n: number): Promise<number> {
    this.count.state.value += n;
    await this.count.write();
    return this.count.state.value;
  }
  async get(): Promise<number> {
    return this.count.state.value;
  }
  async where(): Promise<{ silo: string; activation: string }> {
    return { silo: this.silo.address, activation: this.activation };
  }
  async slowAdd(n: number, ms: number): Promise<number> {
    await new Promise((r) => setTimeout(r, ms));
    return this.add(n);
  }
}

/** Runs on the silo the client's gateway belongs to (stateless workers are local), and calls from there. */
@grain('pdriver')
@statelessWorker({ maxLocal: 1 })
export class PDriver extends Grain {
  async whereAll(keys: string[]): Promise<Array<{ silo: string; activation: string }>> {
    return Promise.all(keys.map((k) => this.getGrain(PCounter, k).where()));
  }
  async host(): Promise<string> {
    return this.silo.address;
  }
}

/**
 * Registers a reminder and logs each tick it receives, one line per tick, to
 * the file named by GRANARY_TICK_LOG (all silos of a test append to one file):
 * `key dueAt receivedAt missed silo count`. Counts its ticks in persistent state.
 */
@grain('pticker')
export class PTicker extends Grain {
  readonly ticks = this.persistentState('ticks', { initial: () => ({ count: 0 }) });
  async start(periodMs: number): Promise<void> {
    await this.registerReminder('tick', { dueMs: periodMs, periodMs });
  }
  async count(): Promise<number> {
    return this.ticks.state.count;
  }
  async receiveReminder(name: string, tick: ReminderTick): Promise<void> {
    this.ticks.state.count++;
    await this.ticks.write();
    const log = process.env['GRANARY_TICK_LOG'];
    if (log !== undefined)
      appendFileSync(
        log,
        `${this.key} ${tick.dueAt} ${Date.now()} ${tick.missed} ${this.silo.address} ${this.ticks.state.count} ${name}\n`,
      );
  }
}
