// The membership service of one silo: joins the table, writes I-am-alive,
// probes its ring neighbours directly and through others, votes suspects dead,
// learns of changes by re-reading the table, and keeps the versioned view of
// active silos that the directory, placement and transport subscribe to. A
// silo that is stopping (ShuttingDown) leaves the active set at once, but stays
// on the directory's ring, and is still probed, until it is Dead.

import { hostname } from 'node:os';
import { sleep, systemClock, type Clock, type ClockTimer } from '../clock.ts';
import { MembershipError } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';
import { channels } from '../observability/channels.ts';
import { Ring } from './ring.ts';
import {
  siloId,
  type MembershipSnapshot,
  type MembershipTable,
  type SiloEntry,
  type SiloStatus,
  type TableVersion,
} from './table.ts';

/** Failure-detection and table timing. Every field optional; defaults in `membershipDefaults`. */
export interface MembershipOptions {
  /** How often a silo writes its I-am-alive time, in ms. Default 5000. */
  iAmAliveIntervalMs?: number;
  /** How often a silo re-reads the table, in ms. Default 1000. */
  tableRefreshIntervalMs?: number;
  /** How often each watched silo is probed, in ms. Default 1000. */
  probeIntervalMs?: number;
  /** How long a probe may take, in ms. Default 1000. */
  probeTimeoutMs?: number;
  /** Consecutive missed probes (direct and indirect) before a vote. Default 3. */
  missedProbesLimit?: number;
  /** How many ring successors each silo watches. Default 3. */
  numProbedSilos?: number;
  /** Votes that declare a silo dead (fewer when the cluster is smaller). Default 2. */
  numVotesForDeathDeclaration?: number;
  /** Age after which a vote no longer counts, in ms. Default 60 000. */
  deathVoteExpirationMs?: number;
  /** How long a joining silo tries to reach the active ones, in ms. Default 10 000. */
  joinTimeoutMs?: number;
  /**
   * Rows of Dead silos whose last I-am-alive is older than this are deleted from the table,
   * in ms. Default 7 days (Orleans' `DefunctSiloExpiration`): long enough to read what happened.
   */
  defunctSiloExpirationMs?: number;
  /** How often each silo deletes those rows, in ms. Default 1 hour (Orleans' `DefunctSiloCleanupPeriod`). */
  defunctSiloCleanupPeriodMs?: number;
}

/**
 * Defaults of MembershipOptions: a silo whose process died is declared dead in
 * about 3 seconds (its probes are refused at once), one that hangs (a frozen
 * process, a partition) in about 10 to 12 (each probe waits out its timeout
 * and is tried again through another silo before a miss counts).
 */
export const membershipDefaults: Required<MembershipOptions> = {
  iAmAliveIntervalMs: 5000,
  tableRefreshIntervalMs: 1000,
  probeIntervalMs: 1000,
  probeTimeoutMs: 1000,
  missedProbesLimit: 3,
  numProbedSilos: 3,
  numVotesForDeathDeclaration: 2,
  deathVoteExpirationMs: 60_000,
  joinTimeoutMs: 10_000,
  defunctSiloExpirationMs: 7 * 24 * 3_600_000,
  defunctSiloCleanupPeriodMs: 3_600_000,
};

/** What a `MembershipService` is given besides the timing: the clock it reads time and sets timers on. */
export type MembershipServiceOptions = MembershipOptions & {
  /** Where the service reads the time and sets its probe, refresh and I-am-alive timers. Default `systemClock`. */
  clock?: Clock;
};

/** An active silo as the view knows it. */
export interface ActiveSilo {
  readonly id: string;
  readonly address: string;
  readonly generation: number;
  readonly gatewayAddress: string | null;
}

/** The versioned set of active silos. A new object on every change. */
export interface ClusterView {
  readonly version: number;
  /** Active silos by address. */
  readonly active: ReadonlyMap<string, ActiveSilo>;
  /** The ring of active silo addresses (reminders, stream queues). */
  readonly ring: Ring;
  /**
   * The ring of active and leaving silo addresses: the grain directory's partitions. A silo
   * that is stopping keeps its partition until it has handed it over, just before it leaves.
   */
  readonly directoryRing: Ring;
  /** Addresses declared dead (this run of the service), so calls to them fail fast. */
  readonly dead: ReadonlySet<string>;
  /** Other silos that are stopping (ShuttingDown in the table): their grains are moving. */
  readonly leaving: ReadonlySet<string>;
}

/** The view before the first read of the table: no silo at all. */
export function emptyView(
  dead: ReadonlySet<string> = new Set(),
  leaving: ReadonlySet<string> = new Set(),
): ClusterView {
  const ring = new Ring([]);
  return { version: 0, active: new Map(), ring, directoryRing: ring, dead, leaving };
}

