// SQLite membership: the conformance suite on one shared file, plus what is
// particular to SQLite (providers and processes sharing a file, table
// creation, prefixes, corrupt rows, options).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { MembershipError } from '../../../src/errors.ts';
import type { MembershipTable, SiloEntry, TableVersion } from '../../../src/membership/table.ts';
import { siloId } from '../../../src/membership/table.ts';
import type { Logger } from '../../../src/observability/logger.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { sqliteMembership } from '../../../src/providers/sqlite/index.ts';
import { membershipConformance } from '../../membership/conformance.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'granary-sqlite-membership-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

// One file for the whole suite: its cases share it as the silos of a host do, each on its own cluster id.
const suiteFile = path.join(dir, 'suite', 'cluster.db');
membershipConformance('sqlite membership', { create: () => sqliteMembership({ path: suiteFile }) });

let files = 0;
function freshPath(): string {
  files += 1;
  return path.join(dir, `case-${files}`, 'cluster.db');
}

interface LogRecord {
  readonly level: string;
  readonly fields: object;
  readonly message: string | undefined;
}

/** A logger that keeps what it is given. */
function recordingLogger(records: LogRecord[] = []): Logger & { records: LogRecord[] } {
  const at =
    (level: string) =>
    (fields: object, message?: string): void => {
      records.push({ level, fields, message });
    };
  const logger = {
    records,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: () => logger,
  };
  return logger;
}

/** Opens one table per spec on `clusterId`, runs `body`, and closes them all after. */
async function withTables(
  clusterId: string,
  specs: Array<{ path: string; tablePrefix?: string; logger?: Logger }>,
  body: (tables: MembershipTable[]) => Promise<void>,
): Promise<void> {
  const tables: MembershipTable[] = [];
  try {
    for (const spec of specs) {
      const t = sqliteMembership(
        spec.tablePrefix === undefined ? { path: spec.path } : { path: spec.path, tablePrefix: spec.tablePrefix },
      );
      tables.push(t);
      await t.init({ clusterId, logger: spec.logger ?? silentLogger() });
    }
    await body(tables);
  } finally {
    for (const t of tables) await t.close();
  }
}

function silo(n: number, overrides: Partial<SiloEntry> = {}): SiloEntry {
  return {
    address: `10.0.0.${n}:11111`,
    generation: 1_700_000_000_000 + n,
    status: 'Active',
    gatewayAddress: null,
    hostName: 'h',
    startedAt: 1_700_000_000_000,
    iAmAliveAt: 1_700_000_001_000,
    suspicions: [],
    ...overrides,
  };
}

function after1(v: TableVersion): TableVersion {
  return { version: v.version + 1, etag: v.etag };
}

interface VotingChild {
  /** Resolves once the child has opened the file and waits for `go`. */
  readonly ready: Promise<void>;
  go(): void;
  readonly done: Promise<void>;
}

/**
 * A child process that, on `go`, adds one suspicion vote per voter to the row
 * of `target` in cluster `clusterId`, re-reading and retrying each refused update.
 */
