// A worked example of streams: devices publish readings to the `telemetry`
// namespace of a NATS stream provider; a grain per device, implicitly
// subscribed, keeps a running total in persistent state.
//
// Delivery is at least once: after a silo dies, JetStream hands out again
// what was not acknowledged, so a reading can arrive twice. The grain makes
// its effect exactly once by writing the token of the last reading it counted
// in the same state write as the total, and skipping any reading whose token
// is not after it. (Tokens of one stream on NATS grow with every publish.)

import {
  Grain,
  compareTokens,
  grain,
  implicitSubscription,
  type PersistentState,
  type StreamId,
  type StreamToken,
} from 'granary';

export interface Reading {
  readonly watts: number;
}

interface Totals {
  total: number;
  count: number;
  /** The token of the last reading counted; null before the first. */
  last: StreamToken | null;
}

@grain('deviceTotals')
@implicitSubscription('telemetry')
export class DeviceTotals extends Grain {
  readonly #totals: PersistentState<Totals> = this.persistentState('totals', {
    initial: () => ({ total: 0, count: 0, last: null }),
  });

  async onStreamItem(reading: Reading, token: StreamToken, _stream: StreamId): Promise<void> {
    const s = this.#totals.state;
    if (s.last !== null && compareTokens(token, s.last) <= 0) return; // counted before a redelivery
    s.total += reading.watts;
    s.count++;
    s.last = token;
    // One write holds both the effect and the token: they cannot part.
    await this.#totals.write();
  }

  async totals(): Promise<{ total: number; count: number }> {
    const { total, count } = this.#totals.state;
    return { total, count };
  }
}
