// What the dashboard page shows, computed from the cluster snapshots a
// `DashboardSource` gives: silos carry counters since they started, so rates
// and latency percentiles come from the difference between snapshots a few
// seconds apart, kept per silo here; hot-grain warnings come with the pattern
// that fixes them. Nothing here knows the runtime: a silo, or a client through
// a gateway, is the source.

import type {
  WireDashboardCluster,
  WireDashboardGrain,
  WireSiloStats,
  WireStateWritten,
} from '../../messaging/system-calls.ts';
import type { DashboardOptions } from './options.ts';

/** Where a dashboard reads the cluster: a silo itself, or a client asking a gateway's silo. */
export interface DashboardSource {
  /** The cluster now: membership, every live silo's counters (or why it did not answer), events. */
  cluster(): Promise<WireDashboardCluster>;
  /** A grain's location, activation, stored states and reminders. */
  grain(type: string, key: string): Promise<WireDashboardGrain>;
  /** Writes a grain's state (JSON text) under `etag`, then deactivates the grain; a stale ETag fails with InconsistentStateError. */
  writeState(type: string, key: string, state: string, etag: string | null, json: string): Promise<WireStateWritten>;
}

/** A silo as the page lists it. */
export interface SiloRow {
  readonly address: string;
  readonly generation: number;
  /** From the membership table, and `unreachable` for an active silo that did not answer in time. */
  readonly status: 'active' | 'joining' | 'stopping' | 'dead' | 'unreachable';
  /** Silos whose fresh votes say this one is dead (it is suspected). */
  readonly suspectedBy: readonly string[];
  readonly hostName: string;
  readonly gateway: string | null;
  readonly startedAt: number;
  readonly iAmAliveAt: number;
  /** Why its snapshot is missing. */
  readonly error: string | null;
  readonly counting: boolean;
  readonly activations: number | null;
  readonly pending: number | null;
  readonly queued: number | null;
  readonly callsPerSecond: number | null;
  readonly failuresPerSecond: number | null;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
}

/** A grain type across the cluster. */
export interface TypeRow {
  readonly type: string;
  readonly calls: number;
  readonly failures: number;
  readonly callsPerSecond: number | null;
  readonly failuresPerSecond: number | null;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly activations: number;
  /** calls/s by silo address. */
  readonly perSilo: Readonly<Record<string, number | null>>;
}

/** A grain among the hottest: its silo's estimate of its calls per second. */
export interface HotRow {
  readonly grain: string;
  readonly type: string;
  readonly silo: string;
  readonly callsPerSecond: number;
  /** The estimate overstates by this much at most. */
  readonly error: number;
  /** Its part of its type's calls on its silo, from 0 to 1. */
  readonly share: number;
}

/** A grain that looks like a bottleneck, and what to do about it. */
export interface Warning {
  readonly grain: string;
  readonly silo: string;
  readonly kind: 'calls' | 'queue';
  readonly value: number;
  readonly threshold: number;
  /** `hot singleton`, `hot aggregator`, `hot key`, `long mailbox`. */
  readonly pattern: string;
  readonly advice: string;
}

/** Failures of one grain type with one error code. */
export interface ErrorRow {
  readonly type: string;
  readonly code: string;
  readonly total: number;
  readonly perSecond: number | null;
}

/** A membership event. */
export interface EventRow {
  readonly at: number;
  readonly silo: string;
  readonly what: string;
  readonly detail: string;
}

/** Everything the page shows at one moment. */
export interface DashboardModel {
  readonly at: number;
  /** The silo that gathered the snapshot. */
  readonly servedBy: string;
  /** Seconds the rates are averaged over (the snapshots kept). */
  readonly windowSeconds: number;
  readonly totals: {
    readonly silos: number;
    readonly active: number;
    readonly activations: number;
    readonly callsPerSecond: number | null;
    readonly failuresPerSecond: number | null;
  };
  /** Cluster calls/s of the last updates, oldest first (the sparkline). */
  readonly history: readonly number[];
  readonly silos: readonly SiloRow[];
  readonly types: readonly TypeRow[];
  readonly hot: readonly HotRow[];
  readonly warnings: readonly Warning[];
  readonly errors: readonly ErrorRow[];
  readonly events: readonly EventRow[];
  /** Thresholds the warnings use. */
  readonly thresholds: { readonly callsPerSecond: number; readonly queueLength: number };
}

/** Snapshots kept per silo: rates are over the oldest and the newest of them. */
const KEPT = 6;
/** Points of the sparkline. */
const HISTORY = 60;
/** Suspicion votes older than this are not shown (the membership's default vote expiry). */
const VOTE_FRESH_MS = 60_000;
/** Dead silos listed, newest first. */
const DEAD_SHOWN = 20;

