// PostgreSQL reminders: the conformance suite against the server at
// GRANARY_TEST_POSTGRES (default the local test database) under a random table
// prefix dropped at the end, plus an outage through a cuttable proxy, a server
// that stops answering, concurrent creators, corrupt rows and options.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { ReminderError } from '../../../src/errors.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { postgresReminders } from '../../../src/providers/postgres/index.ts';
import type { ReminderEntry } from '../../../src/reminders/table.ts';
import { eventually, startProxy as startProxyTo, type CuttableProxy } from '../../helpers.ts';
import { reminderConformance } from '../../reminders/conformance.ts';
import { recordingLogger, startFreezableProxy } from './support.ts';

const connectionString = process.env['GRANARY_TEST_POSTGRES'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const runId = randomUUID().replaceAll('-', '').slice(0, 12);
/** Every prefix this run used, for the tables and sequences to drop at the end. */
const prefixes: string[] = [];

function prefix(name: string): string {
  const p = `t${runId}_${name}_`;
  prefixes.push(p);
  return p;
}

after(async () => {
  const admin = new pg.Client({ connectionString });
  await admin.connect();
  try {
    for (const p of prefixes) {
      await admin.query(`DROP TABLE IF EXISTS "${p}reminders"`);
      await admin.query(`DROP SEQUENCE IF EXISTS "${p}reminders_etag"`);
    }
  } finally {
    await admin.end();
  }
});

const suitePrefix = prefix('suite');
reminderConformance('postgres reminders', {
  create: () => postgresReminders({ connectionString, tablePrefix: suitePrefix }),
});

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

/** A cuttable proxy to the server under test. */
function startProxy(): Promise<CuttableProxy> {
  const target = new URL(connectionString);
  return startProxyTo(target.hostname, Number(target.port || 5432));
}

async function admin<T>(body: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    return await body(client);
  } finally {
    await client.end();
  }
}

