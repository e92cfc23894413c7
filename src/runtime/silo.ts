// Silo: hosts grains. `Silo.start()` with no options is a working cluster of
// one with in-memory storage. A silo is also a client: `silo.getGrain(...)`.

import { availableParallelism } from 'node:os';
import { ConfigurationError } from '../errors.ts';
import type { Grain, GrainClass, SiloInfo } from '../grain/grain.ts';
import type { GrainRef } from '../grain/ref.ts';
import { channels } from '../observability/channels.ts';
import { defaultLogger, type Logger } from '../observability/logger.ts';
import { memoryStorage } from '../providers/memory/storage.ts';
import { decode, encode } from '../serialization/codec.ts';
import type { StateSerializer, StorageProvider } from '../storage/provider.ts';
import { Runtime } from './runtime.ts';
import { SiloCluster } from './cluster.ts';
import { memoryMembership } from '../providers/memory/membership.ts';
import type { MembershipTable } from '../membership/table.ts';
import type { MembershipOptions } from '../membership/service.ts';
import type { TransportLimits } from '../transport/limits.ts';

/** Options of `Silo.start`. Every field is optional. */
export interface SiloOptions {
  /** Cluster this silo belongs to. Default `dev`. */
  clusterId?: string;
  /** Grain classes this silo hosts. */
  grains?: GrainClass<any>[];
  /** Host of the silo-to-silo endpoint. Default `127.0.0.1`. */
  host?: string;
  /** Port of the silo-to-silo endpoint. Default 11111. */
  port?: number;
  /** Port for external clients. Default: none. */
  gatewayPort?: number;
  /** Named storage providers; `default` is used when a state names none. Default `{ default: memoryStorage() }`. */
  storage?: Record<string, StorageProvider>;
  /** Deadline of a call, in ms. Default 30 000. */
  responseTimeoutMs?: number;
  /** Idle time after which an activation is deactivated, in ms. Default 900 000 (15 minutes). */
  collectionAgeMs?: number;
  /** How often idle activations are looked for, in ms. Default: a quarter of the smallest collection age, at most 60 000. */
  collectionQuantumMs?: number;
  /** How long stop() waits for an activation to finish its turns and onDeactivate, in ms. Default 30 000. */
  deactivationTimeoutMs?: number;
  /** How many times a call may be forwarded to a new activation. Default 2. */
  maxForwardCount?: number;
  /**
   * Add the caller's own JavaScript frames to the stack of an error a call
   * returns. Without it the stack holds the grain's frames, the call, and the
   * grains waiting on it. Costs an extra await on every call (about a quarter
   * of local call throughput), so it is for debugging. Default false.
   */
  callerStacks?: boolean;
  /**
   * The membership table that makes this silo one of a cluster. With it (or with
   * `gatewayPort`), the silo listens on `host:port` (0 picks a free port) and
   * joins; without either it runs alone, with no sockets. Default: none.
   */
  membership?: MembershipTable;
  /** Failure-detection timing; see `membershipDefaults`. */
  membershipOptions?: MembershipOptions;
  /** Transport limits (frame size, time-outs); see `transportDefaults`. */
  transport?: TransportLimits;
  /** How often a silo tells the others its activation count (placement), in ms. Default 1000. */
  loadReportIntervalMs?: number;
  /** Calls this silo may have waiting on other silos at once; past it calls fail with code GRANARY_OVERLOADED. Default 100 000. */
  maxPendingRequests?: number;
  /** Deadline of control-plane calls between silos (directory, probes), in ms. Default 5000. */
  systemCallTimeoutMs?: number;
  /** Where the silo logs; a pino logger fits. Default: pino at GRANARY_LOG_LEVEL (default info) to stderr. */
  logger?: Logger;
}

/** Defaults of SiloOptions. */
export const siloDefaults = {
  clusterId: 'dev',
  host: '127.0.0.1',
  port: 11111,
  responseTimeoutMs: 30_000,
  collectionAgeMs: 15 * 60_000,
  maxForwardCount: 2,
  callerStacks: false,
  deactivationTimeoutMs: 30_000,
  loadReportIntervalMs: 1000,
  systemCallTimeoutMs: 5000,
  maxPendingRequests: 100_000,
} as const;

