// SQLite storage: the conformance suite on a file and on `:memory:`, plus
// what is particular to SQLite (sharing a file, table creation, prefixes,
// format versions, file system errors).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { Logger } from '../../../src/observability/logger.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { sqliteDatabaseForTests, sqliteStorage } from '../../../src/providers/sqlite/storage.ts';
import type { StateAddress, StorageProvider } from '../../../src/storage/provider.ts';
import { storageConformance } from '../../storage/conformance.ts';
import { testSerializer } from '../../storage/serializer.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'granary-sqlite-storage-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

let files = 0;
/** A fresh database file path in the test folder (its own subfolder, to exercise folder creation). */
function freshPath(): string {
  files += 1;
  return path.join(dir, `case-${files}`, 'state.db');
}

/** Overwrites the payload of the row at `address` with bytes the serializer cannot decode. */
function corruptRow(provider: StorageProvider, address: StateAddress): void {
  const db = sqliteDatabaseForTests(provider);
  assert.ok(db, 'provider made by sqliteStorage() and open');
  const result = db
    .prepare('UPDATE granary_storage SET payload = ? WHERE grain_type = ? AND grain_key = ? AND state_name = ?')
    .run(Buffer.from([0xff, 0x00, 0xde, 0xad]), address.grainType, address.grainKey, address.stateName);
  assert.equal(result.changes, 1, 'the row to corrupt exists');
}

storageConformance('sqlite storage (file)', {
  create: () => sqliteStorage({ path: freshPath() }),
  corrupt: corruptRow,
});
storageConformance('sqlite storage (:memory:)', {
  create: () => sqliteStorage({ path: ':memory:' }),
  corrupt: corruptRow,
});

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

function context(logger: Logger = silentLogger()) {
  return { name: 'default', logger, serializer: testSerializer };
}

/** Runs `body` with providers opened on the given options, and closes them all after. */
async function withProviders(
  specs: Array<{ path: string; tablePrefix?: string; logger?: Logger }>,
  body: (providers: StorageProvider[]) => Promise<void>,
): Promise<void> {
  const providers: StorageProvider[] = [];
  try {
    for (const spec of specs) {
      const p = sqliteStorage(
        spec.tablePrefix === undefined ? { path: spec.path } : { path: spec.path, tablePrefix: spec.tablePrefix },
      );
      providers.push(p);
      await p.init(context(spec.logger));
    }
    await body(providers);
  } finally {
    for (const p of providers) await p.close();
  }
}

const a: StateAddress = { grainType: 'counter', grainKey: 'alice', stateName: 'count' };

interface IncrementingChild {
  /** Resolves once the child has opened the file and waits for `go`. */
  readonly ready: Promise<void>;
  go(): void;
  /** Resolves to how many ETag conflicts the child met (and retried). */
  readonly done: Promise<number>;
}

/**
 * A child process that, on `go`, adds 1 to counter/shared `times` times in
 * the file, re-reading and retrying on each ETag conflict.
 */
function incrementingChild(file: string, times: number): IncrementingChild {
  const url = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
  const code = `
    import { once } from 'node:events';
    import { sqliteStorage } from ${url('../../../src/providers/sqlite/storage.ts')};
    import { testSerializer } from ${url('../../storage/serializer.ts')};
    import { silentLogger } from ${url('../../../src/observability/logger.ts')};
    const p = sqliteStorage({ path: process.argv[1] });
    await p.init({ name: 'default', logger: silentLogger(), serializer: testSerializer });
    process.stdout.write('ready\\n');
    await once(process.stdin, 'data');
    const at = { grainType: 'counter', grainKey: 'shared', stateName: 'count' };
    let conflicts = 0;
    for (let done = 0; done < ${times};) {
      const { state, etag } = await p.read(at);
      try {
        await p.write(at, { value: (state?.value ?? 0) + 1 }, etag);
        done++;
      } catch (err) {
        if (err.code !== 'GRANARY_INCONSISTENT_STATE') throw err;
        conflicts++;
      }
    }
    await p.close();
    process.stdout.write('conflicts ' + conflicts + '\\n');
    process.exit(0);
  `;
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--conditions=source', '--input-type=module', '-e', code, file],
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
    void exited.then(() => reject(new Error(`child for ${file} exited before it was ready:\n${err}`)));
  });
  const done = exited.then(([status]) => {
    assert.equal(status, 0, `child incrementing counter/shared in ${file} failed:\n${err}`);
    const match = /conflicts (\d+)/.exec(out);
    assert.ok(match?.[1] !== undefined, `child printed no result: ${out}`);
    return Number(match[1]);
  });
  return { ready, go: () => child.stdin.end('go\n'), done };
}

