// The silo's side of the dashboard: the answers to the dashboard's system
// calls, read from the runtime (meters, hot-grain sample, catalog), the
// cluster layer (membership, directory), the storage providers and the
// reminder table, and the `DashboardSource` the silo's own page reads. A
// silo answers `dashboard.silo` (its own counters) whether or not it serves a
// page; the calls a client may make are answered only with the dashboard on.

import { ConfigurationError, SiloUnavailableError, TimeoutError } from '../errors.ts';
import type {
  SystemCallArgs,
  SystemCallName,
  SystemCallResult,
  WireDashboardCluster,
  WireDashboardGrain,
  WireDashboardLocal,
  WireSiloStats,
  WireStateWritten,
} from '../messaging/system-calls.ts';
import type { DashboardSource } from '../observability/dashboard/model.ts';
import type { DashboardOptions } from '../observability/dashboard/options.ts';
import type { Logger } from '../observability/logger.ts';
import { CALL_LATENCY_BUCKETS } from '../observability/stats.ts';
import type { ReminderTable } from '../reminders/table.ts';
import { Activation } from '../runtime/activation.ts';
import type { DashboardHandlers, SiloCluster } from '../runtime/cluster.ts';
import type { Runtime } from '../runtime/runtime.ts';
import { WorkerPool } from '../runtime/worker-pool.ts';
import { encode } from '../serialization/codec.ts';
import { GRAIN_REF, type RefLike } from '../serialization/symbols.ts';
import type { StateAddress, StorageProvider } from '../storage/provider.ts';

/** What the silo's dashboard reads. */
export interface SiloDashboardSources {
  readonly runtime: Runtime;
  /** The cluster layer, once the silo is networked and has joined. */
  cluster(): SiloCluster | undefined;
  readonly storage: ReadonlyMap<string, StorageProvider>;
  readonly reminders: ReminderTable;
  /** The dashboard's options; undefined when it is off on this silo (it still answers `dashboard.silo`). */
  readonly options: Readonly<Required<DashboardOptions>> | undefined;
  readonly logger: Logger;
}

const stateNames = ['Created', 'Activating', 'Valid', 'Deactivating', 'Invalid', 'FailedToActivate'];

/** Longest mailboxes reported per silo. */
const MAILBOXES_SHOWN = 10;

/** The timeout of a dashboard's calls to other silos when the dashboard is off here (a client never gets these). */
const FALLBACK_TIMEOUT_MS = 800;

/** `p`, or a TimeoutError after `ms`: a frozen silo must not stall the page. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what} did not answer within ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A value as JSON text for display: what JSON lacks is shown tagged (`{"$Map": [...]}`), never dropped. */
export function displayJson(value: unknown): string {
  const seen = new Set<object>();
  const walk = (v: unknown): unknown => {
    if (v === undefined) return { $undefined: true };
    if (typeof v === 'bigint') return { $bigint: v.toString() };
    if (typeof v === 'number' && !Number.isFinite(v)) return { $number: String(v) };
    if (v === null || typeof v !== 'object') return typeof v === 'function' ? { $function: v.name } : v;
    if (GRAIN_REF in v) {
      const id = (v as RefLike)[GRAIN_REF];
      return { $ref: `${id.type}/${id.key}` };
    }
    if (seen.has(v)) return { $cycle: true };
    seen.add(v);
    try {
      if (Array.isArray(v)) return v.map(walk);
      if (v instanceof Date) return { $Date: Number.isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString() };
      if (v instanceof Map) return { $Map: [...v].map(([k, x]) => [walk(k), walk(x)]) };
      if (v instanceof Set) return { $Set: [...v].map(walk) };
      if (ArrayBuffer.isView(v)) return { $bytes: v.byteLength };
      const proto = Object.getPrototypeOf(v) as object | null;
      const fields = Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
      if (proto === Object.prototype || proto === null) return fields;
      return { [`$${(v as object).constructor?.name ?? 'object'}`]: fields };
    } finally {
      seen.delete(v);
    }
  };
  return JSON.stringify(walk(value), null, 2);
}

