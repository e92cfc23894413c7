// SQLite event log: the conformance suite on a file and on `:memory:`, plus
// what is particular to SQLite (sharing a file between logs and processes,
// table creation, prefixes, format versions).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { EventLog, LogAddress } from '../../../src/journal/log.ts';
import type { Logger } from '../../../src/observability/logger.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import {
  sqliteEventLog,
  sqliteEventLogDatabaseForTests,
  type SqliteEventLogOptions,
} from '../../../src/providers/sqlite/event-log.ts';
import { eventLogConformance } from '../../journal/conformance.ts';
import { testSerializer } from '../../storage/serializer.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'granary-sqlite-event-log-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let files = 0;
/** A fresh database file path in the test folder (its own subfolder, to exercise folder creation). */
function freshPath(): string {
  files += 1;
  return path.join(dir, `case-${files}`, 'events.db');
}

const garbage = Buffer.from([0xff, 0x00, 0xde, 0xad]);

function database(log: EventLog): Database.Database {
  const db = sqliteEventLogDatabaseForTests(log);
  assert.ok(db, 'log made by sqliteEventLog() and open');
  return db;
}

const corruption = {
  corruptEvent(log: EventLog, s: LogAddress, version: number): void {
    const result = database(log)
      .prepare(
        'UPDATE granary_events SET payload = ? WHERE grain_type = ? AND grain_key = ? AND log_name = ? AND version = ?',
      )
      .run(garbage, s.grainType, s.grainKey, s.logName, version);
    assert.equal(result.changes, 1, 'the event to corrupt exists');
  },
  corruptSnapshot(log: EventLog, s: LogAddress): void {
    const result = database(log)
      .prepare('UPDATE granary_event_snapshots SET payload = ? WHERE grain_type = ? AND grain_key = ? AND log_name = ?')
      .run(garbage, s.grainType, s.grainKey, s.logName);
    assert.equal(result.changes, 1, 'the snapshot to corrupt exists');
  },
};

eventLogConformance('sqlite event log (file)', { create: () => sqliteEventLog({ path: freshPath() }), ...corruption });
eventLogConformance('sqlite event log (:memory:)', {
  create: () => sqliteEventLog({ path: ':memory:' }),
  ...corruption,
});

interface LogRecord {
  readonly level: string;
  readonly fields: object;
  readonly message: string | undefined;
}

/** A logger that keeps what it is given. */
function recordingLogger(records: LogRecord[]): Logger {
  const at =
    (level: string) =>
    (fields: object, message?: string): void => {
      records.push({ level, fields, message });
    };
  const logger: Logger = {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: () => logger,
  };
  return logger;
}

function context(logger: Logger = silentLogger()) {
  return { name: 'default', logger, serializer: testSerializer };
}

/** Opens logs with these options, runs `body`, and closes them. */
async function withLogs(
  options: Array<SqliteEventLogOptions & { logger?: Logger }>,
  body: (logs: EventLog[]) => Promise<void>,
): Promise<void> {
  const logs: EventLog[] = [];
  try {
    for (const { logger, ...o } of options) {
      const log = sqliteEventLog(o);
      await log.init(context(logger));
      logs.push(log);
    }
    await body(logs);
  } finally {
    for (const log of logs) await log.close();
  }
}

const s: LogAddress = { grainType: 'account', grainKey: 'alice', logName: 'journal' };