/** Quantile `q` (0..1) of latency bucket counts, in ms, interpolated within its bucket; null for no observations. */
export function quantileMs(bounds: readonly number[], counts: readonly number[], q: number): number | null {
  let total = 0;
  for (const c of counts) total += c;
  if (total <= 0) return null;
  const target = q * total;
  let acc = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i] as number;
    if (c <= 0) continue;
    if (acc + c >= target) {
      const lower = i === 0 ? 0 : (bounds[i - 1] as number);
      const upper = i < bounds.length ? (bounds[i] as number) : lower * 2;
      return (lower + ((upper - lower) * (target - acc)) / c) * 1000;
    }
    acc += c;
  }
  return (bounds[bounds.length - 1] ?? 0) * 1000;
}

function subtract(a: readonly number[], b: readonly number[] | undefined): number[] {
  return a.map((v, i) => Math.max(0, v - (b?.[i] ?? 0)));
}

const readName = /^(get|read|list|find|is|has|count|fetch|load|peek|show|describe|query|lookup|search|view)/i;

/**
 * The pattern that fixes a hot or queueing grain, from what its type allows,
 * the method its calls are to (`waiting`: the first queued call's), and its
 * part of its type's calls on its silo.
 */
export function advise(
  kind: 'calls' | 'queue',
  grain: string,
  type: WireSiloStats['types'][number] | undefined,
  shareOfType: number,
  waiting?: { readonly method: string; readonly readOnly: boolean },
): { pattern: string; advice: string } {
  const top: readonly [string, number, boolean] | null =
    waiting !== undefined && waiting.method !== '' ? [waiting.method, 0, waiting.readOnly] : (type?.topMethod ?? null);
  if (kind === 'queue') {
    if (type?.statelessWorker === true)
      return {
        pattern: 'long mailbox',
        advice: `Every worker of ${grain} is busy: raise maxLocalWorkers, or make each call shorter.`,
      };
    if (top !== null && !top[2] && readName.test(top[0]))
      return {
        pattern: 'long mailbox',
        advice: `Calls queue for one turn at a time. Mark ${top[0]} @readOnly if it only reads: read-only calls interleave instead of queueing.`,
      };
    return {
      pattern: 'long mailbox',
      advice:
        'Calls queue for one turn at a time: mark methods that only read @readOnly, make the grain @reentrant if its turns may interleave, keep slow I/O out of the turn, or spread the work over more keys.',
    };
  }
  if (shareOfType >= 0.5) {
    if (top !== null && !top[2])
      return {
        pattern: 'hot aggregator',
        advice: `One grain takes most of its type's calls, and they write (${top[0]}): pre-aggregate in a @statelessWorker on each silo that sends one sum per interval, or split it by key (e.g. ${grain}-0 … -15 by the caller's hash) and combine the parts on read.`,
      };
    return {
      pattern: 'hot singleton',
      advice: `One grain takes most of its type's calls: split it by key (e.g. ${grain}-0 … -15 by the caller's hash) and combine the parts on read, or serve its reads from a @statelessWorker cache.`,
    };
  }
  return {
    pattern: 'hot key',
    advice: `Callers concentrate on one key: cache its reads in a @statelessWorker in front of it and mark its read methods @readOnly, or split the key's work over several grains.`,
  };
}

interface Kept {
  readonly at: number;
  readonly stats: WireSiloStats;
}

/** Turns successive cluster snapshots into what the page shows. */
export class DashboardView {
  readonly #o: Readonly<Required<DashboardOptions>>;
  /** Recent snapshots per silo address, oldest first. */
  readonly #kept = new Map<string, Kept[]>();
  readonly #history: number[] = [];

  constructor(options: Readonly<Required<DashboardOptions>>) {
    this.#o = options;
  }