function positive(name: string, v: number | undefined): void {
  if (v !== undefined && !(typeof v === 'number' && v > 0 && Number.isFinite(v))) {
    throw new ConfigurationError(`silo option ${name} must be a positive number of milliseconds, got ${String(v)}`);
  }
}

/** A running silo. */
export class Silo {
  readonly #runtime: Runtime;
  readonly #storage: Map<string, StorageProvider>;
  readonly #logger: Logger;
  readonly #cluster: SiloCluster | undefined;
  #stopped: Promise<void> | undefined;
  #resolveTerminated!: (how: 'stopped' | 'declared dead') => void;
  /** Resolves when the silo has stopped: 'stopped' after stop(), 'declared dead' when the cluster declared it dead. */
  readonly terminated: Promise<'stopped' | 'declared dead'>;

  private constructor(runtime: Runtime, storage: Map<string, StorageProvider>, logger: Logger, cluster: SiloCluster | undefined) {
    this.#runtime = runtime;
    this.#storage = storage;
    this.#logger = logger;
    this.#cluster = cluster;
    this.terminated = new Promise((r) => (this.#resolveTerminated = r));
  }

  /** The cluster layer, when the silo is networked. Internal: tests and tools. */
  get cluster(): SiloCluster | undefined {
    return this.#cluster;
  }

  /**
   * Stops abruptly, as a crash would: sockets close with no goodbye, nothing is
   * written to the membership table, grains are not deactivated (their state is
   * what was last written). The others detect the death. For tests and chaos drills.
   */
  async abort(): Promise<void> {
    if (this.#stopped !== undefined) return this.#stopped;
    this.#stopped = (async () => {
      this.#logger.warn({}, 'aborting: no goodbye');
      await this.#cluster?.close();
      this.#runtime.abandon();
      await this.#closeStorage();
      this.#resolveTerminated('stopped');
    })();
    return this.#stopped;
  }

  /** The cluster declared this silo dead: stop at once, with no goodbye. */
  declaredDead(): void {
    if (this.#stopped !== undefined) return;
    this.#stopped = (async () => {
      this.#logger.error({}, 'stopping at once: declared dead by the cluster');
      await this.#cluster?.close();
      await this.#runtime.stop();
      await this.#closeStorage();
      this.#resolveTerminated('declared dead');
    })();
  }