describe('sqlite storage specifics', () => {
  it('lets two providers on one file (as two processes) see each other, with the etag rule between them', async () => {
    const file = freshPath();
    await withProviders([{ path: file }, { path: file }], async ([one, two]) => {
      assert.ok(one && two);
      const e1 = await one.write(a, { value: 1 }, null);
      assert.deepEqual(await two.read(a), { state: { value: 1 }, etag: e1 });
      await assert.rejects(two.write(a, { value: 9 }, null), { code: 'GRANARY_INCONSISTENT_STATE' });
      const e2 = await two.write(a, { value: 2 }, e1);
      await assert.rejects(one.write(a, { value: 3 }, e1), { code: 'GRANARY_INCONSISTENT_STATE' });
      await assert.rejects(one.clear(a, e1), { code: 'GRANARY_INCONSISTENT_STATE' });
      assert.deepEqual(await one.read(a), { state: { value: 2 }, etag: e2 });
      await one.clear(a, e2);
      assert.deepEqual(await two.read(a), { state: undefined, etag: null });
    });
  });

  it('keeps the etag rule between real processes writing one file at once', { timeout: 60_000 }, async () => {
    const file = freshPath();
    // Create the tables first so the children race on the rows, not on the schema.
    await withProviders([{ path: file }], async () => {});
    const children = [1, 2, 3].map(() => incrementingChild(file, 1000));
    await Promise.all(children.map((c) => c.ready));
    for (const c of children) c.go();
    const conflicts = await Promise.all(children.map((c) => c.done));
    await withProviders([{ path: file }], async ([p]) => {
      assert.ok(p);
      const { state } = await p.read({ grainType: 'counter', grainKey: 'shared', stateName: 'count' });
      assert.deepEqual(
        state,
        { value: 3000 },
        `no increment lost (conflicts retried per process: ${conflicts.join(', ')})`,
      );
    });
  });

  it('names the grain, state, provider and both etags in a conflict', async () => {
    await withProviders([{ path: ':memory:' }], async ([p]) => {
      assert.ok(p);
      const e1 = await p.write(a, { value: 1 }, null);
      const e2 = await p.write(a, { value: 2 }, e1);
      await assert.rejects(p.write(a, { value: 3 }, e1), (err: Error) => {
        assert.match(err.message, /counter\/alice/);
        assert.match(err.message, /'count'/);
        assert.match(err.message, /sqlite storage 'default'/);
        assert.ok(err.message.includes(`expected etag ${e1}, found ${e2}`), err.message);
        return true;
      });
    });
  });

  it('keeps state across close and reopen of the file, in WAL mode', async () => {
    const file = freshPath();
    let etag = '';
    await withProviders([{ path: file }], async ([p]) => {
      assert.ok(p);
      etag = await p.write(a, { value: 1 }, null);
    });
    await withProviders([{ path: file }], async ([p]) => {
      assert.ok(p);
      assert.deepEqual(await p.read(a), { state: { value: 1 }, etag });
    });
    const db = new Database(file, { readonly: true });
    try {
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    } finally {
      db.close();
    }
  });

  it('creates its table once, and tablePrefix keeps two users of one file apart', async () => {
    const file = freshPath();
    const logs: LogRecord[] = [];
    const created = () =>
      logs.filter((r) => r.level === 'info' && r.message === 'created storage table').map((r) => r.fields);
    await withProviders(
      [
        { path: file, logger: recordingLogger(logs) },
        { path: file, logger: recordingLogger(logs) },
      ],
      async () => {
        assert.deepEqual(created(), [{ table: 'granary_storage', path: file }]);
      },
    );
    await withProviders(
      [
        { path: file, logger: recordingLogger(logs) },
        { path: file, tablePrefix: 'blue_', logger: recordingLogger(logs) },
      ],
      async ([plain, blue]) => {
        assert.ok(plain && blue);
        assert.deepEqual(created(), [
          { table: 'granary_storage', path: file },
          { table: 'blue_storage', path: file },
        ]);
        const etag = await plain.write(a, { who: 'plain' }, null);
        assert.deepEqual(await blue.read(a), { state: undefined, etag: null });
        const blueEtag = await blue.write(a, { who: 'blue' }, null);
        assert.deepEqual(await plain.read(a), { state: { who: 'plain' }, etag });
        assert.deepEqual(await blue.read(a), { state: { who: 'blue' }, etag: blueEtag });
      },
    );
  });

  it('fails a read of a row with an unknown format version with GRANARY_STORAGE_CORRUPT', async () => {
    const file = freshPath();
    await withProviders([{ path: file }], async ([p]) => {
      assert.ok(p);
      await p.write(a, { value: 1 }, null);
      const other = { ...a, grainKey: 'bob' };
      await p.write(other, { value: 2 }, null);
      const db = new Database(file);
      try {
        db.prepare('UPDATE granary_storage SET format_version = 99 WHERE grain_key = ?').run('alice');
      } finally {
        db.close();
      }
      await assert.rejects(p.read(a), (err: Error & { code?: string }) => {
        assert.equal(err.name, 'StorageCorruptError');
        assert.equal(err.code, 'GRANARY_STORAGE_CORRUPT');
        for (const part of [
          'counter/alice',
          "'count'",
          "sqlite storage 'default'",
          'granary_storage',
          'format version is 99',
        ]) {
          assert.ok(err.message.includes(part), `message names ${part}: ${err.message}`);
        }
        return true;
      });
      assert.deepEqual((await p.read(other)).state, { value: 2 });
    });
  });

  it("with format 'json', stores JSON text SQL can read, and reads it back equal", async () => {
    const file = freshPath();
    const p = sqliteStorage({ path: file, format: 'json' });
    await p.init(context());
    try {
      const state = { name: 'Zoë', scores: { chess: [1200, 1250] }, nested: [null, true, { deep: 'x' }] };
      const etag = await p.write(a, state, null);
      assert.deepEqual(await p.read(a), { state, etag });
      const db = new Database(file, { readonly: true });
      try {
        const row = db
          .prepare(
            "SELECT json_extract(CAST(payload AS TEXT), '$.scores.chess[1]') AS chess, format_version FROM granary_storage WHERE grain_key = ?",
          )
          .get('alice');
        assert.deepEqual(row, { chess: 1250, format_version: 2 });
      } finally {
        db.close();
      }
    } finally {
      await p.close();
    }
  });

  it("with format 'json', refuses a state JSON cannot hold with a SerializationError naming the path, and stores nothing", async () => {
    const p = sqliteStorage({ path: ':memory:', format: 'json' });
    await p.init(context());
    try {
      for (const [value, at] of [
        [{ scores: new Map([['chess', 1]]) }, 'state.scores'],
        [{ born: new Date(0) }, 'state.born'],
        [{ n: 1n }, 'state.n'],
      ] as const) {
        await assert.rejects(
          p.write(a, value, null),
          (err: Error & { path?: string }) =>
            err.name === 'SerializationError' && err.path === at && err.message.includes('counter/alice'),
        );
      }
      assert.deepEqual(await p.read(a), { state: undefined, etag: null });
    } finally {
      await p.close();
    }
  });

  it('fails a record written in the other format, saying which format it is in', async () => {
    const file = freshPath();
    await withProviders([{ path: file }], async ([codec]) => {
      assert.ok(codec);
      await codec.write(a, { value: 1 }, null);
    });
    const json = sqliteStorage({ path: file, format: 'json' });
    await json.init(context());
    try {
      await assert.rejects(
        json.read(a),
        (err: Error & { code?: string }) =>
          err.code === 'GRANARY_STORAGE_CORRUPT' &&
          err.message.includes("written in format 'codec'") &&
          err.message.includes("configured with format 'json'"),
      );
    } finally {
      await json.close();
    }
  });

  it('gives the decode error as the cause of a corrupt row', async () => {
    await withProviders([{ path: ':memory:' }], async ([p]) => {
      assert.ok(p);
      await p.write(a, { value: 1 }, null);
      corruptRow(p, a);
      await assert.rejects(p.read(a), (err: Error) => {
        assert.ok(err.cause instanceof Error, 'has the decode error as cause');
        assert.match(err.message, /rowid \d+/);
        return true;
      });
    });
  });

  it('fails init with a StorageError naming the path when its folder cannot be created', async () => {
    const blocker = path.join(dir, 'a-file');
    fs.writeFileSync(blocker, 'not a folder');
    const file = path.join(blocker, 'sub', 'state.db');
    const p = sqliteStorage({ path: file });
    await assert.rejects(
      async () => p.init(context()),
      (err: Error & { code?: string }) => {
        assert.equal(err.name, 'StorageError');
        assert.equal(err.code, 'GRANARY_STORAGE');
        assert.ok(err.message.includes(file), `message names ${file}: ${err.message}`);
        assert.ok(err.cause instanceof Error);
        return true;
      },
    );
    await p.close();
  });

  it('wraps driver errors in a StorageError with the cause', async () => {
    const folder = path.join(dir, 'a-folder.db');
    fs.mkdirSync(folder);
    const p = sqliteStorage({ path: folder });
    await assert.rejects(
      async () => p.init(context()),
      (err: Error & { code?: string }) => {
        assert.equal(err.name, 'StorageError');
        assert.equal(err.code, 'GRANARY_STORAGE');
        assert.ok(err.message.includes(folder), err.message);
        assert.ok(err.cause instanceof Error);
        return true;
      },
    );
  });

  it('refuses use before init and after close, and reopens on a second init', async () => {
    const p = sqliteStorage({ path: freshPath() });
    await assert.rejects(p.read(a), { name: 'StorageError', code: 'GRANARY_STORAGE' });
    await p.init(context());
    const etag = await p.write(a, { value: 1 }, null);
    await p.close();
    await assert.rejects(p.read(a), { name: 'StorageError', code: 'GRANARY_STORAGE' });
    await p.init(context());
    assert.deepEqual(await p.read(a), { state: { value: 1 }, etag });
    await p.close();
  });

  it('refuses a table of that name that it did not make, saying to choose another tablePrefix', async () => {
    const file = freshPath();
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const db = new Database(file);
    db.exec('CREATE TABLE granary_storage (id INTEGER PRIMARY KEY, body TEXT)');
    db.close();
    const p = sqliteStorage({ path: file });
    await assert.rejects(async () => p.init(context()), {
      name: 'StorageError',
      message: /granary_storage.*payload.*tablePrefix/,
    });
    await p.close();
  });

  it('refuses invalid options with a ConfigurationError saying what to change', () => {
    assert.throws(() => sqliteStorage({ path: '' }), { code: 'GRANARY_CONFIGURATION', message: /path/ });
    assert.throws(() => sqliteStorage({ path: ':memory:', tablePrefix: 'a"; DROP' }), {
      code: 'GRANARY_CONFIGURATION',
      message: /tablePrefix/,
    });
    assert.throws(() => sqliteStorage({ path: ':memory:', busyTimeoutMs: -1 }), {
      code: 'GRANARY_CONFIGURATION',
      message: /busyTimeoutMs/,
    });
  });
});
