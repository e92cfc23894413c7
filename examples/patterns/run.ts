// examples/patterns/run: each pattern's bad and good variant measured in the
// same run, on the same silo, in alternating rounds; prints a table per pair
// with the ratio. Chatty calls are also measured across two silos in this
// process (real loopback TCP), where each call is a hop.
// Run: npm run patterns   (--quick for a short run)

import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { DeadlockError, Silo, memoryStorage, silentLogger } from 'granary';
import { TestCluster, waitFor } from 'granary/testing';
import { FleetTotal, HotDevice, HotFleetTotal, StagedDevice, hotSingletonGrains } from './hot-singleton.ts';
import { Floor, Sensor, chattyGrains } from './chatty.ts';
import { Account, CyclicAccount, ReentrantAccount, deadlockGrains } from './deadlock.ts';
import { BlockingReport, OffloadedReport, Ping, YieldingReport, blockingGrains, chunk } from './blocking.ts';
import { withLatency } from './latency.ts';

const quick = process.argv.includes('--quick');
const ROUND_MS = quick ? 500 : 2000;
const ROUNDS = quick ? 1 : 3;
const WRITE_MS = 1;

const f = (n: number, d = 0): string =>
  n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const percentile = (xs: number[], p: number): number =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] as number;
const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;

interface Load {
  perSec: number;
  p50: number;
  p99: number;
  calls: number;
}

/** `callers` loops calling `call(caller)` for ROUND_MS; calls per second and latency percentiles (ms). */
async function load(callers: number, call: (caller: number, i: number) => Promise<unknown>): Promise<Load> {
  const lat: number[] = [];
  const start = nowMs();
  const end = start + ROUND_MS;
  await Promise.all(
    Array.from({ length: callers }, async (_, c) => {
      for (let i = 0; nowMs() < end; i++) {
        const t = nowMs();
        await call(c, i);
        lat.push(nowMs() - t);
      }
    }),
  );
  return {
    perSec: lat.length / ((nowMs() - start) / 1000),
    p50: median(lat),
    p99: percentile(lat, 99),
    calls: lat.length,
  };
}

function table(head: string[], rows: string[][]): void {
  console.log(`| ${head.join(' | ')} |`);
  console.log(`| ${head.map(() => '---').join(' | ')} |`);
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  console.log('');
}

/** Runs `bad` and `good` in alternating rounds; the median of each figure. */
async function alternate(bad: () => Promise<Load>, good: () => Promise<Load>): Promise<{ bad: Load; good: Load }> {
  const b: Load[] = [];
  const g: Load[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    b.push(await bad());
    g.push(await good());
  }
  const med = (ls: Load[]): Load => ({
    perSec: median(ls.map((l) => l.perSec)),
    p50: median(ls.map((l) => l.p50)),
    p99: median(ls.map((l) => l.p99)),
    calls: ls.reduce((s, l) => s + l.calls, 0),
  });
  return { bad: med(b), good: med(g) };
}

/** How much lower the good latency is than the bad; "higher" when the good one is the slower. */
function lower(bad: number, good: number, digits: number): string {
  return bad >= good ? `${f(bad / good, digits)}x lower` : `${f(good / bad, digits)}x higher`;
}

function loadRows(bad: Load, good: Load, unit: string): string[][] {
  return [
    [`${unit}/s`, f(bad.perSec), f(good.perSec), `${f(good.perSec / bad.perSec, 1)}x`],
    ['p50 latency, ms', f(bad.p50, 3), f(good.p50, 3), lower(bad.p50, good.p50, 1)],
    ['p99 latency, ms', f(bad.p99, 3), f(good.p99, 3), lower(bad.p99, good.p99, 1)],
  ];
}

