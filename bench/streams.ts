// bench/streams: stream items from a producer to implicitly subscribed grains,
// on NATS JetStream streams and on memory streams, against the raw limit (the
// JetStream client publishing the same items, encoded with the project's
// codec, to a stream of its own and consuming them with one durable pull
// consumer, acking each). Measured in one process and one run, the paths
// taking turns: items/s from one producer to one grain (one stream), items/s
// over 1,000 streams to 1,000 grains, and publish-to-delivery latency (one
// item published, its delivery awaited, the next published). Targets: NATS
// streams at least 70% of raw JetStream's items/s, p50 within 1.5x raw's.
// Memory streams are shown against raw JetStream for scale only.
// NATS is the server at GRANARY_TEST_NATS (default 127.0.0.1:4222, with
// JetStream); the JetStream streams the bench makes are deleted at the end.
// Run: node --import tsx --conditions=source bench/streams.ts
//   --quick                  a short run (about 15 s instead of about 60 to 75 s)
//   --only=raw,nats,memory   measure only these paths (for profiling one of them)
//   --figures=latency,one,many  measure only these figures (default all three; for profiling one of them)
//   --items=N                items per throughput measurement (default 30,000; 6,000 with --quick)
//   --sequential-items=N     awaited items per round and path for the latency (default 1,000; 300 with --quick)
// Profile with: node --cpu-prof --import tsx --conditions=source bench/streams.ts --only=nats

import { randomUUID } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  type ConsumerMessages,
  type JetStreamManager,
} from '@nats-io/jetstream';
import {
  Grain,
  Silo,
  decode,
  encode,
  grain,
  implicitSubscription,
  memoryStreams,
  silentLogger,
  type Stream,
  type StreamId,
  type StreamToken,
} from 'granary';
import { natsStreams } from 'granary/nats';
import { median, option } from './support.ts';

// ---- Settings ----

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const wholeOption = (name: string, dflt: number, min: number): number => {
  const v = Number(option(name) ?? dflt);
  if (!(Number.isInteger(v) && v >= min))
    throw new Error(`--${name} takes a whole number of at least ${min}, got '${option(name)}'`);
  return v;
};
const ROUNDS = quick ? 3 : 5;
/** Items per throughput measurement; a measurement also stops publishing at TP_MAX_MS. */
const TP_ITEMS = wholeOption('items', quick ? 6000 : 30_000, 1);
const TP_MAX_MS = quick ? 1000 : 3000;
/** Publish calls in flight at once, for every path. */
const PUBLISHERS = 256;
/** Items published and not yet delivered, at most (memory streams refuse past maxQueuedItems). */
const OUTSTANDING = 4096;
const SEQ_ITEMS = wholeOption('sequential-items', quick ? 300 : 1000, 1);
/** A round's sequential items stop here, for all paths together, even if fewer were made. */
const SEQ_MAX_MS = quick ? 1500 : 4000;
/** Sequential items a path makes before the next path takes its turn. */
const SEQ_BLOCK = 100;
const WARM_ITEMS = quick ? 2000 : 5000;
const WARM_MAX_MS = quick ? 500 : 1000;
const WARM_SEQ_ITEMS = quick ? 100 : 300;
const STREAMS = 1000;
/** Longest wait for the items published so far to arrive. */
const DRAIN_TIMEOUT_MS = 15_000;
/** The whole run is stopped past this. */
const BUDGET_MS = quick ? 45_000 : 150_000;
const NATS = process.env['GRANARY_TEST_NATS'] ?? '127.0.0.1:4222';
/** JetStream keeps what the bench publishes no longer than this, should the clean-up not run. */
const MAX_AGE_MS = 15 * 60_000;
/** The stream providers of the silo: NATS streams under `events`, memory streams under `memory`. */
const NATS_PROVIDER = 'events';
const MEMORY_PROVIDER = 'memory';
const ONE = 'benchOne';
const MANY = 'benchMany';
const ONE_KEY = 'solo';
type PathName = 'raw' | 'nats' | 'memory';
const ALL_PATHS: readonly PathName[] = ['raw', 'nats', 'memory'];
const only = option('only')?.split(',') ?? ALL_PATHS;
const unknownPath = only.find((p) => !(ALL_PATHS as readonly string[]).includes(p));
if (unknownPath !== undefined || only.length === 0)
  throw new Error(`--only takes a comma-separated list of ${ALL_PATHS.join(', ')}; got '${option('only')}'`);
