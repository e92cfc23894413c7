// Silo: hosts grains. `Silo.start()` with no options is a working cluster of
// one with in-memory storage. A silo is also a client: `silo.getGrain(...)`.

import { availableParallelism } from 'node:os';
import { ConfigurationError } from '../errors.ts';
import type { Grain, GrainClass, SiloInfo } from '../grain/grain.ts';
import type { GrainRef } from '../grain/ref.ts';
import { channels } from '../observability/channels.ts';
import { defaultLogger, type Logger } from '../observability/logger.ts';
import { memoryStorage } from '../providers/memory/storage.ts';
import { memoryEventLog } from '../providers/memory/event-log.ts';
import type { EventLog } from '../journal/log.ts';
import { decode, encode } from '../serialization/codec.ts';
import type { StateSerializer, StorageProvider } from '../storage/provider.ts';
import { Runtime } from './runtime.ts';
import { SiloCluster } from './cluster.ts';
import { memoryMembership } from '../providers/memory/membership.ts';
import { memoryReminders } from '../providers/memory/reminders.ts';
import { ReminderService } from '../reminders/service.ts';
import type { ReminderTable } from '../reminders/table.ts';
import { Ring } from '../directory/ring.ts';
import { siloDefaults, type SiloOptions } from '../hosting/options.ts';

/** The ring of a silo that is not (or no longer) a member: it owns no range. */
const emptyRing = new Ring([]);

// The options, their defaults and their checks live in hosting/options.ts; re-exported here so imports keep working.
export { siloDefaults, type SiloOptions };

function positive(name: string, v: number | undefined): void {
  if (v !== undefined && !(typeof v === 'number' && v > 0 && Number.isFinite(v))) {
    throw new ConfigurationError(`silo option ${name} must be a positive number of milliseconds, got ${String(v)}`);
  }
}

/** A running silo. */
export class Silo {
  readonly #runtime: Runtime;
  readonly #storage: Map<string, StorageProvider>;
  readonly #eventLogs: Map<string, EventLog>;
  readonly #logger: Logger;
  readonly #cluster: SiloCluster | undefined;
  readonly #reminders: ReminderService;
  readonly #reminderTable: ReminderTable;
  #stopped: Promise<void> | undefined;
  #resolveTerminated!: (how: 'stopped' | 'declared dead') => void;
  /** Resolves when the silo has stopped: 'stopped' after stop(), 'declared dead' when the cluster declared it dead. */
  readonly terminated: Promise<'stopped' | 'declared dead'>;

