// SQLite reminders: the conformance suite on one shared file, plus what is
// particular to SQLite (providers sharing a file, table creation, prefixes,
// corrupt rows, options).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { ReminderError } from '../../../src/errors.ts';
import type { Logger } from '../../../src/observability/logger.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { sqliteReminders } from '../../../src/providers/sqlite/index.ts';
import type { ReminderEntry, ReminderTable } from '../../../src/reminders/table.ts';
import { reminderConformance } from '../../reminders/conformance.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'granary-sqlite-reminders-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

// One file for the whole suite: its cases share it as the silos of a host do, each on its own cluster id.
const suiteFile = path.join(dir, 'suite', 'cluster.db');
reminderConformance('sqlite reminders', { create: () => sqliteReminders({ path: suiteFile }) });

let files = 0;
function freshPath(): string {
  files += 1;
  return path.join(dir, `case-${files}`, 'cluster.db');
}

interface LogRecord {
  readonly level: string;
  readonly fields: Record<string, unknown>;
  readonly message: string | undefined;
}

/** A logger that keeps what it is given. */
function recordingLogger(records: LogRecord[] = []): Logger & { records: LogRecord[] } {
  const at =
    (level: string) =>
    (fields: object, message?: string): void => {
      records.push({ level, fields: fields as Record<string, unknown>, message });
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
  body: (tables: ReminderTable[]) => Promise<void>,
): Promise<void> {
  const tables: ReminderTable[] = [];
  try {
    for (const spec of specs) {
      const t = sqliteReminders(
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

function entry(n: number, overrides: Partial<ReminderEntry> = {}): ReminderEntry {
  return {
    grainId: `counter/${n}`,
    name: 'tick',
    grainHash: n * 1_000,
    startAt: 1_700_000_000_000,
    periodMs: 60_000,
    ...overrides,
  };
}

describe('sqlite reminders specifics', () => {
  it('has kind sqlite', () => {
    assert.equal(sqliteReminders({ path: ':memory:' }).kind, 'sqlite');
  });

  it('two providers on one file (as two processes of a host) see each other’s reminders', async () => {
    const file = freshPath();
    await withTables('c', [{ path: file }, { path: file }], async ([one, two]) => {
      assert.ok(one && two);
      const etags = await Promise.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? one : two).upsert(entry(i + 1))),
      );
      assert.equal(new Set(etags).size, 20, 'the two providers never issue the same ETag');
      assert.equal((await one.readRange(0, 0)).length, 20);
      assert.deepEqual(await two.readRange(0, 0), await one.readRange(0, 0));

      const etag = await one.upsert(entry(1, { periodMs: 5_000 }));
      assert.deepEqual(await two.read('counter/1', 'tick'), { ...entry(1, { periodMs: 5_000 }), etag });
      assert.equal(await two.remove('counter/1', 'tick', etags[0] as string), false, 'two holds the ETag one replaced');
      assert.equal(await two.remove('counter/1', 'tick', etag), true);
      assert.equal(await one.read('counter/1', 'tick'), undefined);
      await one.clear();
      assert.deepEqual(await two.readRange(0, 0), []);
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
        const created = logs.records.filter((r) => r.message === 'created reminder tables');
        assert.deepEqual(
          created.map((r) => r.fields),
          [
            { tables: ['granary_reminders', 'granary_reminders_etag'], path: file },
            { tables: ['other_reminders', 'other_reminders_etag'], path: file },
          ],
        );
        await a.upsert(entry(1));
        assert.equal((await b.readRange(0, 0)).length, 1);
        assert.deepEqual(await other.readRange(0, 0), [], 'another prefix is another table');
      },
    );
  });

  it('keeps reminders and the ETag counter when the file is closed and reopened', async () => {
    const file = freshPath();
    const t = sqliteReminders({ path: file });
    await t.init({ clusterId: 'c', logger: silentLogger() });
    const etag = await t.upsert(entry(1));
    await t.close();
    const fresh = sqliteReminders({ path: file });
    await fresh.init({ clusterId: 'c', logger: silentLogger() });
    try {
      assert.deepEqual(await fresh.readGrain('counter/1'), [{ ...entry(1), etag }]);
      assert.equal(await fresh.remove('counter/1', 'tick', etag), true);
      assert.notEqual(await fresh.upsert(entry(1)), etag, 'a new provider on the file does not issue an ETag again');
    } finally {
      await fresh.close();
    }
  });

  it('skips a row it cannot read back, with a warning naming it, and reads the others', async () => {
    const file = freshPath();
    const logs = recordingLogger();
    await withTables('c', [{ path: file, logger: logs }], async ([t]) => {
      assert.ok(t);
      const good = { ...entry(2), etag: await t.upsert(entry(2)) };
      await t.upsert(entry(1));
      const db = new Database(file);
      try {
        db.prepare(`UPDATE granary_reminders SET start_at = 'soon' WHERE grain_id = ?`).run('counter/1');
      } finally {
        db.close();
      }
      assert.deepEqual(await t.readRange(0, 0), [good], 'readRange');
      assert.deepEqual(await t.readGrain('counter/1'), [], 'readGrain');
      assert.equal(await t.read('counter/1', 'tick'), undefined, 'read');
      const warnings = logs.records.filter((r) => r.level === 'warn');
      assert.equal(warnings.length, 3, 'one warning per read that met the row');
      for (const w of warnings) {
        assert.equal(w.message, 'skipped a reminder row that cannot be read back');
        assert.equal(w.fields['grainId'], 'counter/1');
        assert.equal(w.fields['name'], 'tick');
        assert.match(String(w.fields['problem']), /start_at/);
      }
      // The row can still be replaced, and then reads back.
      const etag = await t.upsert(entry(1));
      assert.deepEqual(await t.read('counter/1', 'tick'), { ...entry(1), etag });
    });
  });

  it('reads a row whose last_tick_at cannot be read back without it, with a warning naming it; a tick mends it', async () => {
    const file = freshPath();
    const logs = recordingLogger();
    await withTables('c', [{ path: file, logger: logs }], async ([t]) => {
      assert.ok(t);
      const e = { ...entry(1), etag: await t.upsert(entry(1)) };
      // Text, a fraction, and a whole number beyond what a JavaScript number holds exactly.
      for (const [what, bad] of [
        ['text', 'soon'],
        ['a fraction', 1.5],
        ['2^60', 2n ** 60n],
      ] as const) {
        logs.records.length = 0;
        const db = new Database(file);
        try {
          db.prepare(`UPDATE granary_reminders SET last_tick_at = ? WHERE grain_id = ?`).run(bad, 'counter/1');
        } finally {
          db.close();
        }
        assert.deepEqual(await t.read('counter/1', 'tick'), e, `read, ${what}`);
        assert.deepEqual(await t.readGrain('counter/1'), [e], 'readGrain');
        assert.deepEqual(await t.readRange(0, 0), [e], 'readRange');
        const warnings = logs.records.filter((r) => r.level === 'warn');
        assert.equal(warnings.length, 3, 'one warning per read that met the row');
        for (const w of warnings) {
          assert.equal(w.message, 'read a reminder row without its last tick, which cannot be read back');
          assert.equal(w.fields['grainId'], 'counter/1');
          assert.equal(w.fields['name'], 'tick');
          assert.match(String(w.fields['problem']), /last_tick_at/);
        }
        // Even a dueAt below the bad value replaces it.
        await t.recordTick('counter/1', 'tick', 1_700_000_000_000);
        assert.deepEqual(await t.read('counter/1', 'tick'), { ...e, lastTickAt: 1_700_000_000_000 }, `mended, ${what}`);
      }
    });
  });

  it('adds the last_tick_at column to a table made before it, once, keeping the rows', async () => {
    const file = freshPath();
    fs.mkdirSync(path.dirname(file), { recursive: true });
    // The tables as the provider made them before ticks were recorded.
    const db = new Database(file);
    db.exec(`CREATE TABLE granary_reminders (
      cluster_id TEXT NOT NULL, grain_id TEXT NOT NULL, name TEXT NOT NULL, grain_hash INTEGER NOT NULL,
      start_at INTEGER NOT NULL, period_ms INTEGER NOT NULL, etag TEXT NOT NULL, PRIMARY KEY (cluster_id, grain_id, name))`);
    db.exec(
      'CREATE TABLE granary_reminders_etag (id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL)',
    );
    db.exec('INSERT INTO granary_reminders_etag (id, last) VALUES (1, 7)');
    db.prepare('INSERT INTO granary_reminders VALUES (?, ?, ?, ?, ?, ?, ?)').run(
      'c',
      'counter/1',
      'tick',
      1_000,
      1_700_000_000_000,
      60_000,
      '7',
    );
    db.close();
    const logs = recordingLogger();
    await withTables(
      'c',
      [
        { path: file, logger: logs },
        { path: file, logger: logs },
      ],
      async ([a, b]) => {
        assert.ok(a && b);
        assert.deepEqual(
          logs.records.filter((r) => r.level === 'info').map((r) => [r.message, r.fields]),
          [
            [
              'added a column to the reminder table',
              { table: 'granary_reminders', column: 'last_tick_at', path: file },
            ],
          ],
          'added once, and nothing created',
        );
        assert.deepEqual(
          await a.read('counter/1', 'tick'),
          { ...entry(1), etag: '7' },
          'the old row reads back, without a tick',
        );
        await a.recordTick('counter/1', 'tick', 1_700_000_000_000);
        assert.deepEqual(await b.readGrain('counter/1'), [{ ...entry(1), etag: '7', lastTickAt: 1_700_000_000_000 }]);
        assert.equal(await b.upsert(entry(1)), '8');
      },
    );
  });

  it('refuses use before init and after close with a ReminderError', async () => {
    const t = sqliteReminders({ path: freshPath() });
    await assert.rejects(t.readRange(0, 0), {
      name: 'ReminderError',
      message: /sqlite reminders .*readRange failed: the table is not open/,
    });
    await t.init({ clusterId: 'c', logger: silentLogger() });
    await t.close();
    await assert.rejects(t.upsert(entry(1)), { name: 'ReminderError', message: /upsert failed/ });
  });

  it('fails init with a ReminderError naming the file when it cannot be opened', async () => {
    const blocker = path.join(freshPath(), '..', 'a-file');
    fs.mkdirSync(path.dirname(blocker), { recursive: true });
    fs.writeFileSync(blocker, 'not a folder');
    const t = sqliteReminders({ path: path.join(blocker, 'cluster.db') });
    await assert.rejects(t.init({ clusterId: 'c', logger: silentLogger() }), (err: unknown) => {
      assert.ok(err instanceof ReminderError);
      assert.equal(err.code, 'GRANARY_REMINDERS');
      assert.ok(err.message.includes(blocker), err.message);
      return true;
    });
  });

  it('refuses a table of that name that it did not make, saying to choose another tablePrefix', async () => {
    const file = freshPath();
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const db = new Database(file);
    db.exec('CREATE TABLE granary_reminders (id INTEGER)');
    db.close();
    const t = sqliteReminders({ path: file });
    await assert.rejects(t.init({ clusterId: 'c', logger: silentLogger() }), {
      name: 'ReminderError',
      message: /granary_reminders.*grain_id.*tablePrefix/,
    });
  });

  it('refuses invalid options with a ConfigurationError saying what to change', () => {
    assert.throws(() => sqliteReminders({ path: '' }), {
      name: 'ConfigurationError',
      message: /sqliteReminders: option path/,
    });
    assert.throws(() => sqliteReminders({ path: 'x.db', tablePrefix: 'a-b' }), {
      name: 'ConfigurationError',
      message: /option tablePrefix/,
    });
    assert.throws(() => sqliteReminders({ path: 'x.db', busyTimeoutMs: -1 }), {
      name: 'ConfigurationError',
      message: /option busyTimeoutMs/,
    });
  });
});