const paths = ALL_PATHS.filter((p) => only.includes(p));
type FigureName = 'latency' | 'one' | 'many';
const ALL_FIGURES: readonly FigureName[] = ['latency', 'one', 'many'];
const figureList = option('figures')?.split(',') ?? ALL_FIGURES;
const unknownFigure = figureList.find((x) => !(ALL_FIGURES as readonly string[]).includes(x));
if (unknownFigure !== undefined || figureList.length === 0)
  throw new Error(`--figures takes a comma-separated list of ${ALL_FIGURES.join(', ')}; got '${option('figures')}'`);
const figures = new Set(figureList as FigureName[]);
const runId = `bench${Date.now()}${randomUUID().slice(0, 4)}`;

// ---- What is published: the phase it belongs to, its number, its publish time, a small body ----

interface Item {
  readonly phase: number;
  readonly n: number;
  /** performance.now() when publish was called (same process). */
  readonly at: number;
  readonly device: string;
  readonly value: number;
}

const itemOf = (phase: number, n: number): Item => ({
  phase,
  n,
  at: performance.now(),
  device: `sensor-${n % 64}`,
  value: 20 + (n % 100) / 10,
});

// ---- Where items arrive: one sink per path ----

/**
 * Counts the items of the current phase a path's consumers receive, keeps the
 * last one's latency, and wakes whoever waits for a count. Items of an
 * earlier phase (late or handed out again) are counted apart.
 */
class Sink {
  phase = -1;
  count = 0;
  /** performance.now() of the last item of the phase. */
  lastAt = 0;
  /** Publish-to-delivery of the last item, in µs. */
  lastLatencyUs = 0;
  /** Items of other phases. */
  stray = 0;
  /** Items of the one stream that came before one with a lower number (order broken). */
  outOfOrder = 0;
  #lastOne = -1;
  #wake = Infinity;
  #waiters: Array<{ target: number; resolve: () => void }> = [];

  constructor(readonly name: PathName) {}

  begin(phase: number): void {
    this.phase = phase;
    this.count = 0;
    this.lastAt = performance.now();
    this.#lastOne = -1;
  }

  got(item: Item, one: boolean): void {
    if (item.phase !== this.phase) {
      this.stray++;
      return;
    }
    this.count++;
    this.lastAt = performance.now();
    this.lastLatencyUs = (this.lastAt - item.at) * 1000;
    if (one) {
      if (item.n < this.#lastOne) this.outOfOrder++;
      this.#lastOne = item.n;
    }
    if (this.count >= this.#wake) this.#flush();
  }

  /** Resolves once `target` items of the phase arrived; rejects after `timeoutMs`. */
  until(target: number, timeoutMs = DRAIN_TIMEOUT_MS): Promise<void> {
    if (this.count >= target) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(
          new Error(
            `${this.name}: ${this.count} of ${target} items of phase ${this.phase} arrived within ${timeoutMs} ms (${this.stray} of other phases)`,
          ),
        );
      }, timeoutMs);
      const waiter = {
        target,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      this.#waiters.push(waiter);
      this.#wake = Math.min(this.#wake, target);
    });
  }

  #flush(): void {
    const due = this.#waiters.filter((w) => w.target <= this.count);
    this.#waiters = this.#waiters.filter((w) => w.target > this.count);
    this.#wake = this.#waiters.reduce((m, w) => Math.min(m, w.target), Infinity);
    for (const w of due) w.resolve();
  }
}

const sinks: Record<PathName, Sink> = { raw: new Sink('raw'), nats: new Sink('nats'), memory: new Sink('memory') };
const sinkOf = (provider: string): Sink => (provider === NATS_PROVIDER ? sinks.nats : sinks.memory);

// ---- The grains: implicitly subscribed, one to the single stream, one per stream of the thousand ----

@grain('benchStreamOne')
@implicitSubscription(ONE)
class OneConsumer extends Grain {
  received = 0;
  async onStreamItem(item: Item, _token: StreamToken, stream: StreamId): Promise<void> {
    this.received++;
    sinkOf(stream.provider).got(item, true);
  }
}

@grain('benchStreamMany')
@implicitSubscription(MANY)
class ManyConsumer extends Grain {
  received = 0;
  async onStreamItem(item: Item, _token: StreamToken, stream: StreamId): Promise<void> {
    this.received++;
    sinkOf(stream.provider).got(item, false);
  }
}