  /** Starts a silo. */
  static async start(options: SiloOptions = {}): Promise<Silo> {
    positive('responseTimeoutMs', options.responseTimeoutMs);
    positive('collectionAgeMs', options.collectionAgeMs);
    positive('collectionQuantumMs', options.collectionQuantumMs);
    positive('deactivationTimeoutMs', options.deactivationTimeoutMs);
    if (options.maxForwardCount !== undefined && !(Number.isInteger(options.maxForwardCount) && options.maxForwardCount >= 0)) {
      throw new ConfigurationError(`silo option maxForwardCount must be a non-negative integer, got ${String(options.maxForwardCount)}`);
    }
    const clusterId = options.clusterId ?? siloDefaults.clusterId;
    const host = options.host ?? siloDefaults.host;
    const port = options.port ?? siloDefaults.port;
    const base = options.logger ?? defaultLogger();
    const logger = base.child({ silo: `${host}:${port}` });
    const storage = new Map(Object.entries(options.storage ?? { default: memoryStorage() }));
    for (const [name, p] of storage) {
      if (p === null || typeof p !== 'object' || typeof p.read !== 'function' || typeof p.write !== 'function') {
        throw new ConfigurationError(`storage provider '${name}' is not a storage provider (give e.g. memoryStorage() or sqliteStorage({ path }))`);
      }
    }
    const siloInfo: SiloInfo = Object.freeze({ address: `${host}:${port}`, clusterId });
    const runtime = new Runtime({
      siloInfo,
      logger,
      responseTimeoutMs: options.responseTimeoutMs ?? siloDefaults.responseTimeoutMs,
      collectionAgeMs: options.collectionAgeMs ?? siloDefaults.collectionAgeMs,
      collectionQuantumMs: options.collectionQuantumMs,
      maxForwardCount: options.maxForwardCount ?? siloDefaults.maxForwardCount,
      storage,
      cpus: availableParallelism(),
      callerStacks: options.callerStacks ?? siloDefaults.callerStacks,
      deactivationTimeoutMs: options.deactivationTimeoutMs ?? siloDefaults.deactivationTimeoutMs,
    });
    for (const cls of options.grains ?? []) runtime.register(cls);
    const ctx = runtime.codecContext;
    const serializer: StateSerializer = { encode, decode: (b) => decode(b, ctx) };
    const inited: StorageProvider[] = [];
    try {
      for (const [name, p] of storage) {
        await p.init({ name, logger: logger.child({ storage: name }), serializer });
        inited.push(p);
      }
    } catch (e) {
      for (const p of inited) await p.close();
      throw e;
    }
    let cluster: SiloCluster | undefined;
    let siloLogger = logger;
    const networked = options.membership !== undefined || options.gatewayPort !== undefined || options.port !== undefined;
    const made: { silo?: Silo } = {};
    if (networked) {
      positive('loadReportIntervalMs', options.loadReportIntervalMs);
      positive('systemCallTimeoutMs', options.systemCallTimeoutMs);
      try {
        cluster = await SiloCluster.start(runtime, {
          clusterId,
          host,
          port,
          gatewayPort: options.gatewayPort,
          membership: options.membership ?? memoryMembership(),
          membershipOptions: options.membershipOptions ?? {},
          transport: options.transport,
          loadReportIntervalMs: options.loadReportIntervalMs ?? siloDefaults.loadReportIntervalMs,
          systemCallTimeoutMs: options.systemCallTimeoutMs ?? siloDefaults.systemCallTimeoutMs,
          maxForwardCount: options.maxForwardCount ?? siloDefaults.maxForwardCount,
          maxPendingRequests: options.maxPendingRequests ?? siloDefaults.maxPendingRequests,
          logger: base,
        }, () => made.silo?.declaredDead());
      } catch (e) {
        for (const p of inited) await p.close();
        throw e;
      }
      runtime.attachCluster(cluster);
      siloLogger = base.child({ silo: cluster.address });
      runtime.logger = siloLogger;
      runtime.siloInfo = Object.freeze({ address: cluster.address, clusterId, gatewayAddress: cluster.gatewayAddress });
    }
    siloLogger.info({
      clusterId,
      address: runtime.siloInfo.address,
      gateway: cluster?.gatewayAddress ?? null,
      grains: [...runtime.types.keys()],
      storage: Object.fromEntries([...storage].map(([n, p]) => [n, p.kind])),
      membership: options.membership?.kind ?? (networked ? 'memory' : 'none'),
      responseTimeoutMs: options.responseTimeoutMs ?? siloDefaults.responseTimeoutMs,
      collectionAgeMs: options.collectionAgeMs ?? siloDefaults.collectionAgeMs,
    }, 'silo started');
    if (channels.siloStarted.hasSubscribers) channels.siloStarted.publish({ silo: runtime.siloInfo.address, address: runtime.siloInfo.address });
    made.silo = new Silo(runtime, storage, siloLogger, cluster);
    return made.silo;
  }

  /** This silo's address and cluster. */
  get info(): SiloInfo {
    return this.#runtime.siloInfo;
  }

  /** Activations in memory now. */
  get activationCount(): number {
    return this.#runtime.activationCount;
  }

  /** A reference to a grain, by class or by type name. */
  getGrain<T extends Grain>(type: GrainClass<T>, key: string): GrainRef<T>;
  getGrain<T>(type: string, key: string): GrainRef<T>;
  getGrain(type: GrainClass | string, key: string): unknown {
    return this.#runtime.getGrain(type, key, undefined);
  }

  /**
   * Stops gracefully: refuses new calls, lets running turns finish, deactivates
   * every grain (onDeactivate runs), then closes the storage providers.
   */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    this.#logger.info({}, 'silo stopping');
    await this.#cluster?.beginStop();
    await this.#runtime.stop();
    await this.#cluster?.finishStop();
    await this.#closeStorage();
    this.#logger.info({}, 'silo stopped');
    if (channels.siloStopped.hasSubscribers) channels.siloStopped.publish({ silo: this.info.address, address: this.info.address });
    this.#resolveTerminated('stopped');
  }

  async #closeStorage(): Promise<void> {
    for (const [name, p] of this.#storage) {
      try {
        await p.close();
      } catch (e) {
        this.#logger.warn({ storage: name, err: e }, 'storage provider failed to close');
      }
    }
  }
}
