// Durable reminders in one silo: registration, ticks and what they say,
// replacement, removal, activation by a tick, validation, catch-up after
// downtime; and the ring ranges each silo fires.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { ConfigurationError, Grain, Silo, grain, memoryReminders, silentLogger, type ReminderTick } from 'granary';
import { hash32 } from '../../src/hash.ts';
import { Ring } from '../../src/membership/ring.ts';
import { inRange, rangesOf } from '../../src/reminders/service.ts';
import { eventually, nextEvent, recordEvents } from '../helpers.ts';

/** Ticks received, by grain key. */
const ticks = new Map<string, Array<{ name: string; tick: ReminderTick; at: number; activation: number }>>();
let activations = 0;

@grain('remindMe')
class RemindMe extends Grain {
  readonly activation = ++activations;
  async start(name: string, dueMs: number, periodMs: number): Promise<void> {
    await this.registerReminder(name, { dueMs, periodMs });
  }
  async stop(name: string): Promise<boolean> {
    return this.unregisterReminder(name);
  }
  async list(): Promise<Array<{ name: string; periodMs: number }>> {
    return (await this.getReminders()).map((r) => ({ name: r.name, periodMs: r.periodMs }));
  }
  async sleep(): Promise<void> {
    this.deactivateOnIdle();
  }
  async receiveReminder(name: string, tick: ReminderTick): Promise<void> {
    const list = ticks.get(this.key) ?? [];
    list.push({ name, tick, at: Date.now(), activation: this.activation });
    ticks.set(this.key, list);
  }
}

@grain('noReceiver')
class NoReceiver extends Grain {
  async start(): Promise<void> {
    await this.registerReminder('r', { dueMs: 0, periodMs: 1000 });
  }
}

describe('reminders in one silo', () => {
  const silos: Silo[] = [];
  after(async () => {
    for (const s of silos) await s.stop();
  });
  async function silo(options: Parameters<typeof Silo.start>[0] = {}): Promise<Silo> {
    const s = await Silo.start({
      grains: [RemindMe, NoReceiver],
      minReminderPeriodMs: 50,
      logger: silentLogger(),
      ...options,
    });
    silos.push(s);
    return s;
  }

  it('fires receiveReminder every period with the first tick time, the period and the due time', async () => {
    const s = await silo();
    const g = s.getGrain(RemindMe, 'ticker');
    const before = Date.now();
    await g.start('beat', 100, 100);
    await eventually('four ticks', () => (ticks.get('ticker')?.length ?? 0) >= 4, 5000);
    await g.stop('beat');
    const got = ticks.get('ticker') ?? [];
    const first = got[0]?.tick;
    assert.ok(first !== undefined);
    assert.ok(
      first.firstTickAt >= before + 100 && first.firstTickAt <= Date.now(),
      'first tick time is registration time plus dueMs',
    );
    got.slice(0, 4).forEach((t, i) => {
      assert.equal(t.name, 'beat');
      assert.equal(t.tick.periodMs, 100);
      assert.equal(t.tick.firstTickAt, first.firstTickAt);
      assert.equal(t.tick.dueAt, first.firstTickAt + i * 100, `tick ${i} is due one period after the last`);
      assert.ok(t.at >= t.tick.dueAt, 'never early');
    });
  });

  it('lists, replaces and removes reminders; a removed reminder fires no more', async () => {
    const s = await silo();
    const g = s.getGrain(RemindMe, 'lister');
    await g.start('a', 60_000, 60_000);
    await g.start('b', 60_000, 70_000);
    await g.start('a', 60_000, 80_000);
    assert.deepEqual(await g.list(), [
      { name: 'a', periodMs: 80_000 },
      { name: 'b', periodMs: 70_000 },
    ]);
    assert.equal(await g.stop('a'), true);
    assert.equal(await g.stop('a'), false, 'removing twice finds nothing');
    assert.deepEqual(await g.list(), [{ name: 'b', periodMs: 70_000 }]);

    await g.start('fast', 0, 50);
    await eventually('a tick of fast', () => (ticks.get('lister')?.length ?? 0) >= 1, 5000);
    const isFast = (m: Record<string, unknown>): boolean => m.grain === 'remindMe/lister' && m.reminder === 'fast';
    const unscheduled = nextEvent('granary:reminder:unscheduled', isFast);
    await g.stop('fast');
    await unscheduled; // the silo that fires it has dropped it (a tick already under way may still land)
    const fired = recordEvents('granary:reminder:tick');
    try {
      // Lets time pass on purpose (six periods): what is checked is that no tick starts.
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(fired.events.filter(isFast), [], 'no tick after unregister');
    } finally {
      fired.close();
    }
  });

  it('activates a deactivated grain to deliver a tick', async () => {
    const s = await silo();
    const g = s.getGrain(RemindMe, 'sleeper');
    await g.start('wake', 300, 60_000);
    const first = activations;
    await g.sleep();
    await eventually('the grain is deactivated', () => s.activationCount === 0 || activations > first, 5000);
    await eventually('a tick', () => (ticks.get('sleeper')?.length ?? 0) >= 1, 5000);
    assert.ok((ticks.get('sleeper')?.[0]?.activation ?? 0) > first, 'delivered to a new activation');
  });

  it('refuses a period under minReminderPeriodMs, bad names, and grains with no receiveReminder', async () => {
    const s = await silo({ minReminderPeriodMs: 1000 });
    await assert.rejects(
      s.getGrain(RemindMe, 'v').start('x', 0, 999),
      (e: unknown) => e instanceof ConfigurationError && /minReminderPeriodMs \(1000\)/.test(e.message),
    );
    await assert.rejects(s.getGrain(RemindMe, 'v').start('', 0, 1000), ConfigurationError);
    await assert.rejects(s.getGrain(RemindMe, 'v').start('x', -1, 1000), /dueMs/);
    await assert.rejects(
      s.getGrain(NoReceiver, 'v').start(),
      (e: unknown) => e instanceof ConfigurationError && /receiveReminder/.test(e.message),
    );
  });

  it('refuses a period that rounds to 0 ms and a due time or period too large to store, as configuration errors', async () => {
    const s = await silo({ minReminderPeriodMs: 1 });
    await assert.rejects(
      s.getGrain(RemindMe, 'v').start('x', 0, 0.4),
      (e: unknown) => e instanceof ConfigurationError && /periodMs/.test(e.message),
    );
    await assert.rejects(
      s.getGrain(RemindMe, 'v').start('x', 1e300, 1000),
      (e: unknown) => e instanceof ConfigurationError && /dueMs/.test(e.message),
    );
    await assert.rejects(
      s.getGrain(RemindMe, 'v').start('x', 0, 1e300),
      (e: unknown) => e instanceof ConfigurationError && /periodMs/.test(e.message),
    );
    assert.deepEqual(await s.getGrain(RemindMe, 'v').list(), []);
  });

  it('after downtime, fires one catch-up tick for the ticks nobody fired and reports how many were missed', async () => {
    const table = memoryReminders();
    const first = await silo({ reminders: table });
    await first.getGrain(RemindMe, 'downtime').start('d', 50, 100);
    // Five ticks fired before the stop: they must not count as missed.
    await eventually('five ticks', () => (ticks.get('downtime')?.length ?? 0) >= 5, 5000);
    await first.stop();
    silos.splice(silos.indexOf(first), 1);
    const stoppedAt = Date.now();
    ticks.delete('downtime');
    // Lets time pass on purpose: about six periods with no silo to fire the reminder.
    await new Promise((r) => setTimeout(r, 650));
    await silo({ reminders: table });
    await eventually('a catch-up tick', () => (ticks.get('downtime')?.length ?? 0) >= 1, 5000);
    const catchUp = ticks.get('downtime')?.[0]?.tick;
    assert.ok(catchUp !== undefined);
    assert.ok(catchUp.dueAt >= stoppedAt + 500, 'the catch-up tick is the latest one due');
    assert.ok(catchUp.missed >= 4 && catchUp.missed <= 8, `missed ${catchUp.missed}, expected about 5`);
  });
});

