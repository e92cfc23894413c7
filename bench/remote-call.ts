// bench/remote-call: a grain call from a ClusterClient to a silo in another
// process against the raw limit (the same request/response over one loopback
// socket, the project's codec with its fast path for small values, per-tick
// batched frames, the framework's table of calls in flight, no framework), and
// what one more hop, silo A to silo B, adds. Measured in one run.
// Run: node --import tsx --conditions=source bench/remote-call.ts
//   --quick              a short run (about 20 s instead of about 60 s)
//   --only=raw,client,hop,rawhop measure only these paths (for profiling one of them)
//   --sequential-calls=N sequential calls per round and path (default 5,000; 1,000 with --quick; 0: none)
//   --cpu-prof-dir=DIR   children run with --cpu-prof and write their profiles there

import { fork, type ChildProcess } from 'node:child_process';
import diagnostics_channel from 'node:diagnostics_channel';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import {
  ClusterClient,
  Grain,
  Silo,
  decode,
  encode,
  grain,
  placement,
  silentLogger,
  type CustomPlacement,
  type GrainRef,
} from 'granary';
import { sqliteMembership } from 'granary/sqlite';
import { PendingCalls } from '../src/messaging/pending-calls.ts';
import { readSmallArray, smallArrayBytes, writeSmallArray } from '../src/serialization/codec.ts';
import { awaitMessage, median, option, reportView, stopChildren as stopAll } from './support.ts';

// ---- Grains (the silo children host them; the parent uses the classes for typed references) ----

@grain('benchRemotePing')
class Ping extends Grain {
  async ping(n: number): Promise<number> {
    return n + 1;
  }
}

/** Places a new activation on any silo but the one placing it, so the hop really crosses. */
const elsewhere: CustomPlacement = {
  name: 'elsewhere',
  place: (_grain, silos, local) => silos.find((s) => s !== local) ?? local,
};

@grain('benchRemotePong')
@placement(elsewhere)
class Pong extends Grain {
  async ping(n: number): Promise<number> {
    return n + 1;
  }
  async where(): Promise<string> {
    return this.silo.address;
  }
}

/** Lives on the gateway silo A (the client's call is placed there) and calls its Pong on B. */
@grain('benchRemoteRelay')
@placement('preferLocal')
class Relay extends Grain {
  // Kept, as a grain that calls another often would: the figure is the hop, not getGrain.
  #pong: GrainRef<Pong> | undefined;
  async relay(n: number): Promise<number> {
    this.#pong ??= this.getGrain(Pong, this.key);
    return this.#pong.ping(n);
  }
  async where(): Promise<[string, string]> {
    return [this.silo.address, await this.getGrain(Pong, this.key).where()];
  }
}

// ---- Settings ----

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const ROUNDS = quick ? 3 : 5;
const SEQ_CALLS = Number(option('sequential-calls') ?? (quick ? 1000 : 5000));
if (!(Number.isInteger(SEQ_CALLS) && SEQ_CALLS >= 0))
  throw new Error(`--sequential-calls takes a whole number of calls (0 for none), got '${option('sequential-calls')}'`);
/** A round's sequential calls stop here even if fewer were made. */
const SEQ_MAX_MS = quick ? 1500 : 4000;
/** Sequential calls a path makes before the next path takes its turn. */
const SEQ_BLOCK = 250;
const CON_MS = quick ? 400 : 1500;
const WARM_SEQ_CALLS = quick ? 300 : 1000;
const WARM_CON_MS = quick ? 200 : 500;
const CALLERS = 1000;
/** Per caller and round: a bound besides the clock. */
const CALLS_PER_CALLER_MAX = 1_000_000;
/** The whole run is killed past this. */
const BUDGET_MS = quick ? 35_000 : 90_000;
const START_TIMEOUT_MS = 30_000;
const CLUSTER = 'bench-remote';
type PathName = 'raw' | 'client' | 'hop' | 'rawhop';
const ALL_PATHS: readonly PathName[] = ['raw', 'client', 'hop', 'rawhop'];
const only = option('only')?.split(',') ?? ALL_PATHS;
const unknownPath = only.find((p) => !(ALL_PATHS as readonly string[]).includes(p));
if (unknownPath !== undefined || only.length === 0)
  throw new Error(`--only takes a comma-separated list of ${ALL_PATHS.join(', ')}; got '${option('only')}'`);