describe('postgres reminders specifics', () => {
  it('has kind postgres', () => {
    assert.equal(postgresReminders({ connectionString }).kind, 'postgres');
  });

  it(
    'fails init and later calls with a ReminderError when the server cannot be reached',
    { timeout: 20_000 },
    async () => {
      const t = postgresReminders({
        connectionString: 'postgres://postgres:hunter2@127.0.0.1:1/test',
        connectionTimeoutMs: 2_000,
      });
      await assert.rejects(t.init({ clusterId: 'c', logger: silentLogger() }), (err: unknown) => {
        assert.ok(err instanceof ReminderError, String(err));
        assert.equal(err.code, 'GRANARY_REMINDERS');
        assert.match(err.message, /postgres reminders .*127\.0\.0\.1:1.*init failed/);
        assert.doesNotMatch(err.message, /hunter2/, 'the password is not in the message');
        assert.ok(err.cause instanceof Error, 'the driver error is the cause');
        return true;
      });
      await assert.rejects(
        t.readRange(0, 0),
        (err: unknown) => err instanceof ReminderError && /readRange failed: the table is not open/.test(err.message),
      );
      await t.close();
    },
  );

  it(
    'fails calls with a ReminderError while the server is gone, and the same instance works again once it is back',
    { timeout: 30_000 },
    async () => {
      const proxy = await startProxy();
      const target = new URL(connectionString);
      target.host = `127.0.0.1:${proxy.port}`;
      const logs = recordingLogger();
      const t = postgresReminders({
        connectionString: target.toString(),
        tablePrefix: suitePrefix,
        connectionTimeoutMs: 2_000,
        queryTimeoutMs: 5_000,
      });
      await t.init({ clusterId: `c-${randomUUID()}`, logger: logs });
      try {
        const etag = await t.upsert(entry(1));
        await proxy.cut();
        await eventually('the pool reports its idle connection gone', () =>
          logs.records.some((r) => r.level === 'warn' && /idle connection failed/.test(r.message ?? '')),
        );
        const failsWith =
          (op: string, what?: RegExp) =>
          (err: unknown): boolean => {
            assert.ok(err instanceof ReminderError, `${op}: ${String(err)}`);
            assert.match(err.message, new RegExp(`postgres reminders .*${op} failed`));
            if (what !== undefined) assert.match(err.message, what);
            return true;
          };
        await assert.rejects(t.readRange(0, 0), failsWith('readRange'));
        await assert.rejects(t.readGrain('counter/1'), failsWith('readGrain', /counter\/1/));
        await assert.rejects(t.read('counter/1', 'tick'), failsWith('read'));
        await assert.rejects(t.upsert(entry(2)), failsWith('upsert', /reminder "tick" of grain "counter\/2"/));
        await assert.rejects(
          t.recordTick('counter/1', 'tick', 1_700_000_000_000),
          failsWith('recordTick', /reminder "tick" of grain "counter\/1"/),
        );
        await assert.rejects(t.remove('counter/1', 'tick', etag), failsWith('remove'));

        await proxy.restore();
        assert.deepEqual(await t.readRange(0, 0), [{ ...entry(1), etag }], 'the same instance reads again');
        const next = await t.upsert(entry(2));
        assert.deepEqual(await t.read('counter/2', 'tick'), { ...entry(2), etag: next });
        await t.clear();
      } finally {
        await t.close();
        await proxy.cut();
      }
    },
  );

  it(
    'fails init within queryTimeoutMs when the server stops answering while it sets up the table (not after a second wait for a ROLLBACK), and inits once it answers',
    { timeout: 30_000 },
    async () => {
      const tablePrefix = prefix('hang');
      const proxy = await startFreezableProxy(connectionString);
      const queryTimeoutMs = 1_000;
      const t = postgresReminders({
        connectionString: proxy.via,
        tablePrefix,
        poolSize: 1,
        connectionTimeoutMs: 5_000,
        queryTimeoutMs,
      });
      const clusterId = `c-${randomUUID()}`;
      try {
        // The set-up transaction gets no answer from its BEGIN on.
        const sent = proxy.freeze('BEGIN');
        let outcome: 'pending' | 'failed' | 'opened' = 'pending';
        let failure: unknown;
        const init = t.init({ clusterId, logger: silentLogger() }).then(
          () => {
            outcome = 'opened';
          },
          (err: unknown) => {
            outcome = 'failed';
            failure = err;
          },
        );
        // The BEGIN is on its way, so its time-out runs: it is due before this marker, which Node fires
        // after it (expired timers run in order, with the promise jobs of each in between).
        await sent;
        const atMarker = await new Promise<string>((resolve) =>
          setTimeout(() => resolve(outcome), queryTimeoutMs * 1.5),
        );
        await init;
        assert.equal(atMarker, 'failed', 'init had failed by 1.5 x queryTimeoutMs');
        assert.ok(failure instanceof ReminderError, `a ReminderError, got ${String(failure)}`);
        assert.match(failure.message, /init failed: cannot set up table .*: Query read timeout/);

        proxy.thaw();
        // The same instance opens once the server answers.
        await t.init({ clusterId, logger: silentLogger() });
        const etag = await t.upsert(entry(1));
        assert.deepEqual(await t.read('counter/1', 'tick'), { ...entry(1), etag });
        await t.clear();
      } finally {
        await t.close();
        await proxy.close();
      }
    },
  );

  it('of several providers creating the table at once, exactly one creates and logs', { timeout: 20_000 }, async () => {
    const p = prefix('create');
    const logs = recordingLogger();
    const clusterId = `c-${randomUUID()}`;
    const tables = Array.from({ length: 6 }, () =>
      postgresReminders({ connectionString, tablePrefix: p, poolSize: 1 }),
    );
    try {
      await Promise.all(tables.map((t) => t.init({ clusterId, logger: logs })));
      const created = logs.records.filter((r) => r.message === 'created reminder table');
      assert.equal(created.length, 1, 'one creator');
      assert.equal(created[0]?.fields['table'], `${p}reminders`);
      assert.equal(created[0]?.fields['sequence'], `${p}reminders_etag`);
      const etags = await Promise.all(tables.map((t, i) => t.upsert(entry(i + 1))));
      assert.equal(new Set(etags).size, tables.length);
      for (const t of tables)
        assert.equal((await t.readRange(0, 0)).length, tables.length, 'every provider sees the one table');

      const again = postgresReminders({ connectionString, tablePrefix: p });
      await again.init({ clusterId, logger: logs });
      await again.close();
      assert.equal(
        logs.records.filter((r) => r.message === 'created reminder table').length,
        1,
        'a later init creates nothing',
      );
    } finally {
      await tables[0]?.clear();
      for (const t of tables) await t.close();
    }
  });

  it('never issues an ETag again when its sequence was lost but the rows were not', async () => {
    const p = prefix('lostseq');
    const clusterId = `c-${randomUUID()}`;
    const t = postgresReminders({ connectionString, tablePrefix: p });
    await t.init({ clusterId, logger: silentLogger() });
    try {
      const etags = [];
      for (let i = 1; i <= 5; i++) etags.push(await t.upsert(entry(i)));
      await t.close();
      await admin((c) => c.query(`DROP SEQUENCE "${p}reminders_etag"`));
      await t.init({ clusterId, logger: silentLogger() });
      const next = await t.upsert(entry(6));
      assert.ok(
        !etags.includes(next),
        `the ETag after the sequence came back (${next}) is not one of ${etags.join(', ')}`,
      );
      assert.equal(await t.remove('counter/5', 'tick', etags[4] as string), true, 'the rows kept their ETags');
    } finally {
      await t.close();
    }
  });

  it('skips a row it cannot read back, with a warning naming it, and reads the others', async () => {
    const logs = recordingLogger();
    const t = postgresReminders({ connectionString, tablePrefix: suitePrefix });
    const clusterId = `c-${randomUUID()}`;
    await t.init({ clusterId, logger: logs });
    try {
      const good = { ...entry(2), etag: await t.upsert(entry(2)) };
      await t.upsert(entry(1));
      // Within bigint, beyond what a JavaScript number holds exactly.
      await admin((c) =>
        c.query(
          `UPDATE "${suitePrefix}reminders" SET start_at = 4611686018427387904 WHERE cluster_id = $1 AND grain_id = $2`,
          [clusterId, 'counter/1'],
        ),
      );
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
      await t.clear();
    } finally {
      await t.close();
    }
  });

  it('reads a row whose last_tick_at cannot be read back without it, with a warning naming it; a tick mends it', async () => {
    const logs = recordingLogger();
    const t = postgresReminders({ connectionString, tablePrefix: suitePrefix });
    const clusterId = `c-${randomUUID()}`;
    await t.init({ clusterId, logger: logs });
    try {
      const e = { ...entry(1), etag: await t.upsert(entry(1)) };
      // Within bigint, beyond what a JavaScript number holds exactly, either way.
      for (const bad of ['4611686018427387904', '-9007199254740993']) {
        logs.records.length = 0;
        await admin((c) =>
          c.query(`UPDATE "${suitePrefix}reminders" SET last_tick_at = $3 WHERE cluster_id = $1 AND grain_id = $2`, [
            clusterId,
            'counter/1',
            bad,
          ]),
        );
        assert.deepEqual(await t.read('counter/1', 'tick'), e, `read, ${bad}`);
        assert.deepEqual(await t.readGrain('counter/1'), [e], 'readGrain');
        assert.deepEqual(await t.readRange(0, 0), [e], 'readRange');
        const warnings = logs.records.filter((r) => r.level === 'warn');
        assert.equal(warnings.length, 3, 'one warning per read that met the row');
        for (const w of warnings) {
          assert.equal(w.message, 'read a reminder row without its last tick, which cannot be read back');
          assert.equal(w.fields['grainId'], 'counter/1');
          assert.equal(w.fields['name'], 'tick');
          assert.match(String(w.fields['problem']), new RegExp(`last_tick_at .*${bad}`));
        }
        // Even a dueAt below the bad value replaces it.
        await t.recordTick('counter/1', 'tick', 1_700_000_000_000);
        assert.deepEqual(await t.read('counter/1', 'tick'), { ...e, lastTickAt: 1_700_000_000_000 }, `mended, ${bad}`);
      }
      await t.clear();
    } finally {
      await t.close();
    }
  });

  it('adds the last_tick_at column to a table made before it, once, keeping the rows', async () => {
    const p = prefix('upgrade');
    const clusterId = `c-${randomUUID()}`;
    // The table and sequence as the provider made them before ticks were recorded.
    await admin(async (c) => {
      await c.query(`CREATE SEQUENCE "${p}reminders_etag" AS bigint`);
      await c.query(`CREATE TABLE "${p}reminders" (
        cluster_id text NOT NULL, grain_id text NOT NULL, name text NOT NULL,
        grain_hash bigint NOT NULL CHECK (grain_hash BETWEEN 0 AND 4294967295),
        start_at bigint NOT NULL, period_ms bigint NOT NULL, etag text NOT NULL,
        PRIMARY KEY (cluster_id, grain_id, name))`);
      await c.query(`ALTER SEQUENCE "${p}reminders_etag" OWNED BY "${p}reminders".etag`);
      await c.query(
        `INSERT INTO "${p}reminders" VALUES ($1, 'counter/1', 'tick', 1000, 1700000000000, 60000, nextval('"${p}reminders_etag"')::text)`,
        [clusterId],
      );
    });
    const logs = recordingLogger();
    const tables = Array.from({ length: 3 }, () =>
      postgresReminders({ connectionString, tablePrefix: p, poolSize: 1 }),
    );
    try {
      await Promise.all(tables.map((t) => t.init({ clusterId, logger: logs })));
      const upgraded = logs.records.filter((r) => r.message === 'added a column to the reminder table');
      assert.equal(upgraded.length, 1, 'one upgrader');
      assert.equal(upgraded[0]?.fields['column'], 'last_tick_at');
      assert.equal(logs.records.filter((r) => r.message === 'created reminder table').length, 0);
      const [t] = tables;
      assert.ok(t);
      const row = await t.read('counter/1', 'tick');
      assert.deepEqual(row, { ...entry(1), etag: '1' }, 'the old row reads back, without a tick');
      await t.recordTick('counter/1', 'tick', 1_700_000_000_000);
      assert.deepEqual(await tables[2]?.read('counter/1', 'tick'), {
        ...entry(1),
        etag: '1',
        lastTickAt: 1_700_000_000_000,
      });
      assert.notEqual(await t.upsert(entry(1)), '1');
      await t.clear();
    } finally {
      for (const t of tables) await t.close();
    }
  });

  it('refuses a table of that name that it did not make, saying to choose another tablePrefix', async () => {
    const p = prefix('foreign');
    await admin((c) => c.query(`CREATE TABLE "${p}reminders" (id integer)`));
    const t = postgresReminders({ connectionString, tablePrefix: p });
    await assert.rejects(t.init({ clusterId: 'c', logger: silentLogger() }), {
      name: 'ReminderError',
      message: new RegExp(`${p}reminders.*grain_id.*tablePrefix`),
    });
    await t.close();
  });

  it('refuses invalid options with a ConfigurationError saying what to change', () => {
    assert.throws(() => postgresReminders({ connectionString: '' }), {
      name: 'ConfigurationError',
      message: /postgresReminders: option connectionString/,
    });
    assert.throws(() => postgresReminders({ connectionString, tablePrefix: 'a;drop' }), {
      name: 'ConfigurationError',
      message: /option tablePrefix/,
    });
    assert.throws(() => postgresReminders({ connectionString, tablePrefix: 'x'.repeat(41) }), {
      name: 'ConfigurationError',
      message: /option tablePrefix/,
    });
    assert.throws(() => postgresReminders({ connectionString, poolSize: 0 }), {
      name: 'ConfigurationError',
      message: /option poolSize/,
    });
    assert.throws(() => postgresReminders({ connectionString, connectionTimeoutMs: 0 }), {
      name: 'ConfigurationError',
      message: /option connectionTimeoutMs/,
    });
    assert.throws(() => postgresReminders({ connectionString, queryTimeoutMs: 1.5 }), {
      name: 'ConfigurationError',
      message: /option queryTimeoutMs/,
    });
  });
});