async function hotSingleton(): Promise<void> {
  const DEVICES = 1000;
  const SITES = 10;
  const silo = await Silo.start({
    grains: hotSingletonGrains,
    logger: silentLogger(),
    storage: { default: withLatency(memoryStorage(), WRITE_MS) },
  });
  const keys = Array.from({ length: DEVICES }, (_, d) => `site-${d % SITES}/dev-${d}`);
  const hot = keys.map((k) => silo.getGrain(HotDevice, k));
  const staged = keys.map((k) => silo.getGrain(StagedDevice, k));
  const { bad, good } = await alternate(
    () => load(DEVICES, (d) => (hot[d] as (typeof hot)[number]).report(1)),
    () => load(DEVICES, (d) => (staged[d] as (typeof staged)[number]).report(1)),
  );
  const hotTotals = await silo.getGrain(HotFleetTotal, 'fleet').totals();
  const fleet = silo.getGrain(FleetTotal, 'fleet');
  await waitFor('the staged totals to catch up', async () => (await fleet.totals()).readings === good.calls, 10_000);
  const stagedTotals = await fleet.totals();
  console.log(
    `## hot singleton against staged aggregation (one silo; ${f(DEVICES)} devices on ${SITES} sites each reporting in a loop; a state write takes ${WRITE_MS} ms)`,
  );
  console.log('');
  table(
    ['figure', 'one aggregator grain', 'worker, then site, then fleet', 'good against bad'],
    loadRows(bad, good, 'readings'),
  );
  console.log(
    `totals: the hot grain counted ${f(hotTotals.readings)} readings, every one sent (${f(bad.calls)}); the staged fleet grain ${f(stagedTotals.readings)} of ${f(good.calls)}, ${f(Object.keys(stagedTotals.bySite).length)} sites`,
  );
  console.log('');
  await silo.stop();
}

async function chatty(): Promise<void> {
  const SENSORS = 20;
  const FLOORS = 32;
  const run = async (silos: number): Promise<{ bad: Load; good: Load; seqBad: Load; seqGood: Load }> => {
    const cluster = await TestCluster.start({ silos, grains: chattyGrains, siloOptions: { logger: silentLogger() } });
    const silo = cluster.silos[0] as Silo;
    const sensorKeys = (floor: number): string[] => Array.from({ length: SENSORS }, (_, s) => `f${floor}-s${s}`);
    for (let fl = 0; fl < FLOORS; fl++)
      for (const k of sensorKeys(fl))
        await silo.getGrain(Sensor, k).set({ name: k, temperature: 21, humidity: 40, battery: 90 });
    const floors = Array.from({ length: FLOORS }, (_, fl) => silo.getGrain(Floor, `floor-${fl}`));
    const keysOf = Array.from({ length: FLOORS }, (_, fl) => sensorKeys(fl));
    const floor = (c: number): (typeof floors)[number] => floors[c] as (typeof floors)[number];
    const keys = (c: number): string[] => keysOf[c] as string[];
    const seq = await alternate(
      () => load(1, () => floor(0).viewChatty(keys(0))),
      () => load(1, () => floor(0).viewCoarse(keys(0))),
    );
    const con = await alternate(
      () => load(FLOORS, (c) => floor(c).viewChatty(keys(c))),
      () => load(FLOORS, (c) => floor(c).viewCoarse(keys(c))),
    );
    await cluster.stop();
    return { ...con, seqBad: seq.bad, seqGood: seq.good };
  };
  for (const silos of [1, 2]) {
    const r = await run(silos);
    console.log(
      `## chatty against coarse calls (${silos === 1 ? 'one silo' : 'two silos in one process, loopback TCP; the sensors on the other silo'}; a floor view of ${SENSORS} sensors: ${SENSORS * 4} calls against ${SENSORS})`,
    );
    console.log('');
    table(
      ['figure', 'four calls per sensor', 'one call per sensor', 'good against bad'],
      [
        [
          'one caller: p50 view latency, ms',
          f(r.seqBad.p50, 3),
          f(r.seqGood.p50, 3),
          lower(r.seqBad.p50, r.seqGood.p50, 1),
        ],
        ...loadRows(r.bad, r.good, `views (${FLOORS} callers)`),
      ],
    );
  }
}

async function deadlock(): Promise<void> {
  const silo = await Silo.start({ grains: deadlockGrains, logger: silentLogger() });
  const N = quick ? 2000 : 10_000;
  const time = async (call: (i: number) => Promise<unknown>, expectDeadlock: boolean): Promise<number[]> => {
    const lat: number[] = [];
    for (let i = 0; i < N; i++) {
      const t = nowMs();
      try {
        await call(i);
        if (expectDeadlock) throw new Error('the cycle completed');
      } catch (e) {
        if (!expectDeadlock || !(e instanceof DeadlockError)) throw e;
      }
      lat.push(nowMs() - t);
    }
    return lat;
  };
  const bad = await time((i) => silo.getGrain(CyclicAccount, `a${i % 100}`).withdraw(1), true);
  const restructured = await time((i) => silo.getGrain(Account, `a${i % 100}`).withdraw(1), false);
  const marked = await time((i) => silo.getGrain(ReentrantAccount, `a${i % 100}`).withdraw(1), false);
  console.log(
    `## a call cycle (one silo; ${f(N)} withdrawals of each kind, one at a time; the deadline is the default 30,000 ms)`,
  );
  console.log('');
  table(
    ['variant', 'outcome', 'p50, ms', 'p99, ms'],
    [
      ['account → ledger → account', 'DeadlockError, at once', f(median(bad), 3), f(percentile(bad, 99), 3)],
      [
        'restructured: the balance sent along',
        'completes',
        f(median(restructured), 3),
        f(percentile(restructured, 99), 3),
      ],
      ['@callChainReentrancy on the account', 'completes', f(median(marked), 3), f(percentile(marked, 99), 3)],
    ],
  );
  await silo.stop();
}

