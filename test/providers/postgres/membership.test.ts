// PostgreSQL membership: the conformance suite against the server at
// GRANARY_TEST_POSTGRES (default the local test database) under a random table
// prefix dropped at the end, plus connection failures, a server that stops
// answering, concurrent creators and corrupt rows.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { MembershipError } from '../../../src/errors.ts';
import type { MembershipTable, SiloEntry, TableVersion } from '../../../src/membership/table.ts';
import type { Logger } from '../../../src/observability/logger.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { postgresMembership } from '../../../src/providers/postgres/index.ts';
import type { PostgresMembershipOptions } from '../../../src/providers/postgres/index.ts';
import { eventually, startProxy as startProxyTo, type CuttableProxy } from '../../helpers.ts';
import { membershipConformance } from '../../membership/conformance.ts';
import { recordingLogger, startFreezableProxy } from './support.ts';

const connectionString = process.env['GRANARY_TEST_POSTGRES'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const runId = randomUUID().replaceAll('-', '').slice(0, 12);
/** Every prefix this run used, for the tables to drop at the end. */
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
    for (const p of prefixes) await admin.query(`DROP TABLE IF EXISTS "${p}membership", "${p}membership_version"`);
  } finally {
    await admin.end();
  }
});

const suitePrefix = prefix('suite');
membershipConformance('postgres membership', {
  create: () => postgresMembership({ connectionString, tablePrefix: suitePrefix }),
});

function silo(n: number): SiloEntry {
  return {
    address: `10.0.0.${n}:11111`,
    generation: 1_700_000_000_000 + n,
    status: 'Active',
    gatewayAddress: null,
    hostName: 'h',
    startedAt: 1_700_000_000_000,
    iAmAliveAt: 1_700_000_001_000,
    suspicions: [],
  };
}

function after1(v: TableVersion): TableVersion {
  return { version: v.version + 1, etag: v.etag };
}

async function withTable(
  options: Partial<PostgresMembershipOptions>,
  logger: Logger,
  body: (t: MembershipTable) => Promise<void>,
): Promise<void> {
  const t = postgresMembership({ connectionString, ...options });
  await t.init({ clusterId: `c-${randomUUID()}`, logger });
  try {
    await body(t);
  } finally {
    await t.deleteCluster();
    await t.close();
  }
}

/** A cuttable proxy to the server under test. */
function startProxy(): Promise<CuttableProxy> {
  const target = new URL(connectionString);
  return startProxyTo(target.hostname, Number(target.port || 5432));
}

