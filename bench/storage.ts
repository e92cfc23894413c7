// bench/storage: what a storage provider's write costs over the raw driver
// doing the same conditional write (the same row shape, the same SQL or
// script, the same codec bytes), per store, measured in one run: one writer
// awaiting each write (p50 latency, writes/s) and 64 writers at once, each on
// its own record (writes/s). Target: Granary's overhead under 20% of the raw
// driver's time per write.
// Run: node --import tsx --conditions=source bench/storage.ts
//   --quick                               a short run (3 rounds instead of 5, shorter rounds)
//   --only=memory,sqlite,postgres,redis   measure only these stores
// PostgreSQL and Redis are the servers at GRANARY_TEST_POSTGRES and
// GRANARY_TEST_REDIS (default the local ones); one that cannot be reached is
// reported and skipped. Everything the bench creates there is removed at the end.

import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { Redis } from 'ioredis';
import pg from 'pg';
import { decode, encode, memoryStorage, silentLogger, type StateAddress, type StorageProvider } from 'granary';
import { postgresStorage } from 'granary/postgres';
import { redisStorage } from 'granary/redis';
import { sqliteStorage } from 'granary/sqlite';
import { median, option } from './support.ts';

// ---- Settings ----

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const ROUNDS = quick ? 3 : 5;
/**
 * Sequential writes per round and path: at least SEQ_WRITES and for at least
 * SEQ_MIN_MS (a fast store makes more), at most SEQ_CAP; a round stops at
 * SEQ_MAX_MS even if fewer were made.
 */
const SEQ_WRITES = quick ? 600 : 2000;
const SEQ_MIN_MS = quick ? 300 : 1000;
const SEQ_MAX_MS = quick ? 1000 : 3000;
const SEQ_CAP = 500_000;
/** Sequential writes a path makes before the other takes its turn, so both see the same machine. */
const SEQ_BLOCK = 100;
const WRITERS = 64;
const CON_MS = quick ? 400 : 1200;
const WARM_WRITES = quick ? 200 : 500;
const WARM_CON_MS = quick ? 150 : 400;
/** The whole run is stopped past this. */
const BUDGET_MS = quick ? 90_000 : 240_000;
const STORES = ['memory', 'sqlite', 'postgres', 'redis'] as const;
type StoreName = (typeof STORES)[number];
const only = option('only')?.split(',') ?? [...STORES];
const unknownStore = only.find((s) => !(STORES as readonly string[]).includes(s));
if (unknownStore !== undefined || only.length === 0)
  throw new Error(`--only takes a comma-separated list of ${STORES.join(', ')}; got '${option('only')}'`);
