// The runtime of one silo, put together from its parts:
//   GrainTypes   (grain-types.ts)  the grain classes it hosts
//   Catalog      (catalog.ts)      activations by grain id, idle collection, stop
//   CallTracker  (call-tracker.ts) calls in flight: deadlines, settling, cancels
//   Dispatcher   (dispatcher.ts)   where each call goes: here, another silo, an observer
//   Observers    (observers.ts)    observer objects that live on this silo
//   CallMeters   (call-meter.ts)   with metrics on: calls and activations counted per grain type
// Activation (activation.ts) and SiloCluster (cluster.ts) each declare what
// they need from the rest (ActivationHost, ClusterHost); the Runtime is the
// one object that gives it to them, and adds only the events between parts.

import type { Tracer } from '@opentelemetry/api';
import type { IncomingCallFilter, OutgoingCallFilter } from '../messaging/filters.ts';
import type { StreamOwner, StreamService } from '../streams/service.ts';
import type { BroadcastChannels } from '../streams/channels.ts';
import type { BroadcastChannel } from '../streams/types.ts';
import { systemClock, type Clock } from '../clock.ts';
import { ConfigurationError, SiloStoppedError } from '../errors.ts';
import type { DeactivationReason, GrainClass, GrainStreams, SiloInfo } from '../grain/grain.ts';
import type { GrainTypeInfo } from '../grain/options.ts';
import type { GrainRefBase } from '../grain/ref.ts';
import type { CallerContext } from '../messaging/call-chain.ts';
import type { EventLog } from '../journal/log.ts';
import type { Message, RemoteReply } from '../messaging/message.ts';
import type { RequestHeader } from '../messaging/protocol.ts';
import { channels } from '../observability/channels.ts';
import type { Logger } from '../observability/logger.ts';
import type { ReminderService } from '../reminders/service.ts';
import type { CodecContext, RefIdentity } from '../serialization/symbols.ts';
import type { StorageProvider } from '../storage/provider.ts';
import { Activation, type CallMeter } from './activation.ts';
import { CallMeters } from './call-meter.ts';
import { CallTracker } from './call-tracker.ts';
import { Catalog, type CatalogHost } from './catalog.ts';
import type { ClusterHost, SiloCluster } from './cluster.ts';
import { Dispatcher } from './dispatcher.ts';
import { GrainTypes } from './grain-types.ts';
import { OBSERVER_TYPE } from '../grain/identity.ts';
import { Observers } from './observers.ts';

/** What the runtime needs from the silo. */
export interface RuntimeConfig {
  readonly siloInfo: SiloInfo;
  readonly logger: Logger;
  readonly clock?: Clock;
  readonly responseTimeoutMs: number;
  readonly collectionAgeMs: number;
  readonly collectionQuantumMs: number | undefined;
  readonly maxForwardCount: number;
  readonly storage: ReadonlyMap<string, StorageProvider>;
  readonly eventLogs: ReadonlyMap<string, EventLog>;
  readonly cpus: number;
  readonly callerStacks: boolean;
  readonly deactivationTimeoutMs: number;
  /** Count calls and activations per grain type (see CallMeters). Default false. */
  readonly metrics?: boolean;
  /** Filters around calls to this silo's grains, outermost first. */
  readonly incomingFilters: readonly IncomingCallFilter[];
  /** Filters around calls this silo's grains and the silo make. */
  readonly outgoingFilters: readonly OutgoingCallFilter[];
  /** The tracer of activation spans; undefined when tracing is off. */
  readonly tracer?: Tracer | undefined;
}

/** An observer reference with the means to end it. */
export type DisposableRef = GrainRefBase<unknown> & { dispose(): void };

/** The runtime of one silo. */
export class Runtime implements CatalogHost, ClusterHost {
  /** Set again once the silo knows the address it listens on. */
  siloInfo: SiloInfo;
  logger: Logger;
  readonly clock: Clock;
  readonly types: GrainTypes;
  readonly catalog: Catalog;
  readonly calls: CallTracker;
  readonly dispatcher: Dispatcher;
  readonly observers: Observers;
  /** Calls and activations counted per grain type; undefined when metrics are off. */
  readonly meters: CallMeters | undefined;
  /** Where references revived outside any activation are bound. */
  readonly codecContext: CodecContext;
  /** The silo's reminder service, set once the silo has started. */
  reminders: ReminderService | undefined;
  readonly #cfg: RuntimeConfig;
  #cluster: SiloCluster | undefined;
  readonly tracer: Tracer | undefined;

