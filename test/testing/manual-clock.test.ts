// ManualClock: time moves only when the test moves it, timers fire in due order
// (those set by callbacks included), a jump makes timers late rather than
// firing them, and the async helpers let promise work run between timers.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigurationError, TimeoutError } from 'granary';
import { ManualClock, sleep } from 'granary/testing';

describe('ManualClock', () => {
  it('reads the time it was given and moves only when advanced', () => {
    const clock = new ManualClock(1000);
    assert.equal(clock.now(), 1000);
    clock.advance(250);
    assert.equal(clock.now(), 1250);
    assert.equal(new ManualClock().now(), Date.UTC(2030, 0, 1), 'a fixed default start');
  });

  it('fires due timers in due order, ties in the order set, each reading its own due time', () => {
    const clock = new ManualClock(0);
    const log: string[] = [];
    clock.setTimeout(() => log.push(`b@${clock.now()}`), 20);
    clock.setTimeout(() => log.push(`a@${clock.now()}`), 10);
    clock.setTimeout(() => log.push(`c@${clock.now()}`), 20);
    clock.setTimeout(() => log.push(`late@${clock.now()}`), 31);
    clock.advance(30);
    assert.deepEqual(log, ['a@10', 'b@20', 'c@20']);
    assert.equal(clock.now(), 30);
    assert.equal(clock.pendingTimers, 1);
    assert.equal(clock.nextDueAt(), 31);
  });

  it('fires, in the same advance, timers that callbacks set when they come due within it', () => {
    const clock = new ManualClock(0);
    const log: number[] = [];
    const chain = (): void => {
      log.push(clock.now());
      if (log.length < 10) clock.setTimeout(chain, 10);
    };
    clock.setTimeout(chain, 10);
    clock.advance(35);
    assert.deepEqual(log, [10, 20, 30]);
    clock.advance(100);
    assert.deepEqual(log, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
  });

  it('repeats an interval until it is cancelled, and a cancelled timer never fires', () => {
    const clock = new ManualClock(0);
    const log: number[] = [];
    const every = clock.setInterval(() => log.push(clock.now()), 100);
    const never = clock.setTimeout(() => log.push(-1), 50);
    never.cancel();
    never.cancel(); // twice does nothing
    clock.advance(350);
    assert.deepEqual(log, [100, 200, 300]);
    every.cancel();
    clock.advance(1000);
    assert.deepEqual(log, [100, 200, 300]);
    assert.equal(clock.pendingTimers, 0);
    assert.equal(clock.nextDueAt(), undefined);
  });

  it('jump moves time without firing; the timers due meanwhile fire late, once, at the next advance', () => {
    const clock = new ManualClock(0);
    const log: Array<[string, number]> = [];
    clock.setTimeout(() => log.push(['once', clock.now()]), 100);
    clock.setInterval(() => log.push(['every', clock.now()]), 100);
    clock.jump(350); // the process was suspended: nothing ran
    assert.deepEqual(log, []);
    assert.equal(clock.now(), 350);
    clock.advance(0);
    // Both were due at 100; they run now, late, and the interval counts on from now, as Node's do.
    assert.deepEqual(log, [
      ['once', 350],
      ['every', 350],
    ]);
    clock.advance(100);
    assert.deepEqual(log.at(-1), ['every', 450]);
  });

  it('advanceAsync lets promise work that a timer starts finish and set its own timers', async () => {
    const clock = new ManualClock(0);
    const log: number[] = [];
    clock.setTimeout(() => {
      void Promise.resolve()
        .then(() => Promise.resolve())
        .then(() => clock.setTimeout(() => log.push(clock.now()), 10));
    }, 10);
    clock.advance(100);
    assert.deepEqual(log, [], 'advance does not wait for promise callbacks');
    const again = new ManualClock(0);
    const seen: number[] = [];
    again.setTimeout(() => {
      void Promise.resolve()
        .then(() => Promise.resolve())
        .then(() => again.setTimeout(() => seen.push(again.now()), 10));
    }, 10);
    await again.advanceAsync(100);
    assert.deepEqual(seen, [20]);
    assert.equal(again.now(), 100);
  });

  it('sleep on a manual clock resolves when the clock is advanced past it', async () => {
    const clock = new ManualClock(0);
    let woke = false;
    const slept = sleep(clock, 1000).then(() => (woke = true));
    await clock.advanceAsync(999);
    assert.equal(woke, false);
    await clock.advanceAsync(1);
    await slept;
    assert.equal(woke, true);
  });

  it('runUntilIdle fires what is due now, with the work it queues, without moving time', async () => {
    const clock = new ManualClock(0);
    const log: string[] = [];
    clock.setTimeout(() => {
      log.push('due');
      void Promise.resolve().then(() => clock.setTimeout(() => log.push('queued by a promise'), 0));
    }, 0);
    clock.setTimeout(() => log.push('later'), 1);
    await clock.runUntilIdle();
    assert.deepEqual(log, ['due', 'queued by a promise']);
    assert.equal(clock.now(), 0);
  });

  it('runUntilIdle fails, instead of hanging, when callbacks keep setting timers due now', async () => {
    const clock = new ManualClock(0);
    const again = (): void => void clock.setTimeout(again, 0);
    clock.setTimeout(again, 0);
    await assert.rejects(
      clock.runUntilIdle(),
      (e: unknown) => e instanceof TimeoutError && /runUntilIdle/.test(e.message),
    );
  });

  it('advanceUntil moves from timer to timer until the condition holds and says how long that took', async () => {
    const clock = new ManualClock(0);
    let count = 0;
    clock.setInterval(() => void Promise.resolve().then(() => count++), 250);
    const took = await clock.advanceUntil(() => count === 3);
    assert.equal(took, 750);
    assert.equal(clock.now(), 750);
    assert.equal(await clock.advanceUntil(async () => count === 3), 0, 'a condition that holds already moves nothing');
  });

  it('advanceUntil fails naming what it waited for when the condition does not hold in time, or nothing is pending', async () => {
    const clock = new ManualClock(0);
    clock.setInterval(() => undefined, 1000);
    await assert.rejects(
      clock.advanceUntil(() => false, { maxMs: 5000, what: 'silo 3 declared dead' }),
      (e: unknown) => e instanceof TimeoutError && /silo 3 declared dead/.test(e.message) && /5000 ms/.test(e.message),
    );
    assert.ok(clock.now() <= 5000, 'it did not move beyond maxMs');
    const idle = new ManualClock(0);
    await assert.rejects(
      idle.advanceUntil(() => false, { what: 'a tick' }),
      (e: unknown) => e instanceof TimeoutError && /a tick/.test(e.message) && /no timer is pending/.test(e.message),
    );
  });

  it('refuses to move time backwards or by a non-number', () => {
    const clock = new ManualClock(0);
    assert.throws(() => clock.advance(-1), ConfigurationError);
    assert.throws(() => clock.jump(Number.NaN), ConfigurationError);
    assert.equal(clock.now(), 0);
  });
});