  private constructor(
    runtime: Runtime,
    storage: Map<string, StorageProvider>,
    logger: Logger,
    cluster: SiloCluster | undefined,
    reminders: ReminderService,
    reminderTable: ReminderTable,
    eventLogs: Map<string, EventLog>,
  ) {
    this.#eventLogs = eventLogs;
    this.#reminders = reminders;
    this.#reminderTable = reminderTable;
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
      this.#reminders.stop();
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
      this.#reminders.stop();
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
    positive('minReminderPeriodMs', options.minReminderPeriodMs);
    positive('reminderRefreshIntervalMs', options.reminderRefreshIntervalMs);
    const reminderTable = options.reminders ?? memoryReminders();
    if (
      reminderTable === null ||
      typeof reminderTable !== 'object' ||
      typeof reminderTable.readRange !== 'function' ||
      typeof reminderTable.upsert !== 'function'
    ) {
      throw new ConfigurationError(
        'silo option reminders is not a reminder table (give e.g. memoryReminders() or sqliteReminders({ path }))',
      );
    }
    if (
      options.maxForwardCount !== undefined &&
      !(Number.isInteger(options.maxForwardCount) && options.maxForwardCount >= 0)
    ) {
      throw new ConfigurationError(
        `silo option maxForwardCount must be a non-negative integer, got ${String(options.maxForwardCount)}`,
      );
    }
    const clusterId = options.clusterId ?? siloDefaults.clusterId;
    const host = options.host ?? siloDefaults.host;
    const port = options.port ?? siloDefaults.port;
    const base = options.logger ?? defaultLogger();
    const logger = base.child({ silo: `${host}:${port}` });
    const storage = new Map(Object.entries(options.storage ?? { default: memoryStorage() }));
    for (const [name, p] of storage) {
      if (p === null || typeof p !== 'object' || typeof p.read !== 'function' || typeof p.write !== 'function') {
        throw new ConfigurationError(
          `storage provider '${name}' is not a storage provider (give e.g. memoryStorage() or sqliteStorage({ path }))`,
        );
      }
    }
    const eventLogs = new Map(Object.entries(options.eventLogs ?? { default: memoryEventLog() }));
    for (const [name, l] of eventLogs) {
      if (l === null || typeof l !== 'object' || typeof l.read !== 'function' || typeof l.append !== 'function') {
        throw new ConfigurationError(
          `event log '${name}' is not an event log (give e.g. memoryEventLog() or sqliteEventLog({ path }))`,
        );
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
      eventLogs,
      cpus: availableParallelism(),
      callerStacks: options.callerStacks ?? siloDefaults.callerStacks,
      deactivationTimeoutMs: options.deactivationTimeoutMs ?? siloDefaults.deactivationTimeoutMs,
    });
    for (const cls of options.grains ?? []) runtime.register(cls);
    const ctx = runtime.codecContext;
    const serializer: StateSerializer = { encode, decode: (b) => decode(b, ctx) };
    const inited: Array<StorageProvider | EventLog> = [];
    try {
      for (const [name, p] of storage) {
        await p.init({ name, logger: logger.child({ storage: name }), serializer });
        inited.push(p);
      }
      for (const [name, l] of eventLogs) {
        await l.init({ name, logger: logger.child({ eventLog: name }), serializer });
        inited.push(l);
      }
      await reminderTable.init({ clusterId, logger: logger.child({ reminders: reminderTable.kind }) });
    } catch (e) {
      for (const p of inited) await p.close();
      throw e;
    }
    let cluster: SiloCluster | undefined;
    let siloLogger = logger;
    const networked =
      options.membership !== undefined || options.gatewayPort !== undefined || options.port !== undefined;
    const made: { silo?: Silo } = {};
    if (networked) {
      positive('loadReportIntervalMs', options.loadReportIntervalMs);
      positive('systemCallTimeoutMs', options.systemCallTimeoutMs);
      try {
        cluster = await SiloCluster.start(
          runtime,
          {
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
          },
          () => made.silo?.declaredDead(),
        );
      } catch (e) {
        for (const p of inited) await p.close();
        await reminderTable.close();
        throw e;
      }
      // SiloCluster.start attached itself and set the silo's address before joining.
      siloLogger = base.child({ silo: cluster.address });
      runtime.logger = siloLogger;
    }
    siloLogger.info(
      {
        clusterId,
        address: runtime.siloInfo.address,
        gateway: cluster?.gatewayAddress ?? null,
        grains: [...runtime.types.keys()],
        storage: Object.fromEntries([...storage].map(([n, p]) => [n, p.kind])),
        eventLogs: Object.fromEntries([...eventLogs].map(([n, l]) => [n, l.kind])),
        membership: options.membership?.kind ?? (networked ? 'memory' : 'none'),
        responseTimeoutMs: options.responseTimeoutMs ?? siloDefaults.responseTimeoutMs,
        collectionAgeMs: options.collectionAgeMs ?? siloDefaults.collectionAgeMs,
      },
      'silo started',
    );
    // Silos in several processes share nothing held in one process's memory.
    if (options.membership !== undefined && options.membership.kind !== 'memory') {
      if (options.storage === undefined)
        siloLogger.warn(
          {},
          "grain state is kept in this process's memory (no storage option): in a cluster of several processes a grain that moves loses it; give a shared provider such as sqliteStorage, postgresStorage or redisStorage",
        );
      if (options.reminders === undefined)
        siloLogger.warn(
          {},
          "reminders are kept in this process's memory (no reminders option): in a cluster of several processes reminders other silos own never fire; give a shared table such as sqliteReminders, postgresReminders or redisReminders",
        );
    }
    if (channels.siloStarted.hasSubscribers)
      channels.siloStarted.publish({ silo: runtime.siloInfo.address, address: runtime.siloInfo.address });
    const reminders = new ReminderService({
      table: reminderTable,
      logger: siloLogger.child({ reminders: reminderTable.kind }),
      minPeriodMs: options.minReminderPeriodMs ?? siloDefaults.minReminderPeriodMs,
      refreshIntervalMs: options.reminderRefreshIntervalMs ?? siloDefaults.reminderRefreshIntervalMs,
      fire: (grainId, name, tick) => {
        const slash = grainId.indexOf('/');
        return runtime.deliverReminder(grainId.slice(0, slash), grainId.slice(slash + 1), [name, tick]);
      },
      notify: (owner, grainId, name) => (cluster as SiloCluster).systemCall(owner, 'reminder.changed', [grainId, name]),
    });
    runtime.reminders = reminders;
    if (cluster === undefined) reminders.start(runtime.siloInfo.address, undefined);
    else {
      const c = cluster;
      const ringOf = (): Ring | undefined => (c.view.active.has(c.address) ? c.view.ring : emptyRing);
      reminders.start(c.address, ringOf());
      c.membership.subscribe(() => reminders.viewChanged(ringOf()));
    }
    made.silo = new Silo(runtime, storage, siloLogger, cluster, reminders, reminderTable, eventLogs);
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
    // Others take this silo's reminders over as soon as it leaves their views.
    this.#reminders.stop();
    await this.#cluster?.beginStop();
    await this.#runtime.stop();
    await this.#cluster?.finishStop();
    await this.#closeStorage();
    this.#logger.info({}, 'silo stopped');
    if (channels.siloStopped.hasSubscribers)
      channels.siloStopped.publish({ silo: this.info.address, address: this.info.address });
    this.#resolveTerminated('stopped');
  }

  async #closeStorage(): Promise<void> {
    this.#runtime.reminders = undefined;
    try {
      await this.#reminderTable.close();
    } catch (e) {
      this.#logger.warn({ err: e }, 'reminder table failed to close');
    }
    for (const [name, p] of this.#storage) {
      try {
        await p.close();
      } catch (e) {
        this.#logger.warn({ storage: name, err: e }, 'storage provider failed to close');
      }
    }
    for (const [name, l] of this.#eventLogs) {
      try {
        await l.close();
      } catch (e) {
        this.#logger.warn({ eventLog: name, err: e }, 'event log failed to close');
      }
    }
  }
}
