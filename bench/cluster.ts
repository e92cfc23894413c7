// bench/cluster: how a cluster's cost per call grows with its silos. For each
// size (1, 2, 3 silo processes by default) a client process (this one) drives
// a realistic mix through every silo's gateway: each request lands on a
// stateless worker on the gateway silo, which calls one grain with state on
// SQLite, 70% of the time a grain on its own silo and 30% of the time a grain
// on another silo (with one silo, every call stays); 1% of requests write that
// grain's state. Printed per size: calls/s with many callers, sequential
// p50/p99, and CPU per call of the silos and of the client, against the
// one-silo figures of the same run.
//
// On a machine with fewer cores than processes, throughput cannot grow with
// silos; the figure to watch is CPU per call, which should stay flat.
//
// Run: node --import tsx --conditions=source bench/cluster.ts
//   --silos=N          sizes 1 … N (default 3); or --sizes=1,4,8
//   --quick            shorter rounds (about 25 s for three sizes instead of about 70 s)
//   --callers=N        concurrent callers of the client (default 500)
//   --grains=N         grains per silo of each kind (default 2,000)
//   --cpu-prof-dir=DIR silos run with --cpu-prof and write their profiles there

import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import {
  ClusterClient,
  Grain,
  Silo,
  grain,
  placement,
  reentrant,
  silentLogger,
  statelessWorker,
  type CustomPlacement,
  type GrainRef,
} from 'granary';
import { sqliteMembership, sqliteStorage } from 'granary/sqlite';
import { awaitMessage, median, option, reportView, stopChildren } from './support.ts';

// ---- Grains ----

/** A small piece of state kept in SQLite: read at activation, written on 1% of calls. */
interface Tally {
  calls: number;
  writes: number;
}

abstract class Keeper extends Grain {
  readonly tally = this.persistentState<Tally>('tally', { initial: () => ({ calls: 0, writes: 0 }) });
  async touch(n: number, write: boolean): Promise<number> {
    const t = this.tally.state;
    t.calls++;
    if (write) {
      t.writes++;
      await this.tally.write();
    }
    return n + 1;
  }
  async where(): Promise<string> {
    return this.silo.address;
  }
}

/** A grain that lives where it was first called from: the 70% that stay. */
@grain('benchClusterNear')
@placement('preferLocal')
class Near extends Keeper {}

/** Placed on any silo but the caller's (the caller's when it is alone): the 30% that hop. */
const elsewhere: CustomPlacement = {
  name: 'benchElsewhere',
  place: (_grain, silos, local) => {
    const others = silos.filter((s) => s !== local);
    return others.length === 0 ? local : (others[Math.floor(Math.random() * others.length)] as string);
  },
};

@grain('benchClusterFar')
@placement(elsewhere)
class Far extends Keeper {}

/**
 * The request handler on the gateway silo: a stateless worker is always
 * local, so a client's request never takes an extra hop to reach it. One per
 * silo, reentrant, as a front end would be: its references are made once (in
 * the warm-up), not per request. Keys of the grains it calls carry its silo's
 * address, so "near" and "far" stay what they are once placed.
 */
@grain('benchClusterEntry')
@statelessWorker({ maxLocal: 1 })
@reentrant
class Entry extends Grain {
  readonly #near = new Map<number, GrainRef<Near>>();
  readonly #far = new Map<number, GrainRef<Far>>();
  /** `k`: which grain; `hop`: near or far; `write`: write its state. */
  async handle(k: number, hop: boolean, write: boolean, n: number): Promise<number> {
    if (hop) {
      let ref = this.#far.get(k);
      if (ref === undefined) this.#far.set(k, (ref = this.getGrain(Far, `${this.silo.address}/${k}`)));
      return ref.touch(n, write);
    }
    let ref = this.#near.get(k);
    if (ref === undefined) this.#near.set(k, (ref = this.getGrain(Near, `${this.silo.address}/${k}`)));
    return ref.touch(n, write);
  }
  /** Activates this silo's near and far grains 0 … grains - 1, `parallel` at a time; returns the silo's address. */
  async warm(grains: number, parallel: number): Promise<string> {
    let k = 0;
    await Promise.all(
      Array.from({ length: parallel }, async () => {
        while (k < grains) {
          const i = k++;
          await Promise.all([this.handle(i, false, false, 0), this.handle(i, true, false, 0)]);
        }
      }),
    );
    return this.silo.address;
  }
  async placed(k: number): Promise<[string, string, string]> {
    return [
      this.silo.address,
      await this.getGrain(Near, `${this.silo.address}/${k}`).where(),
      await this.getGrain(Far, `${this.silo.address}/${k}`).where(),
    ];
  }
}