/** How the service reaches other silos; the silo wires these to its transport. */
export interface Prober {
  /** True if `address` answered a ping within `timeoutMs`. */
  probe(address: string, timeoutMs: number): Promise<boolean>;
  /** True if `via` reached `target` for us within `timeoutMs`. */
  probeIndirect(via: string, target: string, timeoutMs: number): Promise<boolean>;
}

/** One silo's membership service. */
export class MembershipService {
  readonly #table: MembershipTable;
  readonly #opts: Required<MembershipOptions>;
  readonly #logger: Logger;
  readonly #prober: Prober;
  readonly #clock: Clock;
  readonly #self: SiloEntry;
  readonly #selfId: string;
  #view: ClusterView;
  #viewVersion = 0;
  readonly #listeners = new Set<(v: ClusterView) => void>();
  readonly #missed = new Map<string, number>();
  readonly #dead = new Set<string>();
  /** Refilled on every read of the table, shared by every view (like #dead). */
  readonly #leaving = new Set<string>();
  /** The silos in #leaving by address, for probing them (a silo may crash while it stops). */
  #leavingSilos = new Map<string, ActiveSilo>();
  #timers: ClockTimer[] = [];
  #stopped = false;
  #onDeclaredDead: () => void;
  #tableReachable = true;
  #refreshing: Promise<void> | undefined;

