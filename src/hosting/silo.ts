// Silo: hosts grains. `Silo.start()` with no options is a working cluster of
// one with in-memory storage. A silo is also a client: `silo.getGrain(...)`.
//
// This is the composition root: it resolves the options, picks the in-memory
// providers where none are given, and starts the silo's parts as a list of
// stages (http, storage, messaging, streams, grains, active, reminders). Every way a silo
// ends (stop, declared dead, abort, a failed start) runs the started stages'
// stops in reverse order, each told how the silo is ending.

import { incomingTracing, outgoingTracing, tracedStorage, tracerOf } from '../observability/tracing.ts';
import { availableParallelism } from 'node:os';
import { ConfigurationError } from '../errors.ts';
import type { Grain, GrainClass, SiloInfo } from '../grain/grain.ts';
import type { GrainRef, ObserverRef } from '../grain/ref.ts';
import { channels } from '../observability/channels.ts';
import { SiloHealth } from '../observability/health.ts';
import { DashboardServer } from '../observability/dashboard/server.ts';
import { HttpEndpoint } from '../observability/http.ts';
import { LOG_SUBSYSTEMS, subsystemLogger, type LogSubsystem, type Logger } from '../observability/logger.ts';
import type { MetricsRegistry } from '../observability/metrics.ts';
import { memoryStorage } from '../providers/memory/storage.ts';
import { memoryEventLog } from '../providers/memory/event-log.ts';
import { decode, encode } from '../serialization/codec.ts';
import { MeteredStorage } from '../storage/metered.ts';
import type { StateSerializer, StorageProvider } from '../storage/provider.ts';
import { Runtime } from '../runtime/runtime.ts';
import { SiloCluster } from '../runtime/cluster.ts';
import { memoryMembership } from '../providers/memory/membership.ts';
import { memoryReminders } from '../providers/memory/reminders.ts';
import { ReminderService } from '../reminders/service.ts';
import { Ring } from '../membership/ring.ts';
import { PubSubGrain } from '../streams/pubsub.ts';
import { StreamService } from '../streams/service.ts';
import type { BroadcastChannel, Stream } from '../streams/types.ts';
import { BroadcastChannels } from '../streams/channels.ts';
import { checkedId } from '../streams/types.ts';
import { StreamWorker } from '../streams/worker.ts';
import { SiloDashboard } from './dashboard.ts';
import { describeSiloOptions, resolveSiloOptions, type ResolvedSiloOptions, type SiloOptions } from './options.ts';

/** The ring of a silo that is not (or no longer) a member: it owns no range. */
const emptyRing = new Ring([]);

export { siloDefaults, type SiloOptions } from './options.ts';

/** How a silo ends: a graceful stop, declared dead by the cluster, or an abort (a crash, for tests). */
type Ending = 'graceful' | 'dead' | 'abort';

/** One part of the silo that starts in order and stops in reverse. */
interface Stage {
  readonly name: string;
  start(): Promise<void>;
  stop(how: Ending): Promise<void>;
}

/** What the silo keeps of its observability: health, metrics, the HTTP endpoint. */
interface Observed {
  readonly health: SiloHealth;
  readonly metrics: MetricsRegistry | undefined;
  readonly http: HttpEndpoint | undefined;
}

/** A running silo. */
export class Silo {
  readonly #runtime: Runtime;
  readonly #logger: Logger;
  readonly #cluster: SiloCluster | undefined;
  readonly #observed: Observed;
  /** The stages that started, in start order. */
  readonly #started: Stage[];
  #stopped: Promise<void> | undefined;
  #resolveTerminated!: (how: 'stopped' | 'declared dead') => void;
  /** Resolves when the silo has stopped: 'stopped' after stop(), 'declared dead' when the cluster declared it dead. */
  readonly terminated: Promise<'stopped' | 'declared dead'>;

