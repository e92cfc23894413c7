import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Silo, Grain, grain, silentLogger, type TimerHandle } from 'granary';
import { eventually, nextEvent } from '../helpers.ts';

const seen = { ticks: 0, afterDispose: 0, deactivatedTicks: 0 };

@grain('ticker')
class Ticker extends Grain {
  #timer: TimerHandle | undefined;
  #throwing = 0;
  async start(periodMs: number): Promise<void> {
    this.#timer = this.registerTimer(
      () => {
        seen.ticks++;
      },
      { dueMs: periodMs, periodMs },
    );
  }
  async stop(): Promise<void> {
    this.#timer?.dispose();
    this.#timer = undefined;
  }
  async startThrowing(): Promise<void> {
    this.registerTimer(
      () => {
        this.#throwing++;
        throw new Error('tick failed');
      },
      { dueMs: 1, periodMs: 5 },
    );
  }
  async throwingTicks(): Promise<number> {
    return this.#throwing;
  }
  async startAndLeave(): Promise<void> {
    this.registerTimer(
      () => {
        seen.deactivatedTicks++;
      },
      { dueMs: 30, periodMs: 10 },
    );
    this.deactivateOnIdle();
  }
  async once(): Promise<void> {
    this.registerTimer(
      () => {
        seen.afterDispose++;
      },
      { dueMs: 5 },
    );
  }
}

describe('grain timers', () => {
  it('ticks until disposed, and a throwing tick does not stop the timer or the grain', async () => {
    const silo = await Silo.start({ grains: [Ticker], logger: silentLogger() });
    try {
      const t = silo.getGrain(Ticker, 'a');
      await t.start(5);
      await eventually('three ticks', () => seen.ticks >= 3);
      await t.stop();
      const at = seen.ticks;
      // Lets time pass on purpose (ten periods): what is checked is that the disposed timer does NOT tick.
      await new Promise((r) => setTimeout(r, 50));
      assert.ok(seen.ticks <= at + 1, 'a disposed timer kept ticking');
      await t.startThrowing();
      await eventually('a throwing timer ticks again', async () => (await t.throwingTicks()) >= 3);
    } finally {
      await silo.stop();
    }
  });

  it('fires a one-shot timer once, and timers die with their activation', async () => {
    const silo = await Silo.start({ grains: [Ticker], logger: silentLogger() });
    try {
      await silo.getGrain(Ticker, 'b').once();
      await eventually('the one-shot tick', () => seen.afterDispose === 1);
      const gone = nextEvent<{ grain: string }>('granary:activation:deactivated', (m) => m.grain === 'ticker/c');
      await silo.getGrain(Ticker, 'c').startAndLeave();
      await gone;
      // Lets time pass on purpose (past the due time and several periods): the dead timer must NOT tick.
      await new Promise((r) => setTimeout(r, 80));
      assert.equal(seen.deactivatedTicks, 0, 'a timer of a deactivated grain ticked');
      assert.equal(seen.afterDispose, 1);
      assert.equal(silo.activationCount, 1, 'a timer must not reactivate its grain');
    } finally {
      await silo.stop();
    }
  });
});