  /** The model of snapshot `c`; keeps it for the rates of the next ones. */
  update(c: WireDashboardCluster): DashboardModel {
    const o = this.#o;
    // The newest generation of each address in the table.
    const rows = new Map<string, WireDashboardCluster['members'][number]>();
    for (const m of c.members) {
      const prev = rows.get(m[0]);
      if (prev === undefined || prev[1] < m[1]) rows.set(m[0], m);
    }
    const answered = new Map(c.silos.map((s) => [s.address, s]));
    for (const s of c.silos) if (s.stats !== null) this.#keep(s.address, s.stats);
    for (const a of [...this.#kept.keys()]) if (!answered.has(a) && !rows.has(a)) this.#kept.delete(a);

    const silos: SiloRow[] = [];
    const typeAcc = new Map<
      string,
      {
        calls: number;
        failures: number;
        dCalls: number;
        dFailures: number;
        seconds: number;
        latency: number[];
        bounds: readonly number[];
        activations: number;
        perSilo: Record<string, number | null>;
        rated: boolean;
      }
    >();
    const errors = new Map<string, { type: string; code: string; total: number; delta: number; seconds: number }>();
    let clusterCalls: number | null = null;
    let clusterFailures: number | null = null;
    let activations = 0;
    let windowSeconds = 0;
    const addresses = new Set([...rows.keys(), ...answered.keys()]);
    for (const address of addresses) {
      const row = rows.get(address);
      const ans = answered.get(address);
      const tableStatus = row?.[2] ?? 'Active';
      const stats = ans?.stats ?? null;
      let status: SiloRow['status'] =
        tableStatus === 'Dead'
          ? 'dead'
          : tableStatus === 'Joining'
            ? 'joining'
            : tableStatus === 'ShuttingDown'
              ? 'stopping'
              : 'active';
      if (status !== 'dead' && stats === null) status = 'unreachable';
      const kept = status === 'dead' ? undefined : this.#kept.get(address);
      const first = kept?.[0];
      const last = kept?.[kept.length - 1];
      const seconds = first !== undefined && last !== undefined ? (last.at - first.at) / 1000 : 0;
      const rated = seconds > 0 && stats !== null;
      if (rated) windowSeconds = Math.max(windowSeconds, seconds);
      let siloCalls = 0;
      let siloFailures = 0;
      let siloLatency: number[] | undefined;
      if (stats !== null) {
        activations += stats.activations;
        const before = new Map((first?.stats.types ?? []).map((t) => [t.type, t]));
        for (const t of stats.types) {
          const b = rated ? before.get(t.type) : undefined;
          const dCalls = rated ? Math.max(0, t.calls - (b?.calls ?? 0)) : 0;
          const dFailures = rated ? Math.max(0, t.failures - (b?.failures ?? 0)) : 0;
          const dLatency = rated ? subtract(t.latency, b?.latency) : [];
          siloCalls += dCalls;
          siloFailures += dFailures;
          if (rated)
            siloLatency = siloLatency === undefined ? dLatency : siloLatency.map((v, i) => v + (dLatency[i] ?? 0));
          let acc = typeAcc.get(t.type);
          if (acc === undefined)
            typeAcc.set(
              t.type,
              (acc = {
                calls: 0,
                failures: 0,
                dCalls: 0,
                dFailures: 0,
                seconds: 0,
                latency: [],
                bounds: stats.bounds,
                activations: 0,
                perSilo: {},
                rated: false,
              }),
            );
          acc.calls += t.calls;
          acc.failures += t.failures;
          acc.activations += t.activations;
          if (rated) {
            acc.rated = true;
            acc.dCalls += dCalls / seconds;
            acc.dFailures += dFailures / seconds;
            acc.latency = acc.latency.length === 0 ? dLatency : acc.latency.map((v, i) => v + (dLatency[i] ?? 0));
            acc.perSilo[address] = dCalls / seconds;
          } else acc.perSilo[address] = null;
          const codesBefore = new Map(b?.codes ?? []);
          for (const [code, n] of t.codes) {
            const key = `${t.type}\u0000${code}`;
            let e = errors.get(key);
            if (e === undefined) errors.set(key, (e = { type: t.type, code, total: 0, delta: 0, seconds: 0 }));
            e.total += n;
            if (rated) {
              e.delta += Math.max(0, n - (codesBefore.get(code) ?? 0)) / seconds;
              e.seconds = seconds;
            }
          }
        }
        if (rated && stats.counting) {
          clusterCalls = (clusterCalls ?? 0) + siloCalls / seconds;
          clusterFailures = (clusterFailures ?? 0) + siloFailures / seconds;
        }
      }
      const votes =
        row === undefined || status === 'dead'
          ? []
          : row[7].filter(([, at]) => c.at - at < VOTE_FRESH_MS).map(([by]) => by);
      silos.push({
        address,
        generation: row?.[1] ?? 0,
        status,
        suspectedBy: votes,
        hostName: row?.[4] ?? '',
        gateway: row?.[3] ?? null,
        startedAt: row?.[5] ?? 0,
        iAmAliveAt: row?.[6] ?? 0,
        error: status === 'dead' ? null : (ans?.error ?? (stats === null ? 'no answer' : null)),
        counting: stats?.counting ?? false,
        activations: stats?.activations ?? null,
        pending: stats?.pending ?? null,
        queued: stats?.queued ?? null,
        callsPerSecond: rated && stats.counting ? siloCalls / seconds : null,
        failuresPerSecond: rated && stats.counting ? siloFailures / seconds : null,
        p50Ms: siloLatency !== undefined && stats !== null ? quantileMs(stats.bounds, siloLatency, 0.5) : null,
        p99Ms: siloLatency !== undefined && stats !== null ? quantileMs(stats.bounds, siloLatency, 0.99) : null,
      });
    }
    const order = { active: 0, unreachable: 1, joining: 2, stopping: 3, dead: 4 } as const;
    silos.sort((a, b) => order[a.status] - order[b.status] || a.address.localeCompare(b.address));
    const live = silos.filter((s) => s.status !== 'dead');
    const dead = silos
      .filter((s) => s.status === 'dead')
      .sort((a, b) => b.iAmAliveAt - a.iAmAliveAt)
      .slice(0, DEAD_SHOWN);

    const types: TypeRow[] = [...typeAcc]
      .map(([type, a]) => ({
        type,
        calls: a.calls,
        failures: a.failures,
        callsPerSecond: a.rated ? a.dCalls : null,
        failuresPerSecond: a.rated ? a.dFailures : null,
        p50Ms: a.rated ? quantileMs(a.bounds, a.latency, 0.5) : null,
        p99Ms: a.rated ? quantileMs(a.bounds, a.latency, 0.99) : null,
        activations: a.activations,
        perSilo: a.perSilo,
      }))
      .sort((a, b) => (b.callsPerSecond ?? 0) - (a.callsPerSecond ?? 0) || a.type.localeCompare(b.type));

    const hot: HotRow[] = [];
    const warnings: Warning[] = [];
    for (const s of c.silos) {
      if (s.stats === null) continue;
      const byType = new Map(s.stats.types.map((t) => [t.type, t]));
      for (const [grain, rate, error, share] of s.stats.hot) {
        const type = grain.slice(0, grain.indexOf('/'));
        hot.push({ grain, type, silo: s.address, callsPerSecond: rate, error, share });
        if (rate >= o.hotGrainCallsPerSecond) {
          warnings.push({
            grain,
            silo: s.address,
            kind: 'calls',
            value: rate,
            threshold: o.hotGrainCallsPerSecond,
            ...advise('calls', grain, byType.get(type), share),
          });
        }
      }
      for (const [grain, queued, method, readOnly] of s.stats.mailboxes) {
        if (queued < o.hotGrainQueueLength) continue;
        const type = grain.slice(0, grain.indexOf('/'));
        warnings.push({
          grain,
          silo: s.address,
          kind: 'queue',
          value: queued,
          threshold: o.hotGrainQueueLength,
          ...advise('queue', grain, byType.get(type), 0, { method, readOnly }),
        });
      }
    }
    hot.sort((a, b) => b.callsPerSecond - a.callsPerSecond);

    if (clusterCalls !== null) {
      this.#history.push(clusterCalls);
      if (this.#history.length > HISTORY) this.#history.shift();
    }
    return {
      at: c.at,
      servedBy: c.silo,
      windowSeconds,
      totals: {
        silos: live.length,
        active: live.filter((s) => s.status === 'active').length,
        activations,
        callsPerSecond: clusterCalls,
        failuresPerSecond: clusterFailures,
      },
      history: [...this.#history],
      silos: [...live, ...dead],
      types,
      hot: hot.slice(0, o.hotGrainsShown),
      warnings,
      errors: [...errors.values()]
        .map((e) => ({ type: e.type, code: e.code, total: e.total, perSecond: e.seconds > 0 ? e.delta : null }))
        .sort((a, b) => (b.perSecond ?? 0) - (a.perSecond ?? 0) || b.total - a.total),
      events: c.events.map(([at, silo, what, detail]) => ({ at, silo, what, detail })).sort((a, b) => b.at - a.at),
      thresholds: { callsPerSecond: o.hotGrainCallsPerSecond, queueLength: o.hotGrainQueueLength },
    };
  }

  #keep(address: string, stats: WireSiloStats): void {
    let kept = this.#kept.get(address);
    const last = kept?.[kept.length - 1];
    // A restarted silo (counters back at zero) or a clock step back starts the window anew.
    if (
      kept === undefined ||
      last === undefined ||
      stats.at < last.at ||
      stats.types.some((t) => t.calls < (last.stats.types.find((u) => u.type === t.type)?.calls ?? 0))
    )
      this.#kept.set(address, (kept = []));
    if (last !== undefined && stats.at === last.at) return;
    kept.push({ at: stats.at, stats });
    if (kept.length > KEPT) kept.shift();
  }
}