  private constructor(
    runtime: Runtime,
    logger: Logger,
    cluster: SiloCluster | undefined,
    observed: Observed,
    started: Stage[],
  ) {
    this.#runtime = runtime;
    this.#logger = logger;
    this.#cluster = cluster;
    this.#observed = observed;
    this.#started = started;
    this.terminated = new Promise((r) => (this.#resolveTerminated = r));
  }

  /** `host:port` of the silo's HTTP endpoint (health probes, /metrics); undefined without `httpPort`. */
  get httpAddress(): string | undefined {
    return this.#observed.http?.address;
  }

  /**
   * The silo's metrics as Prometheus text (what `/metrics` serves), for a
   * silo started with `metrics: true` or an `httpPort`.
   */
  metrics(): Promise<string> {
    const m = this.#observed.metrics;
    if (m === undefined)
      return Promise.reject(
        new ConfigurationError(`silo ${this.info.address} counts no metrics: give it metrics: true or an httpPort`),
      );
    return m.text();
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
      // Readiness fails from this moment on, before anything drains.
      this.#observed.health.moveTo(how === 'dead' ? 'dead' : 'stopping');
      if (channels.siloStopping.hasSubscribers)
        channels.siloStopping.publish({ silo: this.info.address, address: this.info.address, how });
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
    // Every option checked once, here; the memory providers fill in for those not given.
    const o = resolveSiloOptions(options, {
      storage: () => memoryStorage(),
      eventLog: () => memoryEventLog(),
      reminders: () => memoryReminders(),
      membership: () => memoryMembership(),
    });
    // One child logger per subsystem, at its level; lines name the silo's address once it is known.
    const subsystems = Object.fromEntries(
      LOG_SUBSYSTEMS.map((name) => [name, subsystemLogger(o.logger, name, o.logLevels[name])]),
    ) as Record<LogSubsystem, Logger>;
    let address = `${o.host}:${o.port}`;
    const log = (name: LogSubsystem): Logger => subsystems[name].child({ silo: address });
    let logger = log('silo');
    let streamsLogger = log('streams');
    const health = new SiloHealth(address);
    // With metrics on, each storage provider is counted and timed through a MeteredStorage.
    const metered = new Map<string, MeteredStorage>();
    const storage: ReadonlyMap<string, StorageProvider> = o.metrics
      ? new Map(
          [...o.storage].map(([name, p]) => {
            const m = new MeteredStorage(p);
            metered.set(name, m);
            return [name, m];
          }),
        )
      : o.storage;
    const tracer = tracerOf(o.tracing);
    const runtime: Runtime = new Runtime({
      siloInfo: Object.freeze({ address, clusterId: o.clusterId }),
      logger: log('runtime'),
      clock: o.clock,
      responseTimeoutMs: o.responseTimeoutMs,
      collectionAgeMs: o.collectionAgeMs,
      collectionQuantumMs: o.collectionQuantumMs,
      maxForwardCount: o.maxForwardCount,
      storage:
        tracer === undefined
          ? storage
          : new Map([...storage].map(([name, p]) => [name, tracedStorage(p, name, tracer)])),
      eventLogs: o.eventLogs,
      cpus: availableParallelism(),
      callerStacks: o.callerStacks,
      deactivationTimeoutMs: o.deactivationTimeoutMs,
      metrics: o.metrics,
      // The dashboard counts as metrics do, and samples the hottest grains.
      hotGrains: o.dashboard !== undefined,
      // Tracing, when on, is the outermost filter: the user's filters run inside its spans.
      incomingFilters:
        tracer === undefined
          ? o.incomingFilters
          : [incomingTracing(tracer, () => runtime.siloInfo.address), ...o.incomingFilters],
      outgoingFilters:
        tracer === undefined ? o.outgoingFilters : [outgoingTracing(tracer, 'silo'), ...o.outgoingFilters],
      tracer,
    });
    for (const cls of o.grains) runtime.register(cls);
    // The worker clients publish and broadcast through.
    runtime.register(StreamWorker);
    const channelListeners = new Map<string, string[]>();
    for (const [name, t] of runtime.types.all)
      for (const ns of t.implicitChannelSubscriptions)
        channelListeners.set(ns, [...(channelListeners.get(ns) ?? []), name]);
    runtime.channels = new BroadcastChannels(
      {
        get address() {
          return runtime.siloInfo.address;
        },
        get logger() {
          return streamsLogger;
        },
        deliverToGrain: (type, key, args) => runtime.deliverChannel(type, key, args),
      },
      channelListeners,
    );
    let cluster: SiloCluster | undefined;
    let streams: StreamService | undefined;
    let streamOwnershipChanged = (): void => {};
    if (o.streams.size > 0) {
      // The rendezvous of each stream.
      runtime.register(PubSubGrain);
      const implicit = new Map<string, string[]>();
      for (const [name, t] of runtime.types.all)
        for (const ns of t.implicitSubscriptions) implicit.set(ns, [...(implicit.get(ns) ?? []), name]);
      const ownershipListeners: Array<() => void> = [];
      streamOwnershipChanged = () => {
        for (const l of ownershipListeners) l();
      };
      const codec = runtime.codecContext;
      streams = new StreamService(
        {
          get address() {
            return runtime.siloInfo.address;
          },
          clusterId: o.clusterId,
          // Queues go to silos on the ring of active silos; a silo alone owns them all.
          owns: (queue) => {
            const c = cluster;
            if (c === undefined) return true;
            return c.view.active.has(c.address) && c.view.ring.ownerOf(queue) === c.address;
          },
          onOwnershipChange: (listener) => void ownershipListeners.push(listener),
          encode: (v) => encode(v),
          decode: (b) => decode(b, codec),
          get logger() {
            return streamsLogger;
          },
          grainDeliverer: (type, key) => runtime.streamDeliverer(type, key),
          grain: (type, key) => runtime.getGrain(type, key, undefined),
          createObserver: <T extends object>(impl: T) =>
            runtime.createObserver(impl, undefined) as unknown as ObserverRef<T>,
          storageProvider: (name, what) => {
            const p = storage.get(name);
            if (p === undefined)
              throw new ConfigurationError(
                `${what} go to storage provider '${name}', which is not configured; configured: ${[...storage.keys()].join(', ') || 'none'} (the silo's 'storage' option, or the stream provider's pubSubStorage)`,
              );
            return p;
          },
        },
        o.streams,
        implicit,
      );
      runtime.streamService = streams;
      // A stream provider whose pub-sub records have nowhere to go fails the start, not the first subscribe.
      for (const name of o.streams.keys()) streams.pubSubStorage(name);
    }
    const made: { silo?: Silo } = {};
    const reminders = new ReminderService({
      table: o.reminders,
      logger: log('reminders').child({ reminders: o.reminders.kind }),
      minPeriodMs: o.minReminderPeriodMs,
      refreshIntervalMs: o.reminderRefreshIntervalMs,
      clock: runtime.clock,
      fire: (grainId, name, tick) => {
        const slash = grainId.indexOf('/');
        return runtime.deliverReminder(grainId.slice(0, slash), grainId.slice(slash + 1), [name, tick]);
      },
      notify: (owner, grainId, name) => (cluster as SiloCluster).systemCall(owner, 'reminder.changed', [grainId, name]),
    });

    // Answers the dashboard's system calls (every networked silo answers `dashboard.silo`), and feeds its page.
    const dashboard = new SiloDashboard({
      runtime,
      cluster: () => cluster,
      storage,
      reminders: o.reminders,
      options: o.dashboard,
      get logger() {
        return log('http');
      },
    });

    let metrics: MetricsRegistry | undefined;
    let http: HttpEndpoint | undefined;
    const stages: Stage[] = [
      {
        // First up and last down: the startup probe answers while the rest starts.
        name: 'http',
        start: async () => {
          if (o.metrics) {
            // prom-client is loaded only by silos that count.
            const { siloMetrics } = await import('./metrics.ts');
            metrics = siloMetrics({
              runtime,
              networked: o.networked,
              cluster: () => cluster,
              storage: metered,
              reminders,
              streams: () => runtime.streamService,
            });
          }
          if (o.httpPort === undefined) return;
          http = await HttpEndpoint.start({
            host: o.httpHost,
            port: o.httpPort,
            health,
            metrics,
            dashboard:
              o.dashboard === undefined
                ? undefined
                : new DashboardServer({
                    source: dashboard.source,
                    options: o.dashboard,
                    token: o.dashboardToken,
                    host: o.httpHost,
                    logger: log('http'),
                    title: o.clusterId,
                  }),
            logger: log('http'),
          });
        },
        stop: async (how) => {
          health.moveTo(how === 'dead' ? 'dead' : 'stopped');
          await http?.close();
        },
      },
      storageStage(o, storage, runtime, log),
      {
        // Listeners, the membership table, the join: the silo becomes Active at the end of it.
        name: 'messaging',
        start: async () => {
          if (!o.networked) return;
          const membership = o.membership;
          cluster = await SiloCluster.start(
            runtime,
            {
              clusterId: o.clusterId,
              host: o.host,
              port: o.port,
              gatewayPort: o.gatewayPort,
              membership,
              membershipOptions: o.membershipOptions,
              transport: o.transport,
              loadReportIntervalMs: o.loadReportIntervalMs,
              systemCallTimeoutMs: o.systemCallTimeoutMs,
              maxForwardCount: o.maxForwardCount,
              maxPendingRequests: o.maxPendingRequests,
              logger: subsystems.cluster,
              loggers: {
                transport: subsystems.transport,
                membership: subsystems.membership,
                directory: subsystems.directory,
              },
              clock: runtime.clock,
            },
            () => made.silo?.declaredDead(),
          );
          cluster.dashboard = dashboard.handlers;
          dashboard.watch(cluster);
          // SiloCluster.start attached itself and set the silo's address before joining.
          address = cluster.address;
          health.address = address;
          logger = log('silo');
          streamsLogger = log('streams');
          runtime.logger = log('runtime');
          if (http !== undefined) http.logger = log('http');
        },
        stop: async (how) => {
          if (how === 'graceful') await cluster?.finishStop(o.deactivationTimeoutMs);
          else await cluster?.close();
          // Only now: the drain above still needs the deadlines of the calls it waits for.
          runtime.closeCalls();
        },
      },
      {
        // Stream providers: after the cluster layer (queues go to silos on its ring); stopped after the
        // grains, so that onDeactivate can still publish.
        name: 'streams',
        start: async () => {
          if (streams === undefined) return;
          await streams.start();
          cluster?.membership.subscribe(() => {
            streams.viewChanged();
            streamOwnershipChanged();
          });
        },
        stop: async () => {
          runtime.streamService = undefined;
          await streams?.stop();
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
          let ring = ringOf();
          reminders.start(c.address, ring);
          // Only when the ring of active silos changed (not when a stopping silo leaves the directory's ring).
          c.membership.subscribe(() => {
            if (ringOf() === ring) return;
            ring = ringOf();
            reminders.viewChanged(ring);
          });
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
    // The effective options, once, secrets redacted.
    logger.info(
      {
        ...describeSiloOptions(o),
        address: runtime.siloInfo.address,
        gateway: cluster?.gatewayAddress ?? null,
        httpAddress: http?.address ?? null,
        // The user's grain types; Granary's own (granary.*) are always there.
        grains: [...runtime.types.all.keys()].filter((t) => !t.startsWith('granary.')),
      },
      'silo started',
    );
    warnAboutMemoryProviders(o, logger);
    made.silo = new Silo(runtime, logger, cluster, { health, metrics, http }, started);
    health.moveTo('active');
    if (channels.siloStarted.hasSubscribers)
      channels.siloStarted.publish({ silo: runtime.siloInfo.address, address: runtime.siloInfo.address });
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
   * A handle to stream `key` in `namespace` of stream provider `provider`:
   * code in the silo's process can publish (subscribers are grains and clients).
   */
  getStream<T>(provider: string, namespace: string, key: string): Stream<T> {
    const service = this.#runtime.streamService;
    if (service === undefined)
      throw new ConfigurationError(
        `silo ${this.info.address} has no stream provider: give it a 'streams' option, e.g. streams: { default: memoryStreams() }`,
      );
    return service.handle(checkedId(provider, namespace, key), undefined) as Stream<T>;
  }

  /** A handle to broadcast channel `key` of `namespace` (fire and forget to the grains listening). */
  getChannel<T>(namespace: string, key: string): BroadcastChannel<T> {
    return this.#runtime.channel(namespace, key) as BroadcastChannel<T>;
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

/** Storage providers, event logs and the reminder table: opened first (after the HTTP endpoint), closed last. */
function storageStage(
  o: ResolvedSiloOptions,
  storage: ReadonlyMap<string, StorageProvider>,
  runtime: Runtime,
  log: (subsystem: LogSubsystem) => Logger,
): Stage {
  const logger = log('storage');
  const opened: Array<{ kind: string; name: string; close(): Promise<void> }> = [];
  return {
    name: 'storage',
    start: async () => {
      const ctx = runtime.codecContext;
      const serializer: StateSerializer = { encode, decode: (b) => decode(b, ctx) };
      try {
        for (const [name, p] of storage) {
          await p.init({ name, logger: logger.child({ storage: name }), serializer });
          opened.push({ kind: 'storage provider', name, close: async () => p.close() });
        }
        for (const [name, l] of o.eventLogs) {
          await l.init({ name, logger: logger.child({ eventLog: name }), serializer });
          opened.push({ kind: 'event log', name, close: async () => l.close() });
        }
        await o.reminders.init({
          clusterId: o.clusterId,
          logger: log('reminders').child({ reminders: o.reminders.kind }),
        });
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
function warnAboutMemoryProviders(o: ResolvedSiloOptions, logger: Logger): void {
  if (o.membership === undefined || o.membership.kind === 'memory') return;
  if (!o.given.has('storage'))
    logger.warn(
      {},
      "grain state is kept in this process's memory (no storage option): in a cluster of several processes a grain that moves loses it; give a shared provider such as sqliteStorage, postgresStorage or redisStorage",
    );
  if (!o.given.has('reminders'))
    logger.warn(
      {},
      "reminders are kept in this process's memory (no reminders option): in a cluster of several processes reminders other silos own never fire; give a shared table such as sqliteReminders, postgresReminders or redisReminders",
    );
}
