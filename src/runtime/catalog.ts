// The catalog: the activations of this silo by grain id (an activation, or a
// pool of stateless workers), their creation and removal, idle collection, and
// running them all down when the silo stops. Orleans' Catalog and
// ActivationCollector, in one place.

import type { Clock, ClockTimer } from '../clock.ts';
import { SiloStoppedError } from '../errors.ts';
import type { GrainId } from '../grain/identity.ts';
import type { GrainTypeInfo } from '../grain/options.ts';
import type { Message } from '../messaging/message.ts';
import { Activation, ActivationState, type ActivationHost } from './activation.ts';
import { WorkerPool, type PoolHost } from './worker-pool.ts';

/** What the catalog needs from the silo, beyond what its activations need. */
export interface CatalogHost extends ActivationHost {
  /** A grain may now live here: routes kept on references must be looked up again. */
  routesChanged(): void;
  /** Removes a departing activation's directory entry. */
  unregister(a: Activation): void;
}

/** Idle collection and stop timing. */
export interface CatalogOptions {
  /** Idle time after which an activation is deactivated, unless its type says otherwise. */
  readonly collectionAgeMs: number;
  /** How often idle activations are looked for; undefined: from the smallest collection age. */
  readonly collectionQuantumMs: number | undefined;
  /** How long stop() waits for activations to deactivate before dropping them. */
  readonly deactivationTimeoutMs: number;
}

/** A local target: one activation, or a stateless worker's pool. */
export type LocalTarget = Activation | WorkerPool;

/** The activations of one silo. */
export class Catalog implements PoolHost {
  readonly #host: CatalogHost;
  readonly #options: CatalogOptions;
  readonly #clock: Clock;
  readonly #targets = new Map<string, LocalTarget>();
  /** Collection ages of the hosted types, for the collection quantum. */
  readonly #types: () => Iterable<GrainTypeInfo>;
  #count = 0;
  /** Activation numbers start at a random point, so a restarted silo on the same address never reuses one. */
  #seq = Math.floor(Math.random() * 2 ** 40);
  #collector: ClockTimer | undefined;
  #stopping = false;

  constructor(host: CatalogHost, options: CatalogOptions, types: () => Iterable<GrainTypeInfo>) {
    this.#host = host;
    this.#options = options;
    this.#clock = host.clock;
    this.#types = types;
  }

  /** Activations in memory now (stateless workers counted one by one). */
  get count(): number {
    return this.#count;
  }

  /** True once stop() or abandon() began: no new activations are made. */
  get stopping(): boolean {
    return this.#stopping;
  }

  /** The local target of a grain id, if any. */
  get(idStr: string): LocalTarget | undefined {
    return this.#targets.get(idStr);
  }

  /** The local target of a grain, made here (not yet activated: it activates on its first call) if there is none. */
  getOrCreate(id: GrainId, idStr: string, type: GrainTypeInfo): LocalTarget {
    let t = this.#targets.get(idStr);
    if (t === undefined) {
      t = type.maxLocalWorkers > 0 ? new WorkerPool(this, id, idStr, type) : this.newActivation(id, idStr, type);
      this.#targets.set(idStr, t);
    }
    return t;
  }

  /** A new target replacing a departed one (or the first one), in the table now. */
  create(id: GrainId, idStr: string, type: GrainTypeInfo): LocalTarget {
    const t = type.maxLocalWorkers > 0 ? new WorkerPool(this, id, idStr, type) : this.newActivation(id, idStr, type);
    this.#targets.set(idStr, t);
    return t;
  }

