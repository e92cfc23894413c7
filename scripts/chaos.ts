// A bounded chaos run against a cluster of real silo processes. Not part of CI.
//
//   node --import tsx --conditions=source scripts/chaos.ts [--minutes=N] [--silos=N] [--seed=N] [--store=sqlite|postgres]
//
// Options (all optional):
//   --minutes=N     how long the chaos lasts, 0.1 to 30 (default 2). A watchdog
//                   kills everything and exits with code 2 at N + 1 minutes.
//   --silos=N       silo processes, 2 to 12 (default 4). Each fault replaces its
//                   victim, and at least 2 silos are always up.
//   --seed=N        seed of the fault schedule (default: random, printed).
//                   The same seed and options replay the same schedule.
//   --store=KIND    sqlite (default: files in a temporary directory) or postgres
//                   (GRANARY_TEST_POSTGRES, default
//                   postgres://postgres@127.0.0.1:5432/test; tables under a
//                   random prefix, dropped at the end). Membership, storage
//                   and reminders all use it.
//   --callers=N     concurrent callers (default 200); --counters=N counters
//                   they spread over (default 2000); --tickers=N reminder
//                   grains (default 20); --log-level=L of the silos (default warn).
//
// What it does: starts the silos (SiloProcess, fast failure detection), a
// ClusterClient that finds gateways in the membership table, the grains of
// scripts/chaos-grains.ts, a 1-second reminder on every ticker; then keeps
// `callers` loops calling add(1) on random counters while a seeded schedule,
// every few seconds, does one of: SIGKILL a silo; SIGTERM it (graceful stop);
// SIGSTOP it until the cluster declares it dead, then SIGCONT it (it must exit
// with code 3); or nothing. Each victim gets a replacement. At the end, after a
// settling pause, a fresh client reads every counter and ticker back.
//
// It fails (exit code 1) on a violation:
//   - an acknowledged write lost: a counter reads back lower than the highest
//     value add() returned for it;
//   - a call that settled later than responseTimeoutMs + 2 s, or never;
//   - a call that failed with something other than a GranaryError;
//   - a reminder whose tick count did not go up in some minute of the run
//     (counted by the end of that minute plus a detection slack);
//   - a counter that answers from two activations after the cluster settled
//     (read through a fresh client, then through each gateway alone: a call
//     entering a silo that hosts an activation is answered by it);
//   - a silo that exits unexpectedly (other than declared dead), a graceful
//     stop whose exit code is not 0, a frozen silo not declared dead or not
//     exiting with code 3 on SIGCONT, a replacement that does not start.
// It reports the failures by error code, InconsistentStateError counts (the
// ETag guard against two activations of one grain writing), calls/s, p50/p99
// latency and every event of the schedule with its time. Silo logs (stderr)
// are kept in a directory, printed, when the run fails.

import { randomInt, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pg from 'pg';
import {
  ClusterClient,
  GranaryError,
  decode,
  encode,
  silentLogger,
  type MembershipTable,
  type StorageProvider,
} from 'granary';
import { postgresMembership, postgresStorage } from 'granary/postgres';
import { sqliteMembership, sqliteStorage } from 'granary/sqlite';
import { SiloProcess, type ProviderSpec, type SiloProcessOptions } from 'granary/testing';
import type { ChaosCounter, ChaosTicker, CounterInfo, TickerStats } from './chaos-grains.ts';

// ---------------------------------------------------------------- options

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string' },
    silos: { type: 'string' },
    seed: { type: 'string' },
    store: { type: 'string' },
    callers: { type: 'string' },
    counters: { type: 'string' },
    tickers: { type: 'string' },
    'log-level': { type: 'string' },
  },
  strict: true,
});

function numberArg(
  name: string,
  text: string | undefined,
  dflt: number,
  min: number,
  max: number,
  integer = true,
): number {
  if (text === undefined) return dflt;
  const v = Number(text);
  if (!Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    console.error(
      `chaos: --${name} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, got '${text}'`,
    );
    process.exit(64);
  }
  return v;
}

const MINUTES = numberArg('minutes', args.minutes, 2, 0.1, 30, false);
const SILOS = numberArg('silos', args.silos, 4, 2, 12);
const SEED = numberArg('seed', args.seed, randomInt(0, 2 ** 31), 0, 2 ** 32 - 1);
const CALLERS = numberArg('callers', args.callers, 200, 1, 5000);
const COUNTERS = numberArg('counters', args.counters, 2000, 1, 1_000_000);
const TICKERS = numberArg('tickers', args.tickers, 20, 1, 1000);
const STORE = args.store ?? 'sqlite';
if (STORE !== 'sqlite' && STORE !== 'postgres') {
  console.error(`chaos: --store must be sqlite or postgres, got '${STORE}'`);
  process.exit(64);
}
const LOG_LEVEL = args['log-level'] ?? 'warn';
const PG_URL = process.env['GRANARY_TEST_POSTGRES'] ?? 'postgres://postgres@127.0.0.1:5432/test';

