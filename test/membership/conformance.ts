// The membership table conformance suite: the behaviour every MembershipTable
// (memory, SQLite, PostgreSQL, Redis) must show, after Orleans'
// MembershipTableTestsBase. A provider's test file calls `membershipConformance` once.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import type { MembershipSnapshot, MembershipTable, SiloEntry, TableVersion } from '../../src/membership/table.ts';
import { siloId } from '../../src/membership/table.ts';
import { silentLogger } from '../../src/observability/logger.ts';

/** How the suite gets a fresh table. */
export interface MembershipConformanceSetup {
  /**
   * A new table, not yet initialised. Every table made by one setup must use
   * the same store (memory store, database file, server, prefix), as the
   * silos of one cluster do: the suite checks that tables on one cluster id
   * share rows and that tables on two cluster ids do not.
   */
  create(): Promise<MembershipTable> | MembershipTable;
}

type Row = MembershipSnapshot['entries'][number];

/** Declares `describe(name)` with the cases every membership table must pass. */
export function membershipConformance(name: string, setup: MembershipConformanceSetup): void {
  /** Opens one table per cluster id given (a random one if none), runs `body`, then deletes the clusters and closes the tables. */
  async function withTables(clusterIds: string[], body: (tables: MembershipTable[]) => Promise<void>): Promise<void> {
    const tables: MembershipTable[] = [];
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
          await table.deleteCluster();
        } finally {
          await table.close();
        }
      }
    }
  }

  async function withTable(body: (table: MembershipTable) => Promise<void>): Promise<void> {
    await withTables([freshClusterId()], async ([table]) => {
      assert.ok(table);
      await body(table);
    });
  }

  describe(name, () => {
    it('reads an empty table at version 0 with no rows', () =>
      withTable(async (t) => {
        const snap = await t.readAll();
        assert.equal(snap.version.version, 0);
        assertEtag(snap.version.etag, 'version 0');
        assert.deepEqual(snap.entries, []);
      }));

    it('inserts rows and reads every field back, with the version moved on by each insert', () =>
      withTable(async (t) => {
        const v0 = (await t.readAll()).version;
        const plain = silo(1, { status: 'Joining', gatewayAddress: null, suspicions: [] });
        assert.equal(await t.insert(plain, after(v0)), true, 'insert at version 1');

        const s1 = await t.readAll();
        assert.equal(s1.version.version, 1);
        assertEtag(s1.version.etag, 'version 1');
        assert.notEqual(s1.version.etag, v0.etag, 'the version etag changes with the version');
        assert.equal(s1.entries.length, 1);
        assert.deepEqual(s1.entries[0]?.entry, plain);
        assertEtag(s1.entries[0]?.etag, 'row etag');

        const full = silo(2, {
          status: 'ShuttingDown',
          gatewayAddress: '10.0.0.2:30000',
          hostName: 'host-ü "quoted" \\ back',
          suspicions: [
            { by: siloId(plain), at: 1_700_000_000_111 },
            { by: '10.0.0.9:11111@5', at: 1_700_000_000_222 },
          ],
        });
        assert.equal(await t.insert(full, after(s1.version)), true, 'insert at version 2');

        const s2 = await t.readAll();
        assert.equal(s2.version.version, 2);
        assert.notEqual(s2.version.etag, s1.version.etag);
        const [a, b] = sortedRows(s2);
        assert.deepEqual(a?.entry, plain);
        assert.deepEqual(b?.entry, full);
        assert.equal(a?.etag, s1.entries[0]?.etag, 'inserting another row leaves this row etag alone');
        assertEtag(b?.etag, 'row etag');
        assert.notEqual(a?.etag, b?.etag, 'rows have distinct etags');
      }));

    it('refuses a second insert of the same silo id and changes nothing', () =>
      withTable(async (t) => {
        const e = silo(1);
        assert.equal(await t.insert(e, after((await t.readAll()).version)), true);
        const before = await t.readAll();
        assert.equal(await t.insert({ ...e, status: 'Dead' }, after(before.version)), false, 'duplicate insert');
        assert.deepEqual(await t.readAll(), before);
      }));

    it('refuses an insert against a stale version and changes nothing', () =>
      withTable(async (t) => {
        const v0 = (await t.readAll()).version;
        assert.equal(await t.insert(silo(1), after(v0)), true);
        const before = await t.readAll();
        assert.equal(
          await t.insert(silo(2), after(v0)),
          false,
          'insert with the etag of version 0 while the table is at 1',
        );
        assert.equal(
          await t.insert(silo(2), { version: 2, etag: 'not-an-etag-of-this-table' }),
          false,
          'insert with an unknown etag',
        );
        assert.deepEqual(await t.readAll(), before);
      }));

    it('refuses an update with a stale row etag and changes nothing', () =>
      withTable(async (t) => {
        const e = silo(1, { status: 'Joining' });
        assert.equal(await t.insert(e, after((await t.readAll()).version)), true);
        const s1 = await t.readAll();
        const oldEtag = rowOf(s1, e).etag;
        assert.equal(await t.update({ ...e, status: 'Active' }, oldEtag, after(s1.version)), true);

        const before = await t.readAll();
        assert.equal(
          await t.update({ ...e, status: 'Dead' }, oldEtag, after(before.version)),
          false,
          'update with the row etag before the last update',
        );
        assert.deepEqual(await t.readAll(), before);
      }));

    it('refuses an update against a stale version and changes nothing', () =>
      withTable(async (t) => {
        const e = silo(1, { status: 'Joining' });
        assert.equal(await t.insert(e, after((await t.readAll()).version)), true);
        const s1 = await t.readAll();
        assert.equal(await t.insert(silo(2), after(s1.version)), true, 'another silo joins: version 2');

        const before = await t.readAll();
        assert.equal(rowOf(before, e).etag, rowOf(s1, e).etag);
        assert.equal(
          await t.update({ ...e, status: 'Active' }, rowOf(s1, e).etag, after(s1.version)),
          false,
          'current row etag, version 1 etag',
        );
        assert.deepEqual(await t.readAll(), before);
      }));

    it('refuses an update of a silo that has no row', () =>
      withTable(async (t) => {
        assert.equal(await t.insert(silo(1), after((await t.readAll()).version)), true);
        const before = await t.readAll();
        assert.equal(await t.update(silo(2), rowOf(before, silo(1)).etag, after(before.version)), false);
        assert.deepEqual(await t.readAll(), before);
      }));

    it('an update replaces the row and changes its etag and the version', () =>
      withTable(async (t) => {
        const e = silo(1, { status: 'Joining' });
        assert.equal(await t.insert(e, after((await t.readAll()).version)), true);
        const s1 = await t.readAll();
        const changed: SiloEntry = {
          ...e,
          status: 'Active',
          iAmAliveAt: e.iAmAliveAt + 5,
          suspicions: [{ by: 'x:1@1', at: 1_700_000_000_500 }],
        };
        assert.equal(await t.update(changed, rowOf(s1, e).etag, after(s1.version)), true);

        const s2 = await t.readAll();
        assert.equal(s2.version.version, 2);
        assert.notEqual(s2.version.etag, s1.version.etag, 'version etag changed');
        assert.deepEqual(rowOf(s2, e).entry, changed);
        assert.notEqual(rowOf(s2, e).etag, rowOf(s1, e).etag, 'row etag changed');

        const seen = [s1.version.etag, s2.version.etag, rowOf(s1, e).etag, rowOf(s2, e).etag];
        assert.equal(new Set(seen).size, seen.length, `no etag is reused: ${seen.join(', ')}`);
      }));

    it('updateIAmAlive changes iAmAliveAt only, not the version nor the row etag', () =>
      withTable(async (t) => {
        const e = silo(1);
        const other = silo(2);
        const v0 = (await t.readAll()).version;
        assert.equal(await t.insert(e, after(v0)), true);
        assert.equal(await t.insert(other, after((await t.readAll()).version)), true);
        const before = await t.readAll();

        const at = e.iAmAliveAt + 60_000;
        await t.updateIAmAlive(e.address, e.generation, at);
        const s = await t.readAll();
        assert.deepEqual(s.version, before.version);
        assert.deepEqual(rowOf(s, e), { entry: { ...e, iAmAliveAt: at }, etag: rowOf(before, e).etag });
        assert.deepEqual(rowOf(s, other), rowOf(before, other), 'the other row is untouched');

        // An update made with the row etag read before the I-am-alive write still succeeds.
        assert.equal(
          await t.update({ ...e, status: 'ShuttingDown', iAmAliveAt: at }, rowOf(before, e).etag, after(s.version)),
          true,
        );

        const unknown = silo(3);
        await t.updateIAmAlive(unknown.address, unknown.generation, at);
        assert.equal((await t.readAll()).entries.length, 2, 'updateIAmAlive of a silo with no row creates none');
      }));

    it('of 20 parallel inserts against one version exactly one wins', () =>
      withTable(async (t) => {
        const v0 = (await t.readAll()).version;
        const entries = Array.from({ length: 20 }, (_, i) => silo(i + 1));
        const results = await Promise.all(entries.map((e) => t.insert(e, after(v0))));
        const winners = entries.filter((_, i) => results[i] === true);
        assert.equal(winners.length, 1, `exactly one insert wins, got ${winners.length}`);

        const s = await t.readAll();
        assert.equal(s.version.version, 1);
        assert.equal(s.entries.length, 1);
        assert.deepEqual(s.entries[0]?.entry, winners[0]);
      }));

    it('19 concurrent updaters of one row, each retrying, end at version 20 with no lost update', () =>
      withTable(async (t) => {
        const target = silo(1, { suspicions: [] });
        assert.equal(await t.insert(target, after((await t.readAll()).version)), true);
        const voters = Array.from({ length: 19 }, (_, i) => `10.0.1.${i + 1}:11111@1`);

        // A vote fails only when another vote landed since its read, and there
        // are 18 other votes: more than 19 attempts means a spurious failure.
        const vote = async (voter: string, i: number): Promise<number> => {
          for (let attempt = 1; attempt <= voters.length; attempt++) {
            const s = await t.readAll();
            const row = rowOf(s, target);
            const entry: SiloEntry = {
              ...row.entry,
              suspicions: [...row.entry.suspicions, { by: voter, at: 1_700_000_001_000 + i }],
            };
            if (await t.update(entry, row.etag, after(s.version))) return attempt;
          }
          throw new Error(
            `voter ${voter}: update still refused after ${voters.length} attempts, though only ${voters.length - 1} other votes can have landed`,
          );
        };
        await Promise.all(voters.map(vote));

        const s = await t.readAll();
        assert.equal(s.version.version, 20, '1 insert + 19 updates');
        const votes = rowOf(s, target).entry.suspicions;
        assert.deepEqual(votes.map((v) => v.by).sort(), [...voters].sort(), 'every vote is present exactly once');
      }));

    it('cleanupDefunct deletes only Dead rows last alive before the cut-off', () =>
      withTable(async (t) => {
        const cutOff = 1_700_000_500_000;
        const deadOld = silo(1, { status: 'Dead', iAmAliveAt: cutOff - 1 });
        const deadOlder = silo(2, { status: 'Dead', iAmAliveAt: cutOff - 86_400_000 });
        const deadAtCutOff = silo(3, { status: 'Dead', iAmAliveAt: cutOff });
        const deadNew = silo(4, { status: 'Dead', iAmAliveAt: cutOff + 1 });
        const activeOld = silo(5, { status: 'Active', iAmAliveAt: cutOff - 86_400_000 });
        const shuttingOld = silo(6, { status: 'ShuttingDown', iAmAliveAt: cutOff - 86_400_000 });
        const joiningOld = silo(7, { status: 'Joining', iAmAliveAt: cutOff - 86_400_000 });
        for (const e of [deadOld, deadOlder, deadAtCutOff, deadNew, activeOld, shuttingOld, joiningOld]) {
          assert.equal(await t.insert(e, after((await t.readAll()).version)), true);
        }
        const before = await t.readAll();

        assert.equal(await t.cleanupDefunct(cutOff), 2);
        const s = await t.readAll();
        assert.deepEqual(
          sortedRows(s),
          sortedRows(before).filter((r) => ![siloId(deadOld), siloId(deadOlder)].includes(siloId(r.entry))),
        );
        assert.equal(s.version.version, before.version.version, 'cleanup is not a membership change');
        assert.equal(await t.cleanupDefunct(cutOff), 0, 'nothing left to clean');
      }));

    it('tables on one cluster id share one table; a later init changes nothing', () => {
      const id = freshClusterId();
      return withTables([id, id], async ([a, b]) => {
        assert.ok(a && b);
        assert.deepEqual(await b.readAll(), await a.readAll());
        assert.equal(await a.insert(silo(1), after((await a.readAll()).version)), true);
        const s = await b.readAll();
        assert.equal(s.version.version, 1);
        assert.deepEqual(s, await a.readAll());

        const third = await setup.create();
        try {
          await third.init({ clusterId: id, logger: silentLogger() });
          assert.deepEqual(await third.readAll(), s, 'init of another table on the cluster keeps rows and version');
        } finally {
          await third.close();
        }

        assert.equal(
          await a.update({ ...silo(1), status: 'Dead' }, rowOf(s, silo(1)).etag, after(s.version)),
          true,
          'a moves the version to 2',
        );
        assert.equal(await b.insert(silo(2), after(s.version)), false, 'b, still holding version 1, is refused');
        const s2 = await b.readAll();
        assert.equal(s2.version.version, 2);
        assert.equal(await b.insert(silo(2), after(s2.version)), true);
        assert.equal((await a.readAll()).entries.length, 2);
      });
    });

    it('tables on two cluster ids never see each other', () => {
      // The second id extends the first, to catch prefix matches in keys or queries.
      const first = freshClusterId();
      return withTables([first, `${first}:rows`], async ([a, b]) => {
        assert.ok(a && b);
        const shared = silo(1, { status: 'Dead', iAmAliveAt: 1_000 });
        assert.equal(await a.insert(shared, after((await a.readAll()).version)), true);
        assert.equal(await a.insert(silo(2), after((await a.readAll()).version)), true);
        const sb0 = await b.readAll();
        assert.equal(sb0.version.version, 0, 'b is still empty');
        assert.deepEqual(sb0.entries, []);

        const inB: SiloEntry = { ...shared, status: 'Active', hostName: 'other' };
        assert.equal(await b.insert(inB, after(sb0.version)), true, 'the same silo id can join the other cluster');
        const sa = await a.readAll();
        const sb = await b.readAll();
        assert.equal(sa.version.version, 2);
        assert.equal(sb.version.version, 1);
        assert.deepEqual(rowOf(sa, shared).entry, shared);
        assert.deepEqual(
          sb.entries.map((r) => r.entry),
          [inB],
        );

        await b.updateIAmAlive(shared.address, shared.generation, 5_000);
        assert.deepEqual(await a.readAll(), sa, 'updateIAmAlive on b leaves a alone');
        assert.equal(
          await b.cleanupDefunct(Number.MAX_SAFE_INTEGER),
          0,
          'b has no Dead row; a has one, which b must not delete',
        );
        assert.deepEqual(await a.readAll(), sa);

        await b.deleteCluster();
        assert.deepEqual(await a.readAll(), sa, 'deleting cluster b leaves a alone');
        assert.deepEqual((await b.readAll()).entries, []);
      });
    });

    it('deleteCluster removes rows and version; the table can be used again', () =>
      withTable(async (t) => {
        assert.equal(await t.insert(silo(1), after((await t.readAll()).version)), true);
        const before = await t.readAll();
        await t.deleteCluster();
        const s = await t.readAll();
        assert.equal(s.version.version, 0);
        assert.deepEqual(s.entries, []);
        assert.equal(await t.insert(silo(2), after(s.version)), true);
        const s1 = await t.readAll();
        assert.equal(s1.version.version, 1);
        assert.deepEqual(
          s1.entries.map((r) => r.entry),
          [silo(2)],
        );
        assert.notEqual(s1.version.etag, before.version.etag, 'no version etag is reused');
        assert.notEqual(s1.entries[0]?.etag, before.entries[0]?.etag, 'no row etag is reused');
      }));
  });
}

