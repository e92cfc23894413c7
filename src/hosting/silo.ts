// Silo: hosts grains. `Silo.start()` with no options is a working cluster of
// one with in-memory storage. A silo is also a client: `silo.getGrain(...)`.
//
// This is the composition root: it resolves the options, picks the in-memory
// providers where none are given, and starts the silo's parts as a list of
// stages (storage, messaging, grains, active, reminders). Every way a silo
// ends (stop, declared dead, abort, a failed start) runs the started stages'
// stops in reverse order, each told how the silo is ending.

import { availableParallelism } from 'node:os';
import type { Clock } from '../clock.ts';
import { ConfigurationError } from '../errors.ts';
import type { AnyGrainClass, Grain, GrainClass, SiloInfo } from '../grain/grain.ts';
import type { GrainRef, ObserverRef } from '../grain/ref.ts';
import { channels } from '../observability/channels.ts';
import { defaultLogger, type Logger } from '../observability/logger.ts';
import { memoryStorage } from '../providers/memory/storage.ts';
import { memoryEventLog } from '../providers/memory/event-log.ts';
import type { EventLog } from '../journal/log.ts';
import { decode, encode } from '../serialization/codec.ts';
import type { StateSerializer, StorageProvider } from '../storage/provider.ts';
import { Runtime } from '../runtime/runtime.ts';
import { SiloCluster } from '../runtime/cluster.ts';
import { memoryMembership } from '../providers/memory/membership.ts';
import type { MembershipTable } from '../membership/table.ts';
import type { MembershipOptions } from '../membership/service.ts';
import type { TransportLimits } from '../transport/limits.ts';
import { memoryReminders } from '../providers/memory/reminders.ts';
import { ReminderService } from '../reminders/service.ts';
import type { ReminderTable } from '../reminders/table.ts';
import { Ring } from '../membership/ring.ts';

/** The ring of a silo that is not (or no longer) a member: it owns no range. */
const emptyRing = new Ring([]);

/** Options of `Silo.start`. Every field is optional. */
export interface SiloOptions {
  /** Cluster this silo belongs to. Default `dev`. */
  clusterId?: string;
  /** Grain classes this silo hosts. */
  grains?: AnyGrainClass[];
  /** Host of the silo-to-silo endpoint. Default `127.0.0.1`. */
  host?: string;
  /** Port of the silo-to-silo endpoint. Default 11111. */
  port?: number;
  /** Port for external clients. Default: none. */
  gatewayPort?: number;
  /** Named storage providers; `default` is used when a state names none. Default `{ default: memoryStorage() }`. */
  storage?: Record<string, StorageProvider>;
  /** Named event logs of journaled grains; `default` is used when a grain names none. Default `{ default: memoryEventLog() }`. */
  eventLogs?: Record<string, EventLog>;
  /**
   * The durable reminder table. Default `memoryReminders()`: reminders that live
   * as long as this process (give SQLite, PostgreSQL or Redis for durable ones).
   */
  reminders?: ReminderTable;
  /** Shortest period a reminder may have, in ms. Default 60 000 (as Orleans); tests use less. */
  minReminderPeriodMs?: number;
  /** How often a silo re-reads the reminders of its ring ranges from the table, in ms. Default 60 000. */
  reminderRefreshIntervalMs?: number;
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
  /** Where the silo reads the time and sets its timers. Default: the system clock; tests give a ManualClock. */
  clock?: Clock;
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
  minReminderPeriodMs: 60_000,
  reminderRefreshIntervalMs: 60_000,
} as const;

function positive(name: string, v: number | undefined): void {
  if (v !== undefined && !(typeof v === 'number' && v > 0 && Number.isFinite(v))) {
    throw new ConfigurationError(`silo option ${name} must be a positive number of milliseconds, got ${String(v)}`);
  }
}

/** The options with defaults applied and checked. */
interface Resolved {
  readonly clusterId: string;
  readonly host: string;
  readonly port: number;
  readonly networked: boolean;
  readonly responseTimeoutMs: number;
  readonly collectionAgeMs: number;
  readonly deactivationTimeoutMs: number;
  readonly maxForwardCount: number;
  readonly callerStacks: boolean;
  readonly minReminderPeriodMs: number;
  readonly reminderRefreshIntervalMs: number;
  readonly loadReportIntervalMs: number;
  readonly systemCallTimeoutMs: number;
  readonly maxPendingRequests: number;
  readonly storage: Map<string, StorageProvider>;
  readonly eventLogs: Map<string, EventLog>;
  readonly reminders: ReminderTable;
  readonly membership: MembershipTable;
}