  /** Creates an activation; it activates when it receives its first call. */
  newActivation(id: GrainId, idStr: string, type: GrainTypeInfo, pool?: WorkerPool): Activation {
    const a = new Activation(this.#host, id, idStr, type, pool, ++this.#seq);
    this.#count++;
    this.#ensureCollector();
    if (pool === undefined) this.#host.routesChanged();
    return a;
  }

  /** Removes a target made for a call that was then never delivered. */
  discardUnused(t: LocalTarget): void {
    if (t instanceof Activation) {
      if (!t.started) void t.deactivate('error');
    } else if (t.workers.length === 0) {
      t.live = false;
      this.poolEmpty(t);
    }
  }

  /** An activation left (deactivated, failed, lost to another silo, dropped). */
  remove(a: Activation): void {
    this.#count--;
    if (a.registered) {
      a.registered = false;
      this.#host.unregister(a);
    }
    if (a.pool !== undefined) a.pool.remove(a);
    else if (this.#targets.get(a.idStr) === a) this.#targets.delete(a.idStr);
  }

  poolEmpty(p: WorkerPool): void {
    if (this.#targets.get(p.idStr) === p) this.#targets.delete(p.idStr);
  }

  redispatch(msg: Message): void {
    this.#host.redispatch(msg);
  }

  ref(type: string, key: string): unknown {
    return this.#host.ref(type, key, undefined);
  }

  /** Local registered activations as directory entries (re-registration on a view change). */
  *registeredEntries(address: string): Iterable<[string, { address: string; activation: number }]> {
    for (const t of this.#targets.values()) {
      if (t instanceof Activation && t.registered && t.live) yield [t.idStr, { address, activation: t.seq }];
    }
  }

  /** Every activation, stateless workers one by one. */
  *activations(): Iterable<Activation> {
    for (const t of this.#targets.values()) {
      if (t instanceof WorkerPool) yield* [...t.workers];
      else yield t;
    }
  }

  // ---- Idle collection -------------------------------------------------------

  #quantum(): number {
    if (this.#options.collectionQuantumMs !== undefined) return this.#options.collectionQuantumMs;
    let min = this.#options.collectionAgeMs;
    for (const t of this.#types())
      if (t.collectionAgeMs !== undefined && t.collectionAgeMs < min) min = t.collectionAgeMs;
    return Math.max(5, Math.min(60_000, Math.floor(min / 4)));
  }

  #ensureCollector(): void {
    if (this.#collector !== undefined || this.#stopping) return;
    // Idle collection never keeps the process alive by itself.
    this.#collector = this.#clock.setInterval(this.#collect, this.#quantum()).unref();
  }

  readonly #collect = (): void => {
    const now = this.#clock.now();
    const defAge = this.#options.collectionAgeMs;
    for (const a of this.activations()) this.#consider(a, now, defAge);
    if (this.#targets.size === 0 && this.#collector !== undefined) {
      this.#collector.cancel();
      this.#collector = undefined;
    }
  };

  #consider(a: Activation, now: number, defAge: number): void {
    if (a.state !== ActivationState.Valid) return;
    if (a.running > 0 || a.queueLength > 0 || a.used) {
      a.used = false;
      a.idleSince = now;
      return;
    }
    a.idle();
    if (now < a.keepAliveUntil) return;
    if (now - a.idleSince >= (a.type.collectionAgeMs ?? defAge)) void a.deactivate('idle');
  }

  // ---- Stop -----------------------------------------------------------------

  #beginStop(): void {
    this.#stopping = true;
    this.#collector?.cancel();
    this.#collector = undefined;
  }

  /** Drops every activation at once with no deactivation (a crash, for tests). */
  abandon(err: SiloStoppedError): void {
    this.#beginStop();
    for (const a of [...this.activations()]) a.forceInvalidate(err);
  }

  /**
   * Deactivates every activation, letting running turns and accepted calls
   * finish. Activations still busy after `deactivationTimeoutMs` are dropped:
   * their waiting calls fail with `err`. Resolves to the ids of those dropped.
   */
  async stop(err: SiloStoppedError): Promise<string[]> {
    this.#beginStop();
    const acts = [...this.activations()];
    let timer: ClockTimer | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = this.#clock.setTimeout(() => resolve(true), this.#options.deactivationTimeoutMs);
    });
    const late = await Promise.race([
      Promise.all(acts.map((a) => a.deactivate('shutdown'))).then(() => false),
      timedOut,
    ]);
    timer?.cancel();
    if (!late) return [];
    const stuck = acts.filter((a) => !a.ended);
    for (const a of stuck) a.forceInvalidate(err);
    return stuck.map((a) => a.idStr);
  }
}