// ---- The paths: how each publishes to the one stream and to stream k of the thousand ----

interface Path {
  one(item: Item): Promise<unknown>;
  many(k: number, item: Item): Promise<unknown>;
}

/** The raw baseline: the JetStream client, one stream, one durable pull consumer, each item acked. */
async function rawPath(nc: NatsConnection, jsm: JetStreamManager): Promise<{ path: Path; close(): Promise<void> }> {
  const stream = `granary_${runId}_raw`;
  const base = `${runId}.raw`;
  await jsm.streams.add({ name: stream, subjects: [`${base}.>`], max_age: nanos(MAX_AGE_MS) });
  // As Granary's consumers: explicit acks, the same window of unacknowledged items and pull size.
  await jsm.consumers.add(stream, {
    durable_name: 'bench',
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    max_ack_pending: 1000,
    max_deliver: -1,
  });
  const js = jetstream(nc);
  const consumer = await js.consumers.get(stream, 'bench');
  // A handler per stream, looked up by the subject's key, as the grains are per stream.
  const handlers = new Map<string, { received: number }>();
  const oneSubject = `${base}.${ONE}.${ONE_KEY}`;
  const manySubjects = Array.from({ length: STREAMS }, (_, k) => `${base}.${MANY}.${k}`);
  for (const s of [oneSubject, ...manySubjects]) handlers.set(s, { received: 0 });
  const messages: ConsumerMessages = await consumer.consume({
    max_messages: 256,
    callback: (m) => {
      const item = decode(m.data) as Item;
      const h = handlers.get(m.subject);
      if (h !== undefined) h.received++;
      sinks.raw.got(item, m.subject === oneSubject);
      m.ack();
    },
  });
  return {
    path: {
      one: (item) => js.publish(oneSubject, encode(item)),
      many: (k, item) => js.publish(manySubjects[k] as string, encode(item)),
    },
    close: async () => {
      await messages.close().catch(() => undefined);
    },
  };
}

/** Granary's path: a silo's stream handles of provider `provider`. */
function granaryPath(silo: Silo, provider: string): Path {
  const one = silo.getStream<Item>(provider, ONE, ONE_KEY);
  const many: Array<Stream<Item>> = Array.from({ length: STREAMS }, (_, k) =>
    silo.getStream<Item>(provider, MANY, String(k)),
  );
  return {
    one: (item) => one.publish(item),
    many: (k, item) => (many[k] as Stream<Item>).publish(item),
  };
}

// ---- Measurements ----

let nextPhase = 0;

interface Throughput {
  rate: number;
  items: number;
  /** CPU time of this process per item, µs. */
  cpuUs: number;
  /** CPU time of the local nats-server per item, µs (NaN if unknown). */
  serverUs: number;
}

/**
 * PUBLISHERS publish calls at once, each awaited, item n waiting until at
 * most OUTSTANDING items are published and not yet delivered; up to `items`
 * items or until `maxMs`. The rate is over the time from the first publish to
 * the last delivery.
 */
async function throughput(
  name: PathName,
  publish: (n: number, item: Item) => Promise<unknown>,
  items: number,
  maxMs: number,
): Promise<Throughput> {
  const sink = sinks[name];
  const phase = nextPhase++;
  sink.begin(phase);
  const cpu = process.cpuUsage();
  const server = serverCpuUs();
  const start = performance.now();
  const end = start + maxMs;
  let next = 0;
  await Promise.all(
    Array.from({ length: PUBLISHERS }, async () => {
      while (next < items && performance.now() < end) {
        const n = next++;
        if (n >= OUTSTANDING) await sink.until(n - OUTSTANDING + 1);
        await publish(n, itemOf(phase, n));
      }
    }),
  );
  await sink.until(next);
  const used = process.cpuUsage(cpu);
  return {
    rate: next / ((sink.lastAt - start) / 1000),
    items: next,
    cpuUs: (used.user + used.system) / next,
    serverUs: (serverCpuUs() - server) / next,
  };
}

interface Latency {
  p50: number;
  p99: number;
  items: number;
}

/**
 * One item published to the one stream, its delivery awaited, the next
 * published; `count` per path, the paths taking turns every SEQ_BLOCK items
 * so that each sees the same machine. Stops at `maxMs`.
 */