const RESPONSE_TIMEOUT_MS = 5000;
const DEADLINE_MARGIN_MS = 2000;
const PERIOD_MS = 1000;
const SETTLE_MS = 5000;
/** Time after a minute of the run within which its ticks must show up (detection, reload, a period). */
const REMINDER_SLACK_MS = 15_000;
const membershipOptions = {
  iAmAliveIntervalMs: 200,
  tableRefreshIntervalMs: 100,
  probeIntervalMs: 150,
  probeTimeoutMs: 300,
  missedProbesLimit: 3,
  joinTimeoutMs: 5000,
};
const siloOptions = {
  responseTimeoutMs: RESPONSE_TIMEOUT_MS,
  loadReportIntervalMs: 250,
  minReminderPeriodMs: PERIOD_MS,
  reminderRefreshIntervalMs: 2000,
};

// ---------------------------------------------------------------- clock, log, verdict

const T0 = Date.now();
const at = (ms = Date.now()): string => `${((ms - T0) / 1000).toFixed(1).padStart(6)}s`;
const events: string[] = [];
const violations: string[] = [];
const notes: string[] = [];

function event(msg: string): void {
  const line = `[${at()}] ${msg}`;
  events.push(line);
  console.log(line);
}
function violate(msg: string): void {
  violations.push(msg);
  console.log(`[${at()}] VIOLATION: ${msg}`);
}
function note(msg: string): void {
  notes.push(msg);
  console.log(`[${at()}] note: ${msg}`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A seeded PRNG (mulberry32): the schedule is a function of the seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---------------------------------------------------------------- the store

const tmp = mkdtempSync(join(tmpdir(), 'granary-chaos-'));
const logDir = mkdtempSync(join(tmpdir(), 'granary-chaos-logs-'));
const pgPrefix = STORE === 'postgres' ? `chaos_${randomUUID().replaceAll('-', '').slice(0, 10)}_` : undefined;
const clusterId = `chaos-${SEED}-${randomUUID().slice(0, 6)}`;

const storeSpec = (file: string): ProviderSpec =>
  pgPrefix !== undefined
    ? { kind: 'postgres', connectionString: PG_URL, tablePrefix: pgPrefix }
    : { kind: 'sqlite', path: join(tmp, file) };

function membershipTable(): MembershipTable {
  return pgPrefix !== undefined
    ? postgresMembership({ connectionString: PG_URL, tablePrefix: pgPrefix })
    : sqliteMembership({ path: join(tmp, 'cluster.db') });
}
function storageProvider(): StorageProvider {
  return pgPrefix !== undefined
    ? postgresStorage({ connectionString: PG_URL, tablePrefix: pgPrefix })
    : sqliteStorage({ path: join(tmp, 'state.db') });
}

const processOptions: SiloProcessOptions = {
  grains: join(import.meta.dirname, 'chaos-grains.ts'),
  clusterId,
  membership: storeSpec('cluster.db'),
  storage: storeSpec('state.db'),
  reminders: storeSpec('state.db'),
  membershipOptions,
  siloOptions,
  logLevel: LOG_LEVEL,
  // The TypeScript loader, and: a silo whose parent is gone (this script killed
  // with SIGKILL) exits instead of running on as an orphan.
  execArgv: [
    '--import',
    'tsx',
    '--conditions=source',
    '--import',
    "data:text/javascript,process.on('disconnect',()=>process.exit(70))",
  ],
};

// The silos trace views and activations to their stderr (see chaos-grains.ts), for the report of a violation.
process.env['GRANARY_CHAOS_TRACE'] = '1';

async function dropPgTables(): Promise<void> {
  if (pgPrefix === undefined) return;
  const admin = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 5000 });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ tablename: string }>(
      'SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND starts_with(tablename, $1)',
      [pgPrefix],
    );
    for (const r of rows) await admin.query(`DROP TABLE IF EXISTS "${r.tablename}" CASCADE`);
  } finally {
    await admin.end();
  }
}

// ---------------------------------------------------------------- silos

type SiloState = 'up' | 'victim' | 'exited';

interface SiloRec {
  n: number;
  proc: SiloProcess;
  address: string;
  gateway: string | null;
  /** Its generation in the membership table (tells it from a later silo on the same port). */
  generation: number | undefined;
  state: SiloState;
  /** Set before the schedule signals it: its exit is not a surprise. */
  expected: boolean;
  exit: { code: number | null; signal: NodeJS.Signals | null; at: number } | undefined;
}

const silos: SiloRec[] = [];
let siloSeq = 0;
let stopping = false;
let monitor: MembershipTable | undefined;

const up = (): SiloRec[] => silos.filter((s) => s.state === 'up');
const name = (s: SiloRec): string => `silo #${s.n} ${s.address} (pid ${s.proc.pid})`;

/** One change of the cluster at a time: the schedule and the replacement of silos that died on their own. */
let serialTail: Promise<unknown> = Promise.resolve();
function serial<T>(fn: () => Promise<T>): Promise<T> {
  const p = serialTail.then(fn);
  serialTail = p.catch(() => undefined);
  return p;
}

async function entryOf(
  address: string,
  generation: number | undefined,
): Promise<{ status: string; generation: number } | undefined> {
  if (monitor === undefined) return undefined;
  const snap = await monitor.readAll();
  const rows = snap.entries
    .map((e) => e.entry)
    .filter((e) => e.address === address && (generation === undefined || e.generation === generation));
  rows.sort((a, b) => b.generation - a.generation);
  const e = rows[0];
  return e === undefined ? undefined : { status: e.status, generation: e.generation };
}