/** Whether `value` is plain JSON data: it reads back from its JSON text as the same bytes. */
function plainJson(value: unknown): boolean {
  try {
    const text = JSON.stringify(value);
    if (text === undefined) return false;
    return Buffer.compare(encode(JSON.parse(text) as unknown), encode(value)) === 0;
  } catch {
    return false;
  }
}

/** The silo's dashboard: the handlers of the dashboard's system calls, and the source of its own page. */
export class SiloDashboard {
  readonly #s: SiloDashboardSources;
  readonly #events: Array<[number, string, string, string]> = [];
  /** The membership rows as last gathered, by silo id: status and suspicion votes, to log their changes. */
  readonly #lastRows = new Map<string, { status: string; votes: number }>();
  readonly handlers: DashboardHandlers;
  readonly source: DashboardSource;

  constructor(s: SiloDashboardSources) {
    this.#s = s;
    this.handlers = {
      'dashboard.silo': () => this.stats(),
      'dashboard.cluster': () => this.#enabled(() => this.gather()),
      'dashboard.grain': ([type, key]) => this.#enabled(() => this.grain(type, key)),
      'dashboard.writeState': ([type, key, state, etag, json]) =>
        this.#enabled(() => this.writeState(type, key, state, etag, json)),
      'dashboard.local': ([grain]) => this.local(grain),
      'dashboard.deactivate': ([grain]) => this.deactivateHere(grain),
    };
    this.source = {
      cluster: () => this.gather(),
      grain: (type, key) => this.grain(type, key),
      writeState: (type, key, state, etag, json) => this.writeState(type, key, state, etag, json),
    };
  }

