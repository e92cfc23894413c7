// Redis storage: the conformance suite against the server at
// GRANARY_TEST_REDIS (default the local one) under a random key prefix deleted
// at the end, plus key layout, the json format, concurrent creators, a server
// that goes away or stops answering, corrupt records and options.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { InconsistentStateError, SerializationError, StorageError } from '../../../src/errors.ts';
import type { Logger } from '../../../src/observability/logger.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { redisStorage, redisStorageDefaults } from '../../../src/providers/redis/storage.ts';
import type { RedisStorageOptions } from '../../../src/providers/redis/storage.ts';
import { PersistentStateImpl } from '../../../src/storage/persistent-state.ts';
import type { StateAddress, StorageProvider, StoredState } from '../../../src/storage/provider.ts';
import { eventually, startProxy as startProxyTo, type CuttableProxy } from '../../helpers.ts';
import { storageConformance } from '../../storage/conformance.ts';
import { testSerializer } from '../../storage/serializer.ts';
import { recordingLogger } from './support.ts';

const url = process.env['GRANARY_TEST_REDIS'] ?? 'redis://127.0.0.1:6379';
const runPrefix = `test:${randomUUID()}:`;
const keyPrefix = `${runPrefix}suite:`;

/** Runs `body` with a plain connection, as another client of the server would. */
async function withAdmin<T>(body: (admin: Redis) => Promise<T>): Promise<T> {
  const admin = new Redis(url, { lazyConnect: true });
  await admin.connect();
  try {
    return await body(admin);
  } finally {
    admin.disconnect();
  }
}

after(async () => {
  await withAdmin(async (admin) => {
    let cursor = '0';
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${runPrefix}*`, 'COUNT', 1000);
      if (keys.length > 0) await admin.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  });
});

/** The key of a record, as the provider documents it. */
function recordKey(prefix: string, a: StateAddress): string {
  return `${prefix}storage:${JSON.stringify([a.grainType, a.grainKey, a.stateName])}`;
}

storageConformance('redis storage', {
  create: () => redisStorage({ url, keyPrefix }),
  corrupt: (_provider, address) =>
    withAdmin(async (admin) => {
      assert.equal(
        await admin.hset(recordKey(keyPrefix, address), 'payload', Buffer.from([0xff, 0x00, 0xde, 0xad])),
        0,
        'the record to corrupt exists',
      );
    }),
});

function context(logger: Logger = silentLogger()) {
  return { name: 'default', logger, serializer: testSerializer };
}

/** Runs `body` with an initialised provider, and closes it after. */
async function withProvider(
  options: Partial<RedisStorageOptions>,
  body: (p: StorageProvider) => Promise<void>,
): Promise<void> {
  const p = redisStorage({ url, keyPrefix, ...options });
  await p.init(context());
  try {
    await body(p);
  } finally {
    await p.close();
  }
}

/** A fresh address, so that cases sharing the suite's prefix do not meet. */
function fresh(grainType = 'counter'): StateAddress {
  return { grainType, grainKey: `k-${randomUUID()}`, stateName: 'count' };
}

/** A cuttable proxy to the server under test, and the URL through it. */
async function startProxy(): Promise<{ proxy: CuttableProxy; via: string }> {
  const target = new URL(url);
  const proxy = await startProxyTo(target.hostname, Number(target.port || 6379));
  return { proxy, via: `redis://127.0.0.1:${proxy.port}` };
}

/** A proxy that can stop answering (holding what it is sent) without closing anything: a server that hangs. */
async function startFreezableProxy(): Promise<{ via: string; freeze(): void; thaw(): void; close(): Promise<void> }> {
  const target = new URL(url);
  let frozen = false;
  const held: Array<() => void> = [];
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
        if (frozen) held.push(() => to.write(chunk));
        else to.write(chunk);
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return {
    via: `redis://127.0.0.1:${address.port}`,
    freeze: () => {
      frozen = true;
    },
    thaw: () => {
      frozen = false;
      for (const deliver of held.splice(0)) deliver();
    },
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
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

/** Asserts a StorageError (code GRANARY_STORAGE) that names the provider and the grain. */
function storeFailure(grain: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof StorageError, `expected a StorageError, got ${String(err)}`);
    assert.equal(err.code, 'GRANARY_STORAGE');
    assert.ok(err.message.includes("redis storage 'default'"), `names the provider: ${err.message}`);
    assert.ok(err.message.includes(grain), `names the grain ${grain}: ${err.message}`);
    return true;
  };
}

/** Asserts a StorageError with code GRANARY_STORAGE_CORRUPT whose message holds each of `parts`. */
function corruptFailure(...parts: string[]) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof StorageError, `expected a StorageError, got ${String(err)}`);
    assert.equal(err.code, 'GRANARY_STORAGE_CORRUPT');
    for (const part of parts) assert.ok(err.message.includes(part), `message names ${part}: ${err.message}`);
    return true;
  };
}

