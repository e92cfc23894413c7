// PostgreSQL storage: the conformance suite against the server at
// GRANARY_TEST_POSTGRES (default the local test database) under a random table
// prefix dropped at the end, plus the json format, concurrent creators, a
// server that goes away or stops answering, corrupt rows and options.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { InconsistentStateError, SerializationError, StorageError } from '../../../src/errors.ts';
import type { Logger } from '../../../src/observability/logger.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { postgresStorage, postgresStorageDefaults } from '../../../src/providers/postgres/storage.ts';
import type { PostgresStorageOptions } from '../../../src/providers/postgres/storage.ts';
import { PersistentStateImpl } from '../../../src/storage/persistent-state.ts';
import type { StateAddress, StorageProvider } from '../../../src/storage/provider.ts';
import { startProxy as startProxyTo, type CuttableProxy } from '../../helpers.ts';
import { storageConformance } from '../../storage/conformance.ts';
import { testSerializer } from '../../storage/serializer.ts';
import { recordingLogger } from './support.ts';

const connectionString = process.env['GRANARY_TEST_POSTGRES'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const runId = randomUUID().replaceAll('-', '').slice(0, 12);
/** Every prefix this run used, for the tables to drop at the end. */
const prefixes: string[] = [];

function prefix(name: string): string {
  const p = `t${runId}_${name}_`;
  prefixes.push(p);
  return p;
}

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

after(async () => {
  for (const p of prefixes)
    await sql(`DROP TABLE IF EXISTS "${p}storage"; DROP SEQUENCE IF EXISTS "${p}storage_version"`);
});

const suitePrefix = prefix('suite');

/** Overwrites the payload of the row at `address` with bytes the serializer cannot decode. */
async function corruptRow(
  tablePrefix: string,
  address: StateAddress,
  set = `payload = '\\xff00dead'::bytea`,
): Promise<void> {
  const rows = await sql(
    `UPDATE "${tablePrefix}storage" SET ${set} WHERE grain_type = $1 AND grain_key = $2 AND state_name = $3 RETURNING version`,
    [address.grainType, address.grainKey, address.stateName],
  );
  assert.equal(rows.length, 1, 'the row to corrupt exists');
}

storageConformance('postgres storage', {
  create: () => postgresStorage({ connectionString, tablePrefix: suitePrefix }),
  corrupt: (_provider, address) => corruptRow(suitePrefix, address),
});

function context(logger: Logger = silentLogger()) {
  return { name: 'default', logger, serializer: testSerializer };
}

/** Runs `body` with an initialised provider, and closes it after. */
async function withProvider(
  options: Partial<PostgresStorageOptions>,
  body: (p: StorageProvider) => Promise<void>,
  logger?: Logger,
): Promise<void> {
  const p = postgresStorage({ connectionString, tablePrefix: suitePrefix, ...options });
  await p.init(context(logger));
  try {
    await body(p);
  } finally {
    await p.close();
  }
}

/** A fresh address, so that cases sharing the suite's table do not meet. */
function fresh(grainType = 'counter'): StateAddress {
  return { grainType, grainKey: `k-${randomUUID()}`, stateName: 'count' };
}

/** A cuttable proxy to the server under test, and the connection string through it. */
async function startProxy(): Promise<{ proxy: CuttableProxy; via: string }> {
  const target = new URL(connectionString);
  const proxy = await startProxyTo(target.hostname, Number(target.port || 5432));
  target.host = `127.0.0.1:${proxy.port}`;
  return { proxy, via: target.toString() };
}

/** A proxy that can stop answering (holding what it is sent) without closing anything: a server that hangs. */
async function startFreezableProxy(): Promise<{ via: string; freeze(): void; thaw(): void; close(): Promise<void> }> {
  const target = new URL(connectionString);
  let frozen = false;
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
        if (frozen) held.push(() => to.write(chunk));
        else to.write(chunk);
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

/** A proxy that, once armed, breaks the connection that sends a statement containing `text` (before it reaches the server). */
async function startTrapProxy(): Promise<{ via: string; trap(text: string): Promise<void>; close(): Promise<void> }> {
  const target = new URL(connectionString);
  let armed: { text: string; sprung: () => void } | undefined;
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
        if (from === client && armed !== undefined && chunk.includes(armed.text)) {
          const { sprung } = armed;
          armed = undefined;
          client.destroy();
          upstream.destroy();
          sprung();
          return;
        }
        to.write(chunk);
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
    trap: (text) => new Promise<void>((resolve) => (armed = { text, sprung: resolve })),
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
    assert.ok(err.message.includes("postgres storage 'default'"), `names the provider: ${err.message}`);
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

describe('postgres storage specifics', () => {
  it('has kind postgres and exports its defaults', () => {
    assert.equal(postgresStorage({ connectionString }).kind, 'postgres');
    assert.equal(postgresStorageDefaults.tablePrefix, 'granary_');
    assert.equal(postgresStorageDefaults.format, 'codec');
  });

  it(
    'of several providers creating the table at once, exactly one creates it and logs so; all then share it',
    { timeout: 20_000 },
    async () => {
      const p = prefix('create');
      const logs = recordingLogger();
      const providers = Array.from({ length: 6 }, () =>
        postgresStorage({ connectionString, tablePrefix: p, poolSize: 1 }),
      );
      try {
        await Promise.all(providers.map((s) => s.init(context(logs))));
        const created = logs.records.filter((r) => r.message === 'created storage table');
        assert.equal(created.length, 1, 'one creator');
        assert.equal(created[0]?.level, 'info');
        assert.equal(created[0]?.fields['table'], `${p}storage`);
        const [one, two] = providers;
        assert.ok(one && two);
        const a = fresh();
        const e1 = await one.write(a, { value: 1 }, null);
        assert.deepEqual(await two.read(a), { state: { value: 1 }, etag: e1 });
        await assert.rejects(two.write(a, { value: 9 }, null), InconsistentStateError);
        // A later provider on the same table creates nothing.
        const later = postgresStorage({ connectionString, tablePrefix: p });
        await later.init(context(logs));
        await later.close();
        assert.equal(logs.records.filter((r) => r.message === 'created storage table').length, 1);
      } finally {
        for (const s of providers) await s.close();
      }
    },
  );

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
          "postgres storage 'default'",
          `expected etag ${e1}, found ${e2}`,
        ]) {
          assert.ok(err.message.includes(part), `message names ${part}: ${err.message}`);
        }
        return true;
      });
    });
  });

  it('keeps names apart that PostgreSQL text cannot hold as they are (NUL, backslash, unpaired surrogates), and stores others verbatim', async () => {
    await withProvider({}, async (p) => {
      const base = `k-${randomUUID()}`;
      const keys = [
        `${base}a\0`,
        `${base}a\\0`,
        `${base}a\\`,
        `${base}a\uD800`,
        `${base}a\uDC00`,
        `${base}a\uFFFD`,
        `${base}a`,
      ];
      const etags: string[] = [];
      for (const [i, grainKey] of keys.entries())
        etags.push(await p.write({ grainType: 'names', grainKey, stateName: 's' }, { i }, null));
      for (const [i, grainKey] of keys.entries()) {
        assert.deepEqual(
          await p.read({ grainType: 'names', grainKey, stateName: 's' }),
          { state: { i }, etag: etags[i] },
          `record of key ${JSON.stringify(grainKey)}`,
        );
      }
      const stored = await sql<{ grain_key: string }>(
        `SELECT grain_key FROM "${suitePrefix}storage" WHERE grain_type = 'names' AND grain_key LIKE $1 ORDER BY grain_key`,
        [`${base}%`],
      );
      assert.ok(
        stored.some((r) => r.grain_key === `${base}a`),
        'a plain name is stored as it is',
      );
      assert.ok(
        stored.some((r) => r.grain_key === `${base}a\uFFFD`),
        'other characters are stored as they are',
      );
    });
  });

  it('keeps state across close and a new init of the same provider', async () => {
    const p = postgresStorage({ connectionString, tablePrefix: suitePrefix });
    const a = fresh();
    await assert.rejects(
      p.read(a),
      (err: unknown) => err instanceof StorageError && /not open/.test(err.message) && err.message.includes(a.grainKey),
    );
    await p.init(context());
    const etag = await p.write(a, { value: 1 }, null);
    await p.close();
    await assert.rejects(p.read(a), (err: unknown) => err instanceof StorageError && /not open/.test(err.message));
    await p.init(context());
    try {
      assert.deepEqual(await p.read(a), { state: { value: 1 }, etag });
    } finally {
      await p.close();
    }
  });

  it(
    'fails init with a StorageError when the server cannot be reached, without the password in the message',
    { timeout: 20_000 },
    async () => {
      const p = postgresStorage({
        connectionString: 'postgres://postgres:hunter2@127.0.0.1:1/test',
        connectionTimeoutMs: 2_000,
      });
      await assert.rejects(
        async () => p.init(context()),
        (err: unknown) => {
          assert.ok(err instanceof StorageError, String(err));
          assert.equal(err.code, 'GRANARY_STORAGE');
          assert.match(err.message, /postgres storage 'default' .*127\.0\.0\.1:1.*cannot/);
          assert.doesNotMatch(err.message, /hunter2/, 'the password is not in the message');
          assert.ok(err.cause instanceof Error, 'the driver error is the cause');
          return true;
        },
      );
      await p.close();
    },
  );

  it(
    'fails reads, writes and clears with a StorageError naming provider and grain while the server is gone, and works again once it is back',
    { timeout: 30_000 },
    async () => {
      const { proxy, via } = await startProxy();
      const p = postgresStorage({
        connectionString: via,
        tablePrefix: suitePrefix,
        connectionTimeoutMs: 2_000,
        queryTimeoutMs: 2_000,
      });
      await p.init(context());
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

        await proxy.restore();
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
    'fails a call with a StorageError after queryTimeoutMs when the server stops answering, and works again once it answers',
    { timeout: 30_000 },
    async () => {
      const proxy = await startFreezableProxy();
      const p = postgresStorage({
        connectionString: proxy.via,
        tablePrefix: suitePrefix,
        connectionTimeoutMs: 1_000,
        queryTimeoutMs: 1_000,
      });
      await p.init(context());
      try {
        const a = fresh();
        const grain = `counter/${a.grainKey}`;
        const etag = await p.write(a, { value: 1 }, null);
        proxy.freeze();
        await assert.rejects(p.read(a), storeFailure(grain));
        await assert.rejects(p.write(a, { value: 2 }, etag), storeFailure(grain));
        proxy.thaw();
        // The frozen write may have landed once its bytes got through; either way the provider answers again.
        const now = await p.read(a);
        assert.ok(
          now.etag === etag || (now.etag !== null && (now.state as { value: number }).value === 2),
          `read ${JSON.stringify(now)}`,
        );
        const next = await p.write(a, { value: 3 }, now.etag);
        assert.deepEqual(await p.read(a), { state: { value: 3 }, etag: next });
      } finally {
        await p.close();
        await proxy.close();
      }
    },
  );

  it('refuses a stale write or clear with InconsistentStateError even when reading the etag found (for the message) fails', async () => {
    const proxy = await startTrapProxy();
    const p = postgresStorage({ connectionString: proxy.via, tablePrefix: suitePrefix });
    await p.init(context());
    try {
      const a = fresh();
      const e1 = await p.write(a, { value: 1 }, null);
      const state = new PersistentStateImpl<{ value: number }>(a, p, 'default', () => ({ value: 0 }));
      await state.read();
      // Another writer makes the same change first: 1 to 2 (an increment, say).
      const e2 = await p.write(a, { value: 2 }, e1);
      state.state.value = 2;
      const sprung = proxy.trap('SELECT version FROM');
      await assert.rejects(state.write(), (err: unknown) => {
        assert.ok(
          err instanceof InconsistentStateError,
          `the update matched nothing, so the write is refused, not of unknown outcome: ${String(err)}`,
        );
        assert.match(err.message, new RegExp(`expected etag ${e1}`));
        return true;
      });
      await sprung;
      // Not taken for a write that may have landed: the other writer's etag is not adopted.
      await assert.rejects(state.write(), InconsistentStateError);
      assert.equal(state.etag, e1);

      const trapped = proxy.trap('SELECT version FROM');
      await assert.rejects(p.clear(a, e1), InconsistentStateError);
      await trapped;
      assert.deepEqual(await p.read(a), { state: { value: 2 }, etag: e2 });
    } finally {
      await p.close();
      await proxy.close();
    }
  });

  describe('corrupt rows', () => {
    it("fails only that grain's read when its format version is unknown, naming it", async () => {
      await withProvider({}, async (p) => {
        const bad = fresh('ledger');
        const good = fresh('ledger');
        await p.write(bad, { value: 1 }, null);
        const goodEtag = await p.write(good, { value: 2 }, null);
        await corruptRow(suitePrefix, bad, 'format_version = 99');
        await assert.rejects(
          p.read(bad),
          corruptFailure(
            `ledger/${bad.grainKey}`,
            "'count'",
            "postgres storage 'default'",
            `${suitePrefix}storage`,
            'format version is 99',
          ),
        );
        assert.deepEqual(await p.read(good), { state: { value: 2 }, etag: goodEtag });
      });
    });

    it('gives the decode error as the cause of a payload that cannot be decoded', async () => {
      await withProvider({}, async (p) => {
        const a = fresh('ledger');
        await p.write(a, { value: 1 }, null);
        await corruptRow(suitePrefix, a);
        await assert.rejects(p.read(a), (err: Error) => {
          assert.ok(err.cause instanceof Error, 'has the decode error as cause');
          assert.match(err.message, /cannot decode its codec payload/);
          return true;
        });
      });
    });

    it('refuses a table of that name that it did not make, saying to choose another tablePrefix', async () => {
      const missing = prefix('foreign');
      await sql(`CREATE TABLE "${missing}storage" (id integer)`);
      const p = postgresStorage({ connectionString, tablePrefix: missing });
      await assert.rejects(async () => p.init(context()), {
        name: 'StorageError',
        message: new RegExp(`${missing}storage.*payload.*tablePrefix`),
      });
      await p.close();

      const wrongType = prefix('wrongtype');
      await sql(`CREATE TABLE "${wrongType}storage" (grain_type text, grain_key text, state_name text, payload text,
        version bigint, format_version integer, updated_at timestamptz)`);
      const q = postgresStorage({ connectionString, tablePrefix: wrongType });
      await assert.rejects(async () => q.init(context()), {
        name: 'StorageError',
        message: new RegExp(`${wrongType}storage.*column payload is text, not bytea.*tablePrefix`),
      });
      await q.close();
    });
  });

  describe("format 'json'", () => {
    it('stores state as JSON text that SQL can read, and reads it back equal', async () => {
      await withProvider({ format: 'json' }, async (p) => {
        const a = fresh('profile');
        const state = {
          name: 'Zoë \u{1F600}',
          big: 2 ** 53 - 1,
          small: 1e-300,
          scores: { chess: [1200, 1250], go: [] },
          nested: [null, true, { deep: [{ x: 'y' }] }],
          zKeyFirst: { z: 1, a: 2 },
        };
        const etag = await p.write(a, state, null);
        const read = await p.read(a);
        assert.deepEqual(read, { state, etag });
        assert.deepEqual(Object.keys((read.state as typeof state).zKeyFirst), ['z', 'a'], 'key order is kept');
        const [row] = await sql<{ name: string; chess: string; format_version: number }>(
          `SELECT convert_from(payload, 'UTF8')::jsonb ->> 'name' AS name, convert_from(payload, 'UTF8')::jsonb -> 'scores' ->> 'chess' AS chess, format_version
           FROM "${suitePrefix}storage" WHERE grain_type = $1 AND grain_key = $2`,
          [a.grainType, a.grainKey],
        );
        assert.deepEqual(row, { name: 'Zoë \u{1F600}', chess: '[1200, 1250]', format_version: 2 });
      });
    });

    it('reads back strings that jsonb would refuse (NUL, unpaired surrogates) exactly as written', async () => {
      await withProvider({ format: 'json' }, async (p) => {
        const a = fresh('profile');
        const state = { odd: 'lone \uD800 and \uDC00 surrogates, NUL \0, quote " and backslash \\', [`key \0`]: 1 };
        const etag = await p.write(a, state, null);
        assert.deepEqual(await p.read(a), { state, etag });
      });
    });

    it('refuses a state JSON cannot hold with a SerializationError naming the path, and stores nothing', async () => {
      await withProvider({ format: 'json' }, async (p) => {
        const a = fresh('profile');
        class Point {
          x = 1;
        }
        const holes = [1];
        holes[2] = 3;
        const cases: Array<[value: unknown, path: string, says: RegExp]> = [
          [{ scores: new Map([['chess', 1]]) }, 'state.scores', /a Map/],
          [{ tags: new Set(['a']) }, 'state.tags', /a Set/],
          [{ profile: { born: new Date(0) } }, 'state.profile.born', /a Date/],
          [{ big: 1n }, 'state.big', /a BigInt/],
          [{ list: [1, undefined] }, 'state.list[1]', /undefined/],
          [{ maybe: undefined }, 'state.maybe', /undefined/],
          [{ bytes: new Uint8Array([1]) }, 'state.bytes', /binary data \(Uint8Array\)/],
          [{ where: new Point() }, 'state.where', /an instance of Point/],
          [{ 'odd key': { n: Number.NaN } }, 'state["odd key"].n', /NaN/],
          [{ holes }, 'state.holes[1]', /a hole/],
          [{ bare: Object.create(null) as object }, 'state.bare', /null prototype/],
          [undefined, 'state', /undefined/],
        ];
        for (const [value, path, says] of cases) {
          await assert.rejects(p.write(a, value, null), (err: unknown) => {
            assert.ok(err instanceof SerializationError, `${path}: expected a SerializationError, got ${String(err)}`);
            assert.equal(err.path, path);
            assert.ok(err.message.includes(path), `message names ${path}: ${err.message}`);
            assert.match(err.message, says);
            assert.ok(err.message.includes(`profile/${a.grainKey}`), `message names the grain: ${err.message}`);
            return true;
          });
        }
        const cyclic: Record<string, unknown> = {};
        cyclic['self'] = cyclic;
        await assert.rejects(p.write(a, cyclic, null), { name: 'SerializationError', message: /cyclic/ });
        assert.deepEqual(await p.read(a), { state: undefined, etag: null }, 'nothing was stored');
      });
    });

    it('fails a record written in the other format as unreadable, saying which format it is in', async () => {
      const a = fresh('mixed');
      const b = fresh('mixed');
      await withProvider({ format: 'codec' }, (p) => p.write(a, { value: 1 }, null).then(() => undefined));
      await withProvider({ format: 'json' }, async (p) => {
        await p.write(b, { value: 2 }, null);
        await assert.rejects(
          p.read(a),
          corruptFailure(`mixed/${a.grainKey}`, "written in format 'codec'", "configured with format 'json'"),
        );
      });
      await withProvider({}, async (p) => {
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

    it('fails a record whose JSON text is broken with GRANARY_STORAGE_CORRUPT, and leaves other records alone', async () => {
      await withProvider({ format: 'json' }, async (p) => {
        const truncated = fresh('ledger');
        const notUtf8 = fresh('ledger');
        const good = fresh('ledger');
        for (const a of [truncated, notUtf8]) await p.write(a, { value: 1 }, null);
        const goodEtag = await p.write(good, { value: 2 }, null);
        await corruptRow(suitePrefix, truncated, `payload = convert_to('{"value": 1', 'UTF8')`);
        await corruptRow(suitePrefix, notUtf8, `payload = '\\xc328'::bytea`);
        await assert.rejects(
          p.read(truncated),
          corruptFailure(`ledger/${truncated.grainKey}`, 'cannot decode its json payload'),
        );
        await assert.rejects(
          p.read(notUtf8),
          corruptFailure(`ledger/${notUtf8.grainKey}`, 'cannot decode its json payload'),
        );
        assert.deepEqual(await p.read(good), { state: { value: 2 }, etag: goodEtag });
      });
    });
  });

  it('refuses invalid options with a ConfigurationError naming the option', () => {
    const refuses = (options: PostgresStorageOptions, option: string): void => {
      assert.throws(
        () => postgresStorage(options),
        (err: Error & { code?: string }) => {
          assert.equal(err.name, 'ConfigurationError');
          assert.equal(err.code, 'GRANARY_CONFIGURATION');
          assert.ok(err.message.includes(`option ${option}`), `names option ${option}: ${err.message}`);
          return true;
        },
      );
    };
    refuses({ connectionString: '' }, 'connectionString');
    refuses({ connectionString, tablePrefix: 'a;drop' }, 'tablePrefix');
    refuses({ connectionString, tablePrefix: 'x'.repeat(41) }, 'tablePrefix');
    refuses({ connectionString, format: 'xml' as never }, 'format');
    refuses({ connectionString, poolSize: 0 }, 'poolSize');
    refuses({ connectionString, connectionTimeoutMs: 0 }, 'connectionTimeoutMs');
    refuses({ connectionString, queryTimeoutMs: 1.5 }, 'queryTimeoutMs');
  });
});
