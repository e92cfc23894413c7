import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { Grain, grain, Silo, silentLogger, SiloStoppedError, GranaryError, channels } from 'granary';
import { Lifecycle, lifecycleLog, Flaky, flaky, Counter } from '../grains/basic.ts';
import { Sleeper, Worker, workerStats, waitingForAbort } from '../grains/scheduling.ts';
import { eventually, nextEvent } from '../helpers.ts';

describe('activation lifecycle', () => {
  let silo: Silo;
  before(async () => {
    silo = await Silo.start({
      grains: [Lifecycle, Flaky, Sleeper, Counter],
      collectionAgeMs: 150,
      logger: silentLogger(),
    });
  });
  after(() => silo.stop());
  beforeEach(() => {
    lifecycleLog.length = 0;
  });

  it('runs onActivate before the first call is let in', async () => {
    const at = await silo.getGrain(Lifecycle, 'act-1').ping();
    assert.ok(at > 0);
    assert.deepEqual(lifecycleLog, ['activate act-1']);
  });

  it('fails the call when onActivate throws, discards the activation, and the next call tries again', async () => {
    flaky.failuresLeft = 1;
    flaky.attempts = 0;
    const g = silo.getGrain(Flaky, 'f');
    await assert.rejects(g.hello(), (e: unknown) => e instanceof GranaryError && e.code === 'TEST_ACTIVATION');
    assert.equal(await g.hello(), 'hello f');
    assert.equal(flaky.attempts, 2);
  });

  it('collects an idle activation after collectionAgeMs and runs onDeactivate', async () => {
    const g = silo.getGrain(Lifecycle, 'idle-1');
    const first = await g.ping();
    const ev = nextEvent<{ grain: string; reason: string }>(
      'granary:activation:deactivated',
      (m) => m.grain === 'lifecycle/idle-1',
    );
    const { reason } = await ev;
    assert.equal(reason, 'idle');
    assert.ok(lifecycleLog.includes('deactivate idle-1 idle'));
    const second = await g.ping();
    assert.ok(second >= first);
    assert.equal(lifecycleLog.filter((l) => l === 'activate idle-1').length, 2);
  });

  it('keeps a grain that is used, and one that asked for delayDeactivation', async () => {
    const g = silo.getGrain(Lifecycle, 'busy-1');
    const kept = silo.getGrain(Lifecycle, 'delay-1');
    await kept.stay(600);
    const end = Date.now() + 400;
    while (Date.now() < end) {
      await g.ping();
      // Paces the calls on purpose: the grain is used every 20 ms for longer than its collection age.
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(!lifecycleLog.some((l) => l.startsWith('deactivate busy-1')), lifecycleLog.join(', '));
    assert.ok(!lifecycleLog.some((l) => l.startsWith('deactivate delay-1')), lifecycleLog.join(', '));
    await eventually('delay-1 collected after its delay', () => lifecycleLog.includes('deactivate delay-1 idle'), 3000);
  });

  it('honours collectionAgeMs per grain type over the silo default', async () => {
    class LongLived extends Lifecycle {
      static grainOptions = { name: 'longLived', collectionAgeMs: 60_000 };
    }
    const s2 = await Silo.start({ grains: [LongLived, Lifecycle], collectionAgeMs: 60, logger: silentLogger() });
    try {
      await s2.getGrain(LongLived, 'keep').ping();
      await s2.getGrain(Lifecycle, 'go').ping();
      await eventually('the short-lived grain collected', () => lifecycleLog.includes('deactivate go idle'));
      assert.ok(!lifecycleLog.includes('deactivate keep idle'));
      assert.equal(s2.activationCount, 1);
    } finally {
      await s2.stop();
    }
    assert.ok(lifecycleLog.includes('deactivate keep shutdown'));
  });

  it('deactivates on request after the current turn', async () => {
    const g = silo.getGrain(Lifecycle, 'leave-1');
    const ev = nextEvent<{ grain: string; reason: string }>(
      'granary:activation:deactivated',
      (m) => m.grain === 'lifecycle/leave-1',
    );
    await g.leave();
    assert.equal((await ev).reason, 'requested');
  });

  it('loses no call that arrives while a grain deactivates: a new activation serves it', async () => {
    const g = silo.getGrain(Lifecycle, 'deact-race');
    const first = await g.ping();
    const leaving = g.leaveSlowly(50);
    await eventually('the leaving turn runs', () => lifecycleLog.includes('leave slowly deact-race'));
    const during: Promise<number>[] = [];
    for (let i = 0; i < 20; i++) during.push(g.ping());
    assert.equal(await leaving, first);
    const seen = await Promise.all(during);
    assert.equal(seen.length, 20);
    for (const at of seen) assert.notEqual(at, 0);
    assert.ok(
      seen.every((at) => at === seen[0]),
      'all waiting calls went to one new activation',
    );
    assert.ok((seen[0] as number) > first, 'the waiting calls ran on a new activation');
    const i = lifecycleLog.indexOf('deactivate deact-race requested');
    assert.ok(i >= 0 && lifecycleLog.lastIndexOf('activate deact-race') > i, lifecycleLog.join(', '));
  });

  it('stops gracefully: running turns finish, onDeactivate runs, later calls get a typed error', async () => {
    const s3 = await Silo.start({ grains: [Lifecycle, Sleeper], logger: silentLogger() });
    await s3.getGrain(Lifecycle, 'stop-1').ping();
    const activated = nextEvent('granary:activation:created', (m) => m.grain === 'sleeper/stop-2');
    const running = s3.getGrain(Sleeper, 'stop-2').sleep(50);
    await activated; // the call is in the grain's hands when the stop begins
    const stopped = s3.stop();
    assert.equal(await running, 'slept');
    await stopped;
    assert.ok(lifecycleLog.includes('deactivate stop-1 shutdown'));
    assert.equal(s3.activationCount, 0);
    await assert.rejects(s3.getGrain(Lifecycle, 'stop-1').ping(), SiloStoppedError);
  });

  it('publishes lifecycle events on diagnostics channels', async () => {
    const ev = nextEvent<{ grain: string }>(
      channels.activationCreated.name as string,
      (m) => m.grain === 'lifecycle/chan',
    );
    await silo.getGrain(Lifecycle, 'chan').ping();
    await ev;
  });
});

@grain('idleThenBusy')
class IdleThenBusy extends Grain {
  readonly made = Math.random();
  async incarnation(): Promise<number> {
    return this.made;
  }
  async refuse(why: string): Promise<never> {
    await Promise.resolve();
    throw new GranaryError(why, 'TEST_REFUSED');
  }
}

describe('an activation idle for a collection pass', () => {
  it('keeps answering and failing calls after idle collection let go of what only a busy one needs', async () => {
    // A pass every 10 ms, collection after 10 s: the grain stays, unused through several passes.
    const silo = await Silo.start({
      grains: [IdleThenBusy],
      collectionAgeMs: 10_000,
      collectionQuantumMs: 10,
      responseTimeoutMs: 2_000,
      logger: silentLogger(),
    });
    try {
      const g = silo.getGrain(IdleThenBusy, 'i');
      const first = await g.incarnation();
      await assert.rejects(g.refuse('before'), (e: unknown) => e instanceof GranaryError && e.message === 'before');
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(await g.incarnation(), first, 'the same activation answers');
      await assert.rejects(g.refuse('after'), (e: unknown) => e instanceof GranaryError && e.message === 'after');
      assert.equal(await g.incarnation(), first);
    } finally {
      await silo.stop();
    }
  });
});

describe('stateless workers', () => {
  it('grow under load up to maxLocal, never beyond, and shrink when idle', async () => {
    workerStats.live = 0;
    workerStats.maxLive = 0;
    const silo = await Silo.start({ grains: [Worker], collectionAgeMs: 80, logger: silentLogger() });
    try {
      const w = silo.getGrain(Worker, 'w');
      assert.equal(await w.work(1), 1);
      assert.equal(workerStats.live, 1);
      const calls = [];
      for (let i = 0; i < 12; i++) calls.push(w.work(30));
      assert.deepEqual(await Promise.all(calls), new Array(12).fill(1));
      assert.equal(workerStats.maxLive, 3, 'grows to maxLocal under load');
      await eventually('idle workers collected', () => workerStats.live === 0);
      assert.equal(silo.activationCount, 0);
      assert.equal(await w.work(1), 1, 'a new worker serves after the pool emptied');
    } finally {
      await silo.stop();
    }
  });
});

describe('a stop that drops a turn still running', () => {
  it('fails the call waiting on that turn with SiloStoppedError instead of leaving it unsettled', async () => {
    const silo = await Silo.start({ grains: [Sleeper], deactivationTimeoutMs: 20, logger: silentLogger() });
    const stuck = silo.getGrain(Sleeper, 'stuck').waitForAbort(new AbortController().signal);
    await eventually('the turn to start', () => waitingForAbort.has('stuck'));
    await silo.stop();
    await assert.rejects(stuck, SiloStoppedError);
  });
});