  constructor(cfg: RuntimeConfig) {
    this.#cfg = cfg;
    this.tracer = cfg.tracer;
    this.siloInfo = cfg.siloInfo;
    this.logger = cfg.logger;
    this.clock = cfg.clock ?? systemClock;
    this.codecContext = { reviveRef: (id: RefIdentity) => this.ref(id.type, id.key, undefined) };
    this.types = new GrainTypes(cfg.cpus, cfg.incomingFilters);
    this.calls = new CallTracker(this, this.clock);
    this.meters = cfg.metrics === true ? new CallMeters(this.calls) : undefined;
    this.catalog = new Catalog(this, cfg, () => this.types.all.values());
    this.observers = new Observers(this);
    this.dispatcher = new Dispatcher(this, cfg, this.types, this.catalog, this.calls, this.observers);
  }

  /** Registers a grain class; its type name must be unique. */
  register(cls: GrainClass): GrainTypeInfo {
    return this.types.register(cls);
  }

  /** Joins the runtime to its cluster layer (a networked silo). */
  attachCluster(c: SiloCluster): void {
    this.#cluster = c;
    this.dispatcher.cluster = c;
  }

  /** Whether activations register in a cluster directory. */
  get clustered(): boolean {
    return this.#cluster !== undefined;
  }

  /** Activations in memory now (stateless workers counted one by one). */
  get activationCount(): number {
    return this.catalog.count;
  }

  /** Calls in flight: waited on here, or to be answered from here. */
  get pendingCalls(): number {
    return this.calls.pending;
  }

  // ---- References and calls (ActivationHost, and the silo's own) ---------------

  getGrain(type: GrainClass | string, key: string, caller: CallerContext | undefined): GrainRefBase<unknown> {
    return this.dispatcher.getGrain(type, key, caller);
  }

  ref(type: string, key: string, caller: CallerContext | undefined): GrainRefBase<unknown> {
    return this.dispatcher.ref(type, key, caller);
  }

  /** Delivers a reminder tick: `receiveReminder(...args)` on the grain, wherever it lives. */
  deliverReminder(typeName: string, key: string, args: unknown[]): Promise<unknown> {
    return this.dispatcher.deliverReminder(typeName, key, args);
  }

  redispatch(msg: Message): void {
    this.dispatcher.redispatch(msg);
  }

  incomingFilters(type: GrainTypeInfo): readonly IncomingCallFilter[] | undefined {
    return this.types.incomingFilters(type);
  }

  receiveRemote(h: RequestHeader, buf: Buffer, reply: RemoteReply | undefined, conn: object): void {
    this.dispatcher.receiveRemote(h, buf, reply, conn);
  }

  /** Makes `impl` an observer living on this silo; a grain's ends with its activation (see Activation). */
  createObserver(impl: object, caller: CallerContext | undefined): DisposableRef {
    if (impl === null || typeof impl !== 'object')
      throw new ConfigurationError('createObserver takes an object whose methods grains will call');
    const key = this.observers.create(impl);
    const ref = this.ref(OBSERVER_TYPE, key, caller) as DisposableRef;
    Object.defineProperty(ref, 'dispose', { value: () => this.observers.dispose(key), enumerable: false });
    return ref;
  }

  // ---- Providers an activation asks for ------------------------------------------

