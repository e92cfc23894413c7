// The grains of the hello example: a counter per key, persisted, and a
// read-only get that may interleave with other reads.

import { Grain, grain, readOnly } from 'granary';

// #region counter
@grain('counter')
export class Counter extends Grain {
  readonly count = this.persistentState('count', { initial: () => ({ value: 0 }) });

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
// #endregion counter
