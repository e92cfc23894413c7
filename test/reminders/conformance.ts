// The reminder table conformance suite: the behaviour every ReminderTable
// (memory, SQLite, PostgreSQL, Redis) must show, after Orleans'
// ReminderTableTestsBase. A provider's test file calls `reminderConformance` once.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { hash32 } from '../../src/hash.ts';
import { ReminderError } from '../../src/errors.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import type { ReminderEntry, ReminderTable, StoredReminder } from '../../src/reminders/table.ts';

/** How the suite gets a fresh table. */
export interface ReminderConformanceSetup {
  /**
   * A new table, not yet initialised. Every table made by one setup must use
   * the same store (memory store, database file, server, prefix), as the
   * silos of one cluster do: the suite checks that tables on one cluster id
   * share rows and that tables on two cluster ids do not.
   */
  create(): Promise<ReminderTable> | ReminderTable;
}

/** The largest ring hash. */
const TOP = 0xffffffff;

/** Declares `describe(name)` with the cases every reminder table must pass. */
export function reminderConformance(name: string, setup: ReminderConformanceSetup): void {
  /** Opens one table per cluster id given, runs `body`, then clears the clusters and closes the tables. */
  async function withTables(clusterIds: string[], body: (tables: ReminderTable[]) => Promise<void>): Promise<void> {
    const tables: ReminderTable[] = [];
    try {
      for (const clusterId of clusterIds) {
        const table = await setup.create();
        tables.push(table);
        await table.init({ clusterId, logger: silentLogger() });
      }
      await body(tables);
    } finally {
      for (const table of tables) {
        try {
          await table.clear();
        } finally {
          await table.close();
        }
      }
    }
  }

  async function withTable(body: (table: ReminderTable) => Promise<void>): Promise<void> {
    await withTables([freshClusterId()], async ([table]) => {
      assert.ok(table);
      await body(table);
    });
  }

  describe(name, () => {
    it('reads nothing from an empty table', () =>
      withTable(async (t) => {
        assert.deepEqual(await t.readGrain('counter/1'), []);
        assert.equal(await t.read('counter/1', 'tick'), undefined);
        assert.deepEqual(await t.readRange(0, 0), [], 'the whole ring');
        assert.deepEqual(await t.readRange(100, 200), []);
        assert.deepEqual(await t.readRange(200, 100), [], 'a wrapping range');
        assert.equal(await t.remove('counter/1', 'tick', '1'), false, 'nothing to remove');
      }));

    it('reads an upserted reminder back, every field and its ETag, by read, readGrain and readRange', () =>
      withTable(async (t) => {
        const grainId = 'counter/ü "quoted" \\ back {t}';
        const e: ReminderEntry = {
          grainId,
          name: 'daily report',
          grainHash: hash32(grainId),
          startAt: 1_700_000_000_123,
          periodMs: 86_400_000,
        };
        const etag = await t.upsert(e);
        assertEtag(etag, 'the ETag upsert resolves to');
        const stored: StoredReminder = { ...e, etag };

        assert.deepEqual(await t.read(grainId, 'daily report'), stored);
        assert.equal(await t.read(grainId, 'other'), undefined, 'another name of the grain');
        assert.equal(await t.read('counter/other', 'daily report'), undefined, 'the name on another grain');
        assert.deepEqual(await t.readGrain(grainId), [stored]);
        assert.deepEqual(
          await t.readRange(e.grainHash === 0 ? TOP : e.grainHash - 1, e.grainHash),
          [stored],
          'the range ending at its hash',
        );
        assert.deepEqual(await t.readRange(0, 0), [stored], 'the whole ring');
      }));

    it('readGrain returns every reminder of the grain and only those', () =>
      withTable(async (t) => {
        // Grain ids that extend one another, and one with the same hash: only the grain id counts.
        const a = entry('user/1', 'a', 7);
        const b = entry('user/1', 'b', 7);
        const longer = entry('user/10', 'a', 7);
        const quoted = entry('user/1"', 'a', 7);
        const prefix = entry('user/', '1', 7);
        const stored = await upsertAll(t, [a, b, longer, quoted, prefix]);
        assert.deepEqual(sortRows(await t.readGrain('user/1')), sortRows([stored[0], stored[1]]));
        assert.deepEqual(await t.readGrain('user/10'), [stored[2]]);
        assert.deepEqual(await t.readGrain('user/1"'), [stored[3]]);
        assert.deepEqual(await t.readGrain('user/'), [stored[4]]);
        assert.deepEqual(await t.readGrain('user'), []);
      }));

    it('an upsert replaces startAt, periodMs and grainHash and returns a new, different ETag', () =>
      withTable(async (t) => {
        const first = entry('timer/1', 'tick', 1_000);
        const e1 = await t.upsert(first);
        const second: ReminderEntry = {
          ...first,
          grainHash: 2_000,
          startAt: first.startAt + 60_000,
          periodMs: 5 * 60_000,
        };
        const e2 = await t.upsert(second);
        assertEtag(e2, 'the second ETag');
        assert.notEqual(e2, e1);

        assert.deepEqual(await t.read('timer/1', 'tick'), { ...second, etag: e2 });
        assert.deepEqual(await t.readGrain('timer/1'), [{ ...second, etag: e2 }], 'still one row');
        assert.deepEqual(await t.readRange(999, 1_000), [], 'no longer at the old hash');
        assert.deepEqual(await t.readRange(1_999, 2_000), [{ ...second, etag: e2 }]);
      }));

    it('never issues an ETag twice, not even after remove and upsert of the same reminder', () =>
      withTable(async (t) => {
        const e = entry('timer/1', 'tick', 10);
        const etags: string[] = [];
        etags.push(await t.upsert(e));
        etags.push(await t.upsert({ ...e, periodMs: 2_000 }));
        etags.push(await t.upsert(entry('timer/2', 'tick', 20)));
        assert.equal(await t.remove(e.grainId, e.name, etags[1] as string), true);
        etags.push(await t.upsert(e));
        assert.equal(await t.remove(e.grainId, e.name, etags[3] as string), true);
        etags.push(await t.upsert(e));
        etags.push(await t.upsert(e));
        for (const etag of etags) assertEtag(etag, 'an ETag');
        assert.equal(new Set(etags).size, etags.length, `every ETag differs: ${etags.join(', ')}`);

        for (const old of etags.slice(0, 2).concat(etags.slice(3, 5))) {
          assert.equal(
            await t.remove(e.grainId, e.name, old),
            false,
            `an ETag of an earlier incarnation (${old}) removes nothing`,
          );
        }
        assert.deepEqual(await t.read(e.grainId, e.name), { ...e, etag: etags[5] });
      }));

    it('a remove with a stale or foreign ETag returns false and keeps the row', () =>
      withTable(async (t) => {
        const e = entry('timer/1', 'tick', 10);
        const stale = await t.upsert(e);
        const current = await t.upsert({ ...e, startAt: e.startAt + 1 });
        const other = await t.upsert(entry('timer/2', 'tick', 10));

        assert.equal(await t.remove(e.grainId, e.name, stale), false, 'the ETag before the last upsert');
        assert.equal(await t.remove(e.grainId, e.name, other), false, "another row's ETag");
        assert.equal(await t.remove(e.grainId, e.name, 'not-an-etag'), false, 'a made-up ETag');
        assert.equal(await t.remove(e.grainId, e.name, ` ${current}`), false, 'the current ETag, altered');
        assert.equal(await t.remove(e.grainId, e.name, `0${current}`), false, 'the current ETag with a leading zero');
        assert.equal(await t.remove(e.grainId, 'other', current), false, 'the current ETag on another name');
        assert.deepEqual(await t.read(e.grainId, e.name), { ...e, startAt: e.startAt + 1, etag: current });
      }));

    it('a remove with the current ETag returns true and the reminder is gone from every read', () =>
      withTable(async (t) => {
        const e = entry('timer/1', 'tick', 10);
        const keep = entry('timer/1', 'tock', 10);
        const etag = await t.upsert(e);
        const keepEtag = await t.upsert(keep);
        assert.equal(await t.remove(e.grainId, e.name, etag), true);

        assert.equal(await t.read(e.grainId, e.name), undefined);
        assert.deepEqual(await t.readGrain(e.grainId), [{ ...keep, etag: keepEtag }]);
        assert.deepEqual(await t.readRange(0, 0), [{ ...keep, etag: keepEtag }]);
        assert.equal(await t.remove(e.grainId, e.name, etag), false, 'a second remove finds nothing');
      }));

    it('readRange(begin, end) with begin < end holds hashes above begin up to and including end', () =>
      withTable(async (t) => {
        const stored = await upsertAll(
          t,
          RING_HASHES.map((h) => entry(`g/${h}`, 'r', h)),
        );
        const read = async (begin: number, end: number): Promise<number[]> => hashesOf(await t.readRange(begin, end));
        assert.deepEqual(await read(100, 200), [101, 150, 200]);
        assert.deepEqual(await read(99, 100), [100]);
        assert.deepEqual(await read(100, 101), [101]);
        assert.deepEqual(await read(0, 1), [1], 'begin is exclusive: not hash 0');
        assert.deepEqual(await read(0, 99), [1, 99]);
        assert.deepEqual(await read(TOP - 1, TOP), [TOP], 'end is inclusive: hash 2^32-1');
        assert.deepEqual(
          await read(0, TOP),
          RING_HASHES.filter((h) => h !== 0),
          'everything but hash 0',
        );
        assert.deepEqual(await read(201, 4_294_967_293), []);
        // What the rows hold comes back with them.
        assert.deepEqual(
          sortRows(await t.readRange(99, 101)),
          sortRows(stored.filter((r) => r.grainHash === 100 || r.grainHash === 101)),
        );
      }));

    it('readRange(begin, end) with begin > end wraps past the top of the ring', () =>
      withTable(async (t) => {
        await upsertAll(
          t,
          RING_HASHES.map((h) => entry(`g/${h}`, 'r', h)),
        );
        const read = async (begin: number, end: number): Promise<number[]> => hashesOf(await t.readRange(begin, end));
        assert.deepEqual(await read(200, 99), [0, 1, 99, TOP - 1, TOP]);
        assert.deepEqual(await read(TOP, 0), [0], 'from the top to 0: just hash 0');
        assert.deepEqual(await read(TOP - 1, 0), [0, TOP]);
        assert.deepEqual(await read(TOP, 1), [0, 1]);
        assert.deepEqual(
          await read(1, 0),
          RING_HASHES.filter((h) => h !== 1),
          'everything but hash 1',
        );
        assert.deepEqual(
          await read(TOP - 1, TOP - 2),
          RING_HASHES.filter((h) => h !== TOP - 1),
          'everything but hash 2^32-2',
        );
      }));

    it('readRange(x, x) is the whole ring, whatever x', () =>
      withTable(async (t) => {
        await upsertAll(
          t,
          RING_HASHES.map((h) => entry(`g/${h}`, 'r', h)),
        );
        for (const x of [0, 1, 100, 150, TOP - 1, TOP]) {
          assert.deepEqual(hashesOf(await t.readRange(x, x)), RING_HASHES, `readRange(${x}, ${x})`);
        }
      }));

    it('keeps hashes 0 and 2^32-1 exactly', () =>
      withTable(async (t) => {
        const low = entry('edge/low', 'r', 0);
        const high = entry('edge/high', 'r', TOP);
        const lowEtag = await t.upsert(low);
        const highEtag = await t.upsert(high);
        assert.deepEqual(await t.read(low.grainId, 'r'), { ...low, etag: lowEtag });
        assert.deepEqual(await t.read(high.grainId, 'r'), { ...high, etag: highEtag });
        assert.deepEqual(await t.readRange(TOP, 0), [{ ...low, etag: lowEtag }]);
        assert.deepEqual(await t.readRange(TOP - 1, TOP), [{ ...high, etag: highEtag }]);
      }));

    it('500 reminders split over 4 contiguous ranges covering the ring: each in exactly one range', () =>
      withTable(async (t) => {
        const entries = Array.from({ length: 500 }, (_, i) => {
          const grainId = `worker/${i}`;
          // A few on the edges and on the range boundaries; the rest where the ring hash puts them.
          const grainHash =
            i === 0 ? 0 : i === 1 ? TOP : i === 2 ? BOUNDS[0] : i === 3 ? BOUNDS[1] + 1 : hash32(grainId);
          return entry(grainId, i % 3 === 0 ? 'a' : 'b', grainHash);
        });
        const stored = await upsertAll(t, entries);
        // (b3, b0] wraps; the others do not.
        const ranges: Array<[number, number]> = [
          [BOUNDS[3], BOUNDS[0]],
          [BOUNDS[0], BOUNDS[1]],
          [BOUNDS[1], BOUNDS[2]],
          [BOUNDS[2], BOUNDS[3]],
        ];
        const seen = new Map<string, number>();
        for (const [begin, end] of ranges) {
          const rows = await t.readRange(begin, end);
          for (const r of rows) {
            assert.ok(
              begin < end ? begin < r.grainHash && r.grainHash <= end : r.grainHash > begin || r.grainHash <= end,
              `hash ${r.grainHash} is in (${begin}, ${end}]`,
            );
            seen.set(r.grainId, (seen.get(r.grainId) ?? 0) + 1);
          }
        }
        assert.equal(seen.size, 500, 'every reminder is in some range');
        assert.deepEqual(
          [...seen.values()].filter((n) => n !== 1),
          [],
          'no reminder is in two ranges',
        );
        assert.deepEqual(
          sortRows(await t.readRange(BOUNDS[2], BOUNDS[2])),
          sortRows(stored),
          'the whole ring holds each exactly as stored',
        );
      }));

    it('tables on one cluster id share one table', () => {
      const id = freshClusterId();
      return withTables([id, id], async ([a, b]) => {
        assert.ok(a && b);
        const e = entry('shared/1', 'r', 42);
        const etag = await a.upsert(e);
        assert.deepEqual(await b.read(e.grainId, e.name), { ...e, etag });
        assert.deepEqual(await b.readRange(0, 0), [{ ...e, etag }]);
        const next = await b.upsert({ ...e, periodMs: 7_000 });
        assert.notEqual(next, etag);
        assert.equal(await a.remove(e.grainId, e.name, etag), false, 'a holds the ETag b replaced');
        assert.equal(await a.remove(e.grainId, e.name, next), true);
        assert.deepEqual(await b.readGrain(e.grainId), []);
      });
    });

    it('tables on two cluster ids never see each other', () => {
      // The second id extends the first, to catch prefix matches in keys or queries.
      const first = freshClusterId();
      return withTables([first, `${first}:rows`], async ([a, b]) => {
        assert.ok(a && b);
        const inA = entry('shared/1', 'r', 42);
        const inB: ReminderEntry = { ...inA, startAt: inA.startAt + 5, periodMs: 9_000 };
        const etagA = await a.upsert(inA);
        assert.equal(await b.read(inA.grainId, inA.name), undefined, 'b does not see the row of a');
        assert.deepEqual(await b.readGrain(inA.grainId), []);
        assert.deepEqual(await b.readRange(0, 0), []);

        const etagB = await b.upsert(inB);
        assert.deepEqual(await a.read(inA.grainId, inA.name), { ...inA, etag: etagA }, 'an upsert on b leaves a alone');
        assert.deepEqual(await b.read(inB.grainId, inB.name), { ...inB, etag: etagB });
        assert.deepEqual(await a.readRange(0, 0), [{ ...inA, etag: etagA }]);
        assert.deepEqual(await b.readRange(0, 0), [{ ...inB, etag: etagB }]);

        assert.equal(await b.remove(inB.grainId, inB.name, etagB), true);
        assert.deepEqual(await a.readGrain(inA.grainId), [{ ...inA, etag: etagA }], 'a remove on b leaves a alone');
      });
    });

    it('20 concurrent upserts of different reminders all land, each with its own ETag', () =>
      withTable(async (t) => {
        const entries = Array.from({ length: 20 }, (_, i) => entry(`busy/${i % 5}`, `r${i}`, hash32(`busy/${i % 5}`)));
        const etags = await Promise.all(entries.map((e) => t.upsert(e)));
        assert.equal(new Set(etags).size, 20, `distinct ETags: ${etags.join(', ')}`);
        assert.deepEqual(
          sortRows(await t.readRange(0, 0)),
          sortRows(entries.map((e, i) => ({ ...e, etag: etags[i] as string }))),
        );
        assert.equal((await t.readGrain('busy/0')).length, 4);
      }));

    it('20 concurrent upserts of one reminder leave one row with the ETag of one of them', () =>
      withTable(async (t) => {
        const base = entry('busy/1', 'r', 5);
        const entries = Array.from({ length: 20 }, (_, i) => ({ ...base, periodMs: 1_000 + i }));
        const etags = await Promise.all(entries.map((e) => t.upsert(e)));
        assert.equal(new Set(etags).size, 20, `distinct ETags: ${etags.join(', ')}`);
        const rows = await t.readGrain(base.grainId);
        assert.equal(rows.length, 1);
        const winner = etags.indexOf(rows[0]?.etag ?? '');
        assert.ok(winner >= 0, 'the row carries the ETag of one of the upserts');
        assert.deepEqual(rows[0], { ...entries[winner], etag: etags[winner] }, 'and that upsert’s values');
      }));

    it('clear() removes every reminder of this cluster only, and the table is usable after', () => {
      const first = freshClusterId();
      return withTables([first, `${first}:rows`], async ([a, b]) => {
        assert.ok(a && b);
        const before = await upsertAll(a, [entry('c/1', 'x', 1), entry('c/1', 'y', 1), entry('c/2', 'x', TOP)]);
        const [kept] = await upsertAll(b, [entry('c/1', 'x', 1)]);
        await a.clear();
        assert.deepEqual(await a.readRange(0, 0), []);
        assert.deepEqual(await a.readGrain('c/1'), []);
        assert.equal(await a.read('c/2', 'x'), undefined);
        assert.deepEqual(await b.readRange(0, 0), [kept], 'the other cluster keeps its rows');

        const again = await a.upsert(entry('c/1', 'x', 1));
        assert.ok(!before.some((r) => r.etag === again), 'an ETag issued after clear is not one issued before');
        assert.deepEqual(await a.readGrain('c/1'), [{ ...entry('c/1', 'x', 1), etag: again }]);
        await a.clear();
        await a.clear();
        assert.deepEqual(await a.readRange(0, 0), [], 'clearing an empty table is fine');
      });
    });

    it('recordTick sets lastTickAt, seen by read, readGrain and readRange, and keeps the ETag', () =>
      withTable(async (t) => {
        const e = entry('ticker/1', 'tick', 500);
        const other = entry('ticker/1', 'tock', 500);
        const etag = await t.upsert(e);
        const otherEtag = await t.upsert(other);
        const before = await t.read(e.grainId, e.name);
        assert.deepEqual(before, { ...e, etag });
        assert.ok(
          before !== undefined && !('lastTickAt' in before),
          'no tick recorded: lastTickAt is absent, not undefined-valued',
        );

        await t.recordTick(e.grainId, e.name, e.startAt);
        const ticked: StoredReminder = { ...e, etag, lastTickAt: e.startAt };
        const untouched: StoredReminder = { ...other, etag: otherEtag };
        assert.deepEqual(await t.read(e.grainId, e.name), ticked, 'read');
        assert.deepEqual(
          sortRows(await t.readGrain(e.grainId)),
          sortRows([ticked, untouched]),
          'readGrain: only the ticked reminder has it',
        );
        assert.deepEqual(
          sortRows(await t.readRange(e.grainHash - 1, e.grainHash)),
          sortRows([ticked, untouched]),
          'readRange',
        );
        assert.deepEqual(
          sortRows(await t.readRange(0, 0)),
          sortRows([ticked, untouched]),
          'readRange of the whole ring',
        );

        const next = e.startAt + e.periodMs;
        await t.recordTick(e.grainId, e.name, next);
        assert.deepEqual(
          await t.read(e.grainId, e.name),
          { ...e, etag, lastTickAt: next },
          'a later tick moves it on, with the same ETag',
        );
        // Whole ms up to 2^53-1 are kept exactly.
        await t.recordTick(e.grainId, e.name, Number.MAX_SAFE_INTEGER);
        assert.deepEqual(await t.read(e.grainId, e.name), { ...e, etag, lastTickAt: Number.MAX_SAFE_INTEGER });
      }));

    it('recordTick never moves lastTickAt back', () =>
      withTable(async (t) => {
        const e = entry('ticker/1', 'tick', 500);
        const etag = await t.upsert(e);
        const later = e.startAt + 3 * e.periodMs;
        await t.recordTick(e.grainId, e.name, later);
        await t.recordTick(e.grainId, e.name, e.startAt + e.periodMs);
        assert.deepEqual(await t.read(e.grainId, e.name), { ...e, etag, lastTickAt: later }, 'an older dueAt');
        await t.recordTick(e.grainId, e.name, later);
        assert.deepEqual(await t.read(e.grainId, e.name), { ...e, etag, lastTickAt: later }, 'the same dueAt');

        // Concurrent records (two silos briefly both firing): the latest wins, whatever the order they land in.
        const dues = Array.from({ length: 20 }, (_, i) => later + ((i * 7) % 20) * e.periodMs);
        await Promise.all(dues.map((d) => t.recordTick(e.grainId, e.name, d)));
        assert.deepEqual(await t.read(e.grainId, e.name), { ...e, etag, lastTickAt: Math.max(...dues) });
      }));

    it('recordTick on a missing row resolves and creates nothing', () =>
      withTable(async (t) => {
        const e = entry('ticker/1', 'tick', 500);
        await t.recordTick(e.grainId, e.name, e.startAt);
        assert.equal(await t.read(e.grainId, e.name), undefined, 'on an empty table');
        assert.deepEqual(await t.readGrain(e.grainId), []);
        assert.deepEqual(await t.readRange(0, 0), []);

        const etag = await t.upsert(e);
        await t.recordTick(e.grainId, 'other', e.startAt);
        await t.recordTick('ticker/other', e.name, e.startAt);
        assert.deepEqual(
          await t.readRange(0, 0),
          [{ ...e, etag }],
          'another name or grain: neither made nor given to the existing row',
        );

        // Removed meanwhile: the tick of the old registration does not outlive it.
        assert.equal(await t.remove(e.grainId, e.name, etag), true);
        await t.recordTick(e.grainId, e.name, e.startAt + e.periodMs);
        assert.deepEqual(await t.readRange(0, 0), []);
        const again = await t.upsert(e);
        assert.deepEqual(await t.read(e.grainId, e.name), { ...e, etag: again }, 'registered again: no tick recorded');
      }));

    it('an upsert resets lastTickAt, even when given a row read back with one', () =>
      withTable(async (t) => {
        const e = entry('ticker/1', 'tick', 500);
        await t.upsert(e);
        await t.recordTick(e.grainId, e.name, e.startAt);
        const changed: ReminderEntry = { ...e, periodMs: 2 * e.periodMs };
        const e2 = await t.upsert(changed);
        const read = await t.read(e.grainId, e.name);
        assert.deepEqual(read, { ...changed, etag: e2 });
        assert.ok(read !== undefined && !('lastTickAt' in read), 'lastTickAt is absent after an upsert');

        await t.recordTick(e.grainId, e.name, e.startAt + e.periodMs);
        const withTick = await t.read(e.grainId, e.name);
        assert.equal(withTick?.lastTickAt, e.startAt + e.periodMs);
        assert.ok(withTick);
        const e3 = await t.upsert(withTick);
        assert.notEqual(e3, e2);
        assert.deepEqual(
          await t.read(e.grainId, e.name),
          { ...changed, etag: e3 },
          'the lastTickAt of the entry given is not kept',
        );
        assert.deepEqual(await t.readRange(0, 0), [{ ...changed, etag: e3 }]);
      }));

    it('a remove with the ETag of the upsert still works after recordTick', () =>
      withTable(async (t) => {
        const e = entry('ticker/1', 'tick', 500);
        const etag = await t.upsert(e);
        await t.recordTick(e.grainId, e.name, e.startAt);
        await t.recordTick(e.grainId, e.name, e.startAt + e.periodMs);
        assert.equal((await t.read(e.grainId, e.name))?.etag, etag);
        assert.equal(await t.remove(e.grainId, e.name, etag), true);
        assert.equal(await t.read(e.grainId, e.name), undefined);
        assert.deepEqual(await t.readGrain(e.grainId), []);
        assert.deepEqual(await t.readRange(0, 0), []);
      }));

    it('recordTick on one cluster id leaves the same reminder of another cluster alone', () => {
      const first = freshClusterId();
      return withTables([first, `${first}:rows`, first], async ([a, b, a2]) => {
        assert.ok(a && b && a2);
        const e = entry('shared/1', 'r', 42);
        const etagA = await a.upsert(e);
        const etagB = await b.upsert(e);
        await b.recordTick(e.grainId, e.name, e.startAt);
        assert.deepEqual(await a.read(e.grainId, e.name), { ...e, etag: etagA });
        assert.deepEqual(await b.read(e.grainId, e.name), { ...e, etag: etagB, lastTickAt: e.startAt });
        await a2.recordTick(e.grainId, e.name, e.startAt + e.periodMs);
        assert.deepEqual(
          await a.readRange(0, 0),
          [{ ...e, etag: etagA, lastTickAt: e.startAt + e.periodMs }],
          'a table on the same cluster id records for a',
        );
        assert.deepEqual(await b.readRange(0, 0), [{ ...e, etag: etagB, lastTickAt: e.startAt }]);
      });
    });

    it('refuses a dueAt it cannot keep exactly with a ReminderError naming the reminder, and records nothing', () =>
      withTable(async (t) => {
        const e = entry('ticker/1', 'tick', 500);
        const etag = await t.upsert(e);
        await t.recordTick(e.grainId, e.name, e.startAt);
        for (const [what, bad] of [
          ['NaN', Number.NaN],
          ['a fractional dueAt', e.startAt + 0.5],
          ['an infinite dueAt', Number.POSITIVE_INFINITY],
          ['a dueAt above 2^53-1', 2 ** 53],
          ['a dueAt below -(2^53-1)', -(2 ** 53)],
          ['a string', String(e.startAt + e.periodMs) as unknown as number],
          ['undefined', undefined as unknown as number],
        ] as const) {
          await assert.rejects(
            t.recordTick(e.grainId, e.name, bad),
            (err: unknown) => {
              assert.ok(err instanceof ReminderError, `${what}: ${String(err)}`);
              assert.equal(err.code, 'GRANARY_REMINDERS');
              assert.match(err.message, /recordTick failed/, what);
              assert.ok(err.message.includes(t.kind), err.message);
              assert.ok(
                err.message.includes('ticker/1') && err.message.includes('tick'),
                `${what}: names the reminder: ${err.message}`,
              );
              return true;
            },
            what,
          );
        }
        await assert.rejects(
          t.recordTick('ticker/missing', 'tick', Number.NaN),
          ReminderError,
          'refused even when there is no row',
        );
        assert.deepEqual(
          await t.read(e.grainId, e.name),
          { ...e, etag, lastTickAt: e.startAt },
          'what was recorded stays',
        );
      }));

    it('keeps reminders across close and init of the same table', async () => {
      const id = freshClusterId();
      const t = await setup.create();
      const e = entry('durable/1', 'r', 77);
      try {
        await t.init({ clusterId: id, logger: silentLogger() });
        const etag = await t.upsert(e);
        await t.close();
        await assert.rejects(t.read(e.grainId, e.name), ReminderError, 'a closed table refuses calls');

        await t.init({ clusterId: freshClusterId(), logger: silentLogger() });
        assert.equal(await t.read(e.grainId, e.name), undefined, 'reopened on another cluster: not there');
        await t.close();

        await t.init({ clusterId: id, logger: silentLogger() });
        assert.deepEqual(await t.read(e.grainId, e.name), { ...e, etag });
        await t.recordTick(e.grainId, e.name, e.startAt);
        await t.close();

        await t.init({ clusterId: id, logger: silentLogger() });
        assert.deepEqual(
          await t.read(e.grainId, e.name),
          { ...e, etag, lastTickAt: e.startAt },
          'the recorded tick too',
        );
        assert.notEqual(await t.upsert(e), etag);
        await t.clear();
      } finally {
        await t.close();
      }
    });

    it('refuses calls before init with a ReminderError naming the operation and the provider', async () => {
      const t = await setup.create();
      try {
        for (const [op, call] of [
          ['readRange', () => t.readRange(0, 0)],
          ['readGrain', () => t.readGrain('g/1')],
          ['read', () => t.read('g/1', 'r')],
          ['upsert', () => t.upsert(entry('g/1', 'r', 1))],
          ['recordTick', () => t.recordTick('g/1', 'r', 1_700_000_000_000)],
          ['remove', () => t.remove('g/1', 'r', '1')],
          ['clear', () => t.clear()],
        ] as const) {
          await assert.rejects(call(), (err: unknown) => {
            assert.ok(err instanceof ReminderError, `${op}: ${String(err)}`);
            assert.equal(err.code, 'GRANARY_REMINDERS');
            assert.ok(err.message.includes(`${op} failed`), err.message);
            assert.ok(err.message.includes(t.kind), err.message);
            return true;
          });
        }
      } finally {
        await t.close();
      }
    });

    it('refuses a reminder or range it cannot keep exactly with a ReminderError, and stores nothing', () =>
      withTable(async (t) => {
        const good = entry('bad/1', 'r', 1);
        for (const [what, bad] of [
          ['a negative grainHash', { ...good, grainHash: -1 }],
          ['a grainHash above 2^32-1', { ...good, grainHash: 2 ** 32 }],
          ['a fractional grainHash', { ...good, grainHash: 1.5 }],
          ['a NaN startAt', { ...good, startAt: Number.NaN }],
          ['a fractional startAt', { ...good, startAt: 1.5 }],
          ['a zero periodMs', { ...good, periodMs: 0 }],
          ['an infinite periodMs', { ...good, periodMs: Number.POSITIVE_INFINITY }],
        ] as const) {
          await assert.rejects(
            t.upsert(bad),
            (err: unknown) => err instanceof ReminderError && /upsert failed/.test(err.message),
            what,
          );
        }
        assert.deepEqual(await t.readRange(0, 0), []);
        await assert.rejects(
          t.readRange(-1, 5),
          (err: unknown) => err instanceof ReminderError && /readRange failed/.test(err.message),
        );
        await assert.rejects(t.readRange(0, 2 ** 32), ReminderError);
        await assert.rejects(t.readRange(0.5, 1), ReminderError);
      }));
  });
}