function resolve(options: SiloOptions): Resolved {
  positive('responseTimeoutMs', options.responseTimeoutMs);
  positive('collectionAgeMs', options.collectionAgeMs);
  positive('collectionQuantumMs', options.collectionQuantumMs);
  positive('deactivationTimeoutMs', options.deactivationTimeoutMs);
  positive('minReminderPeriodMs', options.minReminderPeriodMs);
  positive('reminderRefreshIntervalMs', options.reminderRefreshIntervalMs);
  positive('loadReportIntervalMs', options.loadReportIntervalMs);
  positive('systemCallTimeoutMs', options.systemCallTimeoutMs);
  const reminders = options.reminders ?? memoryReminders();
  if (
    reminders === null ||
    typeof reminders !== 'object' ||
    typeof reminders.readRange !== 'function' ||
    typeof reminders.upsert !== 'function'
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
  const networked = options.membership !== undefined || options.gatewayPort !== undefined || options.port !== undefined;
  return {
    clusterId: options.clusterId ?? siloDefaults.clusterId,
    host: options.host ?? siloDefaults.host,
    port: options.port ?? siloDefaults.port,
    networked,
    responseTimeoutMs: options.responseTimeoutMs ?? siloDefaults.responseTimeoutMs,
    collectionAgeMs: options.collectionAgeMs ?? siloDefaults.collectionAgeMs,
    deactivationTimeoutMs: options.deactivationTimeoutMs ?? siloDefaults.deactivationTimeoutMs,
    maxForwardCount: options.maxForwardCount ?? siloDefaults.maxForwardCount,
    callerStacks: options.callerStacks ?? siloDefaults.callerStacks,
    minReminderPeriodMs: options.minReminderPeriodMs ?? siloDefaults.minReminderPeriodMs,
    reminderRefreshIntervalMs: options.reminderRefreshIntervalMs ?? siloDefaults.reminderRefreshIntervalMs,
    loadReportIntervalMs: options.loadReportIntervalMs ?? siloDefaults.loadReportIntervalMs,
    systemCallTimeoutMs: options.systemCallTimeoutMs ?? siloDefaults.systemCallTimeoutMs,
    maxPendingRequests: options.maxPendingRequests ?? siloDefaults.maxPendingRequests,
    storage,
    eventLogs,
    reminders,
    membership: options.membership ?? memoryMembership(),
  };
}

/** How a silo ends: a graceful stop, declared dead by the cluster, or an abort (a crash, for tests). */
type Ending = 'graceful' | 'dead' | 'abort';

/** One part of the silo that starts in order and stops in reverse. */
interface Stage {
  readonly name: string;
  start(): Promise<void>;
  stop(how: Ending): Promise<void>;
}

/** A running silo. */
export class Silo {
  readonly #runtime: Runtime;
  readonly #logger: Logger;
  readonly #cluster: SiloCluster | undefined;
  /** The stages that started, in start order. */
  readonly #started: Stage[];
  #stopped: Promise<void> | undefined;
  #resolveTerminated!: (how: 'stopped' | 'declared dead') => void;
  /** Resolves when the silo has stopped: 'stopped' after stop(), 'declared dead' when the cluster declared it dead. */
  readonly terminated: Promise<'stopped' | 'declared dead'>;

  private constructor(runtime: Runtime, logger: Logger, cluster: SiloCluster | undefined, started: Stage[]) {
    this.#runtime = runtime;
    this.#logger = logger;
    this.#cluster = cluster;
    this.#started = started;
    this.terminated = new Promise((r) => (this.#resolveTerminated = r));
  }

  /** The cluster layer, when the silo is networked. Internal: tests and tools. */
  get cluster(): SiloCluster | undefined {
    return this.#cluster;
  }

  /** Stops the started stages in reverse order; a stage that fails to stop is logged and the rest go on. */
  static async #stopStages(stages: readonly Stage[], how: Ending, logger: Logger): Promise<void> {
    for (let i = stages.length - 1; i >= 0; i--) {
      const stage = stages[i] as Stage;
      try {
        await stage.stop(how);
      } catch (e) {
        logger.warn({ stage: stage.name, err: e }, 'a silo stage failed to stop');
      }
    }
  }

  #end(how: Ending): Promise<void> {
    this.#stopped ??= (async () => {
      if (how === 'graceful') this.#logger.info({}, 'silo stopping');
      else if (how === 'dead') this.#logger.error({}, 'stopping at once: declared dead by the cluster');
      else this.#logger.warn({}, 'aborting: no goodbye');
      await Silo.#stopStages(this.#started, how, this.#logger);
      if (how === 'graceful') {
        this.#logger.info({}, 'silo stopped');
        if (channels.siloStopped.hasSubscribers)
          channels.siloStopped.publish({ silo: this.info.address, address: this.info.address });
      }
      this.#resolveTerminated(how === 'dead' ? 'declared dead' : 'stopped');
    })();
    return this.#stopped;
  }

  /**
   * Stops abruptly, as a crash would: sockets close with no goodbye, nothing is
   * written to the membership table, grains are not deactivated (their state is
   * what was last written). The others detect the death. For tests and chaos drills.
   */
  abort(): Promise<void> {
    return this.#end('abort');
  }

  /** The cluster declared this silo dead: stop at once, with no goodbye. */
  declaredDead(): void {
    void this.#end('dead');
  }

  /**
   * Stops gracefully: refuses new calls, lets running turns finish, deactivates
   * every grain (onDeactivate runs), then closes the storage providers.
   */
  stop(): Promise<void> {
    return this.#end('graceful');
  }

  /** Starts a silo. */
  static async start(options: SiloOptions = {}): Promise<Silo> {
    const o = resolve(options);
    const base = options.logger ?? defaultLogger();
    let logger = base.child({ silo: `${o.host}:${o.port}` });
    const runtime = new Runtime({
      siloInfo: Object.freeze({ address: `${o.host}:${o.port}`, clusterId: o.clusterId }),
      logger,
      ...(options.clock !== undefined ? { clock: options.clock } : {}),
      responseTimeoutMs: o.responseTimeoutMs,
      collectionAgeMs: o.collectionAgeMs,
      collectionQuantumMs: options.collectionQuantumMs,
      maxForwardCount: o.maxForwardCount,
      storage: o.storage,
      eventLogs: o.eventLogs,
      cpus: availableParallelism(),
      callerStacks: o.callerStacks,
      deactivationTimeoutMs: o.deactivationTimeoutMs,
    });
    for (const cls of options.grains ?? []) runtime.register(cls);
    const made: { silo?: Silo } = {};
    let cluster: SiloCluster | undefined;
    const reminders = new ReminderService({
      table: o.reminders,
      logger: logger.child({ reminders: o.reminders.kind }),
      minPeriodMs: o.minReminderPeriodMs,
      refreshIntervalMs: o.reminderRefreshIntervalMs,
      clock: runtime.clock,
      fire: (grainId, name, tick) => {
        const slash = grainId.indexOf('/');
        return runtime.deliverReminder(grainId.slice(0, slash), grainId.slice(slash + 1), [name, tick]);
      },
      notify: (owner, grainId, name) => (cluster as SiloCluster).systemCall(owner, 'reminder.changed', [grainId, name]),
    });

    const stages: Stage[] = [
      storageStage(o, runtime, logger),
      {
        // Listeners, the membership table, the join: the silo becomes Active at the end of it.
        name: 'messaging',
        start: async () => {
          if (!o.networked) return;
          cluster = await SiloCluster.start(
            runtime,
            {
              clusterId: o.clusterId,
              host: o.host,
              port: o.port,
              gatewayPort: options.gatewayPort,
              membership: o.membership,
              membershipOptions: options.membershipOptions ?? {},
              transport: options.transport,
              loadReportIntervalMs: o.loadReportIntervalMs,
              systemCallTimeoutMs: o.systemCallTimeoutMs,
              maxForwardCount: o.maxForwardCount,
              maxPendingRequests: o.maxPendingRequests,
              logger: base,
              clock: runtime.clock,
            },
            () => made.silo?.declaredDead(),
          );
          // SiloCluster.start attached itself and set the silo's address before joining.
          logger = base.child({ silo: cluster.address });
          runtime.logger = logger;
        },
        stop: async (how) => {
          if (how === 'graceful') await cluster?.finishStop(o.deactivationTimeoutMs);
          else await cluster?.close();
        },
      },
      {
        // The activations: nothing to start (they come with calls); a stop runs them down.
        name: 'grains',
        start: async () => {},
        stop: async (how) => {
          if (how === 'abort') runtime.abandon();
          else await runtime.stop();
        },
      },
      {
        // Taking work from the cluster and from clients.
        name: 'active',
        start: async () => {},
        stop: async (how) => {
          // A graceful stop leaves the active set first (no new work is placed here); the
          // others close the connections at once, saying nothing.
          if (how === 'graceful') await cluster?.beginStop();
          else await cluster?.close();
        },
      },
      {
        name: 'reminders',
        start: async () => {
          runtime.reminders = reminders;
          if (cluster === undefined) {
            reminders.start(runtime.siloInfo.address, undefined);
            return;
          }
          const c = cluster;
          const ringOf = (): Ring | undefined => (c.view.active.has(c.address) ? c.view.ring : emptyRing);
          reminders.start(c.address, ringOf());
          c.membership.subscribe(() => reminders.viewChanged(ringOf()));
        },
        // Others take this silo's reminders over as soon as it leaves their views.
        stop: async () => {
          reminders.stop();
          runtime.reminders = undefined;
        },
      },
    ];
    const started: Stage[] = [];
    for (const stage of stages) {
      try {
        await stage.start();
      } catch (e) {
        await Silo.#stopStages(started, 'abort', logger);
        throw e;
      }
      started.push(stage);
    }
    logger.info(
      {
        clusterId: o.clusterId,
        address: runtime.siloInfo.address,
        gateway: cluster?.gatewayAddress ?? null,
        grains: [...runtime.types.all.keys()],
        storage: Object.fromEntries([...o.storage].map(([n, p]) => [n, p.kind])),
        eventLogs: Object.fromEntries([...o.eventLogs].map(([n, l]) => [n, l.kind])),
        membership: options.membership?.kind ?? (o.networked ? 'memory' : 'none'),
        responseTimeoutMs: o.responseTimeoutMs,
        collectionAgeMs: o.collectionAgeMs,
      },
      'silo started',
    );
    warnAboutMemoryProviders(options, logger);
    if (channels.siloStarted.hasSubscribers)
      channels.siloStarted.publish({ silo: runtime.siloInfo.address, address: runtime.siloInfo.address });
    made.silo = new Silo(runtime, logger, cluster, started);
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
   * Makes `impl` an observer grains can call through the returned reference
   * (hand it to a grain as an argument). It lives on this silo until
   * `dispose()` or the silo stops.
   */
  createObserver<T extends object>(impl: T): ObserverRef<T> {
    return this.#runtime.createObserver(impl, undefined) as unknown as ObserverRef<T>;
  }
}