  /** The storage provider a grain's state names; a clear error if it is not configured. */
  storageProvider(name: string, grain: string, state: string): StorageProvider {
    const p = this.#cfg.storage.get(name);
    if (p === undefined) {
      const known = [...this.#cfg.storage.keys()].join(', ') || 'none';
      throw new ConfigurationError(
        `grain ${grain} declares state '${state}' on storage provider '${name}', which is not configured; configured providers: ${known}`,
      );
    }
    return p;
  }

  /** The event log a journaled grain names; a clear error if it is not configured. */
  eventLog(name: string, grain: string): EventLog {
    const p = this.#cfg.eventLogs.get(name);
    if (p === undefined) {
      const known = [...this.#cfg.eventLogs.keys()].join(', ') || 'none';
      throw new ConfigurationError(
        `grain ${grain} keeps its journal in event log '${name}', which is not configured; configured event logs: ${known}`,
      );
    }
    return p;
  }

  /** The reminder service, or a clear error while the silo has none (not started yet, or stopping). */
  reminderService(): ReminderService {
    if (this.reminders === undefined)
      throw new SiloStoppedError(
        `silo ${this.siloInfo.address} has no reminder service running (starting or stopping)`,
      );
    return this.reminders;
  }

  /** The silo's broadcast channels (set by the silo; always there). */
  channels: BroadcastChannels | undefined;

  channel(namespace: string, key: string): BroadcastChannel<unknown> {
    if (this.channels === undefined) throw new SiloStoppedError(`silo ${this.siloInfo.address} is not running`);
    return this.channels.channel(namespace, key);
  }

  /** Delivers a broadcast channel item to grain `type/key`. */
  deliverChannel(typeName: string, key: string, args: unknown[]): Promise<unknown> {
    return this.dispatcher.deliverChannel(typeName, key, args);
  }

  /** The silo's stream service; undefined when no stream provider is configured. */
  streamService: StreamService | undefined;

  streams(owner: StreamOwner): GrainStreams {
    if (this.streamService === undefined) {
      throw new ConfigurationError(
        `silo ${this.siloInfo.address} has no stream provider: give it a 'streams' option, e.g. streams: { default: memoryStreams() }`,
      );
    }
    return this.streamService.forGrain(owner);
  }

  /** Where batches of stream items for grain `type/key` go (see grain/stream-consumer.ts). */
  streamDeliverer(typeName: string, key: string): (args: unknown[]) => Promise<unknown> {
    return this.dispatcher.streamDeliverer(typeName, key);
  }

  /** Another silo changed a reminder this silo owns. */
  async reminderChanged(grainId: string, name: string): Promise<void> {
    await this.reminders?.changed(grainId, name);
  }

  // ---- Activation lifecycle events --------------------------------------------------

  registerActivation(a: Activation): Promise<string | undefined> {
    return this.#cluster === undefined ? Promise.resolve(undefined) : this.#cluster.register(a);
  }

  callMeter(type: GrainTypeInfo): CallMeter | undefined {
    return this.meters?.of(type);
  }

  activated(a: Activation): void {
    if (this.meters !== undefined) this.meters.of(a.type).activated++;
    if (channels.activationCreated.hasSubscribers)
      channels.activationCreated.publish({ silo: this.siloInfo.address, grain: a.idStr, type: a.type.name });
  }

  activationFailed(a: Activation, err: unknown): void {
    this.catalog.remove(a);
    if (this.meters !== undefined) this.meters.of(a.type).failedToActivate++;
    this.logger.warn({ grain: a.idStr, err }, 'activation failed');
    if (channels.activationFailed.hasSubscribers)
      channels.activationFailed.publish({ silo: this.siloInfo.address, grain: a.idStr, type: a.type.name, error: err });
  }

  deactivated(a: Activation, reason: DeactivationReason): void {
    this.catalog.remove(a);
    // One made for a call and never started was no activation to speak of.
    if (a.instance !== undefined) this.meters?.deactivated(a.type, reason);
    if (channels.activationDeactivated.hasSubscribers)
      channels.activationDeactivated.publish({
        silo: this.siloInfo.address,
        grain: a.idStr,
        type: a.type.name,
        reason,
      });
  }

  activationLost(a: Activation, winner: string, queued: Message[]): void {
    this.catalog.remove(a);
    this.dispatcher.forwardAll(queued, winner);
  }

  // ---- What the catalog and the cluster layer ask for -------------------------------

  routesChanged(): void {
    if (this.#cluster !== undefined) this.#cluster.directory.routeVersion++;
  }

  unregister(a: Activation): void {
    this.#cluster?.unregister(a);
  }

  abandonRemote(msg: Message, cancelCallee: boolean): void {
    this.#cluster?.abandon(msg, cancelCallee);
  }

  localEntries(address: string): Iterable<[string, { address: string; activation: number }]> {
    return this.catalog.registeredEntries(address);
  }

  /** Another activation of a local grain won in the directory: deactivate ours; its calls follow. */
  duplicateFound(grain: string, winner: string): void {
    const t = this.catalog.get(grain);
    if (!(t instanceof Activation)) return;
    this.logger.warn(
      { grain, winner },
      'duplicate activation found: deactivating this one, its callers go to the other',
    );
    t.registered = false;
    void t.deactivate('requested');
  }

  // ---- Stop -----------------------------------------------------------------

  /** Drops every activation at once with no deactivation (a crash, for tests). */
  abandon(): void {
    const err = new SiloStoppedError(`silo ${this.siloInfo.address} was aborted`);
    this.catalog.abandon(err);
    this.calls.close(err);
  }

  /**
   * Refuses new calls and deactivates every activation, letting running turns
   * and accepted calls finish. Activations still busy after
   * `deactivationTimeoutMs` are dropped with a warning.
   */
  async stop(): Promise<void> {
    const stuck = await this.catalog.stop(
      new SiloStoppedError(`silo ${this.siloInfo.address} stopped before the call could run`),
    );
    if (stuck.length > 0) {
      this.logger.warn(
        { grains: stuck.slice(0, 20), count: stuck.length, timeoutMs: this.#cfg.deactivationTimeoutMs },
        'activations did not deactivate in time; dropping them',
      );
    }
  }

  /**
   * The last step of a stop, once nothing more can answer (the cluster side
   * drained and closed): fails every call still waiting.
   */
  closeCalls(): void {
    this.calls.close(new SiloStoppedError(`silo ${this.siloInfo.address} stopped before the call was answered`));
  }
}