const postgresUrl = process.env['GRANARY_TEST_POSTGRES'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const redisUrl = process.env['GRANARY_TEST_REDIS'] ?? 'redis://127.0.0.1:6379';
const runId = randomUUID().replaceAll('-', '').slice(0, 10);

// ---- What is written ----

const serializer = { encode: (v: unknown) => encode(v), decode: (b: Uint8Array) => decode(b) };

/** The state of writer `w` at its `n`th write: a small shopping cart, about 250 bytes encoded. */
function stateOf(w: number, n: number): unknown {
  return {
    owner: `user-${w}`,
    version: n,
    updatedAt: 1_700_000_000_000 + n,
    lines: [
      { sku: 'SKU-1', qty: 1 + (n % 5), price: 9.99 },
      { sku: 'SKU-2', qty: 2, price: 24.5 },
      { sku: 'SKU-3', qty: 1, price: 3.25 },
    ],
    coupon: n % 2 === 0 ? 'SPRING' : null,
    note: 'leave at the door',
  };
}

/** One path's writes: `write(w, n)` makes writer w's next write, under its current ETag. */
interface Path {
  write(w: number, n: number): Promise<void>;
}

interface Contenders {
  readonly raw: Path;
  readonly granary: Path;
  /** What the raw path is, for the table. */
  readonly rawName: string;
  close(): Promise<void>;
}

const STATE_NAME = 'cart';
const granaryAddresses = Array.from({ length: WRITERS }, (_, w): StateAddress => ({
  grainType: 'benchCart',
  grainKey: `g-${w}`,
  stateName: STATE_NAME,
}));
const rawAddresses = Array.from({ length: WRITERS }, (_, w): StateAddress => ({
  grainType: 'benchCart',
  grainKey: `r-${w}`,
  stateName: STATE_NAME,
}));

/** Granary's path: provider.write, each writer keeping the ETag it got. */
async function granaryPath(provider: StorageProvider): Promise<Path> {
  await provider.init({ name: 'bench', logger: silentLogger(), serializer });
  const etags = await Promise.all(granaryAddresses.map((a, w) => provider.write(a, stateOf(w, 0), null)));
  return {
    async write(w, n) {
      etags[w] = await provider.write(granaryAddresses[w] as StateAddress, stateOf(w, n), etags[w] ?? null);
    },
  };
}

/** A write of the raw path that did not match its ETag: the bench is wrong, not slow. */
function lost(store: string, w: number): Error {
  return new Error(`${store} raw path: the write of writer ${w} matched no row; its ETag is out of step`);
}

// ---- The stores ----

async function memoryContenders(): Promise<Contenders> {
  const provider = memoryStorage();
  const granary = await granaryPath(provider);
  // The least a process-memory store does: encode, copy, key the address
  // (unambiguously, as the provider must), compare the ETag, store under a new one.
  const records = new Map<string, { bytes: Uint8Array; etag: string }>();
  const etags: Array<string | null> = rawAddresses.map(() => null);
  let last = 0;
  const raw: Path = {
    async write(w, n) {
      const bytes = new Uint8Array(encode(stateOf(w, n)));
      const a = rawAddresses[w] as StateAddress;
      const key = JSON.stringify([a.grainType, a.grainKey, a.stateName]);
      if ((records.get(key)?.etag ?? null) !== etags[w]) throw lost('memory', w);
      const etag = String(++last);
      records.set(key, { bytes, etag });
      etags[w] = etag;
    },
  };
  return { raw, granary, rawName: 'a Map, encode + ETag check', close: async () => provider.close() };
}

async function sqliteContenders(): Promise<Contenders> {
  const dir = mkdtempSync(join(tmpdir(), 'granary-bench-storage-'));
  const path = join(dir, 'state.db');
  const provider = sqliteStorage({ path });
  const granary = await granaryPath(provider);
  // The same statements on a second connection to the same file, in the same IMMEDIATE transaction.
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('busy_timeout = 5000');
  const nextVersion = db
    .prepare<[], number>('UPDATE granary_storage_seq SET value = value + 1 WHERE id = 1 RETURNING value')
    .pluck();
  const update = db.prepare<[Uint8Array, number, number, string, string, string, number]>(
    'UPDATE granary_storage SET payload = ?, version = ?, format_version = 1, updated_at = ? WHERE grain_type = ? AND grain_key = ? AND state_name = ? AND version = ?',
  );
  const insert = db.prepare<[string, string, string, Uint8Array, number, number]>(
    'INSERT INTO granary_storage (grain_type, grain_key, state_name, payload, version, format_version, updated_at) VALUES (?, ?, ?, ?, ?, 1, ?)',
  );
  const write = db.transaction((a: StateAddress, bytes: Uint8Array, etag: number | null): number | undefined => {
    const version = nextVersion.get();
    if (version === undefined) return undefined;
    if (etag === null)
      return insert.run(a.grainType, a.grainKey, a.stateName, bytes, version, Date.now()).changes === 1
        ? version
        : undefined;
    return update.run(bytes, version, Date.now(), a.grainType, a.grainKey, a.stateName, etag).changes === 1
      ? version
      : undefined;
  });
  const etags: Array<number | null> = rawAddresses.map(() => null);
  const raw: Path = {
    async write(w, n) {
      const version = write.immediate(rawAddresses[w] as StateAddress, encode(stateOf(w, n)), etags[w] ?? null);
      if (version === undefined) throw lost('sqlite', w);
      etags[w] = version;
    },
  };
  for (let w = 0; w < WRITERS; w++) await raw.write(w, 0);
  return {
    raw,
    granary,
    rawName: 'better-sqlite3, same statements',
    close: async () => {
      db.close();
      await provider.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function postgresContenders(): Promise<Contenders> {
  const tablePrefix = `bench_${runId}_`;
  const table = `"${tablePrefix}storage"`;
  const sequence = `"${tablePrefix}storage_version"`;
  const provider = postgresStorage({ connectionString: postgresUrl, tablePrefix, connectionTimeoutMs: 3000 });
  const pool = new pg.Pool({ connectionString: postgresUrl, max: 10, connectionTimeoutMillis: 3000 });
  const drop = async (): Promise<void> => {
    await pool.query(`DROP TABLE IF EXISTS ${table}; DROP SEQUENCE IF EXISTS ${sequence}`);
  };
  try {
    const granary = await granaryPath(provider);
    // The provider's statements, through a pool of the same size.
    const insert = `INSERT INTO ${table} (grain_type, grain_key, state_name, payload, version, format_version, updated_at)
      VALUES ($1, $2, $3, $4, nextval('${sequence}'), 1, now()) ON CONFLICT (grain_type, grain_key, state_name) DO NOTHING RETURNING version`;
    const update = `UPDATE ${table} SET payload = $4, version = nextval('${sequence}'), format_version = 1, updated_at = now()
      WHERE grain_type = $1 AND grain_key = $2 AND state_name = $3 AND version = $5 RETURNING version`;
    const etags: Array<string | null> = rawAddresses.map(() => null);
    const raw: Path = {
      async write(w, n) {
        const a = rawAddresses[w] as StateAddress;
        const bytes = encode(stateOf(w, n));
        const etag = etags[w] ?? null;
        const rows =
          etag === null
            ? (await pool.query<{ version: string }>(insert, [a.grainType, a.grainKey, a.stateName, bytes])).rows
            : (await pool.query<{ version: string }>(update, [a.grainType, a.grainKey, a.stateName, bytes, etag])).rows;
        const row = rows[0];
        if (row === undefined) throw lost('postgres', w);
        etags[w] = String(row.version);
      },
    };
    await Promise.all(rawAddresses.map((_, w) => raw.write(w, 0)));
    return {
      raw,
      granary,
      rawName: 'pg Pool, same SQL',
      close: async () => {
        await provider.close();
        await drop();
        await pool.end();
      },
    };
  } catch (err) {
    await Promise.resolve()
      .then(() => provider.close())
      .catch(() => undefined);
    await drop().catch(() => undefined);
    await pool.end().catch(() => undefined);
    throw err;
  }
}

/** The provider's write, as a plain script: the ETag check, a version from the counter, the hash. */
const REDIS_WRITE = `
local found = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return false end
elseif found ~= ARGV[1] then
  return false
end
local version = string.format('%d', redis.call('INCR', KEYS[2]))
redis.call('HSET', KEYS[1], 'payload', ARGV[2], 'version', version, 'format_version', '1', 'updated_at', ARGV[3])
return version`;

async function redisContenders(): Promise<Contenders> {
  const keyPrefix = `bench:${runId}:`;
  const provider = redisStorage({ url: redisUrl, keyPrefix, connectTimeoutMs: 3000 });
  const redis = new Redis(redisUrl, { lazyConnect: true, connectTimeout: 3000, maxRetriesPerRequest: 1 });
  redis.on('error', () => undefined);
  const removeKeys = async (): Promise<void> => {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${keyPrefix}*`, 'COUNT', 1000);
      if (keys.length > 0) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  };
  try {
    const granary = await granaryPath(provider);
    await redis.connect();
    redis.defineCommand('benchRawWrite', { numberOfKeys: 2, lua: REDIS_WRITE });
    const scripted = redis as Redis & {
      benchRawWrite(record: string, counter: string, etag: string, payload: Buffer, at: string): Promise<string | null>;
    };
    const counter = `${keyPrefix}storage:etag`;
    const etags: Array<string | null> = rawAddresses.map(() => null);
    const raw: Path = {
      async write(w, n) {
        const bytes = encode(stateOf(w, n));
        const payload = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        const a = rawAddresses[w] as StateAddress;
        // The key from the address, as the provider makes it.
        const key = `${keyPrefix}storage:${JSON.stringify([a.grainType, a.grainKey, a.stateName])}`;
        const version = await scripted.benchRawWrite(key, counter, etags[w] ?? '', payload, String(Date.now()));
        if (version === null) throw lost('redis', w);
        etags[w] = version;
      },
    };
    await Promise.all(rawAddresses.map((_, w) => raw.write(w, 0)));
    return {
      raw,
      granary,
      rawName: 'ioredis, same Lua script',
      close: async () => {
        await provider.close();
        await removeKeys();
        redis.disconnect();
      },
    };
  } catch (err) {
    await Promise.resolve()
      .then(() => provider.close())
      .catch(() => undefined);
    if (redis.status === 'ready') await removeKeys().catch(() => undefined);
    redis.disconnect();
    throw err;
  }
}

const setups: Record<StoreName, { label: string; setup: () => Promise<Contenders> }> = {
  memory: { label: 'memory', setup: memoryContenders },
  sqlite: { label: 'sqlite (file)', setup: sqliteContenders },
  postgres: { label: 'postgres', setup: postgresContenders },
  redis: { label: 'redis', setup: redisContenders },
};

// ---- Measurements ----

type PathName = 'raw' | 'granary';

interface Round {
  p50: number;
  seqRate: number;
  seqWrites: number;
  conRate: number;
}

/**
 * Writer 0 of each path awaiting each write in turn, the paths taking turns
 * every SEQ_BLOCK writes, until each made `count` writes and `minMs` passed
 * (or `maxMs` passed). Latency p50 in µs and writes per second, per path.
 */
async function sequential(
  paths: Record<PathName, Path>,
  counter: { n: number },
  count: number,
  minMs: number,
  maxMs: number,
): Promise<Record<PathName, { p50: number; rate: number; writes: number }>> {
  const samples = { raw: new Float64Array(SEQ_CAP), granary: new Float64Array(SEQ_CAP) };
  const busyMs = { raw: 0, granary: 0 };
  const start = performance.now();
  let done = 0;
  for (;;) {
    const elapsed = performance.now() - start;
    if (elapsed >= maxMs || done + SEQ_BLOCK > SEQ_CAP || (done >= count && elapsed >= minMs)) break;
    for (const name of ['raw', 'granary'] as const) {
      const path = paths[name];
      const into = samples[name];
      const blockStart = performance.now();
      for (let i = done; i < done + SEQ_BLOCK; i++) {
        const t0 = performance.now();
        await path.write(0, ++counter.n);
        into[i] = (performance.now() - t0) * 1000;
      }
      busyMs[name] += performance.now() - blockStart;
    }
    done += SEQ_BLOCK;
  }
  const p50 = (s: Float64Array): number => s.subarray(0, done).sort()[Math.floor(done / 2)] ?? NaN;
  return {
    raw: { p50: p50(samples.raw), rate: done / (busyMs.raw / 1000), writes: done },
    granary: { p50: p50(samples.granary), rate: done / (busyMs.granary / 1000), writes: done },
  };
}

/** WRITERS writers of one path, each on its own record, each awaiting its writes in turn, for `ms`. Writes per second. */
async function concurrent(path: Path, counter: { n: number }, ms: number): Promise<number> {
  let writes = 0;
  const start = performance.now();
  const end = start + ms;
  await Promise.all(
    Array.from({ length: WRITERS }, async (_, w) => {
      while (performance.now() < end) {
        await path.write(w, ++counter.n);
        writes++;
      }
    }),
  );
  return writes / ((performance.now() - start) / 1000);
}

interface StoreResult {
  readonly label: string;
  readonly rawName: string;
  readonly rounds: Record<PathName, Round[]>;
}

async function measure(store: StoreName): Promise<StoreResult | string> {
  const { label, setup } = setups[store];
  let contenders: Contenders;
  try {
    contenders = await setup();
  } catch (err) {
    return `${label}: skipped, cannot set up (${err instanceof Error ? err.message : String(err)})`;
  }
  try {
    const paths = { raw: contenders.raw, granary: contenders.granary };
    const counter = { n: 0 };
    await sequential(paths, counter, WARM_WRITES, 0, SEQ_MAX_MS);
    for (const path of Object.values(paths)) await concurrent(path, counter, WARM_CON_MS);
    const rounds: Record<PathName, Round[]> = { raw: [], granary: [] };
    for (let r = 0; r < ROUNDS; r++) {
      const seq = await sequential(paths, counter, SEQ_WRITES, SEQ_MIN_MS, SEQ_MAX_MS);
      // Alternate which path goes first, so neither always meets a store busy with the other's leftovers.
      const order: PathName[] = r % 2 === 0 ? ['raw', 'granary'] : ['granary', 'raw'];
      const con = { raw: NaN, granary: NaN };
      for (const name of order) con[name] = await concurrent(paths[name], counter, CON_MS);
      for (const name of ['raw', 'granary'] as const)
        rounds[name].push({
          p50: seq[name].p50,
          seqRate: seq[name].rate,
          seqWrites: seq[name].writes,
          conRate: con[name],
        });
    }
    return { label, rawName: contenders.rawName, rounds };
  } finally {
    await contenders.close();
  }
}

// ---- Report ----

function report(results: ReadonlyArray<StoreResult | string>, totalMs: number): void {
  const f = (n: number, d = 0): string =>
    Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : '–';
  const pct = (x: number): string => (Number.isFinite(x) ? `${x >= 0 ? '+' : ''}${f(100 * x, 1)}%` : '–');
  const verdict = (x: number): string => (Number.isFinite(x) ? (x < 0.2 ? ' (met)' : ' (missed)') : '');
  const bytes = encode(stateOf(0, 1)).length;
  console.log(
    `storage write: Granary's provider.write against the raw driver doing the same conditional write (same row, same ${bytes}-byte codec payload), ${availableParallelism()} cores, median of ${ROUNDS} rounds`,
  );
  console.log(
    `(sequential: at least ${f(SEQ_WRITES)} awaited writes and ${f(SEQ_MIN_MS)} ms per round and path on one record, the paths taking turns every ${SEQ_BLOCK}; concurrent: ${WRITERS} writers on ${WRITERS} records for ${f(CON_MS)} ms)`,
  );
  console.log('');
  console.log('| store | figure | raw driver | Granary | Granary overhead (time per write) | target |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  const skipped: string[] = [];
  for (const result of results) {
    if (typeof result === 'string') {
      skipped.push(result);
      continue;
    }
    const { label, rawName, rounds } = result;
    const m = (name: PathName, pick: (r: Round) => number): number => median(rounds[name].map(pick));
    const rawP50 = m('raw', (r) => r.p50),
      gP50 = m('granary', (r) => r.p50);
    const rawSeq = m('raw', (r) => r.seqRate),
      gSeq = m('granary', (r) => r.seqRate);
    const rawCon = m('raw', (r) => r.conRate),
      gCon = m('granary', (r) => r.conRate);
    const p50Over = gP50 / rawP50 - 1;
    const seqOver = rawSeq / gSeq - 1;
    const conOver = rawCon / gCon - 1;
    console.log(
      `| ${label} (raw: ${rawName}) | sequential p50 µs | ${f(rawP50, 1)} | ${f(gP50, 1)} | ${pct(p50Over)}${verdict(p50Over)} | under 20% |`,
    );
    console.log(
      `| | sequential writes/s | ${f(rawSeq)} | ${f(gSeq)} | ${pct(seqOver)}${verdict(seqOver)} | under 20% |`,
    );
    console.log(
      `| | ${WRITERS} writers, writes/s | ${f(rawCon)} | ${f(gCon)} | ${pct(conOver)}${verdict(conOver)} | under 20% |`,
    );
  }
  console.log('');
  for (const result of results) {
    if (typeof result === 'string') continue;
    const rounds = (name: PathName): string =>
      result.rounds[name].map((r) => `p50 ${f(r.p50, 1)} µs of ${f(r.seqWrites)}, ${f(r.conRate)} w/s`).join('; ');
    console.log(`rounds, ${result.label}: raw ${rounds('raw')} | Granary ${rounds('granary')}`);
  }
  for (const s of skipped) console.log(s);
  console.log(`whole run ${f(totalMs / 1000, 1)} s`);
  console.log(
    `command: node --import tsx --conditions=source bench/storage.ts${argv.length > 0 ? ` ${argv.join(' ')}` : ''}`,
  );
}

async function main(): Promise<void> {
  const watchdog = setTimeout(() => {
    console.error(
      `bench/storage: over its ${BUDGET_MS} ms budget; stopping (tables and keys named bench_${runId}_ / bench:${runId}: may be left behind)`,
    );
    process.exit(1);
  }, BUDGET_MS);
  watchdog.unref();
  const started = performance.now();
  const results: Array<StoreResult | string> = [];
  for (const store of STORES) {
    if (only.includes(store)) results.push(await measure(store));
  }
  report(results, performance.now() - started);
  clearTimeout(watchdog);
}

await main();