/** Storage providers, event logs and the reminder table: opened first, closed last. */
function storageStage(o: Resolved, runtime: Runtime, logger: Logger): Stage {
  const opened: Array<{ kind: string; name: string; close(): Promise<void> }> = [];
  return {
    name: 'storage',
    start: async () => {
      const ctx = runtime.codecContext;
      const serializer: StateSerializer = { encode, decode: (b) => decode(b, ctx) };
      try {
        for (const [name, p] of o.storage) {
          await p.init({ name, logger: logger.child({ storage: name }), serializer });
          opened.push({ kind: 'storage provider', name, close: async () => p.close() });
        }
        for (const [name, l] of o.eventLogs) {
          await l.init({ name, logger: logger.child({ eventLog: name }), serializer });
          opened.push({ kind: 'event log', name, close: async () => l.close() });
        }
        await o.reminders.init({ clusterId: o.clusterId, logger: logger.child({ reminders: o.reminders.kind }) });
        opened.push({ kind: 'reminder table', name: o.reminders.kind, close: () => o.reminders.close() });
      } catch (e) {
        await closeAll(opened, logger);
        throw e;
      }
    },
    stop: () => closeAll(opened, logger),
  };
}

async function closeAll(
  opened: Array<{ kind: string; name: string; close(): Promise<void> }>,
  logger: Logger,
): Promise<void> {
  while (opened.length > 0) {
    const p = opened.pop() as (typeof opened)[number];
    try {
      await p.close();
    } catch (e) {
      logger.warn({ [p.kind]: p.name, err: e }, `${p.kind} failed to close`);
    }
  }
}

/** Silos in several processes share nothing held in one process's memory. */
function warnAboutMemoryProviders(options: SiloOptions, logger: Logger): void {
  if (options.membership === undefined || options.membership.kind === 'memory') return;
  if (options.storage === undefined)
    logger.warn(
      {},
      "grain state is kept in this process's memory (no storage option): in a cluster of several processes a grain that moves loses it; give a shared provider such as sqliteStorage, postgresStorage or redisStorage",
    );
  if (options.reminders === undefined)
    logger.warn(
      {},
      "reminders are kept in this process's memory (no reminders option): in a cluster of several processes reminders other silos own never fire; give a shared table such as sqliteReminders, postgresReminders or redisReminders",
    );
}