describe('redis storage specifics', () => {
  it('has kind redis and exports its defaults', () => {
    assert.equal(redisStorage({ url }).kind, 'redis');
    assert.equal(redisStorageDefaults.keyPrefix, 'granary:');
    assert.equal(redisStorageDefaults.format, 'codec');
  });

  it('keeps a record in one hash under the prefix, and deletes it on clear', async () => {
    await withProvider({}, async (p) => {
      const a = fresh();
      const etag = await p.write(a, { value: 1 }, null);
      await withAdmin(async (admin) => {
        const key = recordKey(keyPrefix, a);
        const hash = await admin.hgetall(key);
        assert.deepEqual(Object.keys(hash).sort(), ['format_version', 'payload', 'updated_at', 'version']);
        assert.equal(hash['version'], etag);
        assert.equal(hash['format_version'], '1');
        assert.ok(Number(hash['updated_at']) > 0, 'updated_at is a time in epoch ms');
        await p.clear(a, etag);
        assert.equal(await admin.exists(key), 0, 'clear leaves no key');
      });
    });
  });

  it(
    'of several providers starting at once on a fresh prefix, exactly one creates the counter and logs so; all then share the records',
    { timeout: 20_000 },
    async () => {
      const prefix = `${runPrefix}create:`;
      const logs = recordingLogger();
      const providers = Array.from({ length: 6 }, () => redisStorage({ url, keyPrefix: prefix }));
      try {
        await Promise.all(providers.map((s) => s.init(context(logs))));
        const created = logs.records.filter((r) => r.message === 'created storage counter');
        assert.equal(created.length, 1, 'one creator');
        assert.equal(created[0]?.level, 'info');
        assert.equal(created[0]?.fields['key'], `${prefix}storage:etag`);
        const [one, two] = providers;
        assert.ok(one && two);
        const a = fresh();
        const e1 = await one.write(a, { value: 1 }, null);
        assert.deepEqual(await two.read(a), { state: { value: 1 }, etag: e1 });
        await assert.rejects(two.write(a, { value: 9 }, null), InconsistentStateError);
      } finally {
        for (const s of providers) await s.close();
      }
    },
  );

  it('never reuses an etag for a record even if the counter key is lost', async () => {
    const prefix = `${runPrefix}lost:`;
    const p = redisStorage({ url, keyPrefix: prefix });
    await p.init(context());
    try {
      const a = fresh();
      let etag = await p.write(a, { value: 1 }, null);
      for (let i = 0; i < 5; i++) etag = await p.write(a, { value: i }, etag);
      await withAdmin((admin) => admin.del(`${prefix}storage:etag`));
      const next = await p.write(a, { value: 'after' }, etag);
      assert.ok(Number(next) > Number(etag), `etag ${next} comes after ${etag}`);
      await assert.rejects(p.write(a, { stale: true }, etag), InconsistentStateError);
    } finally {
      await p.close();
    }
  });

  it('names the grain, state, provider and both etags in a conflict', async () => {
    await withProvider({}, async (p) => {
      const a = fresh();
      const e1 = await p.write(a, { value: 1 }, null);
      const e2 = await p.write(a, { value: 2 }, e1);
      await assert.rejects(p.write(a, { value: 3 }, e1), (err: Error) => {
        assert.ok(err instanceof InconsistentStateError);
        for (const part of [
          `counter/${a.grainKey}`,
          "'count'",
          "redis storage 'default'",
          `expected etag ${e1}, found ${e2}`,
        ]) {
          assert.ok(err.message.includes(part), `message names ${part}: ${err.message}`);
        }
        return true;
      });
      await assert.rejects(p.clear(a, ''), InconsistentStateError, "'' is no etag, not even of 'no record'");
    });
  });

  it('keeps names apart that UTF-8 would merge (unpaired surrogates)', async () => {
    await withProvider({}, async (p) => {
      const base = `k-${randomUUID()}`;
      const keys = [`${base}\uD800`, `${base}\uDC00`, `${base}\uFFFD`];
      const etags: string[] = [];
      for (const [i, grainKey] of keys.entries())
        etags.push(await p.write({ grainType: 'names', grainKey, stateName: 's' }, { i }, null));
      for (const [i, grainKey] of keys.entries()) {
        assert.deepEqual(await p.read({ grainType: 'names', grainKey, stateName: 's' }), {
          state: { i },
          etag: etags[i],
        });
      }
    });
  });

  it('keeps state across close and a new init of the same provider, and refuses use when not open', async () => {
    const p = redisStorage({ url, keyPrefix });
    const a = fresh();
    await assert.rejects(
      p.read(a),
      (err: unknown) => err instanceof StorageError && /not open/.test(err.message) && err.message.includes(a.grainKey),
    );
    await p.init(context());
    const etag = await p.write(a, { value: 1 }, null);
    await p.close();
    await assert.rejects(
      p.write(a, { value: 2 }, etag),
      (err: unknown) => err instanceof StorageError && /not open/.test(err.message),
    );
    await p.init(context());
    try {
      assert.deepEqual(await p.read(a), { state: { value: 1 }, etag });
    } finally {
      await p.close();
    }
  });

  it(
    'fails init with a StorageError when Redis cannot be reached, without the password in the message',
    { timeout: 15_000 },
    async () => {
      const p = redisStorage({ url: 'redis://:hunter2@127.0.0.1:1', connectTimeoutMs: 2_000 });
      await assert.rejects(
        async () => p.init(context()),
        (err: unknown) => {
          assert.ok(err instanceof StorageError, String(err));
          assert.equal(err.code, 'GRANARY_STORAGE');
          assert.match(err.message, /redis storage 'default' .*127\.0\.0\.1:1.*ECONNREFUSED/);
          assert.doesNotMatch(err.message, /hunter2/, 'the password is not in the message');
          return true;
        },
      );
      await p.close();
    },
  );

  it(
    'fails reads, writes and clears with a StorageError naming provider and grain while Redis is gone, and works again once it is back',
    { timeout: 30_000 },
    async () => {
      const { proxy, via } = await startProxy();
      const logs = recordingLogger();
      const p = redisStorage({ url: via, keyPrefix, commandTimeoutMs: 2_000 });
      await p.init(context(logs));
      try {
        const a = fresh();
        const grain = `counter/${a.grainKey}`;
        const etag = await p.write(a, { value: 1 }, null);
        const state = new PersistentStateImpl<{ value: number }>(a, p, 'default', () => ({ value: 0 }));
        await state.read();

        await proxy.cut();
        await assert.rejects(p.read(a), storeFailure(grain));
        await assert.rejects(p.write(a, { value: 2 }, etag), storeFailure(grain));
        await assert.rejects(p.clear(a, etag), storeFailure(grain));
        state.state.value = 5;
        await assert.rejects(state.write(), storeFailure(grain));
        assert.deepEqual(state.state, { value: 5 }, 'the grain keeps the state it could not write');
        await eventually('the outage is logged', () =>
          logs.records.some((r) => r.level === 'warn' && /connection lost/.test(r.message ?? '')),
        );

        await proxy.restore();
        await eventually(
          'the provider reconnects',
          () => logs.records.some((r) => /connection back/.test(r.message ?? '')),
          10_000,
        );
        assert.deepEqual(
          await p.read(a),
          { state: { value: 1 }, etag },
          'the same provider works again, and nothing was written while cut',
        );
        await state.write();
        assert.deepEqual((await p.read(a)).state, { value: 5 });
      } finally {
        await p.close();
        await proxy.cut();
      }
    },
  );

  it(
    'fails a call with a StorageError after commandTimeoutMs when Redis stops answering, and works again once it answers',
    { timeout: 30_000 },
    async () => {
      const proxy = await startFreezableProxy();
      const p = redisStorage({ url: proxy.via, keyPrefix, commandTimeoutMs: 1_000 });
      await p.init(context());
      try {
        const a = fresh();
        const grain = `counter/${a.grainKey}`;
        const etag = await p.write(a, { value: 1 }, null);
        proxy.freeze();
        await assert.rejects(p.read(a), storeFailure(grain));
        // The timed-out read dropped its connection: the write fails too, at once or after its own time-out.
        await assert.rejects(p.write(a, { value: 2 }, etag), storeFailure(grain));
        proxy.thaw();
        // The provider answers again once it has connected anew.
        let now: StoredState | undefined;
        await eventually(
          'a read once Redis answers',
          async () => {
            try {
              now = await p.read(a);
              return true;
            } catch (err) {
              assert.ok(err instanceof StorageError, String(err));
              return false;
            }
          },
          10_000,
        );
        assert.ok(now !== undefined && now.etag !== null, `read ${JSON.stringify(now)}`);
        const value = (now.state as { value: number }).value;
        assert.ok(now.etag === etag ? value === 1 : value === 2, `read ${JSON.stringify(now)}`);
        const next = await p.write(a, { value: 3 }, now.etag);
        assert.deepEqual(await p.read(a), { state: { value: 3 }, etag: next });
      } finally {
        await p.close();
        await proxy.close();
      }
    },
  );

  it(
    'drops a connection on which a command timed out, so that a Redis answering again behind the same address is used without a restart',
    { timeout: 30_000 },
    async () => {
      const proxy = await startHangingProxy();
      const logs = recordingLogger();
      const p = redisStorage({ url: proxy.via, keyPrefix, commandTimeoutMs: 500 });
      await p.init(context(logs));
      try {
        const a = fresh();
        const etag = await p.write(a, { value: 1 }, null);
        proxy.hang();
        await assert.rejects(p.read(a), storeFailure(`counter/${a.grainKey}`));
        // The old connection never answers again; a new one does. Until the provider has one, calls fail at once or time out.
        await eventually(
          'a read through a new connection',
          async () => {
            try {
              return (await p.read(a)).etag === etag;
            } catch (err) {
              assert.ok(err instanceof StorageError, String(err));
              return false;
            }
          },
          15_000,
        );
        const next = await p.write(a, { value: 2 }, etag);
        assert.deepEqual(await p.read(a), { state: { value: 2 }, etag: next });
        assert.ok(
          logs.records.some((r) => r.level === 'warn' && /timed out/.test(r.message ?? '')),
          'the dropped connection is logged',
        );
      } finally {
        await p.close();
        await proxy.close();
      }
    },
  );

  describe('corrupt records', () => {
    /** Writes two records, damages the first with `damage`, and checks that only its read fails, with `parts` in the message. */
    async function onlyThatGrainFails(
      damage: (admin: Redis, key: string) => Promise<unknown>,
      ...parts: string[]
    ): Promise<void> {
      await withProvider({}, async (p) => {
        const bad = fresh('ledger');
        const good = fresh('ledger');
        await p.write(bad, { value: 1 }, null);
        const goodEtag = await p.write(good, { value: 2 }, null);
        const key = recordKey(keyPrefix, bad);
        await withAdmin((admin) => damage(admin, key));
        await assert.rejects(
          p.read(bad),
          corruptFailure(`ledger/${bad.grainKey}`, "'count'", "redis storage 'default'", key, ...parts),
        );
        assert.deepEqual(await p.read(good), { state: { value: 2 }, etag: goodEtag });
      });
    }

    it('fails only the read of a record whose key holds another type', () =>
      onlyThatGrainFails(async (admin, key) => {
        await admin.del(key);
        await admin.set(key, 'not a hash');
      }, 'the key holds a string, not a hash'));

    it('fails only the read of a record with an unknown format version', () =>
      onlyThatGrainFails((admin, key) => admin.hset(key, 'format_version', '99'), 'format version is 99'));

    it('fails only the read of a record without a version', () =>
      onlyThatGrainFails((admin, key) => admin.hdel(key, 'version'), 'its version is missing'));

    it('fails only the read of a record with a version that is not a number', () =>
      onlyThatGrainFails((admin, key) => admin.hset(key, 'version', 'abc'), 'its version is "abc"'));

    it('fails only the read of a record without a payload', () =>
      onlyThatGrainFails((admin, key) => admin.hdel(key, 'payload'), 'its payload is missing'));

    it('gives the decode error as the cause of a payload that cannot be decoded', async () => {
      await withProvider({}, async (p) => {
        const a = fresh('ledger');
        await p.write(a, { value: 1 }, null);
        await withAdmin((admin) => admin.hset(recordKey(keyPrefix, a), 'payload', Buffer.from([0xff, 0x00])));
        await assert.rejects(p.read(a), (err: Error) => {
          assert.ok(err.cause instanceof Error, 'has the decode error as cause');
          assert.match(err.message, /cannot decode its codec payload/);
          return true;
        });
      });
    });
  });

  describe("format 'json'", () => {
    it('stores state as JSON text that other clients can read, and reads it back equal', async () => {
      await withProvider({ format: 'json' }, async (p) => {
        const a = fresh('profile');
        const state = {
          name: 'Zoë \u{1F600}',
          odd: 'lone \uD800 surrogate, NUL \0, quote " and backslash \\',
          big: 2 ** 53 - 1,
          scores: { chess: [1200, 1250], go: [] },
          zKeyFirst: { z: 1, a: 2 },
        };
        const etag = await p.write(a, state, null);
        const read = await p.read(a);
        assert.deepEqual(read, { state, etag });
        assert.deepEqual(Object.keys((read.state as typeof state).zKeyFirst), ['z', 'a'], 'key order is kept');
        await withAdmin(async (admin) => {
          const [payload, formatVersion] = await admin.hmget(recordKey(keyPrefix, a), 'payload', 'format_version');
          assert.deepEqual(JSON.parse(payload ?? ''), state);
          assert.equal(formatVersion, '2');
        });
      });
    });

    it('refuses a state JSON cannot hold with a SerializationError naming the path, and stores nothing', async () => {
      await withProvider({ format: 'json' }, async (p) => {
        const a = fresh('profile');
        const cases: Array<[value: unknown, path: string, says: RegExp]> = [
          [{ scores: new Map([['chess', 1]]) }, 'state.scores', /a Map/],
          [{ tags: [new Set(['a'])] }, 'state.tags[0]', /a Set/],
          [{ born: new Date(0) }, 'state.born', /a Date/],
          [{ big: 1n }, 'state.big', /a BigInt/],
          [{ maybe: undefined }, 'state.maybe', /undefined/],
          [{ bytes: Buffer.from('x') }, 'state.bytes', /binary data \(Buffer\)/],
          [{ error: new Error('x') }, 'state.error', /an instance of Error/],
          [{ n: Infinity }, 'state.n', /Infinity/],
          [{ f: () => 1 }, 'state.f', /a function/],
        ];
        for (const [value, path, says] of cases) {
          await assert.rejects(p.write(a, value, null), (err: unknown) => {
            assert.ok(err instanceof SerializationError, `${path}: expected a SerializationError, got ${String(err)}`);
            assert.equal(err.path, path);
            assert.match(err.message, says);
            assert.ok(err.message.includes(`profile/${a.grainKey}`), `message names the grain: ${err.message}`);
            return true;
          });
        }
        assert.deepEqual(await p.read(a), { state: undefined, etag: null }, 'nothing was stored');
      });
    });

    it('fails a record written in the other format as unreadable, saying which format it is in', async () => {
      const a = fresh('mixed');
      const b = fresh('mixed');
      await withProvider({}, (p) => p.write(a, { value: 1 }, null).then(() => undefined));
      await withProvider({ format: 'json' }, async (p) => {
        await p.write(b, { value: 2 }, null);
        await assert.rejects(
          p.read(a),
          corruptFailure(`mixed/${a.grainKey}`, "written in format 'codec'", "configured with format 'json'"),
        );
      });
      await withProvider({ format: 'codec' }, async (p) => {
        await assert.rejects(
          p.read(b),
          corruptFailure(
            `mixed/${b.grainKey}`,
            "written in format 'json'",
            "configured with format 'codec'",
            "format: 'json'",
          ),
        );
        assert.deepEqual((await p.read(a)).state, { value: 1 });
      });
    });

    it('fails a record whose JSON text is broken with GRANARY_STORAGE_CORRUPT', async () => {
      await withProvider({ format: 'json' }, async (p) => {
        const a = fresh('ledger');
        await p.write(a, { value: 1 }, null);
        await withAdmin((admin) => admin.hset(recordKey(keyPrefix, a), 'payload', '{"value": 1'));
        await assert.rejects(p.read(a), corruptFailure(`ledger/${a.grainKey}`, 'cannot decode its json payload'));
      });
    });
  });

  it('refuses invalid options with a ConfigurationError naming the option', () => {
    const refuses = (options: RedisStorageOptions, option: string): void => {
      assert.throws(
        () => redisStorage(options),
        (err: Error & { code?: string }) => {
          assert.equal(err.name, 'ConfigurationError');
          assert.equal(err.code, 'GRANARY_CONFIGURATION');
          assert.ok(err.message.includes(`option ${option}`), `names option ${option}: ${err.message}`);
          return true;
        },
      );
    };
    refuses({ url: 'http://127.0.0.1:6379' }, 'url');
    refuses({ url, keyPrefix: 7 as never }, 'keyPrefix');
    refuses({ url, format: 'msgpack' as never }, 'format');
    refuses({ url, connectTimeoutMs: 0 }, 'connectTimeoutMs');
    refuses({ url, commandTimeoutMs: -5 }, 'commandTimeoutMs');
  });
});