async function sequential(
  all: ReadonlyMap<PathName, Path>,
  count: number,
  maxMs: number,
): Promise<Map<PathName, Latency>> {
  const samples = new Map<PathName, Float64Array>();
  for (const p of all.keys()) samples.set(p, new Float64Array(count));
  const end = performance.now() + maxMs;
  let n = 0;
  while (n < count && performance.now() < end) {
    const block = Math.min(SEQ_BLOCK, count - n);
    for (const [p, path] of all) {
      const sink = sinks[p];
      const s = samples.get(p) as Float64Array;
      const phase = nextPhase++;
      sink.begin(phase);
      for (let i = 0; i < block; i++) {
        await path.one(itemOf(phase, i));
        await sink.until(i + 1);
        s[n + i] = sink.lastLatencyUs;
      }
    }
    n += block;
  }
  return new Map(
    [...samples].map(([p, s]) => {
      const sorted = s.subarray(0, n).sort();
      const at = (q: number): number => sorted[Math.min(n - 1, Math.floor(q * n))] ?? NaN;
      return [p, { p50: at(0.5), p99: at(0.99), items: n }];
    }),
  );
}

/**
 * The local nats-server process, if exactly one runs on this machine (Linux):
 * its CPU time per item is shown besides this process's. Undefined elsewhere.
 */
const natsServerPid = ((): string | undefined => {
  try {
    const found = readdirSync('/proc').filter((d) => {
      if (!/^[0-9]+$/.test(d)) return false;
      try {
        return /(^|\/)nats-server$/.test(readFileSync(`/proc/${d}/cmdline`, 'latin1').split('\0')[0] ?? '');
      } catch {
        return false;
      }
    });
    return found.length === 1 ? found[0] : undefined;
  } catch {
    return undefined;
  }
})();

