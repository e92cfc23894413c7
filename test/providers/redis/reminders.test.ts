// Redis reminders: the conformance suite against the server at
// GRANARY_TEST_REDIS (default the local one) under a random key prefix deleted
// at the end, plus an unreachable server, a server that goes away and comes
// back through a proxy, one that stops answering, key set-up, corrupt rows and
// options.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { ReminderError } from '../../../src/errors.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { redisReminders } from '../../../src/providers/redis/index.ts';
import type { ReminderEntry } from '../../../src/reminders/table.ts';
import { eventually, startProxy as startProxyTo, type CuttableProxy } from '../../helpers.ts';
import { reminderConformance } from '../../reminders/conformance.ts';
import { recordingLogger } from './support.ts';

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

reminderConformance('redis reminders', { create: () => redisReminders({ url, keyPrefix }) });

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

describe('redis reminders specifics', () => {
  it('has kind redis', () => {
    assert.equal(redisReminders({ url }).kind, 'redis');
  });

  it('keeps a cluster in keys under the prefix with a hash tag on the cluster id; clear keeps only the ETag counter', async () => {
    const clusterId = `c-${randomUUID()}`;
    const t = redisReminders({ url, keyPrefix });
    await t.init({ clusterId, logger: silentLogger() });
    const admin = new Redis(url);
    try {
      const etag = await t.upsert(entry(1));
      const base = `${keyPrefix}reminders:{${clusterId}}`;
      const keys = ['ring', 'grains', 'rows', 'etags', 'seq', 'ticks'].map((k) => `${base}:${k}`);
      assert.equal(await admin.exists(...keys), 5, 'every key but the ticks, before a tick is recorded');
      assert.deepEqual(
        await admin.zrangebyscore(`${base}:ring`, 1_000, 1_000),
        ['["counter/1","tick"]'],
        'the ring index is scored by grain hash',
      );
      assert.equal(await admin.get(`${base}:seq`), etag);

      await t.recordTick('counter/1', 'tick', 1_700_000_060_000);
      await t.recordTick('counter/2', 'tick', 1_700_000_060_000);
      assert.equal(await admin.exists(...keys), 6);
      assert.deepEqual(
        await admin.hgetall(`${base}:ticks`),
        { '["counter/1","tick"]': '1700000060000' },
        'a tick of a missing row leaves no field',
      );
      assert.equal(await admin.hget(`${base}:etags`, '["counter/1","tick"]'), etag, 'a tick leaves the ETag alone');
      const last = await t.upsert(entry(1));
      assert.equal(await admin.exists(`${base}:ticks`), 0, 'an upsert drops the tick of the row');
      await t.recordTick('counter/1', 'tick', 1_700_000_060_000);
      await t.clear();
      assert.equal(
        await admin.exists(...keys.filter((k) => !k.endsWith(':seq'))),
        0,
        'clear leaves no row or tick behind',
      );
      assert.equal(await admin.get(`${base}:seq`), last, 'the counter stays, so that no ETag is issued twice');
    } finally {
      admin.disconnect();
      await t.close();
    }
  });

  it(
    'reads a range of many reminders at once (more than one chunk of the read script)',
    { timeout: 30_000 },
    async () => {
      const t = redisReminders({ url, keyPrefix });
      await t.init({ clusterId: `c-${randomUUID()}`, logger: silentLogger() });
      try {
        const entries = Array.from({ length: 2_500 }, (_, i) => entry(i, { grainHash: i }));
        for (let i = 0; i < entries.length; i += 250)
          await Promise.all(entries.slice(i, i + 250).map((e) => t.upsert(e)));
        // Ticks on both sides of the chunk boundaries: each must come back with its own row.
        const ticked = [0, 999, 1_000, 1_999, 2_000, 2_499];
        for (const i of ticked) await t.recordTick(`counter/${i}`, 'tick', 1_700_000_000_000 + i);
        const rows = await t.readRange(0, 0);
        assert.equal(rows.length, 2_500);
        assert.deepEqual(
          rows.map((r) => r.grainHash).sort((x, y) => x - y),
          entries.map((e) => e.grainHash),
        );
        const withTicks = rows.filter((r) => r.lastTickAt !== undefined).sort((x, y) => x.grainHash - y.grainHash);
        assert.deepEqual(
          withTicks.map((r) => [r.grainHash, r.lastTickAt]),
          ticked.map((i) => [i, 1_700_000_000_000 + i]),
        );
        assert.equal((await t.readRange(999, 2_000)).length, 1_001);
        await t.clear();
      } finally {
        await t.close();
      }
    },
  );

  it('sets up a cluster’s keys once, logging it once, however many providers open it at once', async () => {
    const clusterId = `c-${randomUUID()}`;
    const logs = recordingLogger();
    const tables = Array.from({ length: 6 }, () => redisReminders({ url, keyPrefix }));
    try {
      await Promise.all(tables.map((t) => t.init({ clusterId, logger: logs })));
      const created = logs.records.filter((r) => r.message === 'created reminder keys');
      assert.equal(created.length, 1, 'one creator');
      assert.equal(created[0]?.fields['key'], `${keyPrefix}reminders:{${clusterId}}:seq`);
      await tables[0]?.upsert(entry(1));
      await tables[0]?.clear();
      const again = redisReminders({ url, keyPrefix });
      await again.init({ clusterId, logger: logs });
      await again.close();
      assert.equal(
        logs.records.filter((r) => r.message === 'created reminder keys').length,
        1,
        'a later init, even after clear, sets up nothing',
      );
    } finally {
      for (const t of tables) await t.close();
    }
  });

  it('fails init and later calls with a ReminderError when Redis cannot be reached', { timeout: 15_000 }, async () => {
    const t = redisReminders({ url: 'redis://:hunter2@127.0.0.1:1', connectTimeoutMs: 2_000 });
    await assert.rejects(t.init({ clusterId: 'c', logger: silentLogger() }), (err: unknown) => {
      assert.ok(err instanceof ReminderError, String(err));
      assert.equal(err.code, 'GRANARY_REMINDERS');
      assert.match(err.message, /redis reminders .*127\.0\.0\.1:1.*init failed.*ECONNREFUSED/);
      assert.doesNotMatch(err.message, /hunter2/, 'the password is not in the message');
      return true;
    });
    await assert.rejects(
      t.readRange(0, 0),
      (err: unknown) => err instanceof ReminderError && /readRange failed: the table is not open/.test(err.message),
    );
    await t.close();
  });

  it(
    'fails calls with a ReminderError while Redis is gone, and the same instance works again once it is back',
    { timeout: 30_000 },
    async () => {
      const proxy = await startProxy();
      const logs = recordingLogger();
      const t = redisReminders({ url: `redis://127.0.0.1:${proxy.port}`, keyPrefix, commandTimeoutMs: 2_000 });
      await t.init({ clusterId: `c-${randomUUID()}`, logger: logs });
      try {
        const etag = await t.upsert(entry(1));
        await proxy.cut();
        await eventually('the provider notices the lost connection', () =>
          logs.records.some((r) => r.level === 'warn' && /connection lost/.test(r.message ?? '')),
        );
        const failsWith =
          (op: string, what?: RegExp) =>
          (err: unknown): boolean => {
            assert.ok(err instanceof ReminderError, `${op}: ${String(err)}`);
            assert.match(err.message, new RegExp(`redis reminders .*${op} failed`));
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
        await assert.rejects(t.clear(), failsWith('clear'));

        await proxy.restore();
        await eventually(
          'readRange works again after Redis is back',
          async () => {
            try {
              return (await t.readRange(0, 0)).length === 1;
            } catch (err) {
              assert.ok(err instanceof ReminderError, `only ReminderErrors while reconnecting, got ${String(err)}`);
              return false;
            }
          },
          10_000,
        );
        assert.ok(logs.records.some((r) => r.level === 'info' && /connection back/.test(r.message ?? '')));
        assert.deepEqual(await t.read('counter/1', 'tick'), { ...entry(1), etag });
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
    'drops a connection on which a command timed out, so that a Redis answering again behind the same address is used without a restart',
    { timeout: 30_000 },
    async () => {
      const proxy = await startHangingProxy();
      const logs = recordingLogger();
      const t = redisReminders({ url: proxy.via, keyPrefix, commandTimeoutMs: 1_000 });
      await t.init({ clusterId: `c-${randomUUID()}`, logger: logs });
      try {
        const etag = await t.upsert(entry(1));
        proxy.hang();
        await assert.rejects(t.readRange(0, 0), (err: unknown) => {
          assert.ok(err instanceof ReminderError, String(err));
          assert.match(err.message, /readRange failed: range \(0, 0\]: Command timed out/);
          return true;
        });
        // The old connection never answers again; a new one does. Until the table has one, calls fail at once or time out.
        await eventually(
          'a read through a new connection',
          async () => {
            try {
              return (await t.readRange(0, 0)).length === 1;
            } catch (err) {
              assert.ok(err instanceof ReminderError, `only ReminderErrors meanwhile, got ${String(err)}`);
              return false;
            }
          },
          15_000,
        );
        assert.deepEqual(await t.read('counter/1', 'tick'), { ...entry(1), etag });
        const next = await t.upsert(entry(1));
        assert.deepEqual(await t.read('counter/1', 'tick'), { ...entry(1), etag: next });
        assert.ok(
          logs.records.some((r) => r.level === 'warn' && /timed out/.test(r.message ?? '')),
          'the dropped connection is logged',
        );
        assert.ok(
          logs.records.some((r) => r.level === 'info' && /connection back/.test(r.message ?? '')),
          'and so is the new one',
        );
        await t.clear();
      } finally {
        await t.close();
        await proxy.close();
      }
    },
  );

  it('skips a row it cannot read back, with a warning naming it, and reads the others', async () => {
    const clusterId = `c-${randomUUID()}`;
    const logs = recordingLogger();
    const t = redisReminders({ url, keyPrefix });
    await t.init({ clusterId, logger: logs });
    const admin = new Redis(url);
    try {
      const good = { ...entry(2), etag: await t.upsert(entry(2)) };
      await t.upsert(entry(1));
      await admin.hset(
        `${keyPrefix}reminders:{${clusterId}}:rows`,
        '["counter/1","tick"]',
        '{"grainHash":1000,"startAt":"soon"',
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
        assert.match(String(w.fields['problem']), /not JSON/);
      }
      // The row can still be replaced, and then reads back.
      const etag = await t.upsert(entry(1));
      assert.deepEqual(await t.read('counter/1', 'tick'), { ...entry(1), etag });
      await t.clear();
    } finally {
      admin.disconnect();
      await t.close();
    }
  });

  it('reads a row whose latest tick cannot be read back without it, with a warning naming it; a tick mends it', async () => {
    const clusterId = `c-${randomUUID()}`;
    const logs = recordingLogger();
    const t = redisReminders({ url, keyPrefix });
    await t.init({ clusterId, logger: logs });
    const admin = new Redis(url);
    const ticks = `${keyPrefix}reminders:{${clusterId}}:ticks`;
    try {
      const etag = await t.upsert(entry(1));
      const e = { ...entry(1), etag };
      // Not a number, not whole, not decimal digits, beyond 2^53: each is read as no tick.
      for (const bad of ['soon', '1700000000000.5', '1e3', '', '9007199254740993']) {
        logs.records.length = 0;
        await admin.hset(ticks, '["counter/1","tick"]', bad);
        assert.deepEqual(await t.read('counter/1', 'tick'), e, `read, ${JSON.stringify(bad)}`);
        assert.deepEqual(await t.readGrain('counter/1'), [e], 'readGrain');
        assert.deepEqual(await t.readRange(0, 0), [e], 'readRange');
        const warnings = logs.records.filter((r) => r.level === 'warn');
        assert.equal(warnings.length, 3, 'one warning per read that met the row');
        for (const w of warnings) {
          assert.equal(w.message, 'read a reminder row without its last tick, which cannot be read back');
          assert.equal(w.fields['grainId'], 'counter/1');
          assert.equal(w.fields['name'], 'tick');
          assert.equal(w.fields['key'], ticks);
          assert.match(String(w.fields['problem']), /latest tick/);
        }
        // Even a dueAt below what the bad value reads as (2^53+2) replaces it.
        await t.recordTick('counter/1', 'tick', 1_700_000_000_000);
        assert.deepEqual(
          await t.read('counter/1', 'tick'),
          { ...e, lastTickAt: 1_700_000_000_000 },
          `mended, ${JSON.stringify(bad)}`,
        );
      }
      await t.clear();
    } finally {
      admin.disconnect();
      await t.close();
    }
  });

  it('refuses invalid options with a ConfigurationError saying what to change', () => {
    assert.throws(() => redisReminders({ url: '127.0.0.1:6379' }), {
      name: 'ConfigurationError',
      message: /redisReminders: option url/,
    });
    assert.throws(() => redisReminders({ url, connectTimeoutMs: 0 }), {
      name: 'ConfigurationError',
      message: /option connectTimeoutMs/,
    });
    assert.throws(() => redisReminders({ url, commandTimeoutMs: 0 }), {
      name: 'ConfigurationError',
      message: /option commandTimeoutMs/,
    });
  });
});