  constructor(
    table: MembershipTable,
    self: { address: string; generation: number; gatewayAddress: string | null },
    prober: Prober,
    logger: Logger,
    options: MembershipServiceOptions,
    onDeclaredDead: () => void,
  ) {
    const { clock, ...timing } = options;
    this.#table = table;
    this.#opts = { ...membershipDefaults, ...definedOnly(timing) };
    this.#clock = clock ?? systemClock;
    this.#logger = logger;
    this.#prober = prober;
    const now = this.#clock.now();
    this.#self = {
      address: self.address,
      generation: self.generation,
      status: 'Joining',
      gatewayAddress: self.gatewayAddress,
      hostName: hostname(),
      startedAt: now,
      iAmAliveAt: now,
      suspicions: [],
    };
    this.#selfId = siloId(this.#self);
    this.#view = emptyView(this.#dead, this.#leaving);
    this.#onDeclaredDead = onDeclaredDead;
  }

  /** The current view of active silos. */
  get view(): ClusterView {
    return this.#view;
  }

  get selfId(): string {
    return this.#selfId;
  }

  /** Whether the last table read or write succeeded. */
  get tableReachable(): boolean {
    return this.#tableReachable;
  }

  /** Calls `fn` with every new view (not the current one). Returns an unsubscribe function. */
  subscribe(fn: (v: ClusterView) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /**
   * Joins: inserts this silo as Joining, checks that every active silo answers
   * (one that does not and whose I-am-alive is stale is voted dead), then
   * becomes Active. Fails if the table cannot be reached or an active silo with
   * a fresh I-am-alive cannot be reached within joinTimeoutMs.
   */
  async join(): Promise<void> {
    await this.#changeSelf('Joining', true);
    const deadline = this.#clock.now() + this.#opts.joinTimeoutMs;
    for (;;) {
      const snap = await this.#read();
      const unreachable: string[] = [];
      await Promise.all(
        snap.entries.map(async ({ entry }) => {
          if (entry.status !== 'Active' || siloId(entry) === this.#selfId) return;
          if (await this.#prober.probe(entry.address, this.#opts.probeTimeoutMs)) return;
          const stale = this.#clock.now() - entry.iAmAliveAt > this.#opts.iAmAliveIntervalMs * 3;
          if (stale) await this.#suspect(entry.address, entry.generation);
          else unreachable.push(entry.address);
        }),
      );
      if (unreachable.length === 0) break;
      if (this.#clock.now() > deadline) {
        await this.#changeSelf('Dead', false).catch(() => undefined);
        throw new MembershipError(
          `cannot join cluster: active silos ${unreachable.join(', ')} are not reachable from ${this.#self.address} (check firewalls and advertised addresses)`,
        );
      }
      await sleep(this.#clock, this.#opts.probeIntervalMs);
    }
    await this.#changeSelf('Active', false);
    await this.refresh();
    this.#start();
  }

  /** Marks this silo ShuttingDown (graceful stop begins). */
  async shuttingDown(): Promise<void> {
    await this.#changeSelf('ShuttingDown', false);
    await this.refresh();
  }

  /** Marks this silo Dead in the table (graceful stop ends) and stops the timers. */
  async leave(): Promise<void> {
    this.#stopTimers();
    try {
      await this.#changeSelf('Dead', false);
    } catch (e) {
      this.#logger.warn({ err: e }, 'could not mark this silo dead in the membership table; others will detect it');
    }
    this.#stopped = true;
  }

  /** Stops the timers without writing anything (abrupt stop). */
  stop(): void {
    this.#stopTimers();
    this.#stopped = true;
  }

  #stopTimers(): void {
    for (const t of this.#timers) t.cancel();
    this.#timers = [];
  }

  #start(): void {
    const every = (ms: number, fn: () => Promise<void>): void => {
      let busy = false;
      const t = this.#clock.setInterval(() => {
        if (busy || this.#stopped) return;
        busy = true;
        fn()
          .catch((e: unknown) => this.#logger.warn({ err: e }, 'membership task failed'))
          .finally(() => (busy = false));
      }, ms);
      this.#timers.push(t.unref());
    };
    every(this.#opts.iAmAliveIntervalMs, () =>
      this.#table.updateIAmAlive(this.#self.address, this.#self.generation, this.#clock.now()).then(
        () => this.#reachable(true),
        (e: unknown) => this.#unreachable(e),
      ),
    );
    every(this.#opts.tableRefreshIntervalMs, () => this.refresh());
    every(this.#opts.probeIntervalMs, () => this.#probeRound());
    // Without it, the rows of every silo that ever ran stay: every read of the table grows.
    every(this.#opts.defunctSiloCleanupPeriodMs, async () => {
      const deleted = await this.#table.cleanupDefunct(this.#clock.now() - this.#opts.defunctSiloExpirationMs);
      if (deleted > 0) this.#logger.info({ deleted }, 'deleted the rows of long-dead silos from the membership table');
    });
  }

  async #read(): Promise<MembershipSnapshot> {
    try {
      const s = await this.#table.readAll();
      this.#reachable(true);
      return s;
    } catch (e) {
      this.#unreachable(e);
      throw e;
    }
  }

  #reachable(ok: boolean): void {
    if (ok && !this.#tableReachable) this.#logger.info({}, 'membership table reachable again');
    this.#tableReachable = ok;
  }

  #unreachable(e: unknown): void {
    if (this.#tableReachable)
      this.#logger.warn(
        { err: e },
        'membership table unreachable: nobody is declared dead and nobody joins until it returns; serving on with the last view',
      );
    this.#tableReachable = false;
  }

  /** Re-reads the table and publishes a new view if the active or the leaving set changed. */
  refresh(): Promise<void> {
    this.#refreshing ??= this.#refresh().finally(() => (this.#refreshing = undefined));
    return this.#refreshing;
  }

  async #refresh(): Promise<void> {
    let snap: MembershipSnapshot;
    try {
      snap = await this.#read();
    } catch {
      return;
    }
    const active = new Map<string, ActiveSilo>();
    const leaving = new Map<string, ActiveSilo>();
    for (const { entry } of snap.entries) {
      const id = siloId(entry);
      if (entry.status === 'ShuttingDown' && id !== this.#selfId) {
        const prev = leaving.get(entry.address);
        if (prev === undefined || prev.generation < entry.generation)
          leaving.set(entry.address, {
            id,
            address: entry.address,
            generation: entry.generation,
            gatewayAddress: entry.gatewayAddress,
          });
      }
      if (id === this.#selfId) {
        if (entry.status === 'Dead' && !this.#stopped) {
          this.#logger.error({ silo: id }, 'this silo was declared dead by the cluster: stopping at once');
          this.stop();
          this.#onDeclaredDead();
          return;
        }
      }
      if (entry.status === 'Active' || (id === this.#selfId && entry.status === 'ShuttingDown')) {
        // A newer generation on one address replaces an older one.
        const prev = active.get(entry.address);
        if (prev === undefined || prev.generation < entry.generation) {
          active.set(entry.address, {
            id,
            address: entry.address,
            generation: entry.generation,
            gatewayAddress: entry.gatewayAddress,
          });
        }
      } else if (entry.status === 'Dead' && id !== this.#selfId) {
        const newer = snap.entries.some(
          (o) =>
            o.entry.address === entry.address && o.entry.generation > entry.generation && o.entry.status !== 'Dead',
        );
        if (!newer) this.#dead.add(entry.address);
      }
    }
    for (const a of active.keys()) {
      this.#dead.delete(a);
      leaving.delete(a); // a newer generation on the address is active
    }
    for (const a of leaving.keys()) this.#dead.delete(a);
    const oldLeaving = this.#leavingSilos;
    this.#leavingSilos = leaving;
    this.#leaving.clear();
    for (const a of leaving.keys()) this.#leaving.add(a);
    const old = this.#view.active;
    const differ = (x: ReadonlyMap<string, ActiveSilo>, y: ReadonlyMap<string, ActiveSilo>): boolean => {
      if (x.size !== y.size) return true;
      for (const [a, s] of x) if (y.get(a)?.id !== s.id) return true;
      return false;
    };
    const activeChanged = differ(old, active);
    // A silo that starts to stop, or that stopped, changes the directory's ring.
    if (!activeChanged && !differ(oldLeaving, leaving)) return;
    const ring = activeChanged ? new Ring(active.keys()) : this.#view.ring;
    this.#view = {
      version: ++this.#viewVersion,
      active,
      ring,
      directoryRing: leaving.size === 0 ? ring : new Ring([...active.keys(), ...leaving.keys()]),
      dead: this.#dead,
      leaving: this.#leaving,
    };
    this.#logger.info(
      { version: this.#view.version, active: [...active.keys()], leaving: [...leaving.keys()] },
      'cluster view changed',
    );
    if (channels.membershipChanged.hasSubscribers)
      channels.membershipChanged.publish({
        silo: this.#self.address,
        version: this.#view.version,
        active: [...active.keys()],
      });
    for (const fn of this.#listeners) {
      try {
        fn(this.#view);
      } catch (e) {
        this.#logger.error({ err: e }, 'cluster view listener threw');
      }
    }
  }

  async #probeRound(): Promise<void> {
    const v = this.#view;
    // Leaving silos too: one that crashes while it stops must be declared dead, or its
    // directory partition would stay with it.
    const watched = v.directoryRing.successors(this.#self.address, this.#opts.numProbedSilos);
    const leaving = this.#leavingSilos;
    await Promise.all(
      watched.map(async (address) => {
        const s = v.active.get(address) ?? leaving.get(address);
        if (s === undefined) return;
        let ok = await this.#prober.probe(address, this.#opts.probeTimeoutMs);
        if (!ok) {
          // Ask another silo, so that a bad link between two silos alone kills neither.
          const via = [...v.active.keys()].find((a) => a !== address && a !== this.#self.address);
          if (via !== undefined) ok = await this.#prober.probeIndirect(via, address, this.#opts.probeTimeoutMs * 2);
        }
        if (ok) {
          this.#missed.delete(s.id);
          return;
        }
        const missed = (this.#missed.get(s.id) ?? 0) + 1;
        this.#missed.set(s.id, missed);
        this.#logger.warn({ peer: address, missed }, 'probe missed');
        if (missed >= this.#opts.missedProbesLimit && this.#tableReachable) {
          await this.#suspect(s.address, s.generation);
        }
      }),
    );
  }

  /** Adds this silo's vote against a suspect; declares it dead when the votes suffice. */
  async #suspect(address: string, generation: number): Promise<void> {
    const target = `${address}@${generation}`;
    for (let attempt = 0; attempt < 10; attempt++) {
      const snap = await this.#read();
      const row = snap.entries.find((e) => siloId(e.entry) === target);
      if (row === undefined || row.entry.status === 'Dead') return;
      const now = this.#clock.now();
      const votes = row.entry.suspicions.filter(
        (s) => s.by !== this.#selfId && now - s.at < this.#opts.deathVoteExpirationMs,
      );
      votes.push({ by: this.#selfId, at: now });
      const activeCount = snap.entries.filter((e) => e.entry.status === 'Active').length;
      const needed = Math.max(1, Math.min(this.#opts.numVotesForDeathDeclaration, activeCount - 1));
      const dead = votes.length >= needed;
      const next: SiloEntry = { ...row.entry, suspicions: votes, status: dead ? 'Dead' : row.entry.status };
      if (await this.#table.update(next, row.etag, nextVersion(snap.version))) {
        this.#logger.warn(
          { peer: target, votes: votes.length, needed },
          dead ? 'declared silo dead' : 'voted silo dead',
        );
        if (dead) await this.refresh();
        return;
      }
    }
  }

  async #changeSelf(status: SiloStatus, insert: boolean): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const snap = await this.#read();
      const row = snap.entries.find((e) => siloId(e.entry) === this.#selfId);
      const entry: SiloEntry = { ...(row?.entry ?? this.#self), status, iAmAliveAt: this.#clock.now() };
      const ok =
        insert && row === undefined
          ? await this.#table.insert(entry, nextVersion(snap.version))
          : row !== undefined
            ? await this.#table.update(entry, row.etag, nextVersion(snap.version))
            : false;
      if (ok) return;
      if (row?.entry.status === 'Dead' && status !== 'Dead')
        throw new MembershipError(
          `silo ${this.#selfId} was declared dead while ${status === 'Active' ? 'joining' : 'changing status'}`,
        );
      if (attempt > 50)
        throw new MembershipError(
          `could not write this silo's row (${status}) after ${attempt} attempts: the table keeps changing`,
        );
      await sleep(this.#clock, 5 + Math.random() * 20);
    }
  }
}

function nextVersion(v: TableVersion): TableVersion {
  return { version: v.version + 1, etag: v.etag };
}

function definedOnly<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
