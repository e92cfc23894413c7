// withTransaction against the server at GRANARY_TEST_POSTGRES (default the
// local test database): what becomes of the connection after a failure. A
// refusal by the server (a unique violation) is rolled back and the
// connection reused; a connection that failed (its backend killed) is
// destroyed, without a ROLLBACK, and the next call gets a fresh one; a
// database that cannot be reached fails the provider's call with its own error.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { MembershipError, StorageError } from '../../../src/errors.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { withTransaction } from '../../../src/providers/postgres/common.ts';
import { postgresEventLog, postgresMembership } from '../../../src/providers/postgres/index.ts';
import { startProxy } from '../../helpers.ts';
import { testSerializer } from '../../storage/serializer.ts';

const connectionString = process.env['GRANARY_TEST_POSTGRES'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const runId = randomUUID().replaceAll('-', '').slice(0, 12);
const table = `t${runId}_tx`;
const logPrefix = `t${runId}_txlog_`;

/** Runs SQL as another client of the database would. */
async function sql<R extends pg.QueryResultRow = pg.QueryResultRow>(
  text: string,
  values: unknown[] = [],
): Promise<R[]> {
  const admin = new pg.Client({ connectionString });
  await admin.connect();
  try {
    return (await admin.query<R>(text, values)).rows;
  } finally {
    await admin.end();
  }
}

/** A pool of one connection that records the statements each of its connections was sent. */
function recordingPool(): { pool: pg.Pool; sent: Map<number, string[]> } {
  const pool = new pg.Pool({ connectionString, max: 1 });
  const sent = new Map<number, string[]>();
  let next = 0;
  pool.on('connect', (client) => {
    const statements: string[] = [];
    sent.set(next++, statements);
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    Object.assign(client, {
      query: (...args: unknown[]): unknown => {
        statements.push(typeof args[0] === 'string' ? args[0] : String((args[0] as { text?: unknown }).text));
        return query(...args);
      },
    });
  });
  return { pool, sent };
}

async function backendPid(client: pg.PoolClient): Promise<number> {
  return (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid ?? -1;
}

before(async () => {
  await sql(`CREATE TABLE "${table}" (id text PRIMARY KEY)`);
  await sql(`INSERT INTO "${table}" (id) VALUES ('taken')`);
});

after(async () => {
  await sql(`DROP TABLE IF EXISTS "${table}"`);
  await sql(`DROP TABLE IF EXISTS "${logPrefix}events"; DROP TABLE IF EXISTS "${logPrefix}event_snapshots"`);
});

describe('postgres withTransaction', () => {
  it('rolls back a transaction the server refused and reuses its connection', async () => {
    const { pool, sent } = recordingPool();
    try {
      let refusedOn = -1;
      await assert.rejects(
        withTransaction(pool, async (client) => {
          refusedOn = await backendPid(client);
          await client.query(`INSERT INTO "${table}" (id) VALUES ('new')`);
          await client.query(`INSERT INTO "${table}" (id) VALUES ('taken')`);
        }),
        (err: unknown) => err instanceof pg.DatabaseError && err.code === '23505',
      );
      const next = await withTransaction(pool, async (client) => {
        const rows = (await client.query<{ id: string }>(`SELECT id FROM "${table}" ORDER BY id`)).rows;
        return { pid: await backendPid(client), ids: rows.map((r) => r.id) };
      });
      assert.equal(next.pid, refusedOn, 'the next transaction runs on the same connection');
      assert.deepEqual(next.ids, ['taken'], 'the refused transaction left nothing behind');
      assert.equal(sent.size, 1, 'one connection served both');
      assert.ok(sent.get(0)?.includes('ROLLBACK'), 'the refused transaction was rolled back');
    } finally {
      await pool.end();
    }
  });

  it('rolls back when the body says not to keep its work, and reuses the connection', async () => {
    const { pool, sent } = recordingPool();
    try {
      const kept = await withTransaction(
        pool,
        async (client) => (await client.query(`INSERT INTO "${table}" (id) VALUES ('undone')`)).rowCount === 0,
        (ok) => ok,
      );
      assert.equal(kept, false);
      assert.deepEqual(await sql(`SELECT id FROM "${table}" WHERE id = 'undone'`), []);
      await withTransaction(pool, async (client) => client.query('SELECT 1'));
      assert.equal(sent.size, 1);
    } finally {
      await pool.end();
    }
  });

  it('destroys a connection whose backend was killed mid-transaction, without a ROLLBACK, and the next call gets a fresh one', async () => {
    const { pool, sent } = recordingPool();
    try {
      let killed = -1;
      await assert.rejects(
        withTransaction(pool, async (client) => {
          killed = await backendPid(client);
          await client.query(`INSERT INTO "${table}" (id) VALUES ('lost')`);
          // With a time-out, pg_terminate_backend waits until the backend is gone.
          const [gone] = await sql<{ gone: boolean }>('SELECT pg_terminate_backend($1, 60000) AS gone', [killed]);
          assert.equal(gone?.gone, true, 'the backend was terminated');
          await client.query('SELECT 1');
        }),
        (err: unknown) => !(err instanceof pg.DatabaseError) || err.severity === 'FATAL',
      );
      assert.equal(pool.totalCount, 0, 'the killed connection left the pool');
      assert.ok(!sent.get(0)?.includes('ROLLBACK'), 'no ROLLBACK was sent on the dead connection');
      const pid = await withTransaction(pool, backendPid);
      assert.notEqual(pid, killed, 'the next call runs on a new backend');
      assert.equal(sent.size, 2, 'a second connection was made');
      assert.deepEqual(await sql(`SELECT id FROM "${table}" WHERE id = 'lost'`), [], 'the server rolled it back');
    } finally {
      await pool.end();
    }
  });

  it("fails a provider's call with its own error naming the operation when the database cannot be reached", async () => {
    const port = await closedPort();
    const unreachable = new URL(connectionString);
    unreachable.host = `127.0.0.1:${port}`;
    const membership = postgresMembership({ connectionString: unreachable.toString(), connectionTimeoutMs: 5_000 });
    await assert.rejects(
      membership.init({ clusterId: 'tx', logger: silentLogger() }),
      (err: unknown) =>
        err instanceof MembershipError && /init failed/.test(err.message) && /ECONNREFUSED/.test(err.message),
    );

    const target = new URL(connectionString);
    const proxy = await startProxy(target.hostname, Number(target.port || 5432));
    const via = new URL(connectionString);
    via.host = `127.0.0.1:${proxy.port}`;
    const log = postgresEventLog({ connectionString: via.toString(), tablePrefix: logPrefix, poolSize: 1 });
    await log.init({ name: 'default', logger: silentLogger(), serializer: testSerializer });
    try {
      const stream = { grainType: 'account', grainKey: 'a', logName: 'journal' };
      assert.equal(await log.append(stream, [{ n: 1 }], 0), 1);
      await proxy.cut();
      await assert.rejects(
        log.append(stream, [{ n: 2 }], 1),
        (err: unknown) =>
          err instanceof StorageError &&
          err.code === 'GRANARY_STORAGE' &&
          /append to grain account\/a log 'journal' failed/.test(err.message),
      );
    } finally {
      await log.close();
      await proxy.cut();
    }
  });
});

/** A loopback port nothing listens on: one that was just free and is closed again. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return address.port;
}