const paths = new Set(only as PathName[]);
const profileDir = option('cpu-prof-dir');

// ---- Counters of this process: frames sent and socket writes, raw and Granary ----

const rawIo = { frames: 0, writes: 0 };
/** Granary connections of this process, from the transport's public open event. */
const granaryConnections = new Set<{ readonly stats: { readonly framesSent: number; readonly writes: number } }>();
diagnostics_channel.subscribe('granary:transport:open', (event) => {
  const { connection } = event as {
    connection: { readonly stats: { readonly framesSent: number; readonly writes: number } };
  };
  granaryConnections.add(connection);
});

interface Usage {
  /** CPU time of the process, user and system, in µs. */
  cpuUs: number;
  frames: number;
  writes: number;
}

function usage(): Usage {
  const cpu = process.cpuUsage();
  let frames = rawIo.frames,
    writes = rawIo.writes;
  for (const c of granaryConnections) {
    frames += c.stats.framesSent;
    writes += c.stats.writes;
  }
  return { cpuUs: cpu.user + cpu.system, frames, writes };
}

// ---- The raw baseline: length-prefixed frames, batched per tick, codec bodies ----

/** One socket, `[u32 BE length][body]` frames both ways, one socket.write per setImmediate batch. */
class RawPeer {
  readonly #socket: Socket;
  #out = Buffer.allocUnsafe(64 * 1024);
  #outLength = 0;
  #scheduled = false;
  #rest: Buffer | undefined;
  readonly #flush = (): void => {
    this.#scheduled = false;
    rawIo.writes++;
    this.#socket.write(this.#out.subarray(0, this.#outLength));
    this.#out = Buffer.allocUnsafe(64 * 1024);
    this.#outLength = 0;
  };

  constructor(socket: Socket, onBody: (body: Buffer) => void) {
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      const buf = this.#rest === undefined ? chunk : Buffer.concat([this.#rest, chunk]);
      let off = 0;
      while (buf.length - off >= 4) {
        const length = buf.readUInt32BE(off);
        if (buf.length - off - 4 < length) break;
        onBody(buf.subarray(off + 4, off + 4 + length));
        off += 4 + length;
      }
      this.#rest = off < buf.length ? buf.subarray(off) : undefined;
    });
  }

  /**
   * Sends `values` as the codec encodes them, written in place when they are
   * small (a few numbers: the codec's own fast path, as the framework uses it).
   */
  sendValues(values: readonly unknown[]): void {
    const bytes = smallArrayBytes(values);
    if (bytes < 0) {
      this.send(encode(values));
      return;
    }
    this.#reserve(this.#outLength + 4 + bytes);
    const end = writeSmallArray(values, this.#out, this.#outLength + 4);
    this.#out.writeUInt32BE(end - this.#outLength - 4, this.#outLength);
    this.#outLength = end;
    this.#sent();
  }

  #reserve(need: number): void {
    if (need > this.#out.length) {
      const bigger = Buffer.allocUnsafe(Math.max(need, this.#out.length * 2));
      this.#out.copy(bigger, 0, 0, this.#outLength);
      this.#out = bigger;
    }
  }

  #sent(): void {
    rawIo.frames++;
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
  }

  send(body: Uint8Array): void {
    const need = this.#outLength + 4 + body.length;
    this.#reserve(need);
    this.#out.writeUInt32BE(body.length, this.#outLength);
    this.#out.set(body, this.#outLength + 4);
    this.#outLength = need;
    this.#sent();
  }
}

/** The values of a raw frame: read by the codec's fast path for small values, else decoded. */
function valuesOf(body: Buffer): unknown[] {
  return readSmallArray(body, 0, body.length) ?? (decode(body) as unknown[]);
}

/** The parent's end of the baseline: `[id, n]` out, `[id, n + 1]` back. */
class RawClient {
  readonly #peer: RawPeer;
  /** Calls in flight in the same table the framework uses (a Map here cost the raw side up to twice its time per call). */
  readonly #pending = new PendingCalls<{ resolve: (n: number) => void; reject: (e: Error) => void }>();
  #next = 0;