function votingChild(file: string, clusterId: string, target: SiloEntry, voters: string[]): VotingChild {
  const url = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
  const code = `
    import { once } from 'node:events';
    import { sqliteMembership } from ${url('../../../src/providers/sqlite/membership.ts')};
    import { siloId } from ${url('../../../src/membership/table.ts')};
    import { silentLogger } from ${url('../../../src/observability/logger.ts')};
    const [file, clusterId, targetId, votersJson] = process.argv.slice(1);
    const voters = JSON.parse(votersJson);
    const t = sqliteMembership({ path: file });
    await t.init({ clusterId, logger: silentLogger() });
    process.stdout.write('ready\\n');
    await once(process.stdin, 'data');
    for (const voter of voters) {
      for (let attempt = 1; ; attempt++) {
        if (attempt > 100) throw new Error('vote of ' + voter + ' refused 100 times');
        const s = await t.readAll();
        const row = s.entries.find((r) => siloId(r.entry) === targetId);
        const entry = { ...row.entry, suspicions: [...row.entry.suspicions, { by: voter, at: 1 }] };
        if (await t.update(entry, row.etag, { version: s.version.version + 1, etag: s.version.etag })) break;
      }
    }
    await t.close();
    process.exit(0);
  `;
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--conditions=source',
      '--input-type=module',
      '-e',
      code,
      file,
      clusterId,
      siloId(target),
      JSON.stringify(voters),
    ],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  let out = '';
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = once(child, 'exit') as Promise<[number | null]>;
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.startsWith('ready\n')) resolve();
    });
    void exited.then(() => reject(new Error(`voting child for ${file} exited before it was ready:\n${err}`)));
  });
  const done = exited.then(([status]) => {
    assert.equal(status, 0, `voting child for ${file} failed:\n${err}`);
  });
  return { ready, go: () => child.stdin.end('go\n'), done };
}