async function blocking(): Promise<void> {
  const silo = await Silo.start({ grains: blockingGrains, logger: silentLogger() });
  const N = quick ? 20_000_000 : 100_000_000;
  const ping = silo.getGrain(Ping, 'p');
  await ping.ping();
  // Another grain is due a ping every millisecond, as if calls arrived from outside at that rate;
  // a ping's delay counts from when it was due, so pings that could not even be sent count too.
  interface Round {
    crunchMs: number;
    answeredDuring: number;
    delays: number[];
  }
  const measure = async (crunch: () => Promise<number>): Promise<Round> => {
    const delays: number[] = [];
    const sent: Promise<void>[] = [];
    let answeredDuring = 0;
    let reportDone = false;
    let next = nowMs();
    const tick = (): void => {
      for (const now = nowMs(); next <= now; next += 1) {
        const due = next;
        sent.push(
          ping.ping().then(() => {
            delays.push(nowMs() - due);
            if (!reportDone) answeredDuring++;
          }),
        );
      }
    };
    const interval = setInterval(tick, 1);
    await nextMacrotask();
    const t0 = nowMs();
    await crunch();
    reportDone = true;
    const t1 = nowMs();
    tick();
    clearInterval(interval);
    await Promise.all(sent);
    return { crunchMs: t1 - t0, answeredDuring, delays };
  };
  const blockingRef = silo.getGrain(BlockingReport, 'r');
  const yieldingRef = silo.getGrain(YieldingReport, 'r');
  const offloadedRef = silo.getGrain(OffloadedReport, 'r');
  await blockingRef.crunch(1000);
  await yieldingRef.crunch(1000);
  await offloadedRef.crunch(1000);
  const b: Round[] = [];
  const g: Round[] = [];
  const w: Round[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    b.push(await measure(() => blockingRef.crunch(N)));
    g.push(await measure(() => yieldingRef.crunch(N)));
    w.push(await measure(() => offloadedRef.crunch(N)));
  }
  const m = (rs: Round[], pick: (r: Round) => number): number => median(rs.map(pick));
  const row = (label: string, pick: (r: Round) => number, d: number, ratio: (bad: number, good: number) => string) => {
    const [bad, good, off] = [m(b, pick), m(g, pick), m(w, pick)];
    return [label, f(bad, d), f(good, d), ratio(bad, good), f(off, d), ratio(bad, off)];
  };
  console.log(
    `## a blocking turn against a yielding one and a worker thread (one silo; a report of ${f(N)} hash rounds while another grain on the silo is due a ping every millisecond)`,
  );
  console.log('');
  table(
    [
      'figure',
      'one synchronous loop',
      `chunks of ${f(chunk)} rounds, setImmediate between`,
      'chunks against the loop',
      'a worker thread',
      'worker against the loop',
    ],
    [
      row(
        'the report, ms',
        (r) => r.crunchMs,
        1,
        (x, y) => `${f(y / x, 2)}x the time`,
      ),
      row(
        'pings answered while the report ran',
        (r) => r.answeredDuring,
        0,
        () => '',
      ),
      row(
        'p50 ping delay from when it was due, ms',
        (r) => median(r.delays),
        3,
        (x, y) => lower(x, y, 0),
      ),
      row(
        'slowest ping, ms',
        (r) => Math.max(...r.delays),
        1,
        (x, y) => lower(x, y, 0),
      ),
    ],
  );
  await silo.stop();
}

console.log(
  `patterns, bad against good in one process (${ROUNDS === 1 ? 'one round' : `median of ${ROUNDS} alternating rounds`} of ${f(ROUND_MS)} ms; node ${process.version})`,
);
console.log('');
await hotSingleton();
await chatty();
await deadlock();
await blocking();
