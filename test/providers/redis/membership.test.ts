// Redis membership: the conformance suite against the server at
// GRANARY_TEST_REDIS (default the local one) under a random key prefix deleted
// at the end, plus an unreachable server, a server that goes away and comes
// back through a proxy, one that stops answering, key layout and corrupt rows.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { MembershipError } from '../../../src/errors.ts';
import type { SiloEntry, TableVersion } from '../../../src/membership/table.ts';
import type { Logger } from '../../../src/observability/logger.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { redisMembership } from '../../../src/providers/redis/index.ts';
import { eventually, startProxy as startProxyTo, type CuttableProxy } from '../../helpers.ts';
import { membershipConformance } from '../../membership/conformance.ts';

const url = process.env['GRANARY_TEST_REDIS'] ?? 'redis://127.0.0.1:6379';
const keyPrefix = `test:${randomUUID()}:`;

after(async () => {
  const admin = new Redis(url, { lazyConnect: true });
  await admin.connect();
  try {
    let cursor = '0';
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 1000);
      if (keys.length > 0) await admin.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    admin.disconnect();
  }
});

membershipConformance('redis membership', { create: () => redisMembership({ url, keyPrefix }) });

interface LogRecord {
  readonly level: string;
  readonly message: string | undefined;
}

function recordingLogger(records: LogRecord[] = []): Logger & { records: LogRecord[] } {
  const at =
    (level: string) =>
    (_fields: object, message?: string): void => {
      records.push({ level, message });
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

/** A cuttable proxy to the server under test. */
function startProxy(): Promise<CuttableProxy> {
  const target = new URL(url);
  return startProxyTo(target.hostname, Number(target.port || 6379));
}

/**
 * A proxy on which the connections open when `hang()` is called get no answer
 * ever again, while new ones work: a Redis that vanished without closing its
 * connections (a failover to another host, a network cut), with one that
 * answers again behind the same address.
 */
async function startHangingProxy(): Promise<{ via: string; hang(): void; close(): Promise<void> }> {
  const target = new URL(url);
  const hung = new Set<net.Socket>();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 6379), target.hostname);
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
        if (!hung.has(client)) to.write(chunk);
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return {
    via: `redis://127.0.0.1:${address.port}`,
    hang: () => {
      for (const socket of sockets) hung.add(socket);
    },
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

describe('redis membership specifics', () => {
  it('has kind redis', () => {
    assert.equal(redisMembership({ url }).kind, 'redis');
  });

  it('keeps a cluster in three keys under the prefix, with a hash tag on the cluster id', async () => {
    const clusterId = `c-${randomUUID()}`;
    const t = redisMembership({ url, keyPrefix });
    await t.init({ clusterId, logger: silentLogger() });
    const admin = new Redis(url);
    try {
      assert.equal(await t.insert(silo(1), after1((await t.readAll()).version)), true);
      const base = `${keyPrefix}membership:{${clusterId}}`;
      assert.deepEqual(await admin.hgetall(`${base}:version`), {
        version: '1',
        etag: (await t.readAll()).version.etag,
      });
      assert.deepEqual(Object.keys(await admin.hgetall(`${base}:rows`)), ['10.0.0.1:11111@1700000000001']);
      assert.deepEqual(await admin.hgetall(`${base}:alive`), { '10.0.0.1:11111@1700000000001': '1700000001000' });
      await t.deleteCluster();
      assert.equal(
        await admin.exists(`${base}:version`, `${base}:rows`, `${base}:alive`),
        0,
        'deleteCluster leaves no key',
      );
    } finally {
      admin.disconnect();
      await t.close();
    }
  });

  it(
    'fails init and later calls with a MembershipError when Redis cannot be reached',
    { timeout: 15_000 },
    async () => {
      const t = redisMembership({ url: 'redis://:hunter2@127.0.0.1:1', connectTimeoutMs: 2_000 });
      await assert.rejects(t.init({ clusterId: 'c', logger: silentLogger() }), (err: unknown) => {
        assert.ok(err instanceof MembershipError, String(err));
        assert.equal(err.code, 'GRANARY_MEMBERSHIP');
        assert.match(err.message, /redis membership .*127\.0\.0\.1:1.*init failed.*ECONNREFUSED/);
        assert.doesNotMatch(err.message, /hunter2/, 'the password is not in the message');
        return true;
      });
      await assert.rejects(
        t.readAll(),
        (err: unknown) => err instanceof MembershipError && /readAll failed: the table is not open/.test(err.message),
      );
      await t.close();
    },
  );

  it(
    'fails calls with a MembershipError while Redis is gone, and works again once it is back',
    { timeout: 20_000 },
    async () => {
      const proxy = await startProxy();
      const logs = recordingLogger();
      const t = redisMembership({ url: `redis://127.0.0.1:${proxy.port}`, keyPrefix, commandTimeoutMs: 2_000 });
      await t.init({ clusterId: `c-${randomUUID()}`, logger: logs });
      try {
        assert.equal(await t.insert(silo(1), after1((await t.readAll()).version)), true);
        await proxy.cut();
        await eventually('the provider notices the lost connection', () =>
          logs.records.some((r) => r.level === 'warn' && /connection lost/.test(r.message ?? '')),
        );
        await assert.rejects(
          t.readAll(),
          (err: unknown) => err instanceof MembershipError && /readAll failed/.test(err.message),
        );
        await assert.rejects(t.updateIAmAlive(silo(1).address, silo(1).generation, 1), MembershipError);

        await proxy.restore();
        await eventually(
          'readAll works again after Redis is back',
          async () => {
            try {
              return (await t.readAll()).version.version === 1;
            } catch (err) {
              assert.ok(err instanceof MembershipError, `only MembershipErrors while reconnecting, got ${String(err)}`);
              return false;
            }
          },
          10_000,
        );
        assert.ok(logs.records.some((r) => r.level === 'info' && /connection back/.test(r.message ?? '')));
        await t.deleteCluster();
      } finally {
        await t.close();
        await proxy.cut();
      }
    },
  );

  it(
    'drops a connection on which a command timed out, so that a Redis answering again behind the same address is used without a restart',
    { timeout: 30_000 },
    async () => {
      const proxy = await startHangingProxy();
      const logs = recordingLogger();
      const t = redisMembership({ url: proxy.via, keyPrefix, commandTimeoutMs: 1_000 });
      await t.init({ clusterId: `c-${randomUUID()}`, logger: logs });
      try {
        const one = silo(1);
        assert.equal(await t.insert(one, after1((await t.readAll()).version)), true);
        proxy.hang();
        // Both wait on the hung connection, as a silo's I-am-alive and its read of the table would.
        await Promise.all([
          assert.rejects(t.updateIAmAlive(one.address, one.generation, 1_700_000_002_000), (err: unknown) => {
            assert.ok(err instanceof MembershipError, String(err));
            assert.match(err.message, /updateIAmAlive failed: silo 10\.0\.0\.1:11111@1700000000001: Command timed out/);
            return true;
          }),
          assert.rejects(
            t.readAll(),
            (err: unknown) => err instanceof MembershipError && /readAll failed/.test(err.message),
          ),
        ]);
        // The old connection never answers again; a new one does. Until the table has one, calls fail at once or time out.
        await eventually(
          'I-am-alive through a new connection',
          async () => {
            try {
              await t.updateIAmAlive(one.address, one.generation, 1_700_000_003_000);
              return true;
            } catch (err) {
              assert.ok(err instanceof MembershipError, `only MembershipErrors meanwhile, got ${String(err)}`);
              return false;
            }
          },
          15_000,
        );
        const s = await t.readAll();
        assert.equal(s.version.version, 1);
        assert.deepEqual(
          s.entries.map((e) => e.entry.iAmAliveAt),
          [1_700_000_003_000],
        );
        assert.ok(
          logs.records.some((r) => r.level === 'warn' && /timed out/.test(r.message ?? '')),
          'the dropped connection is logged',
        );
        assert.ok(
          logs.records.some((r) => r.level === 'info' && /connection back/.test(r.message ?? '')),
          'and so is the new one',
        );
        await t.deleteCluster();
      } finally {
        await t.close();
        await proxy.close();
      }
    },
  );

  it('fails a read of a corrupt row with a MembershipError naming the row', async () => {
    const clusterId = `c-${randomUUID()}`;
    const t = redisMembership({ url, keyPrefix });
    await t.init({ clusterId, logger: silentLogger() });
    const admin = new Redis(url);
    try {
      assert.equal(await t.insert(silo(1), after1((await t.readAll()).version)), true);
      await admin.hset(
        `${keyPrefix}membership:{${clusterId}}:rows`,
        '10.0.0.1:11111@1700000000001',
        '{"etag":"e","entry":{"status":"Zombie"}}',
      );
      await assert.rejects(t.readAll(), (err: unknown) => {
        assert.ok(err instanceof MembershipError);
        assert.match(err.message, /corrupt row 10\.0\.0\.1:11111@1700000000001/);
        return true;
      });
    } finally {
      admin.disconnect();
      await t.deleteCluster();
      await t.close();
    }
  });

  it('refuses invalid options with a ConfigurationError saying what to change', () => {
    assert.throws(() => redisMembership({ url: '127.0.0.1:6379' }), { name: 'ConfigurationError', message: /url/ });
    assert.throws(() => redisMembership({ url, commandTimeoutMs: 0 }), {
      name: 'ConfigurationError',
      message: /commandTimeoutMs/,
    });
  });
});