describe('sqlite membership specifics', () => {
  it('has kind sqlite', () => {
    assert.equal(sqliteMembership({ path: ':memory:' }).kind, 'sqlite');
  });

  it('two providers on one file (as two processes of a host) behave as one table', async () => {
    const file = freshPath();
    await withTables('c', [{ path: file }, { path: file }], async ([one, two]) => {
      assert.ok(one && two);
      const v0 = (await one.readAll()).version;
      assert.deepEqual((await two.readAll()).version, v0, 'the second init left version 0 as the first made it');

      // 20 inserts, alternating providers, all against version 0: one wins.
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? one : two).insert(silo(i + 1), after1(v0))),
      );
      assert.equal(results.filter((r) => r).length, 1);
      const s1 = await two.readAll();
      assert.deepEqual(s1, await one.readAll());
      assert.equal(s1.version.version, 1);

      const row = s1.entries[0];
      assert.ok(row);
      assert.equal(await one.update({ ...row.entry, status: 'ShuttingDown' }, row.etag, after1(s1.version)), true);
      assert.equal(
        await two.update({ ...row.entry, status: 'Dead' }, row.etag, after1(s1.version)),
        false,
        'two holds what one changed',
      );
      await two.updateIAmAlive(row.entry.address, row.entry.generation, 42);
      const s2 = await one.readAll();
      assert.equal(s2.version.version, 2);
      assert.deepEqual(s2.entries[0]?.entry, { ...row.entry, status: 'ShuttingDown', iAmAliveAt: 42 });
      await one.deleteCluster();
    });
  });

  it('keeps compare-and-swap between real processes voting on one row at once', { timeout: 60_000 }, async () => {
    const file = freshPath();
    const clusterId = `c-${randomUUID()}`;
    const target = silo(1);
    await withTables(clusterId, [{ path: file }], async ([t]) => {
      assert.ok(t);
      assert.equal(await t.insert(target, after1((await t.readAll()).version)), true);
      const votersA = Array.from({ length: 10 }, (_, i) => `a-${i}`);
      const votersB = Array.from({ length: 10 }, (_, i) => `b-${i}`);
      const children = [votingChild(file, clusterId, target, votersA), votingChild(file, clusterId, target, votersB)];
      await Promise.all(children.map((c) => c.ready));
      for (const c of children) c.go();
      await Promise.all(children.map((c) => c.done));

      const s = await t.readAll();
      assert.equal(s.version.version, 21, '1 insert + 20 votes');
      assert.deepEqual(s.entries[0]?.entry.suspicions.map((v) => v.by).sort(), [...votersA, ...votersB].sort());
    });
  });

  it('creates its tables once, logging it once, and tablePrefix keeps two users of one file apart', async () => {
    const file = freshPath();
    const logs = recordingLogger();
    await withTables(
      'c',
      [
        { path: file, logger: logs },
        { path: file, logger: logs },
        { path: file, tablePrefix: 'other_', logger: logs },
      ],
      async ([a, b, other]) => {
        assert.ok(a && b && other);
        const created = logs.records.filter((r) => r.message === 'created membership tables');
        assert.deepEqual(
          created.map((r) => r.fields),
          [
            { tables: ['granary_membership', 'granary_membership_version'], path: file },
            { tables: ['other_membership', 'other_membership_version'], path: file },
          ],
        );
        assert.equal(await a.insert(silo(1), after1((await a.readAll()).version)), true);
        assert.equal((await b.readAll()).entries.length, 1);
        assert.deepEqual((await other.readAll()).entries, [], 'another prefix is another table');
      },
    );
  });

  it('keeps the table across close and reopen of the file', async () => {
    const file = freshPath();
    const t = sqliteMembership({ path: file });
    await t.init({ clusterId: 'c', logger: silentLogger() });
    assert.equal(await t.insert(silo(1), after1((await t.readAll()).version)), true);
    const before = await t.readAll();
    await t.close();
    await t.init({ clusterId: 'c', logger: silentLogger() });
    assert.deepEqual(await t.readAll(), before);
    await t.close();
  });

  it('fails a read of a corrupt row with a MembershipError naming the row', async () => {
    const file = freshPath();
    await withTables('c', [{ path: file }], async ([t]) => {
      assert.ok(t);
      assert.equal(await t.insert(silo(1), after1((await t.readAll()).version)), true);
      const db = new Database(file);
      try {
        db.prepare(`UPDATE granary_membership SET suspicions = '{"not":"an array"}'`).run();
      } finally {
        db.close();
      }
      await assert.rejects(t.readAll(), (err: unknown) => {
        assert.ok(err instanceof MembershipError);
        assert.equal(err.code, 'GRANARY_MEMBERSHIP');
        assert.match(err.message, /corrupt row 10\.0\.0\.1:11111@1700000000001.*suspicions/);
        return true;
      });
    });
  });

  it('refuses use before init and after close with a MembershipError', async () => {
    const t = sqliteMembership({ path: freshPath() });
    await assert.rejects(t.readAll(), { name: 'MembershipError', message: /readAll failed: the table is not open/ });
    await t.init({ clusterId: 'c', logger: silentLogger() });
    await t.close();
    await assert.rejects(t.insert(silo(1), { version: 1, etag: 'x' }), {
      name: 'MembershipError',
      message: /insert failed/,
    });
  });

  it('fails init with a MembershipError naming the file when it cannot be opened', async () => {
    const blocker = path.join(freshPath(), '..', 'a-file');
    fs.mkdirSync(path.dirname(blocker), { recursive: true });
    fs.writeFileSync(blocker, 'not a folder');
    const t = sqliteMembership({ path: path.join(blocker, 'cluster.db') });
    await assert.rejects(t.init({ clusterId: 'c', logger: silentLogger() }), (err: unknown) => {
      assert.ok(err instanceof MembershipError);
      assert.ok(err.message.includes(blocker), err.message);
      return true;
    });
  });

  it('refuses a table of that name that it did not make, saying to choose another tablePrefix', async () => {
    const file = freshPath();
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const db = new Database(file);
    db.exec('CREATE TABLE granary_membership (id INTEGER)');
    db.close();
    const t = sqliteMembership({ path: file });
    await assert.rejects(t.init({ clusterId: 'c', logger: silentLogger() }), {
      name: 'MembershipError',
      message: /granary_membership.*silo_id.*tablePrefix/,
    });
  });

  it('refuses invalid options with a ConfigurationError saying what to change', () => {
    assert.throws(() => sqliteMembership({ path: '' }), { name: 'ConfigurationError', message: /path/ });
    assert.throws(() => sqliteMembership({ path: 'x.db', tablePrefix: 'a-b' }), {
      name: 'ConfigurationError',
      message: /tablePrefix/,
    });
    assert.throws(() => sqliteMembership({ path: 'x.db', busyTimeoutMs: -1 }), {
      name: 'ConfigurationError',
      message: /busyTimeoutMs/,
    });
  });
});