/** A random cluster id, with characters that need care in keys and SQL. */
function freshClusterId(): string {
  return `conformance/${randomUUID()} 'q' {t}`;
}

/** The version a change made after reading `v` moves the table to. */
function after(v: TableVersion): TableVersion {
  return { version: v.version + 1, etag: v.etag };
}

/** A silo entry numbered `n`, with whole-ms times as a silo writes them. */
function silo(n: number, overrides: Partial<SiloEntry> = {}): SiloEntry {
  const generation = 1_700_000_000_000 + n;
  return {
    address: `10.0.0.${n}:11111`,
    generation,
    status: 'Active',
    gatewayAddress: `10.0.0.${n}:30000`,
    hostName: `host-${n}`,
    startedAt: generation,
    iAmAliveAt: generation + 1_000,
    suspicions: [],
    ...overrides,
  };
}

function rowOf(s: MembershipSnapshot, e: SiloEntry): Row {
  const row = s.entries.find((r) => siloId(r.entry) === siloId(e));
  assert.ok(row, `row ${siloId(e)} present (rows: ${s.entries.map((r) => siloId(r.entry)).join(', ') || 'none'})`);
  return row;
}

function sortedRows(s: MembershipSnapshot): Row[] {
  return [...s.entries].sort((x, y) =>
    siloId(x.entry) < siloId(y.entry) ? -1 : siloId(x.entry) > siloId(y.entry) ? 1 : 0,
  );
}

function assertEtag(etag: unknown, what: string): void {
  assert.equal(typeof etag, 'string', `${what} is a string`);
  assert.notEqual(etag, '', `${what} is not empty`);
}