/** A random cluster id, with characters that need care in keys and SQL. */
function freshClusterId(): string {
  return `reminders/${randomUUID()} 'q' {t}`;
}

/** Hashes on and around the edges of the ring and of the ranges the suite reads, sorted. */
const RING_HASHES = [0, 1, 99, 100, 101, 150, 200, TOP - 1, TOP];

/** Four points that cut the ring into four ranges; (BOUNDS[3], BOUNDS[0]] wraps. */
const BOUNDS = [0x2000_0000, 0x6000_0000, 0xa000_0000, 0xe000_0000] as const;

/** A reminder of `grainId` named `name` at ring position `grainHash`, with whole-ms times as the reminder service writes them. */
function entry(grainId: string, name: string, grainHash: number): ReminderEntry {
  return { grainId, name, grainHash, startAt: 1_700_000_000_000 + (grainHash % 1_000), periodMs: 60_000 };
}

/** Upserts one after another; the rows as they must read back. */
async function upsertAll(t: ReminderTable, entries: readonly ReminderEntry[]): Promise<StoredReminder[]> {
  const stored: StoredReminder[] = [];
  for (const e of entries) stored.push({ ...e, etag: await t.upsert(e) });
  return stored;
}

function hashesOf(rows: readonly StoredReminder[]): number[] {
  return rows.map((r) => r.grainHash).sort((x, y) => x - y);
}

function sortRows(rows: ReadonlyArray<StoredReminder | undefined>): Array<StoredReminder | undefined> {
  const key = (r: StoredReminder | undefined): string => JSON.stringify([r?.grainId, r?.name]);
  return [...rows].sort((x, y) => (key(x) < key(y) ? -1 : key(x) > key(y) ? 1 : 0));
}

function assertEtag(etag: unknown, what: string): void {
  assert.equal(typeof etag, 'string', `${what} is a string`);
  assert.notEqual(etag, '', `${what} is not empty`);
}