  get #address(): string {
    return this.#s.runtime.siloInfo.address;
  }

  get #timeoutMs(): number {
    return this.#s.options?.siloTimeoutMs ?? FALLBACK_TIMEOUT_MS;
  }

  #enabled<T>(f: () => Promise<T>): Promise<T> {
    if (this.#s.options === undefined)
      return Promise.reject(
        new ConfigurationError(
          `silo ${this.#address} has its dashboard off: give it the silo option dashboard: true (the default with an httpPort on loopback or a dashboardToken)`,
        ),
      );
    return f();
  }

  /** Records a membership event (bounded: the oldest go first). */
  event(what: string, silo: string, detail: string, at = Date.now()): void {
    this.#events.push([at, silo, what, detail]);
    const max = this.#s.options?.eventLogSize ?? 200;
    if (this.#events.length > max) this.#events.splice(0, this.#events.length - max);
  }

  /** Follows the cluster layer's views: silos joining and leaving the active set, as this silo sees them. */
  watch(cluster: SiloCluster): void {
    let active = new Set(cluster.view.active.keys());
    this.event('view', cluster.address, `joined the cluster; active: ${[...active].join(', ')}`);
    cluster.membership.subscribe((v) => {
      const now = new Set(v.active.keys());
      for (const a of now) if (!active.has(a)) this.event('active', a, `became active (view ${v.version})`);
      for (const a of active)
        if (!now.has(a))
          this.event(
            v.dead.has(a) ? 'dead' : 'left',
            a,
            `${v.dead.has(a) ? 'declared dead' : 'left the active set'} (view ${v.version})`,
          );
      active = now;
    });
  }

  // ---- One silo's counters -----------------------------------------------------------

  /** This silo's counters now (`dashboard.silo`). */
  stats(): WireSiloStats {
    const rt = this.#s.runtime;
    const meters = rt.meters;
    const byType = new Map<string, number>();
    const mailboxes: Array<[string, number, string, boolean]> = [];
    let queued = 0;
    for (const a of rt.catalog.activations()) {
      byType.set(a.type.name, (byType.get(a.type.name) ?? 0) + 1);
      const n = a.queueLength;
      if (n === 0) continue;
      queued += n;
      const m = a.nextQueued;
      mailboxes.push([a.idStr, n, m?.name ?? '', m?.readOnly ?? false]);
    }
    mailboxes.sort((a, b) => b[1] - a[1]);
    const types: WireSiloStats['types'] = [];
    const seen = new Set<string>();
    const typeInfo = (name: string): { reentrant: boolean; statelessWorker: boolean } => {
      const t = rt.types.get(name);
      return { reentrant: t?.reentrant ?? false, statelessWorker: (t?.maxLocalWorkers ?? 0) > 0 };
    };
    const statesOf = (name: string): Array<[string, string]> => [...(rt.declaredStates.get(name) ?? [])];
    if (meters !== undefined)
      for (const m of meters.all()) {
        seen.add(m.type);
        let calls = 0;
        let failures = 0;
        const codes = new Map<string, number>();
        let top: [string, number, boolean] | null = null;
        for (const c of m.methods()) {
          calls += c.calls;
          if (c.failures !== undefined)
            for (const [code, n] of c.failures.entries()) {
              failures += n;
              codes.set(code, (codes.get(code) ?? 0) + n);
            }
          if (top === null || c.calls > top[1])
            top = [c.name, c.calls, rt.types.get(m.type)?.methods.get(c.name)?.readOnly ?? false];
        }
        types.push({
          type: m.type,
          calls,
          failures,
          codes: [...codes],
          latency: [...m.latency.counts],
          activations: byType.get(m.type) ?? 0,
          topMethod: top,
          ...typeInfo(m.type),
          states: statesOf(m.type),
        });
      }
    for (const [type, n] of byType)
      if (!seen.has(type))
        types.push({
          type,
          calls: 0,
          failures: 0,
          codes: [],
          latency: [],
          activations: n,
          topMethod: null,
          ...typeInfo(type),
          states: statesOf(type),
        });
    const hot = meters?.hot;
    return {
      silo: this.#address,
      at: Date.now(),
      counting: meters !== undefined,
      sampling: hot !== undefined,
      activations: rt.activationCount,
      pending: rt.pendingCalls,
      queued,
      bounds: [...CALL_LATENCY_BUCKETS],
      types,
      hot: (hot?.top(this.#s.options?.hotGrainsShown ?? 10) ?? []).map((h): [string, number, number, number] => [
        h.grain,
        h.rate,
        h.error,
        h.share,
      ]),
      mailboxes: mailboxes.slice(0, MAILBOXES_SHOWN),
    };
  }

  // ---- The cluster ------------------------------------------------------------------

  /** A system call to silo `address` (this one: its handler), within the dashboard's timeout. */
  #call<N extends SystemCallName>(address: string, name: N, args: SystemCallArgs<N>): Promise<SystemCallResult<N>> {
    const c = this.#s.cluster();
    if (c === undefined) return Promise.reject(new SiloUnavailableError(`silo ${this.#address} is not networked`));
    return within(c.systemCall(address, name, args, this.#timeoutMs), this.#timeoutMs, `silo ${address}`);
  }

  /** The cluster now (`dashboard.cluster`): the table, each live silo's counters, the events seen. */
  async gather(): Promise<WireDashboardCluster> {
    const c = this.#s.cluster();
    const at = Date.now();
    if (c === undefined) {
      const self = this.#address;
      return {
        silo: self,
        at,
        members: [[self, 0, 'Active', null, '', at, at, []]],
        silos: [{ address: self, stats: this.stats(), error: null }],
        events: [...this.#events],
      };
    }
    const [, members] = await within(
      c.systemCall(c.address, 'cluster.status', []),
      this.#timeoutMs * 2,
      'the membership table',
    );
    this.#tableEvents(members);
    const newest = new Map<string, (typeof members)[number]>();
    for (const m of members) {
      const prev = newest.get(m[0]);
      if (prev === undefined || prev[1] < m[1]) newest.set(m[0], m);
    }
    const live = [...newest.values()].filter((m) => m[2] !== 'Dead').map((m) => m[0]);
    const silos = await Promise.all(
      live.map(async (address) => {
        try {
          const stats = address === c.address ? this.stats() : await this.#call(address, 'dashboard.silo', []);
          return { address, stats, error: null };
        } catch (e) {
          return { address, stats: null, error: message(e) };
        }
      }),
    );
    return { silo: c.address, at, members, silos, events: [...this.#events] };
  }

  /** Logs what changed in the table since the last gather: statuses, and new suspicion votes. */
  #tableEvents(members: WireDashboardCluster['members']): void {
    const first = this.#lastRows.size === 0;
    for (const [address, generation, status, , , , , votes] of members) {
      const id = `${address}@${generation}`;
      const prev = this.#lastRows.get(id);
      this.#lastRows.set(id, { status, votes: votes.length });
      if (first) continue;
      if (prev === undefined) {
        if (status !== 'Dead') this.event('table', address, `new row: ${status} (generation ${generation})`);
        continue;
      }
      if (prev.status !== status) this.event('table', address, `${prev.status} → ${status}`);
      if (votes.length > prev.votes && status !== 'Dead')
        this.event('suspected', address, `suspected by ${votes.map(([by]) => by).join(', ')}`);
    }
  }

  // ---- A grain ------------------------------------------------------------------------

  /** The local activation of `grain`, if this silo has one (`dashboard.local`). */
  local(grain: string): WireDashboardLocal | null {
    const rt = this.#s.runtime;
    const t = rt.catalog.get(grain);
    if (t === undefined) return null;
    const type = grain.slice(0, grain.indexOf('/'));
    const states: Array<[string, string]> = [...(rt.declaredStates.get(type) ?? [])];
    const rate = rt.meters?.hot?.rateOf(grain) ?? null;
    if (t instanceof WorkerPool) {
      let queued = 0;
      let running = 0;
      for (const w of t.workers) {
        queued += w.queueLength;
        running += w.running;
      }
      return { silo: this.#address, state: `${t.workers.length} stateless workers`, queued, running, rate, states };
    }
    return {
      silo: this.#address,
      state: stateNames[t.state] ?? String(t.state),
      queued: t.queueLength,
      running: t.running,
      rate,
      states,
    };
  }

  /** Deactivates the local activation of `grain`, if any (`dashboard.deactivate`); true if there was one. */
  deactivateHere(grain: string): boolean {
    const t = this.#s.runtime.catalog.get(grain);
    if (t instanceof Activation) {
      void t.deactivate('requested');
      return true;
    }
    if (t instanceof WorkerPool) {
      for (const w of [...t.workers]) void w.deactivate('requested');
      return t.workers.length > 0;
    }
    return false;
  }

  /** Where `grain` is active: the directory's entry (a stateless worker: this silo's pool, if any). */
  async #locate(grain: string): Promise<{ silo: string; activation: number } | null> {
    const c = this.#s.cluster();
    const type = this.#s.runtime.types.get(grain.slice(0, grain.indexOf('/')));
    const here = this.#s.runtime.catalog.get(grain);
    if (c === undefined || (type !== undefined && type.maxLocalWorkers > 0)) {
      if (here instanceof Activation) return { silo: this.#address, activation: here.seq };
      return here instanceof WorkerPool ? { silo: this.#address, activation: 0 } : null;
    }
    const e = await within(c.directory.lookup(grain), this.#timeoutMs, 'the directory');
    return e === undefined ? null : { silo: e.address, activation: e.activation };
  }

  /** The states `type` declared, on this silo or on the silo that hosts `local`. */
  #declared(type: string, local: WireDashboardLocal | null): Map<string, string> {
    const out = new Map(this.#s.runtime.declaredStates.get(type) ?? []);
    for (const [state, provider] of local?.states ?? []) if (!out.has(state)) out.set(state, provider);
    return out;
  }

  /** A grain's location, activation, stored states and reminders (`dashboard.grain`). */
  async grain(type: string, key: string): Promise<WireDashboardGrain> {
    if (type === '' || type.includes('/'))
      throw new ConfigurationError(`a grain type is a name without '/', got ${JSON.stringify(type)}`);
    const grain = `${type}/${key}`;
    const location = await this.#locate(grain);
    let local: WireDashboardLocal | null = null;
    if (location !== null) {
      try {
        local =
          location.silo === this.#address
            ? this.local(grain)
            : await this.#call(location.silo, 'dashboard.local', [grain]);
      } catch (e) {
        this.#s.logger.debug({ grain, silo: location.silo, err: e }, 'dashboard: the silo of a grain did not answer');
      }
    }
    const states: WireDashboardGrain['states'] = [];
    for (const [state, providerName] of this.#declared(type, local)) {
      const provider = this.#s.storage.get(providerName);
      if (provider === undefined) {
        states.push({
          state,
          provider: providerName,
          etag: null,
          json: null,
          editable: false,
          error: `storage provider '${providerName}' is not configured on silo ${this.#address}`,
        });
        continue;
      }
      try {
        const r = await provider.read({ grainType: type, grainKey: key, stateName: state });
        states.push({
          state,
          provider: providerName,
          etag: r.etag,
          json: r.etag === null ? null : displayJson(r.state),
          editable: r.etag === null || plainJson(r.state),
          error: null,
        });
      } catch (e) {
        states.push({ state, provider: providerName, etag: null, json: null, editable: false, error: message(e) });
      }
    }
    let reminders: WireDashboardGrain['reminders'] = [];
    let remindersError: string | null = null;
    try {
      reminders = (await this.#s.reminders.readGrain(grain)).map((r) => ({
        name: r.name,
        startAt: r.startAt,
        periodMs: r.periodMs,
        lastTickAt: r.lastTickAt ?? null,
      }));
    } catch (e) {
      remindersError = message(e);
    }
    return {
      grain,
      known: this.#s.runtime.types.get(type) !== undefined,
      location: location === null ? null : [location.silo, location.activation],
      local,
      states,
      reminders,
      remindersError,
    };
  }

  /**
   * Writes a grain's state from JSON text under `etag` (`dashboard.writeState`):
   * a stale ETag fails with InconsistentStateError and writes nothing. Then the
   * grain's activation, if any, is deactivated, so its next call reads the new state.
   */
  async writeState(
    type: string,
    key: string,
    state: string,
    etag: string | null,
    json: string,
  ): Promise<WireStateWritten> {
    const grain = `${type}/${key}`;
    let value: unknown;
    try {
      value = JSON.parse(json) as unknown;
    } catch (e) {
      throw new ConfigurationError(`the new state of ${grain} is not JSON: ${message(e)}`);
    }
    const location = await this.#locate(grain);
    let local: WireDashboardLocal | null = null;
    if (location !== null && location.silo !== this.#address)
      local = await this.#call(location.silo, 'dashboard.local', [grain]).catch(() => null);
    const providerName = this.#declared(type, local).get(state);
    if (providerName === undefined)
      throw new ConfigurationError(
        `grain type '${type}' declared no state '${state}' on the silos asked: a state is known once a grain of the type has activated`,
      );
    const provider = this.#s.storage.get(providerName);
    if (provider === undefined)
      throw new ConfigurationError(`storage provider '${providerName}' is not configured on silo ${this.#address}`);
    const address: StateAddress = { grainType: type, grainKey: key, stateName: state };
    const written = await provider.write(address, value, etag);
    this.#s.logger.info({ grain, state, etag: written }, 'dashboard: grain state written');
    let deactivated = false;
    if (location !== null) {
      try {
        deactivated =
          location.silo === this.#address
            ? this.deactivateHere(grain)
            : await this.#call(location.silo, 'dashboard.deactivate', [grain]);
      } catch (e) {
        // The write stands: the activation's next write fails on its stale ETag rather than overwrite it.
        this.#s.logger.warn(
          { grain, silo: location.silo, err: e },
          'dashboard: the grain whose state was written could not be deactivated',
        );
      }
    }
    return { etag: written, deactivated };
  }
}