// ---- Settings ----

const argv = process.argv.slice(2);
function whole(name: string, fallback: number, min = 1): number {
  const raw = option(name);
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < min)
    throw new Error(`--${name} takes a whole number of at least ${min}, got '${raw}'`);
  return n;
}
const quick = argv.includes('--quick');
const SIZES: number[] =
  option('sizes') !== undefined
    ? (option('sizes') as string).split(',').map((s) => {
        const n = Number(s);
        if (!Number.isInteger(n) || n < 1) throw new Error(`--sizes takes silo counts like 1,2,4; got '${s}'`);
        return n;
      })
    : Array.from({ length: whole('silos', 3) }, (_, i) => i + 1);
const CALLERS = whole('callers', 500);
const GRAINS = whole('grains', 2000);
const ROUNDS = quick ? 3 : 5;
const CON_MS = quick ? 700 : 2000;
const SEQ_CALLS = quick ? 500 : 2000;
const WARM_MS = quick ? 500 : 1500;
const HOP_SHARE = 0.3;
const WRITE_SHARE = 0.01;
const START_TIMEOUT_MS = 30_000;
/** The whole run is killed past this. */
const BUDGET_MS = SIZES.reduce((t, n) => t + 20_000 + n * 5000, 0) * (quick ? 1 : 2.5);
const profileDir = option('cpu-prof-dir');

// ---- Silo children ----

type ToParent =
  | { kind: 'ready'; address: string; gateway: string }
  | { kind: 'view'; active: number }
  | { kind: 'usage'; cpuUs: number; activations: number; heapBytes: number };
type ToChild = { kind: 'view'; active: number; timeoutMs: number } | { kind: 'usage' };

async function siloChild(): Promise<void> {
  const dir = option('dir') as string;
  const silo = await Silo.start({
    clusterId: 'bench-cluster',
    grains: [Entry, Near, Far],
    host: '127.0.0.1',
    port: 0,
    gatewayPort: 0,
    membership: sqliteMembership({ path: join(dir, 'membership.db') }),
    storage: { default: sqliteStorage({ path: join(dir, 'state.db') }) },
    logger: silentLogger(),
  });
  process.on('message', (m: ToChild) => {
    if (m.kind === 'usage') {
      const cpu = process.cpuUsage();
      process.send?.({
        kind: 'usage',
        cpuUs: cpu.user + cpu.system,
        activations: silo.activationCount,
        heapBytes: process.memoryUsage().heapUsed,
      } satisfies ToParent);
      return;
    }
    reportView(silo, m.active, m.timeoutMs);
  });
  process.on('disconnect', () => void silo.stop().finally(() => process.exit(0)));
  process.send?.({
    kind: 'ready',
    address: silo.info.address,
    gateway: silo.info.gatewayAddress ?? '',
  } satisfies ToParent);
}

// ---- The parent: processes ----

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

