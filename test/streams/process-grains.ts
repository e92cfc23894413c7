// Grains for the stream tests that run silos as child processes: a recorder
// per stream that writes every item it takes to SQLite state before its turn
// ends (so an item is acknowledged only once recorded).

import { Grain, grain, implicitSubscription, type PersistentState, type StreamId } from 'granary';

interface Seen {
  /** How often each item came. */
  counts: Record<string, number>;
}

@grain('streamLedger')
@implicitSubscription('ledger')
export class Ledger extends Grain {
  readonly #seen: PersistentState<Seen> = this.persistentState('seen', { initial: () => ({ counts: {} }) });

  async onStreamItem(item: number, _token: unknown, _stream: StreamId): Promise<void> {
    const c = this.#seen.state.counts;
    c[String(item)] = (c[String(item)] ?? 0) + 1;
    await this.#seen.write();
  }

  async counts(): Promise<Record<string, number>> {
    return this.#seen.state.counts;
  }
}