/** The first line of a child's failure and the lines that name an error. */
function errorLines(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  const errors = lines.filter((l) => /^[A-Za-z]*Error\b|"err"|"level":50|"level":60/.test(l)).slice(0, 3);
  return [lines[0] ?? '', ...errors].map((l) => (l.length > 300 ? `${l.slice(0, 300)}...` : l)).join(' | ');
}

/**
 * The SQLite locks a process holds (Linux): a process frozen while it holds the
 * write lock of a database stops every writer of that file.
 */
function sqliteLocksOf(pid: number): string {
  if (STORE !== 'sqlite' || process.platform !== 'linux') return '';
  try {
    const files = new Map<number, string>();
    for (const f of readdirSync(tmp)) files.set(statSync(join(tmp, f)).ino, f);
    const held = readFileSync('/proc/locks', 'utf8')
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f[4] === String(pid) && f[3] === 'WRITE');
    if (held.length === 0) return '';
    return held
      .map(
        (f) =>
          `a ${f[1]} write lock on ${files.get(Number(f[5]?.split(':')[2])) ?? `inode ${f[5] ?? '?'}`} bytes ${f[6] ?? '?'}-${f[7] ?? '?'}${f[6] === '120' ? ' (the WAL write lock)' : ''}`,
      )
      .join(', ');
  } catch {
    return '';
  }
}

/** Starts a silo (three tries); undefined, and a violation, if it cannot. */
async function startSilo(why: string): Promise<SiloRec | undefined> {
  for (let attempt = 1; attempt <= 3; attempt++) {
    const started = Date.now();
    try {
      const proc = await SiloProcess.start(processOptions, 15_000);
      const rec: SiloRec = {
        n: ++siloSeq,
        proc,
        address: proc.address,
        gateway: proc.gatewayAddress,
        generation: undefined,
        state: 'up',
        expected: false,
        exit: undefined,
      };
      silos.push(rec);
      rec.generation = (await entryOf(rec.address, undefined).catch(() => undefined))?.generation;
      void proc.exited.then(({ code, signal }) => onExit(rec, code, signal));
      event(`started ${name(rec)} (${why}) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      return rec;
    } catch (e) {
      note(`silo start attempt ${attempt} (${why}) failed: ${errorLines(String((e as Error).message))}`);
      if (stopping) break;
    }
  }
  violate(`could not start a silo (${why})`);
  return undefined;
}

function onExit(rec: SiloRec, code: number | null, signal: NodeJS.Signals | null): void {
  rec.exit = { code, signal, at: Date.now() };
  const wasUp = rec.state === 'up';
  rec.state = 'exited';
  if (rec.expected || stopping) return;
  const how = code !== null ? `code ${code}` : `signal ${signal ?? '?'}`;
  const tail = rec.proc.stderr
    .trim()
    .split('\n')
    .filter((l) => !l.startsWith('chaos-trace '))
    .slice(-5)
    .join('\n      ');
  if (code === 3)
    note(
      `${name(rec)} exited on its own with code 3: the cluster declared it dead (a false suspicion, not caused by the schedule)${tail !== '' ? `; its last log lines:\n      ${tail}` : ''}`,
    );
  else violate(`${name(rec)} exited unexpectedly (${how})${tail !== '' ? `; its last log lines:\n      ${tail}` : ''}`);
  if (wasUp)
    void serial(async () => {
      if (!stopping && up().length < SILOS) await startSilo(`replaces #${rec.n}, which exited on its own`);
    });
}

/** Polls the membership table until `rec` is Dead; its time, or undefined after `timeoutMs`. */
async function declaredDead(rec: SiloRec, timeoutMs: number): Promise<number | undefined> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const e = await entryOf(rec.address, rec.generation).catch(() => undefined);
    if (e?.status === 'Dead') return Date.now();
    await sleep(100);
  }
  return undefined;
}

async function waitExit(
  rec: SiloRec,
  timeoutMs: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([
    rec.proc.exited,
    new Promise<undefined>((res) => (timer = setTimeout(() => res(undefined), timeoutMs))),
  ]);
  clearTimeout(timer);
  return r;
}

const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

// ---------------------------------------------------------------- the schedule

type Action = 'sigkill' | 'sigterm' | 'sigstop' | 'none';
interface Step {
  gapMs: number;
  action: Action;
  pick: number;
}

const scheduleRng = prng(SEED);
/** The next step: always three draws, so the sequence depends on the seed only. */
function nextStep(): Step {
  const gapMs = 2000 + Math.floor(scheduleRng() * 4000);
  const a = scheduleRng();
  const pick = scheduleRng();
  const action: Action = a < 0.3 ? 'sigkill' : a < 0.55 ? 'sigterm' : a < 0.8 ? 'sigstop' : 'none';
  return { gapMs, action, pick };
}

/** Windows from a frozen silo being declared dead to its SIGCONT: calls to its gateway there can only time out. */
const frozenDeadWindows: Array<{ from: number; to: number; silo: string }> = [];