function spawnSilo(dir: string): ChildProcess {
  const execArgv = ['--import', 'tsx', '--conditions=source'];
  if (profileDir !== undefined) execArgv.push('--cpu-prof', `--cpu-prof-dir=${profileDir}`);
  const child = fork(fileURLToPath(import.meta.url), ['silo', `--dir=${dir}`], {
    execArgv,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.on('error', () => {});
  return child;
}

/** The next message of `child` that `accept` takes (after sending it `message`), within `timeoutMs`. */
function ask<T>(
  child: ChildProcess,
  what: string,
  message: ToChild | undefined,
  accept: (m: ToParent) => T | undefined,
  timeoutMs = START_TIMEOUT_MS,
): Promise<T> {
  return awaitMessage<ToParent, T>(child, what, timeoutMs, accept, message);
}

function stopSilos(silos: readonly ChildProcess[]): Promise<void> {
  return stopChildren(silos, 10_000);
}

// ---- The parent: measurements ----

/** A seeded generator (xorshift32), so every size gets the same sequence of choices. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 0x1_0000_0000;
  };
}

interface SizeResult {
  silos: number;
  rate: number;
  p50Us: number;
  p99Us: number;
  siloCpuUsPerCall: number;
  clientCpuUsPerCall: number;
  hopShare: number;
  activations: number;
}

async function measure(size: number): Promise<SizeResult> {
  const dir = mkdtempSync(join(tmpdir(), 'granary-bench-cluster-'));
  const silos = Array.from({ length: size }, () => spawnSilo(dir));
  let client: ClusterClient | undefined;
  try {
    // One at a time: each creates or joins the table while the others wait.
    const ready: Array<{ address: string; gateway: string }> = [];
    for (const [i, s] of silos.entries())
      ready.push(await ask(s, `silo ${i + 1} start`, undefined, (m) => (m.kind === 'ready' ? m : undefined)));
    await Promise.all(
      silos.map(async (s, i) => {
        const seen = await ask(
          s,
          `silo ${i + 1} view`,
          { kind: 'view', active: size, timeoutMs: START_TIMEOUT_MS },
          (m) => (m.kind === 'view' ? m.active : undefined),
          START_TIMEOUT_MS + 1000,
        );
        if (seen < size) throw new Error(`silo ${i + 1} sees ${seen} active silos, expected ${size}`);
      }),
    );
    client = await ClusterClient.connect({
      clusterId: 'bench-cluster',
      gateways: ready.map((r) => r.gateway),
      responseTimeoutMs: 30_000,
      logger: silentLogger(),
    });
    // One entry grain id (a stateless worker on every silo); the client spreads calls over the gateways.
    const entries = Array.from({ length: CALLERS }, () => (client as ClusterClient).getGrain(Entry, 'entry'));
    const entry = entries[0] as GrainRef<Entry>;

    // Activate every grain on every silo: each warm() call activates its gateway silo's grains,
    // and the client's round robin reaches each gateway in turn.
    const warmed = new Set<string>();
    for (let i = 0; warmed.size < size; i++) {
      if (i === size * 10) throw new Error(`warm-up reached ${warmed.size} of ${size} silos in ${i} calls`);
      warmed.add(await entry.warm(GRAINS, CALLERS));
    }
    // Check the placement the mix relies on, through each gateway in turn.
    let hops = 0,
      placedChecks = 0;
    for (let i = 0; i < size * 4; i++) {
      const [at, near, far] = await entry.placed(i % GRAINS);
      if (near !== at) throw new Error(`a near grain of ${at} lives on ${near}`);
      if (size > 1 && far === at) throw new Error(`a far grain of ${at} lives on its own silo`);
      if (far !== at) hops++;
      placedChecks++;
    }

    const random = rng(42);
    const pick = (): { k: number; hop: boolean; write: boolean } => ({
      k: Math.floor(random() * GRAINS),
      hop: random() < HOP_SHARE,
      write: random() < WRITE_SHARE,
    });

    const concurrent = async (ms: number): Promise<number> => {
      let calls = 0;
      const end = performance.now() + ms;
      await Promise.all(
        entries.map(async (ref) => {
          while (performance.now() < end) {
            const { k, hop, write } = pick();
            await ref.handle(k, hop, write, calls);
            calls++;
          }
        }),
      );
      return calls;
    };
    const usage = async (): Promise<{ silos: number; client: number; activations: number }> => {
      const theirs = await Promise.all(
        silos.map((s, i) =>
          ask(s, `silo ${i + 1} usage`, { kind: 'usage' }, (m) => (m.kind === 'usage' ? m : undefined)),
        ),
      );
      const mine = process.cpuUsage();
      return {
        silos: theirs.reduce((t, u) => t + u.cpuUs, 0),
        client: mine.user + mine.system,
        activations: theirs.reduce((t, u) => t + u.activations, 0),
      };
    };

    await concurrent(WARM_MS);
    const rates: number[] = [];
    const siloCpu: number[] = [];
    const clientCpu: number[] = [];
    const lat = new Float64Array(SEQ_CALLS * ROUNDS);
    let nLat = 0;
    let activations = 0;
    for (let r = 0; r < ROUNDS; r++) {
      for (let i = 0; i < SEQ_CALLS; i++) {
        const { k, hop, write } = pick();
        const t0 = performance.now();
        const got = await entry.handle(k, hop, write, i);
        lat[nLat++] = (performance.now() - t0) * 1000;
        if (got !== i + 1) throw new Error(`call ${i} returned ${got}, expected ${i + 1}`);
      }
      const before = await usage();
      const t0 = performance.now();
      const calls = await concurrent(CON_MS);
      const seconds = (performance.now() - t0) / 1000;
      const after = await usage();
      rates.push(calls / seconds);
      siloCpu.push((after.silos - before.silos) / calls);
      clientCpu.push((after.client - before.client) / calls);
      activations = after.activations;
    }
    const sorted = lat.subarray(0, nLat).sort();
    return {
      silos: size,
      rate: median(rates),
      p50Us: sorted[Math.floor(nLat * 0.5)] ?? NaN,
      p99Us: sorted[Math.floor(nLat * 0.99)] ?? NaN,
      siloCpuUsPerCall: median(siloCpu),
      clientCpuUsPerCall: median(clientCpu),
      hopShare: size > 1 ? (hops / placedChecks) * HOP_SHARE : 0,
      activations,
    };
  } finally {
    await client?.close();
    await stopSilos(silos);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const watchdog = setTimeout(() => {
    console.error(`bench/cluster: over its ${Math.round(BUDGET_MS / 1000)} s budget; killing the silo processes`);
    for (const child of children) child.kill('SIGKILL');
    process.exit(1);
  }, BUDGET_MS);
  console.log(
    `bench/cluster: ${CALLERS} callers, ${GRAINS} grains of each kind per silo, ` +
      `${Math.round((1 - HOP_SHARE) * 100)}% of calls stay on their silo, ${Math.round(HOP_SHARE * 100)}% hop, ` +
      `${WRITE_SHARE * 100}% write SQLite; ${availableParallelism()} cores; median of ${ROUNDS} rounds`,
  );
  const results: SizeResult[] = [];
  for (const size of SIZES) {
    const r = await measure(size);
    results.push(r);
    const base = results[0] as SizeResult;
    console.log(
      `${String(r.silos).padStart(2)} silo${r.silos === 1 ? ' ' : 's'}: ` +
        `${Math.round(r.rate).toLocaleString('en-US').padStart(9)} calls/s (${(r.rate / base.rate).toFixed(2)}x)  ` +
        `p50 ${r.p50Us.toFixed(0).padStart(4)} µs (${(r.p50Us / base.p50Us).toFixed(2)}x)  ` +
        `p99 ${r.p99Us.toFixed(0).padStart(5)} µs (${(r.p99Us / base.p99Us).toFixed(2)}x)  ` +
        `silo CPU ${r.siloCpuUsPerCall.toFixed(1).padStart(5)} µs/call (${(r.siloCpuUsPerCall / base.siloCpuUsPerCall).toFixed(2)}x)  ` +
        `client CPU ${r.clientCpuUsPerCall.toFixed(1)} µs/call  ` +
        `${Math.round(r.hopShare * 100)}% of calls hop, ${r.activations.toLocaleString('en-US')} activations`,
    );
  }
  clearTimeout(watchdog);
}

if (argv[0] === 'silo') {
  await siloChild();
} else {
  await main();
  process.exit(0);
}
