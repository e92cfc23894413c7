// Grains of the chaos run (scripts/chaos.ts); its silo processes load this
// module. A persistent counter whose every add() is acknowledged only once its
// state is written, and a grain that counts the ticks of a durable reminder in
// its persistent state.

import { randomUUID } from 'node:crypto';
import diagnostics_channel from 'node:diagnostics_channel';
import { Grain, grain, InconsistentStateError, type ReminderTick } from 'granary';

// With GRANARY_CHAOS_TRACE set (the chaos run sets it), each silo writes its view changes and
// the activations and deactivations of its grains to stderr, one line each:
// `chaos-trace <epoch ms> <silo> view <version> <active silos>` or `... +<grain>` / `... -<grain> <reason>`.
if (process.env['GRANARY_CHAOS_TRACE'] !== undefined) {
  const line = (text: string): boolean => process.stderr.write(`chaos-trace ${Date.now()} ${text}\n`);
  diagnostics_channel.subscribe('granary:membership:changed', (m) => {
    const v = m as { silo: string; version: number; active: string[] };
    line(`${v.silo} view ${v.version} ${v.active.join(',')}`);
  });
  diagnostics_channel.subscribe('granary:activation:created', (m) => {
    const a = m as { silo: string; grain: string };
    line(`${a.silo} +${a.grain}`);
  });
  diagnostics_channel.subscribe('granary:activation:deactivated', (m) => {
    const a = m as { silo: string; grain: string; reason: string };
    line(`${a.silo} -${a.grain} ${a.reason}`);
  });
}

/** Which activation of a counter answered, and what it holds. */
export interface CounterInfo {
  value: number;
  /** The silo hosting the activation. */
  silo: string;
  /** Tells activations apart. */
  activation: string;
  /** Epoch ms the activation was made, and the value it read from the store then. */
  activatedAt: number;
  loaded: number;
}

/** What a ChaosTicker has persisted. */
export interface TickerStats {
  /** Ticks received and written. */
  count: number;
  /** Epoch ms of the last tick written (0 before the first). */
  lastAt: number;
  /** The longest time between two written ticks, in ms. */
  maxGapMs: number;
  /** Sum of `tick.missed` over the ticks written. */
  missed: number;
}

/**
 * A persistent counter. `add(n)` returns the new value once it is written: a
 * value returned is an acknowledged write. A write that fails is undone in
 * memory, so the activation holds what it last wrote or read; a stale ETag
 * (someone else wrote: another activation) also deactivates it, so the next
 * call reads the record afresh.
 */
@grain('chaos-counter')
export class ChaosCounter extends Grain {
  readonly count = this.persistentState('count', { initial: () => ({ value: 0 }) });
  readonly #activation = randomUUID();
  #activatedAt = 0;
  #loaded = 0;

  override async onActivate(): Promise<void> {
    this.#activatedAt = Date.now();
    this.#loaded = this.count.state.value;
  }

  async add(n: number): Promise<number> {
    const s = this.count.state;
    s.value += n;
    try {
      await this.count.write();
    } catch (e) {
      s.value -= n;
      if (e instanceof InconsistentStateError) this.deactivateOnIdle();
      throw e;
    }
    return s.value;
  }

  async get(): Promise<number> {
    return this.count.state.value;
  }

  async info(): Promise<CounterInfo> {
    return {
      value: this.count.state.value,
      silo: this.silo.address,
      activation: this.#activation,
      activatedAt: this.#activatedAt,
      loaded: this.#loaded,
    };
  }
}

/** A grain with a durable reminder whose ticks it counts in its persistent state. */
@grain('chaos-ticker')
export class ChaosTicker extends Grain {
  readonly ticks = this.persistentState<TickerStats>('ticks', {
    initial: () => ({ count: 0, lastAt: 0, maxGapMs: 0, missed: 0 }),
  });

  /** Registers (or replaces) the reminder `tick`: first tick after one period, then every period. */
  async start(periodMs: number): Promise<void> {
    await this.registerReminder('tick', { dueMs: periodMs, periodMs });
  }

  async stats(): Promise<TickerStats> {
    return { ...this.ticks.state };
  }

  async receiveReminder(_name: string, tick: ReminderTick): Promise<void> {
    const before = this.ticks.state;
    const now = Date.now();
    this.ticks.state = {
      count: before.count + 1,
      lastAt: now,
      maxGapMs: before.lastAt > 0 ? Math.max(before.maxGapMs, now - before.lastAt) : before.maxGapMs,
      missed: before.missed + tick.missed,
    };
    try {
      await this.ticks.write();
    } catch (e) {
      this.ticks.state = before;
      if (e instanceof InconsistentStateError) this.deactivateOnIdle();
      throw e;
    }
  }
}
