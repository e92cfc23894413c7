// The reminder service on its own, with a table the test controls: the races
// between a change notice and a load of the ranges, a view change during a
// read, a reminder removed while its tick runs, a re-registration while a
// tick runs, a first tick beyond setTimeout's range, a table that fails or
// hangs, errors thrown where a promise was expected, the notices a
// stopping silo sends; and, on a ManualClock, ticks that come due while the
// process is busy or a tick runs long, and the events the service publishes.

import assert from 'node:assert/strict';
import { afterEach, describe, it, mock } from 'node:test';
import { memoryReminders, silentLogger, type ReminderTick } from 'granary';
import { ManualClock, type Clock } from 'granary/testing';
import { hash32 } from '../../src/hash.ts';
import { Ring } from '../../src/membership/ring.ts';
import { ReminderService } from '../../src/reminders/service.ts';
import type { ReminderContext, ReminderEntry, ReminderTable, StoredReminder } from '../../src/reminders/table.ts';
import { deferred, eventually, recordEvents } from '../helpers.ts';

const ctx: ReminderContext = { clusterId: 'scheduling', logger: silentLogger() };

/** A memory table whose reads the test can hold, fail or count. */
class ControlledTable implements ReminderTable {
  readonly kind = 'controlled';
  readonly inner = memoryReminders();
  /** readRange waits for this after reading (its rows are then a snapshot of before). */
  holdRange: Promise<void> | undefined;
  /** read waits for this after reading. */
  holdRead: Promise<void> | undefined;
  /** readRange calls to fail from now on. */
  failRanges = 0;
  rangeCalls = 0;
  readCalls = 0;
  init(c: ReminderContext): Promise<void> {
    return this.inner.init(c);
  }
  readGrain(grainId: string): Promise<StoredReminder[]> {
    return this.inner.readGrain(grainId);
  }
  async read(grainId: string, name: string): Promise<StoredReminder | undefined> {
    this.readCalls++;
    const row = await this.inner.read(grainId, name);
    if (this.holdRead !== undefined) await this.holdRead;
    return row;
  }
  async readRange(begin: number, end: number): Promise<StoredReminder[]> {
    this.rangeCalls++;
    if (this.failRanges > 0) {
      this.failRanges--;
      throw new Error('table unreachable');
    }
    const rows = await this.inner.readRange(begin, end);
    if (this.holdRange !== undefined) await this.holdRange;
    return rows;
  }
  upsert(entry: ReminderEntry): Promise<string> {
    return this.inner.upsert(entry);
  }
  recordTick(grainId: string, name: string, dueAt: number): Promise<void> {
    return this.inner.recordTick(grainId, name, dueAt);
  }
  remove(grainId: string, name: string, etag: string): Promise<boolean> {
    return this.inner.remove(grainId, name, etag);
  }
  clear(): Promise<void> {
    return this.inner.clear();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

interface Fired {
  grainId: string;
  name: string;
  tick: ReminderTick;
}

const services: ReminderService[] = [];
afterEach(() => {
  for (const s of services.splice(0)) s.stop();
});

async function service(
  table: ReminderTable,
  options: {
    refreshIntervalMs?: number;
    fire?: (grainId: string, name: string, tick: ReminderTick) => Promise<unknown>;
    notify?: (owner: string, grainId: string, name: string) => Promise<unknown>;
    clock?: Clock;
  } = {},
): Promise<{ svc: ReminderService; fired: Fired[] }> {
  await table.init(ctx);
  const fired: Fired[] = [];
  const svc = new ReminderService({
    table,
    logger: silentLogger(),
    minPeriodMs: 1,
    refreshIntervalMs: options.refreshIntervalMs ?? 60_000,
    fire:
      options.fire ??
      (async (grainId, name, tick) => {
        fired.push({ grainId, name, tick });
      }),
    notify: options.notify ?? (async () => null),
    ...(options.clock !== undefined ? { clock: options.clock } : {}),
  });
  services.push(svc);
  return { svc, fired };
}

/** A row as a registration writes it, straight into the table (no notice to anyone). */
function entry(grainId: string, name: string, dueMs: number, periodMs: number): ReminderEntry {
  return { grainId, name, grainHash: hash32(grainId), startAt: Date.now() + dueMs, periodMs };
}

/** A grain id of type `t` whose ring owner is `owner`. */
function ownedBy(ring: Ring, owner: string, t: string): string {
  for (let i = 0; ; i++) if (ring.ownerOf(`${t}/${i}`) === owner) return `${t}/${i}`;
}

describe('reminder service scheduling', () => {
  it('does not bring back a reminder unregistered while a load was reading the ranges', async () => {
    const table = new ControlledTable();
    const { svc, fired } = await service(table);
    await table.upsert(entry('g/gone', 'r', 60_000, 60_000));
    const hold = deferred();
    table.holdRange = hold.promise;
    svc.start('self:1', undefined);
    await eventually('the load has read the ranges', () => table.rangeCalls === 1);
    assert.equal(await svc.unregister('g/gone', 'r'), true);
    table.holdRange = undefined;
    hold.resolve();
    await svc.settled();
    await svc.settled();
    assert.equal(
      svc.firing,
      0,
      'the unregistered reminder is not scheduled (it would fire until a refresh finds it gone)',
    );
    assert.deepEqual(fired, []);
  });

  it('keeps a re-registration that lands while a load is reading, not the row the load read before', async () => {
    const table = new ControlledTable();
    const { svc, fired } = await service(table);
    await table.upsert(entry('g/again', 'r', 60_000, 60_000));
    const hold = deferred();
    table.holdRange = hold.promise;
    svc.start('self:1', undefined);
    await eventually('the load has read the ranges', () => table.rangeCalls === 1);
    await svc.register('g/again', 'r', { dueMs: 0, periodMs: 40 });
    table.holdRange = undefined;
    hold.resolve();
    await eventually(
      'the new registration keeps ticking',
      () => fired.filter((f) => f.tick.periodMs === 40).length >= 3,
      3000,
    );
  });

  it('does not fire a reminder whose change notice was read while its range moved to another silo', async () => {
    const table = new ControlledTable();
    const { svc, fired } = await service(table);
    const ring = new Ring(['self:1', 'other:1']);
    const g = ownedBy(ring, 'self:1', 'g');
    svc.start('self:1', ring);
    await svc.settled();
    await table.upsert(entry(g, 'r', 0, 60_000));
    const hold = deferred();
    table.holdRead = hold.promise;
    const changed = svc.changed(g, 'r');
    await eventually('the notice is being read', () => table.readCalls === 1);
    svc.viewChanged(new Ring(['other:1'])); // this silo left the ring: it owns nothing
    table.holdRead = undefined;
    hold.resolve();
    await changed;
    await svc.settled();
    assert.equal(svc.firing, 0, 'not scheduled on a silo that no longer owns it');
    assert.deepEqual(fired, []);
  });

  it('stops a reminder removed from the table (notice lost) even when its tick runs at every refresh', async () => {
    const table = new ControlledTable();
    const release = deferred();
    let calls = 0;
    const { svc } = await service(table, {
      refreshIntervalMs: 20,
      fire: async () => {
        calls++;
        await release.promise; // a tick that runs longer than the period
      },
    });
    svc.start('self:1', undefined);
    await svc.register('g/slow', 'r', { dueMs: 0, periodMs: 10 });
    await eventually('the tick runs', () => calls === 1);
    const row = await table.read('g/slow', 'r');
    assert.ok(row !== undefined);
    assert.equal(await table.inner.remove('g/slow', 'r', row.etag), true); // removed elsewhere; its notice was lost
    try {
      await eventually('a refresh stops firing the removed reminder', () => svc.firing === 0, 2000);
    } finally {
      release.resolve();
    }
  });

  it('does not run a tick of a re-registered reminder while a tick of the old registration still runs', async () => {
    const table = new ControlledTable();
    const release = deferred();
    let running = 0;
    let most = 0;
    const ticks: ReminderTick[] = [];
    const { svc } = await service(table, {
      fire: async (_g, _n, tick) => {
        running++;
        most = Math.max(most, running);
        ticks.push(tick);
        if (ticks.length === 1) await release.promise;
        running--;
      },
    });
    svc.start('self:1', undefined);
    await svc.register('g/overlap', 'r', { dueMs: 0, periodMs: 60_000 });
    await eventually('the first tick runs', () => ticks.length === 1);
    await svc.register('g/overlap', 'r', { dueMs: 0, periodMs: 50_000 }); // replaced while its tick runs
    await svc.settled();
    assert.equal(most, 1, 'the new registration waits for the running tick');
    release.resolve();
    await eventually(
      'the new registration ticks once the old tick is done',
      () => ticks.some((t) => t.periodMs === 50_000),
      2000,
    );
    assert.equal(most, 1);
    const t = ticks.find((x) => x.periodMs === 50_000);
    assert.ok(t !== undefined && t.missed === 0, `missed ${String(t?.missed)}`);
  });

  it("does not fire a first tick due beyond setTimeout's range early", async () => {
    mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: Date.now() });
    try {
      const table = new ControlledTable();
      const { svc, fired } = await service(table, { refreshIntervalMs: 10 * 86_400_000 });
      svc.start('self:1', undefined);
      const day = 86_400_000;
      const info = await svc.register('g/later', 'r', { dueMs: 30 * day, periodMs: 30 * day });
      await svc.settled();
      mock.timers.tick(0x7fffffff); // the longest setTimeout: about 24.8 days
      await svc.settled();
      assert.equal(fired.length, 0, 'nothing fired 5 days early');
      mock.timers.tick(info.firstTickAt - Date.now());
      await svc.settled();
      assert.equal(fired.length, 1, 'fired when due');
      assert.equal(fired[0]?.tick.dueAt, info.firstTickAt);
      assert.ok(Date.now() >= info.firstTickAt);
    } finally {
      mock.timers.reset();
    }
  });

  it('retries a failed load soon, not only at the next refresh', async () => {
    const table = new ControlledTable();
    const { svc, fired } = await service(table, { refreshIntervalMs: 60_000 });
    await table.upsert(entry('g/blip', 'r', 0, 60_000));
    table.failRanges = 1; // the table blinks as the view changes
    svc.start('self:1', undefined);
    await eventually('the reminder is loaded and fired after the blip', () => fired.length === 1, 4000);
  });

  it("does not re-read the table every millisecond when the refresh interval is beyond setTimeout's range", async () => {
    const table = new ControlledTable();
    const { svc } = await service(table, { refreshIntervalMs: 30 * 86_400_000 });
    svc.start('self:1', undefined);
    await svc.settled();
    // Lets real time pass on purpose: what is checked is that loads do NOT happen meanwhile.
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(table.rangeCalls <= 2, `${table.rangeCalls} loads in 100 ms`);
  });

  it('queues one load, not one per view change, while the table hangs', async () => {
    const table = new ControlledTable();
    const { svc } = await service(table);
    const hold = deferred();
    table.holdRange = hold.promise;
    svc.start('self:1', undefined);
    await eventually('the first load is reading', () => table.rangeCalls === 1);
    for (let i = 0; i < 100; i++) svc.viewChanged(undefined);
    table.holdRange = undefined;
    hold.resolve();
    await svc.settled();
    await svc.settled();
    assert.equal(table.rangeCalls, 2, 'the hung load, then one more for all the view changes since');
  });

  it('survives a grain delivery and a table that throw instead of rejecting', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => {
      unhandled.push(e);
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      const table = new ControlledTable();
      table.recordTick = (): Promise<void> => {
        throw new Error('recordTick threw');
      };
      let calls = 0;
      const { svc } = await service(table, {
        fire: (): Promise<unknown> => {
          calls++;
          if (calls === 1) throw new Error('delivery threw'); // e.g. a custom placement that throws
          return Promise.resolve();
        },
      });
      svc.start('self:1', undefined);
      await svc.register('g/throws', 'r', { dueMs: 0, periodMs: 20 });
      await eventually('the reminder goes on', () => calls >= 3, 3000);
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('tells the silos that own a reminder now about changes made while this silo stops', async () => {
    const table = new ControlledTable();
    const told: Array<[string, string, string]> = [];
    const { svc } = await service(table, {
      notify: async (owner, grainId, name) => {
        told.push([owner, grainId, name]);
      },
    });
    const ring = new Ring(['self:1', 'other:1']);
    const g = ownedBy(ring, 'self:1', 'g');
    svc.start('self:1', ring);
    await svc.register(g, 'r', { dueMs: 60_000, periodMs: 60_000 });
    await svc.settled();
    assert.equal(svc.firing, 1);
    svc.stop(); // the silo stops: its grains deactivate, and one unregisters its reminder
    assert.equal(await svc.unregister(g, 'r'), true);
    assert.deepEqual(told, [['other:1', g, 'r']], 'the silo that takes the reminder over is told');
  });

  it('fires a tick that came due while the process was busy once, for the latest due time, counting the ticks it missed', async () => {
    const clock = new ManualClock();
    const { svc, fired } = await service(new ControlledTable(), { clock });
    svc.start('self:1', undefined);
    const info = await svc.register('g/busy', 'r', { dueMs: 100, periodMs: 100 });
    await clock.advanceAsync(100);
    assert.deepEqual(
      fired.map((f) => [f.tick.dueAt, f.tick.missed]),
      [[info.firstTickAt, 0]],
    );
    clock.jump(350); // the event loop was blocked for three and a half periods
    await clock.advanceAsync(0);
    assert.deepEqual(
      fired.slice(1).map((f) => [f.tick.dueAt - info.firstTickAt, f.tick.missed]),
      [[300, 2]],
      'one tick, for the latest due time, the two before it counted as missed',
    );
    await clock.advanceAsync(50);
    assert.deepEqual(
      fired.slice(2).map((f) => [f.tick.dueAt - info.firstTickAt, f.tick.missed]),
      [[400, 0]],
      'then on schedule again',
    );
  });

  it('follows a tick that ran for several periods with one tick for the latest due time, not a burst', async () => {
    const clock = new ManualClock();
    const release = deferred();
    const ticks: ReminderTick[] = [];
    const { svc } = await service(new ControlledTable(), {
      clock,
      fire: async (_g, _n, tick) => {
        ticks.push(tick);
        if (ticks.length === 1) await release.promise;
      },
    });
    svc.start('self:1', undefined);
    const info = await svc.register('g/long', 'r', { dueMs: 0, periodMs: 100 });
    await clock.advanceAsync(0);
    assert.equal(ticks.length, 1);
    await clock.advanceAsync(450); // the first tick is still running
    assert.equal(ticks.length, 1, 'ticks never overlap');
    release.resolve();
    await clock.advanceAsync(0);
    assert.deepEqual(
      ticks.slice(1).map((t) => [t.dueAt - info.firstTickAt, t.missed]),
      [[400, 3]],
    );
    await clock.advanceAsync(100);
    assert.deepEqual(
      ticks.slice(2).map((t) => [t.dueAt - info.firstTickAt, t.missed]),
      [[500, 0]],
    );
  });

  it('publishes each tick it fires on granary:reminder:tick, and why it stops firing a reminder on granary:reminder:unscheduled', async () => {
    const clock = new ManualClock();
    const table = new ControlledTable();
    const { svc } = await service(table, { clock });
    const ring = new Ring(['self:1', 'other:1']);
    const grown = new Ring(['self:1', 'other:1', 'other:2']);
    const mine = ownedBy(ring, 'self:1', 'g');
    /** A grain this silo owns in `ring`, and in `grown` too or not. */
    const pick = (t: string, stays: boolean): string => {
      for (let i = 0; ; i++) {
        const g = `${t}/${i}`;
        if (ring.ownerOf(g) === 'self:1' && (grown.ownerOf(g) === 'self:1') === stays) return g;
      }
    };
    const moving = pick('h', false);
    const kept = pick('k', true);
    const ticks = recordEvents('granary:reminder:tick');
    const unscheduled = recordEvents('granary:reminder:unscheduled');
    try {
      svc.start('self:1', ring);
      for (const g of [mine, moving, kept]) await svc.register(g, 'r', { dueMs: 100, periodMs: 100 });
      await clock.advanceAsync(250);
      assert.deepEqual(
        ticks.events.filter((e) => e.grain === mine).map((e) => [e.silo, e.reminder, e.missed]),
        [
          ['self:1', 'r', 0],
          ['self:1', 'r', 0],
        ],
      );
      assert.equal(await svc.unregister(mine, 'r'), true);
      await svc.settled();
      svc.viewChanged(grown); // a silo joins: it takes `moving` over

      await svc.settled();
      svc.stop();
      assert.deepEqual(
        unscheduled.events.map((e) => [e.grain, e.reason]),
        [
          [mine, 'removed'],
          [moving, 'moved'],
          [kept, 'stopped'],
        ],
      );
      const before = ticks.events.length;
      await clock.advanceAsync(1000);
      assert.equal(ticks.events.length, before, 'no tick after the service stopped');
    } finally {
      ticks.close();
      unscheduled.close();
    }
  });
});
