// PostgreSQL event log: the conformance suite against the server at
// GRANARY_TEST_POSTGRES (default the local test database) under a random table
// prefix dropped at the end, plus two logs (as two silos) on one database,
// concurrent creators, format versions and connection failures.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { StorageError } from '../../../src/errors.ts';
import type { EventLog, LogAddress } from '../../../src/journal/log.ts';
import type { Logger } from '../../../src/observability/logger.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { postgresEventLog, type PostgresEventLogOptions } from '../../../src/providers/postgres/index.ts';
import { eventLogConformance } from '../../journal/conformance.ts';
import { testSerializer } from '../../storage/serializer.ts';
import { recordingLogger, type LogRecord } from './support.ts';

const connectionString = process.env['GRANARY_TEST_POSTGRES'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const runId = randomUUID().replaceAll('-', '').slice(0, 12);
/** Every prefix this run used, for the tables to drop at the end. */
const prefixes: string[] = [];

function prefix(name: string): string {
  const p = `t${runId}_${name}_`;
  prefixes.push(p);
  return p;
}

/** Runs `body` with a client of its own on the test database. */
async function withAdmin<T>(body: (client: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client({ connectionString });
  await admin.connect();
  try {
    return await body(admin);
  } finally {
    await admin.end();
  }
}

after(() =>
  withAdmin(async (admin) => {
    for (const p of prefixes) await admin.query(`DROP TABLE IF EXISTS "${p}events", "${p}event_snapshots"`);
  }),
);

const garbage = Buffer.from([0xff, 0x00, 0xde, 0xad]);
const suitePrefix = prefix('suite');

eventLogConformance('postgres event log', {
  create: () => postgresEventLog({ connectionString, tablePrefix: suitePrefix }),
  nulInNames: false,
  unpairedSurrogatesInNames: false,
  corruptEvent: (_log, s, version) =>
    withAdmin(async (admin) => {
      const r = await admin.query(
        `UPDATE "${suitePrefix}events" SET payload = $5 WHERE grain_type = $1 AND grain_key = $2 AND log_name = $3 AND version = $4`,
        [s.grainType, s.grainKey, s.logName, version, garbage],
      );
      assert.equal(r.rowCount, 1, 'the event to corrupt exists');
    }),
  corruptSnapshot: (_log, s) =>
    withAdmin(async (admin) => {
      const r = await admin.query(
        `UPDATE "${suitePrefix}event_snapshots" SET payload = $4 WHERE grain_type = $1 AND grain_key = $2 AND log_name = $3`,
        [s.grainType, s.grainKey, s.logName, garbage],
      );
      assert.equal(r.rowCount, 1, 'the snapshot to corrupt exists');
    }),
});

/** Opens logs with these options, runs `body`, and closes them. */
async function withLogs(
  options: Array<Partial<PostgresEventLogOptions> & { logger?: Logger }>,
  body: (logs: EventLog[]) => Promise<void>,
): Promise<void> {
  const logs: EventLog[] = [];
  try {
    for (const { logger, ...o } of options) {
      const log = postgresEventLog({ connectionString, ...o });
      await log.init({ name: 'default', logger: logger ?? silentLogger(), serializer: testSerializer });
      logs.push(log);
    }
    await body(logs);
  } finally {
    for (const log of logs) await log.close();
  }
}

const s: LogAddress = { grainType: 'account', grainKey: 'alice', logName: 'journal' };

/**
 * A proxy to the test database that can stop answering without closing
 * anything (a server that hangs): while frozen it holds what it is sent, and
 * `sent` resolves once it holds something the client sent.
 */
async function startFreezableProxy(): Promise<{
  via: string;
  freeze(): Promise<void>;
  thaw(): void;
  close(): Promise<void>;
}> {
  const target = new URL(connectionString);
  let frozen = false;
  let onSent: (() => void) | undefined;
  const held: Array<() => void> = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      sockets.add(from);
      from.on('close', () => sockets.delete(from));
      from.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
      from.on('data', (chunk: Buffer) => {
        if (!frozen) {
          to.write(chunk);
          return;
        }
        held.push(() => to.write(chunk));
        if (from === client) onSent?.();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  const via = new URL(connectionString);
  via.host = `127.0.0.1:${address.port}`;
  return {
    via: via.toString(),
    freeze: () => {
      frozen = true;
      return new Promise<void>((resolve) => (onSent = resolve));
    },
    thaw: () => {
      frozen = false;
      onSent = undefined;
      for (const deliver of held.splice(0)) deliver();
    },
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

describe('postgres event log specifics', () => {
  it('lets two logs (as two silos) see each other, and of 10 appends at one version across them exactly one wins', async () => {
    const tablePrefix = prefix('two');
    await withLogs([{ tablePrefix }, { tablePrefix }], async ([one, two]) => {
      assert.ok(one && two);
      assert.equal(await one.append(s, [{ n: 1 }], 0), 1);
      assert.deepEqual(await two.read(s), { events: [{ version: 1, event: { n: 1 } }], version: 1 });
      await assert.rejects(two.append(s, [{ n: 9 }], 0), {
        code: 'GRANARY_INCONSISTENT_STATE',
        message: /expected version 0, found 1/,
      });
      const outcomes = await Promise.allSettled(
        Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? one : two).append(s, [{ writer: i }, { writer: i }], 1)),
      );
      const won = outcomes.filter((o) => o.status === 'fulfilled');
      assert.equal(won.length, 1);
      for (const o of outcomes)
        if (o.status === 'rejected') assert.equal((o.reason as { code?: string }).code, 'GRANARY_INCONSISTENT_STATE');
      const { events, version } = await one.read(s);
      assert.equal(version, 3);
      const [, a, b] = events;
      assert.deepEqual(a?.event, b?.event, "both events of the batch are the winner's");
    });
  });

  it('creates its tables once when several logs start at once', async () => {
    const tablePrefix = prefix('create');
    const records: LogRecord[] = [];
    await withLogs(
      Array.from({ length: 4 }, () => ({ tablePrefix, logger: recordingLogger(records) })),
      async (logs) => {
        assert.equal(logs.length, 4);
        const created = records.filter((r) => r.message === 'created event log tables');
        assert.equal(created.length, 1, 'exactly one creator');
        assert.deepEqual(created[0]?.fields['tables'], [`${tablePrefix}events`, `${tablePrefix}event_snapshots`]);
      },
    );
  });

  it('fails a read of a row with an unknown format version with GRANARY_STORAGE_CORRUPT naming the table and version', async () => {
    const tablePrefix = prefix('format');
    await withLogs([{ tablePrefix }], async ([log]) => {
      assert.ok(log);
      await log.append(s, [{ n: 1 }, { n: 2 }], 0);
      await withAdmin((admin) =>
        admin.query(`UPDATE "${tablePrefix}events" SET format_version = 99 WHERE version = 2`),
      );
      await assert.rejects(log.read(s), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'GRANARY_STORAGE_CORRUPT');
        for (const part of [
          'account/alice',
          "'journal'",
          "postgres event log 'default'",
          `${tablePrefix}events`,
          'version 2',
          'format version is 99',
        ]) {
          assert.ok(err.message.includes(part), `message names ${part}: ${err.message}`);
        }
        return true;
      });
    });
  });

  it('refuses a table of that name that it did not make, saying to choose another tablePrefix', async () => {
    const tablePrefix = prefix('foreign');
    await withAdmin((admin) => admin.query(`CREATE TABLE "${tablePrefix}events" (id integer PRIMARY KEY, body text)`));
    const log = postgresEventLog({ connectionString, tablePrefix });
    await assert.rejects(
      async () => log.init({ name: 'default', logger: silentLogger(), serializer: testSerializer }),
      {
        name: 'StorageError',
        message: new RegExp(`${tablePrefix}events.*payload.*tablePrefix`),
      },
    );
    await log.close();
  });

  it('fails init with a StorageError, without the password, when the server cannot be reached', async () => {
    const log = postgresEventLog({
      connectionString: 'postgres://someone:secret@127.0.0.1:1/nowhere',
      connectionTimeoutMs: 2000,
    });
    await assert.rejects(
      async () => log.init({ name: 'default', logger: silentLogger(), serializer: testSerializer }),
      (err: Error & { code?: string }) => {
        assert.equal(err.name, 'StorageError');
        assert.equal(err.code, 'GRANARY_STORAGE');
        assert.ok(!err.message.includes('secret'), `the password is not in the message: ${err.message}`);
        assert.ok(err.message.includes('127.0.0.1:1'), err.message);
        return true;
      },
    );
    await log.close();
  });

  it(
    'fails an append within queryTimeoutMs when the server stops answering (not after a second wait for a ROLLBACK), and works once it answers',
    { timeout: 30_000 },
    async () => {
      const tablePrefix = prefix('hang');
      const proxy = await startFreezableProxy();
      const queryTimeoutMs = 1_000;
      const log = postgresEventLog({
        connectionString: proxy.via,
        tablePrefix,
        poolSize: 1,
        connectionTimeoutMs: 5_000,
        queryTimeoutMs,
      });
      await log.init({ name: 'default', logger: silentLogger(), serializer: testSerializer });
      try {
        assert.equal(await log.append(s, [{ n: 1 }], 0), 1);
        const sent = proxy.freeze();
        let outcome: 'pending' | 'failed' | 'appended' = 'pending';
        let failure: unknown;
        const append = log.append(s, [{ n: 2 }], 1).then(
          () => {
            outcome = 'appended';
          },
          (err: unknown) => {
            outcome = 'failed';
            failure = err;
          },
        );
        // The append's first statement is on its way, so its time-out runs: it is due before this marker, which
        // Node fires after it (expired timers run in order, with the promise jobs of each in between).
        await sent;
        const atMarker = await new Promise<string>((resolve) =>
          setTimeout(() => resolve(outcome), queryTimeoutMs * 1.5),
        );
        await append;
        assert.equal(atMarker, 'failed', 'the append had failed by 1.5 x queryTimeoutMs');
        assert.ok(failure instanceof StorageError, `a StorageError, got ${String(failure)}`);
        assert.equal(failure.code, 'GRANARY_STORAGE');
        assert.match(failure.message, /append to grain account\/alice/);

        proxy.thaw();
        // The pool's one connection was dropped, not left busy: the log works again.
        const { version } = await log.read(s);
        assert.equal(await log.append(s, [{ n: 3 }], version), version + 1);
      } finally {
        await log.close();
        await proxy.close();
      }
    },
  );

  it('refuses invalid options with a ConfigurationError saying what to change', () => {
    assert.throws(() => postgresEventLog({ connectionString: '' }), {
      code: 'GRANARY_CONFIGURATION',
      message: /connectionString/,
    });
    assert.throws(() => postgresEventLog({ connectionString, tablePrefix: 'a"; DROP' }), {
      code: 'GRANARY_CONFIGURATION',
      message: /tablePrefix/,
    });
    assert.throws(() => postgresEventLog({ connectionString, poolSize: 0 }), {
      code: 'GRANARY_CONFIGURATION',
      message: /poolSize/,
    });
    assert.throws(() => postgresEventLog({ connectionString, queryTimeoutMs: 0 }), {
      code: 'GRANARY_CONFIGURATION',
      message: /queryTimeoutMs/,
    });
  });
});