describe('reminder ring ranges', () => {
  it('give every ring position to exactly one silo: the ring owner', () => {
    const members = ['10.0.0.1:1111', '10.0.0.2:1111', '10.0.0.3:1111'];
    const ring = new Ring(members);
    const ranges = new Map(members.map((m) => [m, rangesOf(ring, m)]));
    for (const rs of ranges.values()) assert.ok(rs.length > 0 && rs.length <= 32);
    const probes = [
      0,
      1,
      0xffffffff,
      0x80000000,
      ...ring.points.map((p) => p[0]),
      ...ring.points.map((p) => (p[0] + 1) >>> 0),
    ];
    for (let i = 0; i < 2000; i++) probes.push(hash32(`grain/${i}`));
    for (const h of probes) {
      const owners = members.filter((m) => (ranges.get(m) ?? []).some(([b, e]) => inRange(h, b, e)));
      assert.deepEqual(owners, [ring.ownerOfHash(h)], `position ${h}`);
    }
  });

  it("give a ring position shared by two silos' points to the silo that owns it, not the whole ring to the other", () => {
    // Two addresses with two points each at the same positions as the other's (found by search).
    const members = ['127.0.0.1:3395', '127.0.0.1:3498'];
    assert.equal(hash32('127.0.0.1:3395#30'), hash32('127.0.0.1:3498#1'));
    assert.equal(hash32('127.0.0.1:3395#3'), hash32('127.0.0.1:3498#10'));
    const ring = new Ring(members);
    const ranges = new Map(members.map((m) => [m, rangesOf(ring, m)]));
    const probes = [0, 1, 0xffffffff, ...ring.points.map((p) => p[0]), ...ring.points.map((p) => (p[0] + 1) >>> 0)];
    for (let i = 0; i < 2000; i++) probes.push(hash32(`grain/${i}`));
    for (const h of probes) {
      const owners = members.filter((m) => (ranges.get(m) ?? []).some(([b, e]) => inRange(h, b, e)));
      assert.deepEqual(owners, [ring.ownerOfHash(h)], `position ${h}`);
    }
  });

  it('give a silo alone the whole ring, and a non-member nothing', () => {
    const ring = new Ring(['a:1']);
    assert.deepEqual(rangesOf(ring, 'a:1'), [[0, 0]]);
    assert.deepEqual(rangesOf(ring, 'b:1'), []);
    assert.deepEqual(rangesOf(new Ring([]), 'a:1'), []);
  });
});