async function runStep(step: Step, k: number): Promise<void> {
  if (step.action === 'none') {
    event(`step ${k}: leave things alone`);
    return;
  }
  const candidates = up().sort((a, b) => a.n - b.n);
  const victim = candidates[Math.floor(step.pick * candidates.length)];
  if (victim === undefined) {
    event(`step ${k}: ${step.action} skipped: no silo up`);
    return;
  }
  // At least two silos up at every moment: if the victim's going would leave fewer, its replacement comes first.
  let replacement: Promise<SiloRec | undefined> | undefined;
  if (candidates.length - 1 < 2) {
    event(`step ${k}: ${candidates.length} silos up: starting the replacement of ${name(victim)} first`);
    await startSilo(`replaces #${victim.n}`);
    replacement = Promise.resolve(undefined);
  }
  const replace = (): Promise<SiloRec | undefined> => (replacement ??= startSilo(`replaces #${victim.n}`));
  victim.state = 'victim';
  victim.expected = true;
  const t = Date.now();
  switch (step.action) {
    case 'sigkill': {
      event(`step ${k}: SIGKILL ${name(victim)}`);
      await victim.proc.kill();
      const [dead] = await Promise.all([declaredDead(victim, 15_000), replace()]);
      event(
        `step ${k}: ${name(victim)} killed; ${dead !== undefined ? `declared dead ${secs(dead - t)} after the kill` : 'NOT declared dead within 15 s'}`,
      );
      if (dead === undefined) violate(`${name(victim)} was SIGKILLed at ${at(t)} and not declared dead within 15 s`);
      break;
    }
    case 'sigterm': {
      event(`step ${k}: SIGTERM ${name(victim)} (graceful stop)`);
      const code = await victim.proc.stop(20_000);
      event(`step ${k}: ${name(victim)} stopped in ${secs(Date.now() - t)} with exit code ${String(code)}`);
      if (code !== 0)
        violate(`${name(victim)} stopped gracefully (SIGTERM at ${at(t)}) with exit code ${String(code)}, not 0`);
      await replace();
      break;
    }
    case 'sigstop': {
      event(`step ${k}: SIGSTOP ${name(victim)}`);
      victim.proc.pause();
      const replaced = replace();
      const dead = await declaredDead(victim, 15_000);
      if (dead === undefined) {
        const locks = sqliteLocksOf(victim.proc.pid);
        violate(
          `${name(victim)} was frozen (SIGSTOP) at ${at(t)} and not declared dead within 15 s${locks !== '' ? `; frozen, it holds ${locks}` : ''}`,
        );
      } else {
        event(`step ${k}: frozen ${name(victim)} declared dead ${secs(dead - t)} after SIGSTOP`);
        await sleep(1000);
      }
      const resumed = Date.now();
      if (dead !== undefined) frozenDeadWindows.push({ from: dead, to: resumed, silo: victim.address });
      event(`step ${k}: SIGCONT ${name(victim)}`);
      victim.proc.resume();
      const r = await waitExit(victim, 10_000);
      if (r === undefined) {
        // Not declared dead, it rightly carries on; declared dead, it had to stop. Either way it goes now.
        if (dead !== undefined)
          violate(`${name(victim)}, declared dead while frozen, did not exit within 10 s of SIGCONT at ${at(resumed)}`);
        else
          event(`step ${k}: resumed ${name(victim)} still runs 10 s after SIGCONT (it was not declared dead): SIGKILL`);
        await victim.proc.kill();
      } else {
        event(
          `step ${k}: resumed ${name(victim)} exited ${secs(Date.now() - resumed)} after SIGCONT with ${r.code !== null ? `code ${r.code}` : `signal ${r.signal ?? '?'}`}`,
        );
        if (r.code !== 3)
          violate(
            `${name(victim)}, frozen at ${at(t)} and resumed at ${at(resumed)}, exited with ${r.code !== null ? `code ${r.code}` : `signal ${r.signal ?? '?'}`}, not 3`,
          );
      }
      await replaced;
      break;
    }
  }
}

async function chaosLoop(until: number): Promise<void> {
  for (let k = 1; ; k++) {
    const step = nextStep();
    const due = Date.now() + step.gapMs;
    // Leave a step the room to finish (a freeze takes up to ~30 s in the worst case; usually 5).
    if (due > until - 5000) return;
    while (Date.now() < due && !stopping) await sleep(Math.min(250, due - Date.now()));
    if (stopping) return;
    await serial(() => runStep(step, k));
  }
}

// ---------------------------------------------------------------- the load

const loadRng = prng(SEED ^ 0x5bd1e995);
const acked = new Float64Array(COUNTERS);
const latencies: number[] = [];
const errorsByCode = new Map<string, number>();
const untyped: string[] = [];
const late: string[] = [];
const timeoutStarts: number[] = [];
const inflight = new Map<number, { key: number; started: number; wall: number; flagged: boolean }>();
const perSecond: Array<{ ok: number; failed: number }> = [];
let okCalls = 0;
let failedCalls = 0;
let maxSettleMs = 0;
let callSeq = 0;
let loadStopped = false;

function bucket(now: number): { ok: number; failed: number } {
  const i = Math.floor((now - T0) / 1000);
  while (perSecond.length <= i) perSecond.push({ ok: 0, failed: 0 });
  return perSecond[i] as { ok: number; failed: number };
}