/** CPU time of the local nats-server so far, user and system, in µs (10 ms steps); NaN if unknown. */
function serverCpuUs(): number {
  if (natsServerPid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${natsServerPid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime, fields 14 and 15 of stat, in clock ticks (100 a second on Linux).
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return NaN;
  }
}

interface PathResult {
  seq: Latency[];
  one: Throughput[];
  many: Throughput[];
}

// ---- The run ----

async function main(): Promise<void> {
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  /** JetStream streams the run made (or a silo made for it), deleted at the end. */
  const jsStreams: string[] = [];
  let jsm: JetStreamManager | undefined;
  const deleteStreams = async (): Promise<void> => {
    if (jsm === undefined) return;
    for (const name of jsStreams) await jsm.streams.delete(name).catch(() => undefined);
  };
  const watchdog = setTimeout(() => {
    console.error(`bench/streams: over its ${BUDGET_MS} ms budget; stopping`);
    const exit = setTimeout(() => process.exit(1), 3000);
    exit.unref();
    void deleteStreams().finally(() => process.exit(1));
  }, BUDGET_MS);
  watchdog.unref();
  const started = performance.now();
  try {
    // The raw client connects as natsStreams does (no async traces), so both run at their best.
    const nc = await connect({
      servers: NATS,
      timeout: 5000,
      name: `granary bench ${runId}`,
      noAsyncTraces: true,
    }).catch((e: unknown) => {
      throw new Error(`bench/streams: cannot reach NATS at ${NATS} (GRANARY_TEST_NATS): ${String(e)}`);
    });
    cleanups.push(() => nc.close());
    jsm = await jetstreamManager(nc);

    const all = new Map<PathName, Path>();
    if (paths.includes('raw')) {
      jsStreams.push(`granary_${runId}_raw`);
      const raw = await rawPath(nc, jsm);
      cleanups.push(() => raw.close());
      all.set('raw', raw.path);
    }
    let silo: Silo | undefined;
    if (paths.includes('nats') || paths.includes('memory')) {
      jsStreams.push(`granary_${runId}_${NATS_PROVIDER}`, `KV_granary_${runId}_${NATS_PROVIDER}_leases`);
      silo = await Silo.start({
        clusterId: runId,
        grains: [OneConsumer, ManyConsumer],
        logger: silentLogger(),
        streams: {
          [NATS_PROVIDER]: natsStreams({ servers: NATS, queues: 8, maxAgeMs: MAX_AGE_MS }),
          [MEMORY_PROVIDER]: memoryStreams(),
        },
      });
      const s = silo;
      cleanups.push(() => s.stop());
    }
    // Each path in ALL_PATHS order; the map is read in insertion order.
    const ordered = new Map<PathName, Path>();
    for (const p of paths) {
      if (p === 'raw') ordered.set(p, all.get('raw') as Path);
      else ordered.set(p, granaryPath(silo as Silo, p === 'nats' ? NATS_PROVIDER : MEMORY_PROVIDER));
    }
    const startMs = performance.now() - started;

    // Warm up: every grain activated and every stream's first publish done, code optimised.
    for (const [p, path] of ordered) {
      const sink = sinks[p];
      const phase = nextPhase++;
      sink.begin(phase);
      await Promise.all(Array.from({ length: STREAMS }, (_, k) => path.many(k, itemOf(phase, k))));
      await path.one(itemOf(phase, STREAMS));
      await sink.until(STREAMS + 1);
      if (figures.has('one')) await throughput(p, (_n, item) => path.one(item), WARM_ITEMS, WARM_MAX_MS);
      if (figures.has('many')) await throughput(p, (n, item) => path.many(n % STREAMS, item), WARM_ITEMS, WARM_MAX_MS);
    }
    if (figures.has('latency')) await sequential(ordered, WARM_SEQ_ITEMS, SEQ_MAX_MS);

    const results = new Map<PathName, PathResult>();
    for (const p of ordered.keys()) results.set(p, { seq: [], one: [], many: [] });
    for (let round = 0; round < ROUNDS; round++) {
      if (figures.has('latency'))
        for (const [p, latency] of await sequential(ordered, SEQ_ITEMS, SEQ_MAX_MS))
          (results.get(p) as PathResult).seq.push(latency);
      if (figures.has('one'))
        for (const [p, path] of ordered)
          (results.get(p) as PathResult).one.push(
            await throughput(p, (_n, item) => path.one(item), TP_ITEMS, TP_MAX_MS),
          );
      if (figures.has('many'))
        for (const [p, path] of ordered)
          (results.get(p) as PathResult).many.push(
            await throughput(p, (n, item) => path.many(n % STREAMS, item), TP_ITEMS, TP_MAX_MS),
          );
    }
    report(results, startMs, performance.now() - started);
  } finally {
    for (const c of cleanups.reverse()) {
      try {
        await c();
      } catch {
        // closing what may already be broken
      }
    }
    // The manager's connection is closed by now: delete over a fresh one.
    if (jsStreams.length > 0) {
      try {
        const nc = await connect({ servers: NATS, timeout: 5000 });
        jsm = await jetstreamManager(nc);
        await deleteStreams();
        await nc.close();
      } catch (e) {
        console.error(`bench/streams: could not delete the JetStream streams ${jsStreams.join(', ')}: ${String(e)}`);
      }
    }
    clearTimeout(watchdog);
  }
}

function report(results: ReadonlyMap<PathName, PathResult>, startMs: number, totalMs: number): void {
  const f = (n: number, d = 0): string =>
    Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : '–';
  const fig = (
    p: PathName,
  ): {
    p50: number;
    p99: number;
    one: number;
    many: number;
    oneCpu: number;
    manyCpu: number;
    oneServer: number;
    manyServer: number;
  } => {
    const r = results.get(p);
    if (r === undefined)
      return { p50: NaN, p99: NaN, one: NaN, many: NaN, oneCpu: NaN, manyCpu: NaN, oneServer: NaN, manyServer: NaN };
    return {
      p50: median(r.seq.map((s) => s.p50)),
      p99: median(r.seq.map((s) => s.p99)),
      one: median(r.one.map((t) => t.rate)),
      many: median(r.many.map((t) => t.rate)),
      oneCpu: median(r.one.map((t) => t.cpuUs)),
      manyCpu: median(r.many.map((t) => t.cpuUs)),
      oneServer: median(r.one.map((t) => t.serverUs)),
      manyServer: median(r.many.map((t) => t.serverUs)),
    };
  };
  const raw = fig('raw'),
    nats = fig('nats'),
    memory = fig('memory');
  const verdict = (x: number, ok: boolean): string => (Number.isFinite(x) ? (ok ? ' (met)' : ' (missed)') : '');
  const share = (x: number, of: number): number => (100 * x) / of;
  const seqItems = Math.min(...[...results.values()].flatMap((r) => r.seq.map((s) => s.items)));
  const tpItems = Math.min(...[...results.values()].flatMap((r) => [...r.one, ...r.many].map((t) => t.items)));
  console.log(
    `streams, one process, ${availableParallelism()} cores, NATS at ${NATS} (median of ${ROUNDS} rounds; throughput: ${f(tpItems)}+ items per measurement, ${PUBLISHERS} publish calls in flight, at most ${f(OUTSTANDING)} items undelivered; latency: ${f(seqItems)} items per round and path, each awaited until delivered, the paths taking turns every ${SEQ_BLOCK})`,
  );
  console.log('');
  console.log(
    '| figure | raw JetStream (client, one pull consumer, ack each) | NATS streams | NATS vs raw | target | memory streams | memory vs raw JetStream (scale only) |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  const tpRow = (label: string, r: number, n: number, m: number): void => {
    const s = share(n, r);
    console.log(
      `| ${label} | ${f(r)} | ${f(n)} | ${f(s, 1)}% of raw${verdict(s, s >= 70)} | at least 70% | ${f(m)} | ${f(share(m, r), 0)}% |`,
    );
  };
  tpRow('1 stream → 1 grain, items/s', raw.one, nats.one, memory.one);
  tpRow(`${f(STREAMS)} streams → ${f(STREAMS)} grains, items/s`, raw.many, nats.many, memory.many);
  const p50x = nats.p50 / raw.p50;
  console.log(
    `| publish → delivery p50 µs | ${f(raw.p50, 1)} | ${f(nats.p50, 1)} | ${f(p50x, 2)}x raw${verdict(p50x, p50x <= 1.5)} | within 1.5x | ${f(memory.p50, 1)} | ${f(memory.p50 / raw.p50, 2)}x |`,
  );
  console.log(
    `| publish → delivery p99 µs | ${f(raw.p99, 1)} | ${f(nats.p99, 1)} | ${f(nats.p99 / raw.p99, 2)}x raw | | ${f(memory.p99, 1)} | ${f(memory.p99 / raw.p99, 2)}x |`,
  );
  const cpuRow = (label: string, pick: (x: typeof raw) => [number, number]): void => {
    const [r1, rm] = pick(raw),
      [n1, nm] = pick(nats),
      [m1, mm] = pick(memory);
    console.log(
      `| ${label}, 1 → 1 / ${f(STREAMS)} → ${f(STREAMS)} | ${f(r1, 1)} / ${f(rm, 1)} | ${f(n1, 1)} / ${f(nm, 1)} | ${f(n1 / r1, 2)}x / ${f(nm / rm, 2)}x | | ${f(m1, 1)} / ${f(mm, 1)} | |`,
    );
  };
  cpuRow('CPU µs per item, this process', (x) => [x.oneCpu, x.manyCpu]);
  if (natsServerPid !== undefined) cpuRow('CPU µs per item, nats-server', (x) => [x.oneServer, x.manyServer]);
  console.log('');
  const rounds = (p: PathName): string => {
    const r = results.get(p);
    return r === undefined
      ? '–'
      : `p50 ${r.seq.map((x) => f(x.p50, 1)).join(' / ')} µs, 1 → 1 ${r.one.map((x) => f(x.rate)).join(' / ')} items/s, ${f(STREAMS)} → ${f(STREAMS)} ${r.many.map((x) => f(x.rate)).join(' / ')} items/s`;
  };
  console.log(`rounds: raw ${rounds('raw')}; nats ${rounds('nats')}; memory ${rounds('memory')}`);
  const anomalies = ALL_PATHS.filter((p) => sinks[p].stray > 0 || sinks[p].outOfOrder > 0).map(
    (p) =>
      `${p}: ${sinks[p].stray} items of an earlier phase (late or handed out again), ${sinks[p].outOfOrder} out of order`,
  );
  if (anomalies.length > 0) console.log(`delivery anomalies: ${anomalies.join('; ')}`);
  console.log(`startup ${f(startMs / 1000, 1)} s, whole run ${f(totalMs / 1000, 1)} s`);
  console.log(
    `command: node --import tsx --conditions=source bench/streams.ts${argv.length > 0 ? ` ${argv.join(' ')}` : ''}`,
  );
}

process.once('SIGINT', () => process.exit(130));
await main();
