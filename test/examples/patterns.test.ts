import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { DeadlockError, Silo, memoryStorage, silentLogger } from 'granary';
import { TestCluster } from 'granary/testing';
import {
  FleetTotal,
  HotDevice,
  HotFleetTotal,
  SiteTotal,
  StagedDevice,
  hotSingletonGrains,
} from '../../examples/patterns/hot-singleton.ts';
import { Floor, Sensor, chattyGrains } from '../../examples/patterns/chatty.ts';
import { Account, CyclicAccount, Ledger, ReentrantAccount, deadlockGrains } from '../../examples/patterns/deadlock.ts';
import {
  BlockingReport,
  OffloadedReport,
  Ping,
  YieldingReport,
  blockingGrains,
} from '../../examples/patterns/blocking.ts';
import { withLatency } from '../../examples/patterns/latency.ts';
import { eventually } from '../helpers.ts';

describe('examples/patterns (docs/guide/06-patterns.md)', () => {
  it('hot singleton and staged aggregation reach the same totals', async () => {
    const silo = await Silo.start({
      grains: hotSingletonGrains,
      logger: silentLogger(),
      storage: { default: withLatency(memoryStorage(), 1) },
    });
    try {
      const readings: Array<[string, number]> = [];
      for (let site = 0; site < 3; site++)
        for (let d = 0; d < 20; d++) for (let r = 1; r <= 3; r++) readings.push([`site-${site}/dev-${d}`, d + r]);
      await Promise.all(readings.map(([key, w]) => silo.getGrain(HotDevice, key).report(w)));
      await Promise.all(readings.map(([key, w]) => silo.getGrain(StagedDevice, key).report(w)));

      const hot = await silo.getGrain(HotFleetTotal, 'fleet').totals();
      const expected = readings.reduce((s, [, w]) => s + w, 0);
      assert.equal(hot.total, expected);
      assert.equal(hot.readings, readings.length);
      const staged = silo.getGrain(FleetTotal, 'fleet');
      await eventually(
        'the staged fleet total to count every reading',
        async () => (await staged.totals()).readings === readings.length,
      );
      assert.deepEqual(await staged.totals(), hot);
      assert.deepEqual(await silo.getGrain(SiteTotal, 'site-1').totals(), {
        watts: hot.bySite['site-1'],
        readings: 60,
      });
    } finally {
      await silo.stop();
    }
  });

  it('chatty and coarse calls give the same view across two silos', async () => {
    const cluster = await TestCluster.start({
      silos: 2,
      grains: chattyGrains,
      siloOptions: { logger: silentLogger() },
    });
    try {
      const silo = cluster.silos[0] as Silo;
      const keys = ['s1', 's2', 's3'];
      for (const [i, key] of keys.entries())
        await silo.getGrain(Sensor, key).set({ name: key, temperature: 20 + i, humidity: 40 + i, battery: 90 - i });
      const floor = silo.getGrain(Floor, 'f1');
      const chatty = await floor.viewChatty(keys);
      assert.deepEqual(await floor.viewCoarse(keys), chatty);
      assert.deepEqual(chatty[2], { name: 's3', temperature: 22, humidity: 42, battery: 88 });
      // The placement puts each sensor on the other silo: every call from the floor is a hop.
      const other = (cluster.silos[1] as Silo).info.address;
      for (const key of keys) assert.equal(await silo.getGrain(Sensor, key).where(), other);
    } finally {
      await cluster.stop();
    }
  });

  it('a call cycle fails with DeadlockError; restructured or marked it completes', async () => {
    const silo = await Silo.start({ grains: deadlockGrains, logger: silentLogger() });
    try {
      await assert.rejects(silo.getGrain(CyclicAccount, 'a').withdraw(10), (e: unknown) => {
        assert.ok(e instanceof DeadlockError);
        assert.equal(e.code, 'GRANARY_DEADLOCK');
        assert.deepEqual(e.chain, ['cyclicAccount/a', 'ledger/main', 'cyclicAccount/a']);
        return true;
      });
      assert.equal(await silo.getGrain(Account, 'b').withdraw(10), 90);
      assert.equal(await silo.getGrain(ReentrantAccount, 'c').withdraw(10), 90);
      assert.deepEqual(await silo.getGrain(Ledger, 'main').entries(), [
        { account: 'b', change: -10, balance: 90 },
        { account: 'c', change: -10, balance: 90 },
      ]);
    } finally {
      await silo.stop();
    }
  });

  // Order, not time: whether another grain's call completes while the report runs.
  async function pingDuringCrunch(silo: Silo, crunch: (n: number) => Promise<number>): Promise<string[]> {
    const ping = silo.getGrain(Ping, 'p');
    await ping.ping(); // activated beforehand
    const order: string[] = [];
    const crunching = crunch(50 * 200_000).then(() => order.push('crunch'));
    await nextMacrotask(); // the crunch's turn has started by now
    const pinged = ping.ping().then(() => order.push('ping'));
    await Promise.all([crunching, pinged]);
    return order;
  }

  it('a blocking turn holds up other grains; a yielding or offloaded one lets them through, with the same result', async () => {
    const silo = await Silo.start({ grains: blockingGrains, logger: silentLogger() });
    try {
      const blocking = silo.getGrain(BlockingReport, 'r');
      const yielding = silo.getGrain(YieldingReport, 'r');
      const offloaded = silo.getGrain(OffloadedReport, 'r');
      await blocking.crunch(1);
      await yielding.crunch(1);
      await offloaded.crunch(1);
      assert.deepEqual(await pingDuringCrunch(silo, (n) => blocking.crunch(n)), ['crunch', 'ping']);
      assert.deepEqual(await pingDuringCrunch(silo, (n) => yielding.crunch(n)), ['ping', 'crunch']);
      assert.deepEqual(await pingDuringCrunch(silo, (n) => offloaded.crunch(n)), ['ping', 'crunch']);
      const expected = await blocking.crunch(1_000_000);
      assert.equal(await yielding.crunch(1_000_000), expected);
      assert.equal(await offloaded.crunch(1_000_000), expected);
    } finally {
      await silo.stop();
    }
  });
});