async function caller(client: ClusterClient): Promise<void> {
  while (!loadStopped) {
    const key = Math.floor(loadRng() * COUNTERS);
    const id = ++callSeq;
    const wall = Date.now();
    const started = performance.now();
    const rec = { key, started, wall, flagged: false };
    inflight.set(id, rec);
    let failed = false;
    try {
      const v = await client.getGrain<ChaosCounter>('chaos-counter', `c${key}`).add(1);
      if (v > (acked[key] as number)) acked[key] = v;
      okCalls++;
      bucket(Date.now()).ok++;
    } catch (e) {
      failed = true;
      failedCalls++;
      bucket(Date.now()).failed++;
      if (e instanceof GranaryError) {
        errorsByCode.set(e.code, (errorsByCode.get(e.code) ?? 0) + 1);
        if (e.code === 'GRANARY_TIMEOUT') timeoutStarts.push(wall);
      } else {
        const what = `${(e as Error)?.name ?? typeof e}: ${(e as Error)?.message ?? String(e)}`;
        errorsByCode.set('(not a GranaryError)', (errorsByCode.get('(not a GranaryError)') ?? 0) + 1);
        if (untyped.length < 10) untyped.push(`[${at(wall)}] c${key}.add: ${what}`);
      }
    }
    const ms = performance.now() - started;
    inflight.delete(id);
    if (ms > maxSettleMs) maxSettleMs = ms;
    if (!failed) latencies.push(ms);
    if (ms > RESPONSE_TIMEOUT_MS + DEADLINE_MARGIN_MS)
      late.push(
        `c${key}.add called at ${at(wall)} settled after ${Math.round(ms)} ms (${failed ? 'failed' : 'succeeded'})`,
      );
    if (failed) await sleep(50);
  }
}

/** Flags calls still in flight past their deadline plus the margin, while they are. */
function hangWatch(): NodeJS.Timeout {
  return setInterval(() => {
    const now = performance.now();
    for (const r of inflight.values()) {
      if (!r.flagged && now - r.started > RESPONSE_TIMEOUT_MS + DEADLINE_MARGIN_MS) {
        r.flagged = true;
        console.log(
          `[${at()}] a call to c${r.key}.add made at ${at(r.wall)} is still pending after ${Math.round(now - r.started)} ms`,
        );
      }
    }
  }, 500);
}

// ---------------------------------------------------------------- reminders

const tickerKeys = Array.from({ length: TICKERS }, (_, i) => `t${i}`);
/** Per ticker: (time, count) read back, in time order. */
const tickSamples = new Map<string, Array<{ t: number; count: number }>>(tickerKeys.map((k) => [k, []]));
let maxTickGapMs = 0;
let missedTicks = 0;

async function sampleTickers(client: ClusterClient): Promise<number> {
  const res = await Promise.allSettled(tickerKeys.map((k) => client.getGrain<ChaosTicker>('chaos-ticker', k).stats()));
  const t = Date.now();
  let ok = 0;
  res.forEach((r, i) => {
    if (r.status !== 'fulfilled') return;
    ok++;
    tickSamples.get(tickerKeys[i] as string)?.push({ t, count: r.value.count });
  });
  return ok;
}

// ---------------------------------------------------------------- helpers

/**
 * What the silos' logs say about one grain, in time order: its activations and
 * deactivations everywhere, log lines naming it, and the view changes within
 * half a second of those.
 */
function traceOf(grainId: string): string[] {
  const mine: Array<{ t: number; text: string }> = [];
  const views: Array<{ t: number; text: string }> = [];
  for (const s of silos) {
    for (const l of s.proc.stderr.split('\n')) {
      if (l.startsWith('chaos-trace ')) {
        const [, ms, silo, what, ...rest] = l.split(' ');
        const t = Number(ms);
        if (what === 'view') views.push({ t, text: `${silo} (#${s.n}) view ${rest.join(' ')}` });
        else if (what === `+${grainId}` || what === `-${grainId}`)
          mine.push({
            t,
            text: `${silo} (#${s.n}) ${what.startsWith('+') ? 'activated' : 'deactivated'} ${grainId} ${rest.join(' ')}`,
          });
      } else if (l.includes(`"${grainId}"`)) {
        const m = /"time":(\d+)/.exec(l);
        mine.push({ t: Number(m?.[1] ?? 0), text: `#${s.n} log: ${l.length > 400 ? `${l.slice(0, 400)}...` : l}` });
      }
    }
  }
  const near = views.filter((v) => mine.some((m) => Math.abs(m.t - v.t) <= 500));
  return [...mine, ...near].sort((a, b) => a.t - b.t).map((x) => `[${at(x.t)}] ${x.text}`);
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number;
}

/** Runs `fn` on every item, `width` at a time. */
async function pool<T, R>(items: T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i] as T);
      }
    }),
  );
  return out;
}

/** Retries `fn` (up to `tries` times, half a second apart) while `until` (epoch ms) is not past. */
async function withRetries<T>(fn: () => Promise<T>, tries = 6, until = Infinity): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= tries || Date.now() + 500 > until) throw e;
      await sleep(500);
    }
  }
}

// ---------------------------------------------------------------- exit and clean-up

const clients: ClusterClient[] = [];
let cleaned = false;

function killAll(): void {
  for (const s of silos) {
    if (s.proc.child.exitCode === null && s.proc.child.signalCode === null) s.proc.child.kill('SIGKILL');
  }
}

async function cleanup(keepLogs: boolean): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  stopping = true;
  loadStopped = true;
  await Promise.allSettled(clients.map((c) => c.close()));
  await Promise.allSettled(
    silos
      .filter((s) => s.state !== 'exited')
      .map(async (s) => {
        s.expected = true;
        s.proc.resume();
        await s.proc.stop(5000);
      }),
  );
  killAll();
  await monitor?.close();
  try {
    await dropPgTables();
  } catch (e) {
    console.log(`chaos: could not drop the PostgreSQL tables ${pgPrefix ?? ''}*: ${(e as Error).message}`);
  }
  rmSync(tmp, { recursive: true, force: true });
  if (keepLogs) {
    for (const s of silos) writeFileSync(join(logDir, `silo-${s.n}-${s.address.replace(':', '_')}.log`), s.proc.stderr);
    writeFileSync(join(logDir, 'events.log'), `${events.join('\n')}\n`);
  } else {
    rmSync(logDir, { recursive: true, force: true });
  }
}