  constructor(socket: Socket) {
    this.#peer = new RawPeer(socket, (body) => {
      const [id, n] = valuesOf(body) as [number, number];
      this.#pending.take(id)?.resolve(n);
    });
    socket.on('close', () => {
      for (const [, p] of this.#pending.entries()) p.reject(new Error('the raw echo process closed the socket'));
      this.#pending.clear();
    });
  }

  call(n: number): Promise<number> {
    const id = (this.#next = (this.#next + 2) >>> 0 || 2);
    const done = new Promise<number>((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    this.#peer.sendValues([id, n]);
    return done;
  }
}

// ---- Children ----

type ToParent =
  | { kind: 'ready'; port?: number; address?: string; gateway?: string | null }
  | { kind: 'view'; active: number }
  | ({ kind: 'usage' } & Usage);
type ToChild = { kind: 'view'; active: number; timeoutMs: number } | { kind: 'usage' };

/** Every child answers a `usage` message with its counters. */
function answerUsage(): void {
  process.on('message', (m: ToChild) => {
    if (m.kind === 'usage') process.send?.({ kind: 'usage', ...usage() } satisfies ToParent);
  });
}

async function rawChild(): Promise<void> {
  const server = createServer((socket) => {
    const peer: RawPeer = new RawPeer(socket, (body) => {
      const [id, n] = valuesOf(body) as [number, number];
      peer.sendValues([id, n + 1]);
    });
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  answerUsage();
  process.send?.({
    kind: 'ready',
    port: typeof address === 'object' && address !== null ? address.port : 0,
  } satisfies ToParent);
}

/** The raw baseline of the hop: `[id, n]` in, forwarded to a raw echo process, its answer sent back. */
async function rawRelayChild(): Promise<void> {
  const echoPort = Number(option('echo-port'));
  const socket = connect({ host: '127.0.0.1', port: echoPort });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const upstream = new RawClient(socket);
  const server = createServer((s) => {
    const peer: RawPeer = new RawPeer(s, (body) => {
      const [id, n] = valuesOf(body) as [number, number];
      void upstream.call(n).then((r) => peer.sendValues([id, r]));
    });
    s.on('error', () => {});
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  answerUsage();
  process.send?.({
    kind: 'ready',
    port: typeof address === 'object' && address !== null ? address.port : 0,
  } satisfies ToParent);
}

async function siloChild(): Promise<void> {
  const membershipPath = option('membership');
  const silo = await Silo.start({
    clusterId: CLUSTER,
    grains: [Ping, Pong, Relay],
    host: '127.0.0.1',
    port: 0,
    ...(argv.includes('--gateway') ? { gatewayPort: 0 } : {}),
    ...(membershipPath !== undefined ? { membership: sqliteMembership({ path: membershipPath }) } : {}),
    logger: silentLogger(),
  });
  process.on('message', (m: ToChild) => {
    if (m.kind !== 'view') return;
    reportView(silo, m.active, m.timeoutMs);
  });
  answerUsage();
  process.send?.({
    kind: 'ready',
    address: silo.info.address,
    gateway: silo.info.gatewayAddress ?? null,
  } satisfies ToParent);
}

// ---- The parent: process handling ----

const children = new Set<ChildProcess>();

function spawn(name: string, args: string[]): ChildProcess {
  const execArgv = ['--import', 'tsx', '--conditions=source'];
  // Node names each thread's profile CPU.<date>.<pid>.<thread>...: the main thread's is the one with thread 0.
  if (profileDir !== undefined) execArgv.push('--cpu-prof', `--cpu-prof-dir=${profileDir}`);
  const child = fork(fileURLToPath(import.meta.url), ['child', ...args], {
    execArgv,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  if (profileDir !== undefined) console.error(`profiling ${name}: pid ${child.pid}, profiles in ${profileDir}`);
  children.add(child);
  child.once('exit', () => children.delete(child));
  // A failed send (the child is gone) surfaces through tell() and the waits on 'exit'.
  child.on('error', () => {});
  return child;
}

/** Sends a message to a child; throws, saying which, when the child is gone. */
function tell(child: ChildProcess, what: string, message: ToChild): void {
  if (!child.connected)
    throw new Error(`${what}: the child process is gone (exit code ${child.exitCode}, signal ${child.signalCode})`);
  child.send(message);
}

/** The next message of `child` that `accept` takes, within `timeoutMs`; rejects if the child exits first. */
function nextMessage<T>(
  child: ChildProcess,
  what: string,
  timeoutMs: number,
  accept: (m: ToParent) => T | undefined,
): Promise<T> {
  return awaitMessage<ToParent, T>(child, what, timeoutMs, accept);
}

const ready = (child: ChildProcess, what: string): Promise<ToParent & { kind: 'ready' }> =>
  nextMessage(child, `${what} start`, START_TIMEOUT_MS, (m) => (m.kind === 'ready' ? m : undefined));

async function waitForView(child: ChildProcess, what: string, active: number): Promise<void> {
  const answer = nextMessage(child, `${what} view`, START_TIMEOUT_MS + 1000, (m) =>
    m.kind === 'view' ? m.active : undefined,
  );
  tell(child, what, { kind: 'view', active, timeoutMs: START_TIMEOUT_MS });
  const seen = await answer;
  if (seen < active)
    throw new Error(`${what} sees ${seen} active silos after ${START_TIMEOUT_MS} ms, expected ${active}`);
}

/** Asks every child to exit (they exit on disconnect, so profiles get written), then kills the stragglers. */
function stopChildren(): Promise<void> {
  return stopAll(children);
}

process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

// ---- The parent: measurements ----

type Call = (caller: number, n: number) => Promise<number>;

interface Latency {
  p50: number;
  p99: number;
  calls: number;
}

/** Sequential latencies of one path in one round, in µs. */
class Samples {
  readonly #us: Float64Array;
  #n = 0;
  constructor(capacity: number) {
    this.#us = new Float64Array(capacity);
  }
  add(us: number): void {
    this.#us[this.#n++] = us;
  }
  summary(): Latency {
    const n = this.#n;
    const sorted = this.#us.subarray(0, n).sort();
    const at = (q: number): number => sorted[Math.min(n - 1, Math.floor(q * n))] ?? NaN;
    return { p50: at(0.5), p99: at(0.99), calls: n };
  }
}

/**
 * One caller awaiting each call in turn, `count` calls per path. The paths take
 * turns in blocks of SEQ_BLOCK calls so that each sees the same machine: on a
 * small, busy box one path's latency drifts by 2x from one second to the next.
 * Stops at `maxMs`.
 */
async function sequential(
  calls: ReadonlyMap<PathName, Call>,
  count: number,
  maxMs: number,
): Promise<Map<PathName, Latency>> {
  const samples = new Map<PathName, Samples>();
  for (const p of calls.keys()) samples.set(p, new Samples(count));
  const end = performance.now() + maxMs;
  let n = 0;
  while (n < count && performance.now() < end) {
    const block = Math.min(SEQ_BLOCK, count - n);
    for (const [p, call] of calls) {
      const s = samples.get(p) as Samples;
      for (let i = n; i < n + block; i++) {
        const t0 = performance.now();
        const r = await call(0, i);
        s.add((performance.now() - t0) * 1000);
        if (r !== i + 1) throw new Error(`${p}: sequential call ${i} returned ${r}, expected ${i + 1}`);
      }
    }
    n += block;
  }
  return new Map([...samples].map(([p, s]) => [p, s.summary()]));
}

/** CALLERS callers, each on its own target, each awaiting its calls in turn. */
async function concurrent(call: Call, ms: number): Promise<{ rate: number; calls: number }> {
  let calls = 0;
  const start = performance.now();
  const end = start + ms;
  await Promise.all(
    Array.from({ length: CALLERS }, async (_, c) => {
      for (let i = 0; i < CALLS_PER_CALLER_MAX && performance.now() < end; i++) {
        await call(c, i);
        calls++;
      }
    }),
  );
  return { rate: calls / ((performance.now() - start) / 1000), calls };
}

/** Counters of the parent and of the children that serve one path. */
async function usages(servers: readonly ChildProcess[]): Promise<Usage[]> {
  const theirs = await Promise.all(
    servers.map((child) => {
      const answer = nextMessage(child, 'usage', 5000, (m) => (m.kind === 'usage' ? m : undefined));
      tell(child, 'usage', { kind: 'usage' });
      return answer;
    }),
  );
  return [usage(), ...theirs.map(({ cpuUs, frames, writes }) => ({ cpuUs, frames, writes }))];
}

/** Counter deltas over the concurrent rounds: of the calling process and of each serving process. */
interface Cost {
  calls: number;
  caller: Usage;
  servers: Usage[];
}

function addDelta(into: Usage, before: Usage | undefined, after: Usage | undefined): void {
  if (before === undefined || after === undefined) return;
  into.cpuUs += after.cpuUs - before.cpuUs;
  into.frames += after.frames - before.frames;
  into.writes += after.writes - before.writes;
}

interface PathResult {
  seq: Latency[];
  con: number[];
  cost: Cost;
}

async function main(): Promise<void> {
  const watchdog = setTimeout(() => {
    console.error(`bench/remote-call: over its ${BUDGET_MS} ms budget; killing the child processes`);
    for (const child of children) child.kill('SIGKILL');
    process.exit(1);
  }, BUDGET_MS);
  const tmp = mkdtempSync(join(tmpdir(), 'granary-bench-remote-'));
  const cleanups: Array<() => Promise<void> | void> = [];
  try {
    const started = performance.now();
    // Every child starts at once; each path waits only for its own.
    const rawProc = paths.has('raw') ? spawn('raw', ['raw']) : undefined;
    const soloProc = paths.has('client') ? spawn('silo', ['silo', '--gateway']) : undefined;
    const dbPath = join(tmp, 'membership.db');
    const aProc = paths.has('hop') ? spawn('siloA', ['silo', '--gateway', `--membership=${dbPath}`]) : undefined;
    const bProc = paths.has('hop') ? spawn('siloB', ['silo', `--membership=${dbPath}`]) : undefined;
    const echoProc = paths.has('rawhop') ? spawn('raw echo behind the relay', ['raw']) : undefined;

    const calls = new Map<PathName, Call>();
    const servers = new Map<PathName, ChildProcess[]>();
    if (rawProc !== undefined) {
      const { port } = await ready(rawProc, 'raw echo process');
      const socket = connect({ host: '127.0.0.1', port: port ?? 0 });
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      cleanups.push(() => void socket.destroy());
      const raw = new RawClient(socket);
      calls.set('raw', (_c, n) => raw.call(n));
      servers.set('raw', [rawProc]);
    }
    if (soloProc !== undefined) {
      const { gateway } = await ready(soloProc, 'silo');
      const client = await ClusterClient.connect({
        clusterId: CLUSTER,
        gateways: [gateway ?? ''],
        responseTimeoutMs: 10_000,
        logger: silentLogger(),
      });
      cleanups.push(() => client.close());
      const refs = Array.from({ length: CALLERS }, (_, c) => client.getGrain(Ping, `k${c}`));
      calls.set('client', (c, n) => (refs[c] as GrainRef<Ping>).ping(n));
      servers.set('client', [soloProc]);
    }
    if (aProc !== undefined && bProc !== undefined) {
      const [a] = await Promise.all([ready(aProc, 'silo A'), ready(bProc, 'silo B')]);
      await Promise.all([waitForView(aProc, 'silo A', 2), waitForView(bProc, 'silo B', 2)]);
      const client = await ClusterClient.connect({
        clusterId: CLUSTER,
        gateways: [a.gateway ?? ''],
        responseTimeoutMs: 10_000,
        logger: silentLogger(),
      });
      cleanups.push(() => client.close());
      const refs = Array.from({ length: CALLERS }, (_, c) => client.getGrain(Relay, `k${c}`));
      // Every relay must run on A and its callee on B: one silo-to-silo call per client call.
      const where = await Promise.all(refs.map((r) => r.where()));
      where.forEach(([caller, callee], c) => {
        if (caller !== a.address || callee === caller) {
          throw new Error(
            `relay k${c} runs on ${caller} and calls a pong on ${callee}; expected the relay on silo A (${a.address}) and the pong on the other silo`,
          );
        }
      });
      calls.set('hop', (c, n) => (refs[c] as GrainRef<Relay>).relay(n));
      servers.set('hop', [aProc, bProc]);
    }
    if (echoProc !== undefined) {
      const { port: echoPort } = await ready(echoProc, 'raw echo process behind the relay');
      const relayProc = spawn('raw relay', ['rawrelay', `--echo-port=${echoPort ?? 0}`]);
      const { port } = await ready(relayProc, 'raw relay process');
      const socket = connect({ host: '127.0.0.1', port: port ?? 0 });
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      cleanups.push(() => void socket.destroy());
      const raw = new RawClient(socket);
      calls.set('rawhop', (_c, n) => raw.call(n));
      servers.set('rawhop', [relayProc, echoProc]);
    }
    const startMs = performance.now() - started;

    // Warm up (activations exist, code is optimised), then interleave the rounds.
    await sequential(calls, WARM_SEQ_CALLS, SEQ_MAX_MS);
    for (const call of calls.values()) await concurrent(call, WARM_CON_MS);
    const results = new Map<PathName, PathResult>();
    const zero = (): Usage => ({ cpuUs: 0, frames: 0, writes: 0 });
    for (const p of calls.keys())
      results.set(p, {
        seq: [],
        con: [],
        cost: { calls: 0, caller: zero(), servers: (servers.get(p) ?? []).map(zero) },
      });
    for (let round = 0; round < ROUNDS; round++) {
      if (SEQ_CALLS > 0)
        for (const [p, latency] of await sequential(calls, SEQ_CALLS, SEQ_MAX_MS))
          (results.get(p) as PathResult).seq.push(latency);
      for (const [p, call] of calls) {
        const r = results.get(p) as PathResult;
        const before = await usages(servers.get(p) ?? []);
        const { rate, calls: made } = await concurrent(call, CON_MS);
        const after = await usages(servers.get(p) ?? []);
        r.con.push(rate);
        r.cost.calls += made;
        addDelta(r.cost.caller, before[0], after[0]);
        r.cost.servers.forEach((u, i) => addDelta(u, before[i + 1], after[i + 1]));
      }
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
    await stopChildren();
    rmSync(tmp, { recursive: true, force: true });
    clearTimeout(watchdog);
  }
}

function report(results: ReadonlyMap<PathName, PathResult>, startMs: number, totalMs: number): void {
  const f = (n: number, d = 0): string =>
    Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : '–';
  const fig = (p: PathName): { p50: number; p99: number; con: number; calls: number } => {
    const r = results.get(p);
    if (r === undefined) return { p50: NaN, p99: NaN, con: NaN, calls: NaN };
    return {
      p50: median(r.seq.map((s) => s.p50)),
      p99: median(r.seq.map((s) => s.p99)),
      con: median(r.con),
      calls: Math.min(...r.seq.map((s) => s.calls)),
    };
  };
  const raw = fig('raw'),
    client = fig('client'),
    hop = fig('hop'),
    rawhop = fig('rawhop');
  const verdict = (x: number, ok: boolean): string => (Number.isFinite(x) ? (ok ? ' (met)' : ' (missed)') : '');
  const seqCalls = Math.min(...[raw.calls, client.calls, hop.calls, rawhop.calls].filter(Number.isFinite));
  console.log(
    `remote call over loopback, ${availableParallelism()} cores (median of ${ROUNDS} rounds; sequential: ${f(seqCalls)} awaited calls per round and path on one grain, the paths taking turns every ${SEQ_BLOCK}; concurrent: ${f(CALLERS)} callers on ${f(CALLERS)} grains for ${f(CON_MS)} ms)`,
  );
  console.log('');
  console.log('| figure | raw (codec, framed socket, no framework) | client → silo (other process) | ratio | target |');
  console.log('| --- | --- | --- | --- | --- |');
  const p50x = client.p50 / raw.p50;
  const share = (100 * client.con) / raw.con;
  console.log(
    `| sequential p50 µs | ${f(raw.p50, 1)} | ${f(client.p50, 1)} | ${f(p50x, 2)}x raw${verdict(p50x, p50x <= 1.3)} | within 1.3x |`,
  );
  console.log(`| sequential p99 µs | ${f(raw.p99, 1)} | ${f(client.p99, 1)} | ${f(client.p99 / raw.p99, 2)}x raw | |`);
  console.log(
    `| concurrent calls/s | ${f(raw.con)} | ${f(client.con)} | ${f(share, 1)}% of raw${verdict(share, share >= 80)} | at least 80% |`,
  );
  console.log('');
  console.log(
    '| figure | client → silo | client → silo A → silo B (one silo-to-silo call each) | ratio | raw: client → relay → echo (three processes, no framework) | hop against raw hop |',
  );
  console.log('| --- | --- | --- | --- | --- | --- |');
  console.log(
    `| sequential p50 µs | ${f(client.p50, 1)} | ${f(hop.p50, 1)} | ${f(hop.p50 / client.p50, 2)}x (+${f(hop.p50 - client.p50, 1)} µs for the hop) | ${f(rawhop.p50, 1)} | ${f(hop.p50 / rawhop.p50, 2)}x |`,
  );
  console.log(
    `| sequential p99 µs | ${f(client.p99, 1)} | ${f(hop.p99, 1)} | ${f(hop.p99 / client.p99, 2)}x | ${f(rawhop.p99, 1)} | ${f(hop.p99 / rawhop.p99, 2)}x |`,
  );
  console.log(
    `| concurrent calls/s | ${f(client.con)} | ${f(hop.con)} | ${f((100 * hop.con) / client.con, 1)}% of client → silo | ${f(rawhop.con)} | ${f((100 * hop.con) / rawhop.con, 1)}% of raw hop |`,
  );
  console.log('');
  console.log(
    '| concurrent, per call | raw | client → silo | client → silo A → silo B | raw hop: client / relay / echo |',
  );
  console.log('| --- | --- | --- | --- | --- |');
  // Each cell: the calling process, then each serving process (silo A, then B, for the hop).
  const cost = (p: PathName, pick: (u: Usage, calls: number) => number, d: number): string => {
    const c = results.get(p)?.cost;
    return c === undefined ? '–' : [c.caller, ...c.servers].map((u) => f(pick(u, c.calls), d)).join(' / ');
  };
  console.log(
    `| CPU µs per call: caller / server(s) | ${cost('raw', (u, n) => u.cpuUs / n, 2)} | ${cost('client', (u, n) => u.cpuUs / n, 2)} | ${cost('hop', (u, n) => u.cpuUs / n, 2)} | ${cost('rawhop', (u, n) => u.cpuUs / n, 2)} |`,
  );
  console.log(
    `| frames per socket write: caller / server(s) | ${cost('raw', (u) => u.frames / u.writes, 0)} | ${cost('client', (u) => u.frames / u.writes, 0)} | ${cost('hop', (u) => u.frames / u.writes, 0)} | ${cost('rawhop', (u) => u.frames / u.writes, 0)} |`,
  );
  console.log('');
  const rounds = (p: PathName): string => {
    const r = results.get(p);
    return r === undefined
      ? '–'
      : `p50 ${r.seq.map((x) => f(x.p50, 1)).join(' / ') || '–'} µs, ${r.con.map((x) => f(x)).join(' / ')} calls/s`;
  };
  console.log(
    `rounds: raw ${rounds('raw')}; client ${rounds('client')}; hop ${rounds('hop')}; raw hop ${rounds('rawhop')}`,
  );
  console.log(`startup ${f(startMs / 1000, 1)} s, whole run ${f(totalMs / 1000, 1)} s`);
  console.log(
    `command: node --import tsx --conditions=source bench/remote-call.ts${argv.length > 0 ? ` ${argv.join(' ')}` : ''}`,
  );
}

if (argv[0] === 'child') {
  // Exit with the parent: on disconnect (also when it dies), so --cpu-prof gets written.
  process.on('disconnect', () => process.exit(0));
  if (argv[1] === 'raw') await rawChild();
  else if (argv[1] === 'rawrelay') await rawRelayChild();
  else await siloChild();
} else {
  process.once('SIGINT', () => {
    for (const child of children) child.kill('SIGKILL');
    process.exit(130);
  });
  await main();
}