describe('sqlite event log specifics', () => {
  it('lets two logs on one file (as two processes) see each other, with the version rule between them', async () => {
    const file = freshPath();
    await withLogs([{ path: file }, { path: file }], async ([one, two]) => {
      assert.ok(one && two);
      assert.equal(await one.append(s, [{ n: 1 }], 0), 1);
      assert.deepEqual(await two.read(s), { events: [{ version: 1, event: { n: 1 } }], version: 1 });
      await assert.rejects(two.append(s, [{ n: 9 }], 0), {
        code: 'GRANARY_INCONSISTENT_STATE',
        message: /expected version 0, found 1/,
      });
      assert.equal(await two.append(s, [{ n: 2 }], 1), 2);
      // Appends from both connections at once: exactly one per version.
      const outcomes = await Promise.allSettled([one.append(s, [{ by: 1 }], 2), two.append(s, [{ by: 2 }], 2)]);
      assert.equal(outcomes.filter((o) => o.status === 'fulfilled').length, 1);
      assert.equal((await one.read(s)).version, 3);
    });
  });

  it('keeps events and snapshots across close and reopen of the file, in WAL mode', async () => {
    const file = freshPath();
    await withLogs([{ path: file }], async ([log]) => {
      assert.ok(log);
      await log.append(s, [{ n: 1 }, { n: 2 }], 0);
      await log.writeSnapshot(s, 2, { sum: 3 });
    });
    await withLogs([{ path: file }], async ([log]) => {
      assert.ok(log);
      assert.deepEqual(await log.read(s), { snapshot: { version: 2, state: { sum: 3 } }, events: [], version: 2 });
    });
    const db = new Database(file, { readonly: true });
    try {
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    } finally {
      db.close();
    }
  });

  it('creates its tables once, and tablePrefix keeps two users of one file apart', async () => {
    const file = freshPath();
    const logs: LogRecord[] = [];
    const created = () =>
      logs.filter((r) => r.level === 'info' && r.message === 'created event log tables').map((r) => r.fields);
    await withLogs(
      [
        { path: file, logger: recordingLogger(logs) },
        { path: file, logger: recordingLogger(logs) },
      ],
      async () => {
        assert.deepEqual(created(), [{ tables: ['granary_events', 'granary_event_snapshots'], path: file }]);
      },
    );
    await withLogs(
      [{ path: file }, { path: file, tablePrefix: 'blue_', logger: recordingLogger(logs) }],
      async ([plain, blue]) => {
        assert.ok(plain && blue);
        assert.equal(created().length, 2);
        await plain.append(s, [{ who: 'plain' }], 0);
        assert.deepEqual(await blue.read(s), { events: [], version: 0 });
        await blue.append(s, [{ who: 'blue' }], 0);
        assert.deepEqual((await plain.read(s)).events, [{ version: 1, event: { who: 'plain' } }]);
        assert.deepEqual((await blue.read(s)).events, [{ version: 1, event: { who: 'blue' } }]);
      },
    );
  });

  it('shares a file with sqliteStorage tables without clashing', async () => {
    const file = freshPath();
    const { sqliteStorage } = await import('../../../src/providers/sqlite/storage.ts');
    const storage = sqliteStorage({ path: file });
    await storage.init(context());
    try {
      await withLogs([{ path: file }], async ([log]) => {
        assert.ok(log);
        await storage.write({ grainType: 'account', grainKey: 'alice', stateName: 'journal' }, { n: 0 }, null);
        assert.equal(await log.append(s, [{ n: 1 }], 0), 1);
      });
    } finally {
      await storage.close();
    }
  });

  it('fails a read of a row with an unknown format version with GRANARY_STORAGE_CORRUPT naming the table and version', async () => {
    const file = freshPath();
    await withLogs([{ path: file }], async ([log]) => {
      assert.ok(log);
      await log.append(s, [{ n: 1 }, { n: 2 }], 0);
      const db = new Database(file);
      try {
        db.prepare('UPDATE granary_events SET format_version = 99 WHERE version = 2').run();
      } finally {
        db.close();
      }
      await assert.rejects(log.read(s), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'GRANARY_STORAGE_CORRUPT');
        for (const part of [
          'account/alice',
          "'journal'",
          "sqlite event log 'default'",
          'granary_events',
          'version 2',
          'format version is 99',
          file,
        ]) {
          assert.ok(err.message.includes(part), `message names ${part}: ${err.message}`);
        }
        return true;
      });
      assert.deepEqual(await log.readEvents(s, 0, 1), [{ version: 1, event: { n: 1 } }]);
    });
  });

  it('gives the decode error as the cause of a corrupt row', async () => {
    await withLogs([{ path: ':memory:' }], async ([log]) => {
      assert.ok(log);
      await log.append(s, [{ n: 1 }], 0);
      corruption.corruptEvent(log, s, 1);
      await assert.rejects(log.read(s), (err: Error) => {
        assert.ok(err.cause instanceof Error, 'has the decode error as cause');
        return true;
      });
    });
  });

  it('fails init with a StorageError naming the path when its folder cannot be created', async () => {
    const blocker = path.join(dir, 'a-file');
    fs.writeFileSync(blocker, 'not a folder');
    const file = path.join(blocker, 'sub', 'events.db');
    const log = sqliteEventLog({ path: file });
    await assert.rejects(
      async () => log.init(context()),
      (err: Error & { code?: string }) => {
        assert.equal(err.name, 'StorageError');
        assert.equal(err.code, 'GRANARY_STORAGE');
        assert.ok(err.message.includes(file), `message names ${file}: ${err.message}`);
        return true;
      },
    );
    await log.close();
  });

  it('refuses a table of that name that it did not make, saying to choose another tablePrefix', async () => {
    const file = freshPath();
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const db = new Database(file);
    db.exec('CREATE TABLE granary_events (id INTEGER PRIMARY KEY, body TEXT)');
    db.close();
    const log = sqliteEventLog({ path: file });
    await assert.rejects(async () => log.init(context()), {
      name: 'StorageError',
      message: /granary_events.*payload.*tablePrefix/,
    });
    await log.close();
  });

  it('refuses invalid options with a ConfigurationError saying what to change', () => {
    assert.throws(() => sqliteEventLog({ path: '' }), { code: 'GRANARY_CONFIGURATION', message: /path/ });
    assert.throws(() => sqliteEventLog({ path: ':memory:', tablePrefix: 'a"; DROP' }), {
      code: 'GRANARY_CONFIGURATION',
      message: /tablePrefix/,
    });
    assert.throws(() => sqliteEventLog({ path: ':memory:', busyTimeoutMs: -1 }), {
      code: 'GRANARY_CONFIGURATION',
      message: /busyTimeoutMs/,
    });
  });
});
