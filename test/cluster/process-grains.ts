// Grains for the tests that run silos as child processes.

import { randomUUID } from 'node:crypto';
import { Grain, grain, statelessWorker } from 'granary';

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