describe('postgres membership specifics', () => {
  it('has kind postgres', () => {
    assert.equal(postgresMembership({ connectionString }).kind, 'postgres');
  });

  it(
    'fails init and later calls with a MembershipError when the server cannot be reached',
    { timeout: 20_000 },
    async () => {
      const t = postgresMembership({
        connectionString: 'postgres://postgres:hunter2@127.0.0.1:1/test',
        connectionTimeoutMs: 2_000,
      });
      await assert.rejects(t.init({ clusterId: 'c', logger: silentLogger() }), (err: unknown) => {
        assert.ok(err instanceof MembershipError, String(err));
        assert.equal(err.code, 'GRANARY_MEMBERSHIP');
        assert.match(err.message, /postgres membership .*127\.0\.0\.1:1.*init failed/);
        assert.doesNotMatch(err.message, /hunter2/, 'the password is not in the message');
        assert.ok(err.cause instanceof Error, 'the driver error is the cause');
        return true;
      });
      await assert.rejects(
        t.readAll(),
        (err: unknown) => err instanceof MembershipError && /readAll failed: the table is not open/.test(err.message),
      );
      await t.close();
    },
  );

  it('survives the server killing its connections, and reconnects on the next call', { timeout: 20_000 }, async () => {
    const appName = `granary-test-${randomUUID()}`;
    const logs = recordingLogger();
    const url = `${connectionString}${connectionString.includes('?') ? '&' : '?'}application_name=${appName}`;
    await withTable({ connectionString: url, tablePrefix: suitePrefix }, logs, async (t) => {
      assert.equal(await t.insert(silo(1), after1((await t.readAll()).version)), true);
      const admin = new pg.Client({ connectionString });
      await admin.connect();
      try {
        const killed = await admin.query(
          'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1',
          [appName],
        );
        assert.ok(killed.rowCount !== null && killed.rowCount >= 1, 'an idle pool connection was there to kill');
      } finally {
        await admin.end();
      }
      await eventually('the pool reports the killed idle connection', () =>
        logs.records.some((r) => r.level === 'warn' && /idle connection failed/.test(r.message ?? '')),
      );
      const s = await t.readAll();
      assert.equal(s.version.version, 1);
      assert.equal(s.entries.length, 1);
    });
  });

  it(
    'fails calls with a MembershipError while the server is gone, and works again once it is back',
    { timeout: 20_000 },
    async () => {
      const proxy = await startProxy();
      const target = new URL(connectionString);
      target.host = `127.0.0.1:${proxy.port}`;
      const logs = recordingLogger();
      const t = postgresMembership({
        connectionString: target.toString(),
        tablePrefix: suitePrefix,
        connectionTimeoutMs: 2_000,
      });
      await t.init({ clusterId: `c-${randomUUID()}`, logger: logs });
      try {
        assert.equal(await t.insert(silo(1), after1((await t.readAll()).version)), true);
        await proxy.cut();
        await eventually('the pool reports its idle connection gone', () =>
          logs.records.some((r) => r.level === 'warn' && /idle connection failed/.test(r.message ?? '')),
        );
        await assert.rejects(
          t.readAll(),
          (err: unknown) => err instanceof MembershipError && /readAll failed/.test(err.message),
        );
        await assert.rejects(
          t.insert(silo(2), { version: 2, etag: 'x' }),
          (err: unknown) => err instanceof MembershipError && /insert failed: silo 10\.0\.0\.2/.test(err.message),
        );
        await assert.rejects(t.updateIAmAlive(silo(1).address, silo(1).generation, 1), MembershipError);

        await proxy.restore();
        const s = await t.readAll();
        assert.equal(s.version.version, 1);
        await t.deleteCluster();
      } finally {
        await t.close();
        await proxy.cut();
      }
    },
  );

  it(
    'fails a change within queryTimeoutMs when the server stops answering (not after a second wait for a ROLLBACK), and works once it answers',
    { timeout: 30_000 },
    async () => {
      const proxy = await startFreezableProxy(connectionString);
      const queryTimeoutMs = 1_000;
      const t = postgresMembership({
        connectionString: proxy.via,
        tablePrefix: suitePrefix,
        poolSize: 1,
        connectionTimeoutMs: 5_000,
        queryTimeoutMs,
      });
      await t.init({ clusterId: `c-${randomUUID()}`, logger: silentLogger() });
      try {
        assert.equal(await t.insert(silo(1), after1((await t.readAll()).version)), true);
        const { version } = await t.readAll();
        // The compare-and-swap's transaction gets no answer from its BEGIN on.
        const sent = proxy.freeze('BEGIN');
        let outcome: 'pending' | 'failed' | 'inserted' = 'pending';
        let failure: unknown;
        const insert = t.insert(silo(2), after1(version)).then(
          () => {
            outcome = 'inserted';
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
        await insert;
        assert.equal(atMarker, 'failed', 'the insert had failed by 1.5 x queryTimeoutMs');
        assert.ok(failure instanceof MembershipError, `a MembershipError, got ${String(failure)}`);
        assert.match(failure.message, /insert failed: silo 10\.0\.0\.2:11111@1700000000002: Query read timeout/);

        proxy.thaw();
        // The pool's one connection was dropped, not left busy: the table works again.
        const s = await t.readAll();
        assert.deepEqual(s.version, version, 'the failed insert changed nothing');
        assert.equal(await t.insert(silo(2), after1(s.version)), true);
        assert.equal((await t.readAll()).entries.length, 2);
        await t.deleteCluster();
      } finally {
        await t.close();
        await proxy.close();
      }
    },
  );

  it(
    'of several providers creating the tables at once, exactly one creates and logs',
    { timeout: 20_000 },
    async () => {
      const p = prefix('create');
      const logs = recordingLogger();
      const clusterId = `c-${randomUUID()}`;
      const tables = Array.from({ length: 6 }, () =>
        postgresMembership({ connectionString, tablePrefix: p, poolSize: 1 }),
      );
      try {
        await Promise.all(tables.map((t) => t.init({ clusterId, logger: logs })));
        const created = logs.records.filter((r) => r.message === 'created membership tables');
        assert.equal(created.length, 1, 'one creator');
        assert.deepEqual(created[0]?.fields['tables'], [`${p}membership`, `${p}membership_version`]);
        const versions = await Promise.all(tables.map((t) => t.readAll()));
        for (const v of versions) assert.deepEqual(v, versions[0], 'every init saw the one version row');
        assert.equal(versions[0]?.version.version, 0);
      } finally {
        await tables[0]?.deleteCluster();
        for (const t of tables) await t.close();
      }
    },
  );

  it(
    'has the server cancel a statement stuck behind a lock once queryTimeoutMs passes, so it holds no lock queue slot after the call failed',
    { timeout: 20_000 },
    async () => {
      const prefix = `t${runId}_locked_`;
      prefixes.push(prefix);
      const applicationName = `granary-locked-${randomUUID().slice(0, 8)}`;
      const url = new URL(connectionString);
      url.searchParams.set('application_name', applicationName);
      await withTable(
        { connectionString: url.toString(), tablePrefix: prefix, queryTimeoutMs: 500 },
        silentLogger(),
        async (t) => {
          const admin = new pg.Client({ connectionString });
          await admin.connect();
          try {
            await admin.query('BEGIN');
            await admin.query(`LOCK TABLE "${prefix}membership" IN ACCESS EXCLUSIVE MODE`);
            await assert.rejects(t.readAll(), MembershipError);
            // Without a server-side statement time-out the read would wait on the lock until the admin lets go.
            let seen = '';
            await eventually(
              'the stuck statement is cancelled by the server',
              async () => {
                const { rows } = await admin.query<{ state: string; query: string; wait: string | null }>(
                  "SELECT state, query, wait_event_type AS wait FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'",
                  [applicationName],
                );
                seen = JSON.stringify(rows);
                return rows.length === 0;
              },
              10_000,
            ).catch((e: unknown) => {
              throw new Error(`${(e as Error).message}; still active: ${seen}`);
            });
          } finally {
            await admin.query('ROLLBACK').catch(() => undefined);
            await admin.end();
          }
        },
      );
    },
  );

  it('fails a read of a corrupt row with a MembershipError naming the row', async () => {
    await withTable({ tablePrefix: suitePrefix }, silentLogger(), async (t) => {
      assert.equal(await t.insert(silo(1), after1((await t.readAll()).version)), true);
      const admin = new pg.Client({ connectionString });
      await admin.connect();
      try {
        await admin.query(
          `UPDATE "${suitePrefix}membership" SET suspicions = '{"not": "an array"}' WHERE silo_id = $1`,
          ['10.0.0.1:11111@1700000000001'],
        );
      } finally {
        await admin.end();
      }
      await assert.rejects(t.readAll(), (err: unknown) => {
        assert.ok(err instanceof MembershipError);
        assert.match(err.message, /corrupt row 10\.0\.0\.1:11111@1700000000001.*suspicions/);
        return true;
      });
    });
  });

  it('refuses a table of that name that it did not make, saying to choose another tablePrefix', async () => {
    const p = prefix('foreign');
    const admin = new pg.Client({ connectionString });
    await admin.connect();
    try {
      await admin.query(`CREATE TABLE "${p}membership" (id integer)`);
    } finally {
      await admin.end();
    }
    const t = postgresMembership({ connectionString, tablePrefix: p });
    await assert.rejects(t.init({ clusterId: 'c', logger: silentLogger() }), {
      name: 'MembershipError',
      message: new RegExp(`${p}membership.*silo_id.*tablePrefix`),
    });
    await t.close();
  });

  it('refuses invalid options with a ConfigurationError saying what to change', () => {
    assert.throws(() => postgresMembership({ connectionString: '' }), {
      name: 'ConfigurationError',
      message: /connectionString/,
    });
    assert.throws(() => postgresMembership({ connectionString, tablePrefix: 'a;drop' }), {
      name: 'ConfigurationError',
      message: /tablePrefix/,
    });
    assert.throws(() => postgresMembership({ connectionString, poolSize: 0 }), {
      name: 'ConfigurationError',
      message: /poolSize/,
    });
    assert.throws(() => postgresMembership({ connectionString, connectionTimeoutMs: 0 }), {
      name: 'ConfigurationError',
      message: /connectionTimeoutMs/,
    });
  });
});