process.on('exit', () => {
  killAll();
  rmSync(tmp, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    console.log(`\nchaos: ${sig}: stopping every silo and cleaning up`);
    killAll();
    const hard = setTimeout(() => process.exit(130), 10_000);
    void cleanup(false).finally(() => {
      clearTimeout(hard);
      process.exit(130);
    });
  });
}
process.on('unhandledRejection', (e) => {
  console.error('chaos: unhandled rejection in the chaos script itself:', e);
  killAll();
  void cleanup(true).finally(() => process.exit(1));
});

const watchdog = setTimeout(
  () => {
    console.log(
      `\n[${at()}] WATCHDOG: the run took longer than ${MINUTES} + 1 minutes; killing everything. Events so far:\n${events.join('\n')}`,
    );
    killAll();
    const hard = setTimeout(() => process.exit(2), 10_000);
    void cleanup(true).finally(() => {
      clearTimeout(hard);
      console.log(`silo logs: ${logDir}`);
      process.exit(2);
    });
  },
  (MINUTES + 1) * 60_000,
);

// ---------------------------------------------------------------- the run

async function main(): Promise<number> {
  const replay =
    `node --import tsx --conditions=source scripts/chaos.ts --minutes=${MINUTES} --silos=${SILOS} --seed=${SEED} --store=${STORE}` +
    (CALLERS !== 200 ? ` --callers=${CALLERS}` : '') +
    (COUNTERS !== 2000 ? ` --counters=${COUNTERS}` : '') +
    (TICKERS !== 20 ? ` --tickers=${TICKERS}` : '');
  console.log(
    `granary chaos run: seed ${SEED}, ${SILOS} silos, ${MINUTES} min, store ${STORE}${pgPrefix !== undefined ? ` (tables ${pgPrefix}*)` : ''}, ${CALLERS} callers over ${COUNTERS} counters, ${TICKERS} reminders every ${PERIOD_MS} ms`,
  );
  console.log(`replay: ${replay}`);

  monitor = membershipTable();
  await monitor.init({ clusterId, logger: silentLogger() });
  for (let i = 0; i < SILOS; i++) {
    if ((await startSilo('initial')) === undefined) throw new Error('the initial silos did not start');
  }
  const clientTable = membershipTable();
  const client = await ClusterClient.connect({
    clusterId,
    membership: clientTable,
    gatewayRefreshIntervalMs: 1000,
    responseTimeoutMs: RESPONSE_TIMEOUT_MS,
    logger: silentLogger(),
  });
  clients.push(client);

  await Promise.all(
    tickerKeys.map((k) => withRetries(() => client.getGrain<ChaosTicker>('chaos-ticker', k).start(PERIOD_MS))),
  );
  const ticking = Date.now() + 20_000;
  for (;;) {
    const stats = await Promise.allSettled(
      tickerKeys.map((k) => client.getGrain<ChaosTicker>('chaos-ticker', k).stats()),
    );
    if (stats.every((r) => r.status === 'fulfilled' && r.value.count >= 1)) break;
    if (Date.now() > ticking) throw new Error('the reminders did not all tick within 20 s of their registration');
    await sleep(250);
  }
  event(`${SILOS} silos up, ${TICKERS} reminders ticking; chaos and load start`);

  const runStart = Date.now();
  const runEnd = runStart + MINUTES * 60_000;
  await sampleTickers(client);
  const watch = hangWatch();
  const callers = Array.from({ length: CALLERS }, () => caller(client));
  const sampler = (async () => {
    while (!loadStopped) {
      await sleep(5000);
      if (!loadStopped) await sampleTickers(client);
    }
  })();
  const progress = setInterval(() => {
    const now = Date.now();
    const from = Math.floor((now - 10_000 - T0) / 1000);
    let ok = 0;
    let failed = 0;
    for (let i = Math.max(0, from); i < perSecond.length; i++) {
      ok += perSecond[i]?.ok ?? 0;
      failed += perSecond[i]?.failed ?? 0;
    }
    console.log(
      `[${at(now)}] load: ${Math.round(ok / 10)} ok/s, ${Math.round(failed / 10)} failed/s over the last 10 s; ${up().length} silos up; ${inflight.size} calls in flight`,
    );
  }, 10_000);

  await chaosLoop(runEnd);
  while (Date.now() < runEnd) await sleep(Math.min(250, runEnd - Date.now()));
  await serialTail;
  event('chaos ends; the load stops');
  loadStopped = true;
  const drained = await Promise.race([
    Promise.all(callers).then(() => true),
    sleep(RESPONSE_TIMEOUT_MS + DEADLINE_MARGIN_MS + 1000).then(() => false),
  ]);
  const loadMs = Date.now() - runStart;
  clearInterval(progress);
  clearInterval(watch);
  await sampler;
  if (!drained || inflight.size > 0) {
    for (const r of inflight.values())
      violate(
        `a call to c${r.key}.add made at ${at(r.wall)} never settled (pending ${Math.round(performance.now() - r.started)} ms)`,
      );
  }

  // Settle, then read everything back through a fresh client, and the store directly.
  for (let i = up().length; i < SILOS && !stopping; i++) {
    if ((await serial(() => startSilo('top-up before the final read'))) === undefined) break;
  }
  await sleep(SETTLE_MS);
  const freshTable = membershipTable();
  const fresh = await ClusterClient.connect({
    clusterId,
    membership: freshTable,
    responseTimeoutMs: RESPONSE_TIMEOUT_MS,
    logger: silentLogger(),
  });
  clients.push(fresh);
  // The reads back are bounded: a cluster that does not answer must not run into the watchdog.
  const readsUntil = Date.now() + 45_000;
  const finalTicks = await pool(tickerKeys, 20, (k) =>
    withRetries(() => fresh.getGrain<ChaosTicker>('chaos-ticker', k).stats(), 6, readsUntil).then(
      (s): TickerStats | undefined => s,
      () => undefined,
    ),
  );
  const finalTickAt = Date.now();
  const keys = Array.from({ length: COUNTERS }, (_, i) => i);
  const readInfo = (c: ClusterClient, i: number): Promise<CounterInfo | undefined> =>
    Date.now() > readsUntil
      ? Promise.resolve(undefined)
      : withRetries(() => c.getGrain<ChaosCounter>('chaos-counter', `c${i}`).info(), 6, readsUntil).then(
          (v): CounterInfo | undefined => v,
          () => undefined,
        );
  const finals = await pool(keys, 100, (i) => readInfo(fresh, i));
  // Then through each gateway alone: a call enters there, and an activation of the grain on that
  // silo answers it whether or not the directory points at it. Two activations answering for one
  // grain is a duplicate the cluster kept after it settled.
  const viaGateway = new Map<string, Array<CounterInfo | undefined>>();
  for (const s of up()) {
    if (s.gateway === null) continue;
    const one = await ClusterClient.connect({
      clusterId,
      gateways: [s.gateway],
      responseTimeoutMs: RESPONSE_TIMEOUT_MS,
      logger: silentLogger(),
    });
    clients.push(one);
    viaGateway.set(`#${s.n} ${s.address}`, await pool(keys, 100, (i) => readInfo(one, i)));
    await one.close();
  }
  const storage = storageProvider();
  await storage.init({ name: 'default', logger: silentLogger(), serializer: { encode, decode: (b) => decode(b) } });
  const stored = await pool(keys, 50, async (i) => {
    const r = await storage
      .read({ grainType: 'chaos-counter', grainKey: `c${i}`, stateName: 'count' })
      .catch(() => undefined);
    return r === undefined ? undefined : r.etag === null ? 0 : (r.state as { value: number }).value;
  });
  await storage.close();

  // ------------------------------------------------------------ checks

  let lost = 0;
  let unreadable = 0;
  let disagree = 0;
  let ackedWrites = 0;
  let duplicates = 0;
  const traces: string[] = [];
  const describe = (x: CounterInfo): string =>
    `${x.value} from activation ${x.activation.slice(0, 8)} on ${x.silo}, made at ${at(x.activatedAt)} with ${x.loaded} read from the store`;
  for (let i = 0; i < COUNTERS; i++) {
    const a = acked[i] as number;
    const f = finals[i];
    const s = stored[i];
    ackedWrites += a > 0 ? 1 : 0;
    const seen = new Map<string, CounterInfo>();
    if (f !== undefined) seen.set(f.activation, f);
    for (const list of viaGateway.values()) {
      const x = list[i];
      if (x !== undefined) seen.set(x.activation, x);
    }
    if (seen.size > 1) {
      duplicates++;
      if (duplicates <= 10)
        violate(
          `counter c${i} has ${seen.size} activations after the cluster settled (acknowledged ${a}, store holds ${s ?? '?'}): ${[...seen.values()].map(describe).join('; ')}`,
        );
      if (duplicates <= 3) traces.push(`chaos-counter/c${i}:`, ...traceOf(`chaos-counter/c${i}`).map((l) => `  ${l}`));
    }
    if (f === undefined) {
      unreadable++;
      if (unreadable <= 10) violate(`counter c${i} could not be read back at the end (acknowledged ${a})`);
      continue;
    }
    if (f.value < a) {
      lost++;
      if (lost <= 20)
        violate(
          `acknowledged write not read back: counter c${i} reads ${describe(f)}, but add() acknowledged ${a}; the store holds ${s ?? '?'}`,
        );
      if (lost <= 3 && seen.size <= 1)
        traces.push(`chaos-counter/c${i}:`, ...traceOf(`chaos-counter/c${i}`).map((l) => `  ${l}`));
    }
    if (s !== undefined && s !== f.value) {
      disagree++;
      if (disagree <= 10)
        note(`counter c${i}: its activation says ${f.value}, the store holds ${s} (acknowledged ${a})`);
    }
  }
  if (duplicates > 10) violate(`... ${duplicates} counters with more than one activation after the cluster settled`);
  if (lost > 20) violate(`... ${lost} counters lost acknowledged writes in all`);
  for (const l of late.slice(0, 20)) violate(`call past its deadline: ${l}`);
  if (late.length > 20) violate(`... ${late.length} calls past their deadline in all`);
  for (const u of untyped) violate(`a call failed with something other than a GranaryError: ${u}`);

  // Reminders: per minute of the run, each ticker's count by the end of the minute (+ slack) exceeds its count at its start.
  const windows: Array<{ from: number; to: number }> = [];
  for (let w = runStart; w < runEnd - 1000; w += 60_000) windows.push({ from: w, to: Math.min(w + 60_000, runEnd) });
  let minIncrease = Infinity;
  tickerKeys.forEach((k, i) => {
    const samples = [...(tickSamples.get(k) ?? [])];
    const fin = finalTicks[i];
    if (fin !== undefined) {
      samples.push({ t: finalTickAt, count: fin.count });
      maxTickGapMs = Math.max(maxTickGapMs, fin.maxGapMs);
      missedTicks += fin.missed;
    } else {
      violate(`reminder grain ${k} could not be read back at the end`);
    }
    for (const w of windows) {
      const before = Math.max(0, ...samples.filter((s) => s.t <= w.from).map((s) => s.count));
      const by = Math.max(0, ...samples.filter((s) => s.t <= w.to + REMINDER_SLACK_MS).map((s) => s.count));
      minIncrease = Math.min(minIncrease, by - before);
      if (by <= before)
        violate(
          `reminder grain ${k} did not tick in the minute ${at(w.from)}..${at(w.to)}: ${before} ticks before it, ${by} by ${secs(REMINDER_SLACK_MS)} after its end`,
        );
    }
  });

  // ------------------------------------------------------------ report

  const sorted = Float64Array.from(latencies).sort();
  const timeoutsInFrozen = timeoutStarts.filter((t) => frozenDeadWindows.some((w) => t >= w.from && t <= w.to)).length;
  const codes = [...errorsByCode.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([c, n]) => `${c} ${n}`)
    .join(', ');
  const exits = silos
    .filter((s) => s.exit !== undefined)
    .map((s) => `#${s.n} ${s.exit?.code !== null ? `code ${String(s.exit?.code)}` : String(s.exit.signal)}`);
  const settledLate = late.length;
  console.log('\n================ chaos report ================');
  console.log(`seed ${SEED}; replay: ${replay}`);
  console.log(`schedule (${events.length} events):`);
  for (const e of events) console.log(`  ${e}`);
  console.log(
    `load: ${okCalls + failedCalls} calls in ${secs(loadMs)}: ${okCalls} ok (${Math.round(okCalls / (loadMs / 1000))} calls/s), ${failedCalls} failed${codes !== '' ? ` (${codes})` : ''}`,
  );
  console.log(
    `latency of ok calls: p50 ${percentile(sorted, 0.5).toFixed(1)} ms, p99 ${percentile(sorted, 0.99).toFixed(1)} ms, max ${(sorted[sorted.length - 1] ?? NaN).toFixed(0)} ms; slowest settle of any call ${maxSettleMs.toFixed(0)} ms`,
  );
  console.log(
    `deadlines: ${settledLate} calls settled later than ${RESPONSE_TIMEOUT_MS} + ${DEADLINE_MARGIN_MS} ms, ${drained ? 0 : inflight.size} never settled`,
  );
  console.log(
    `timeouts of calls made while a frozen silo was already declared dead (its gateway still taking calls): ${timeoutsInFrozen} of ${timeoutStarts.length} timeouts`,
  );
  console.log(
    `writes: ${ackedWrites} of ${COUNTERS} counters acknowledged writes; ${lost} read back lower than acknowledged; ${unreadable} unreadable at the end; ${disagree} where the activation read and the store disagree`,
  );
  console.log(
    `activations after settling (read through a fresh client, then through each of ${viaGateway.size} gateways alone): ${duplicates} counters answered from more than one activation`,
  );
  console.log(
    `InconsistentStateError (a stale ETag: another activation wrote first): ${errorsByCode.get('GRANARY_INCONSISTENT_STATE') ?? 0} on add()`,
  );
  console.log(
    `reminders: ${TICKERS} grains, ${windows.length} minute window(s); fewest ticks gained in a window: ${Number.isFinite(minIncrease) ? minIncrease : 'n/a'}; longest gap between two ticks of one grain: ${secs(maxTickGapMs)}; missed ticks reported: ${missedTicks}`,
  );
  console.log(`silos: ${silos.length} started; exits during the run: ${exits.join(', ') || 'none'}`);
  if (notes.length > 0) {
    console.log('notes:');
    for (const n of notes) console.log(`  ${n}`);
  }
  if (traces.length > 0) {
    console.log(
      'what the silos logged about the first grains in violation (activations, deactivations, log lines, nearby view changes):',
    );
    for (const l of traces) console.log(`  ${l}`);
  }
  if (violations.length > 0) {
    console.log(`VIOLATIONS (${violations.length}):`);
    for (const v of violations) console.log(`  ${v}`);
  }
  console.log(violations.length === 0 ? 'PASS' : 'FAIL');
  return violations.length === 0 ? 0 : 1;
}

let code: number;
try {
  code = await main();
} catch (e) {
  console.error(`chaos: the run itself failed: ${(e as Error)?.stack ?? String(e)}`);
  code = 1;
  violations.push('the run failed');
}
clearTimeout(watchdog);
stopping = true;
await cleanup(code !== 0);
if (code !== 0) console.log(`silo logs and events kept in ${logDir}`);
process.exit(code);
