// An activation: one in-memory instance of a grain, its lifecycle, its
// mailbox and the turn scheduler that decides which call runs when
// (non-reentrant by default, read-only and always-interleave calls, reentrant
// grains, call chains). It talks to the rest of the silo only through
// `ActivationHost`, declared here.

import type { Span, Tracer } from '@opentelemetry/api';
import { activationSpan, endActivationSpan } from '../observability/tracing.ts';
import { IncomingCall, type IncomingCallFilter } from '../messaging/filters.ts';
import { contextInUse, leaveFirstUse, runInContext } from '../messaging/request-context.ts';
import type { Clock } from '../clock.ts';
import { ConfigurationError, DeadlockError, GranaryError } from '../errors.ts';
import {
  constructGrain,
  type DeactivationReason,
  type Grain,
  type GrainClass,
  type GrainContext,
  type SiloInfo,
  type TimerHandle,
  type TimerOptions,
  type GrainStreams,
} from '../grain/grain.ts';
import type { GrainId } from '../grain/identity.ts';
import type { GrainTypeInfo } from '../grain/options.ts';
import type { EventLog, JournalBinding } from '../journal/log.ts';
import { chainContains, chainPath, type CallerContext, type ChainNode } from '../messaging/call-chain.ts';
import type { Message, MessageMethod } from '../messaging/message.ts';
import { targetBytes } from '../messaging/protocol.ts';
import type { Logger } from '../observability/logger.ts';
import type { ReminderInfo, ReminderOptions, ReminderService } from '../reminders/service.ts';
import type { RefIdentity } from '../serialization/symbols.ts';
import { PersistentStateImpl, type PersistentState, type PersistentStateOptions } from '../storage/persistent-state.ts';
import type { StorageProvider } from '../storage/provider.ts';
import type { CallSettler } from './call-tracker.ts';
import type { StreamOwner } from '../streams/service.ts';
import type { BroadcastChannel } from '../streams/types.ts';
import { GrainTimer } from './timers.ts';

/**
 * Lifecycle states. Created → Activating → Valid → Deactivating → Invalid;
 * Activating → FailedToActivate when construction, state loading or
 * onActivate fails; any state but the last two → Invalid when the activation
 * is dropped (another silo's won the directory, or a stop ran out of time).
 * `#moveTo` is the one place the state changes.
 */
export const enum ActivationState {
  /** Made for a call, not yet begun: nothing constructed. */
  Created = 0,
  /** Registering, constructing, loading state, onActivate. Calls wait in the mailbox. */
  Activating = 1,
  /** Running calls. */
  Valid = 2,
  /** Running turns finish, then onDeactivate; calls wait and then go to a new activation. */
  Deactivating = 3,
  /** Gone; calls delivered to it go to a new activation. */
  Invalid = 4,
  /** Activation failed; its waiting calls failed with the error. */
  FailedToActivate = 5,
}

const stateNames = ['Created', 'Activating', 'Valid', 'Deactivating', 'Invalid', 'FailedToActivate'];

/** The transitions #moveTo allows, by state: bit n set when state n may follow. */
const allowedNext = [
  /* Created */ (1 << ActivationState.Activating) | (1 << ActivationState.Invalid),
  /* Activating */ (1 << ActivationState.Valid) |
    (1 << ActivationState.FailedToActivate) |
    (1 << ActivationState.Invalid),
  /* Valid */ (1 << ActivationState.Deactivating) | (1 << ActivationState.Invalid),
  /* Deactivating */ 1 << ActivationState.Invalid,
  /* Invalid */ 0,
  /* FailedToActivate */ 0,
];

/** A deactivation asked for that has not begun yet: when it begins. */
const enum PendingDeactivation {
  None = 0,
  /** deactivate() while activating: as soon as the activation is Valid. */
  AfterActivation = 1,
  /** deactivateOnIdle(): when no turn runs. */
  WhenIdle = 2,
  /** A graceful stop: when no turn runs and the mailbox is empty (accepted calls still run). */
  WhenDrained = 3,
}

const noArgs: unknown[] = [];
/** The trace spans of activations under way (tracing on): kept aside, so an activation carries no field for them. */
const activating = new WeakMap<object, Span>();
function runChain(this: IncomingCall): Promise<unknown> {
  return this.run();
}

/**
 * The parts of an activation that only some use, or use only for a while: kept
 * in one object made on first use, so an idle activation of a plain grain
 * carries one field for them instead of six.
 */
class Extras {
  /** What is read before onActivate: persistent states, a journal (dropped once read). */
  states: { read(): Promise<void> }[] | undefined = undefined;
  timers: Set<GrainTimer> | undefined = undefined;
  /** Observers this activation made: they end with it. */
  observers: { dispose(): void }[] | undefined = undefined;
  streams: GrainStreams | undefined = undefined;
  deactivated: Promise<void> | undefined = undefined;
  resolveDeactivated: (() => void) | undefined = undefined;
}

/** The message whose turn is running synchronously right now, and its activation. */
export let currentMessage: Message | undefined;
export let currentActivation: Activation | undefined;

/** Something calls can be delivered to: an activation, a stateless-worker pool, or another silo. */
export interface Target {
  receive(msg: Message): void;
  /** False once the target left the catalog; a cached reference must look again. */
  readonly live: boolean;
  /** True for a silo across the network: arguments are encoded there, not copied here. */
  readonly remote?: boolean;
}

/**
 * A target that fails every call it receives with the error `error` makes:
 * the call cannot run anywhere from here (a stopping silo, an empty cluster,
 * an unreachable observer). `remote` so the caller never treats it as an activation.
 */
export function failingTarget(calls: CallSettler, error: () => unknown): Target {
  return { live: true, remote: true, receive: (msg: Message) => calls.fail(msg, error()) };
}

/** With metrics on, what an activation settles its calls through: it counts them, and times some. */
export interface CallMeter extends CallSettler {
  /** A call reached the activation: its latency may start now. */
  arrived(msg: Message): void;
}

/** What an activation needs from its silo. */
export interface ActivationHost {
  readonly siloInfo: SiloInfo;
  readonly logger: Logger;
  readonly clock: Clock;
  /** Whether activations register in a cluster directory (chain nodes then carry encoded ids). */
  readonly clustered: boolean;
  /** Settles the calls the activation runs. */
  readonly calls: CallSettler;
  getGrain(type: GrainClass | string, key: string, caller: CallerContext | undefined): unknown;
  /** An observer living on this silo, for `impl`. */
  createObserver(impl: object, caller: CallerContext | undefined): { dispose(): void };
  /** A reference revived from the wire or a copy, bound to `caller`. */
  ref(type: string, key: string, caller: CallerContext | undefined): unknown;
  storageProvider(name: string, grain: string, state: string): StorageProvider;
  eventLog(name: string, grain: string): EventLog;
  reminderService(): ReminderService;
  /** A handle to a broadcast channel. */
  channel(namespace: string, key: string): BroadcastChannel<unknown>;
  /** The silo's streams as grain `owner` sees them; a clear error when the silo has no stream provider. */
  streams(owner: StreamOwner): GrainStreams;
  /** Registers in the directory; resolves to undefined if this activation won, else to the winner's silo. */
  registerActivation(a: Activation): Promise<string | undefined>;
  /** Removes the directory entry `a` won. */
  unregister(a: Activation): void;
  /** Delivers a call whose activation went away before running it. */
  redispatch(msg: Message): void;
  /**
   * With metrics on: the settler that counts the calls of grain type `type`
   * and hands them on to `calls`. Absent, or undefined, when metrics are off.
   */
  callMeter?(type: GrainTypeInfo): CallMeter | undefined;
  /** The tracer of activation spans; undefined when tracing is off. */
  readonly tracer: Tracer | undefined;
  /** The incoming call filters around calls to grains of `type`; undefined for none. */
  incomingFilters(type: GrainTypeInfo): readonly IncomingCallFilter[] | undefined;
  /** Lifecycle events: the catalog forgets the activation on the last three. */
  activated(a: Activation): void;
  activationFailed(a: Activation, err: unknown): void;
  deactivated(a: Activation, reason: DeactivationReason): void;
  activationLost(a: Activation, winner: string, queued: Message[]): void;
}

/** One activation of a grain. */
export class Activation implements GrainContext, CallerContext, Target {
  readonly id: GrainId;
  readonly idStr: string;
  readonly type: GrainTypeInfo;
  readonly #host: ActivationHost;
  /** The silo's call tracker, or with metrics on the meter of this grain type in front of it. */
  readonly #calls: CallSettler;
  /** The stateless-worker pool this activation belongs to, if any. */
  readonly pool: { remove(a: Activation): void } | undefined;
  state: ActivationState = ActivationState.Created;
  instance: Grain | undefined;
  /** Tells this incarnation apart from others of the same grain on this silo (directory entries). */
  readonly seq: number;
  /** Registered in the cluster's directory (so it unregisters when it goes). */
  registered = false;

  // Mailbox: a FIFO array with a moving head, allocated on first use.
  #queue: Message[] | undefined;
  #head = 0;
  /** Turns running now, and how many of them exclude every other turn (plain calls). */
  running = 0;
  #exclusive = 0;
  /** The running message when exactly one runs; chains of calls made after an await use it. */
  #sole: Message | undefined;
  /** All running messages while more than one runs (allocated on the first interleaving). */
  #several: Message[] | undefined;
  #pumping = false;
  #chainOf: Message | undefined;
  #chainNode: ChainNode | undefined;
  /** The incoming call filters of this grain's calls; undefined for none. */
  readonly #filters: readonly IncomingCallFilter[] | undefined;

  // Idle collection reads these.
  /** Used since the collector last looked. */
  used = true;
  idleSince = 0;
  keepAliveUntil = 0;

  /** What only some activations use, made on first use (see Extras). */
  #x: Extras | undefined;
  /** A deactivation asked for and not begun, and its reason. */
  #pending: PendingDeactivation = PendingDeactivation.None;
  #reason: DeactivationReason = 'idle';

  constructor(
    host: ActivationHost,
    id: GrainId,
    idStr: string,
    type: GrainTypeInfo,
    pool: { remove(a: Activation): void } | undefined,
    seq: number,
  ) {
    this.#host = host;
    this.#calls = host.callMeter?.(type) ?? host.calls;
    this.seq = seq;
    this.id = id;
    this.idStr = idStr;
    this.type = type;
    this.pool = pool;
    this.#filters = host.incomingFilters(type);
  }

  /** Whether the activation has received a call and begun activating. */
  get started(): boolean {
    return this.state !== ActivationState.Created;
  }

  get live(): boolean {
    return this.state <= ActivationState.Valid;
  }

  /** Gone for good (deactivated, dropped, or failed to activate). */
  get ended(): boolean {
    return this.state >= ActivationState.Invalid;
  }

  get silo(): SiloInfo {
    return this.#host.siloInfo;
  }

  get logger(): Logger {
    return this.#host.logger;
  }

  get clock(): Clock {
    return this.#host.clock;
  }

  get queueLength(): number {
    return this.#queue === undefined ? 0 : this.#queue.length - this.#head;
  }

  /** The method of the call that waits longest in the mailbox, if any (the dashboard's advice names it). */
  get nextQueued(): MessageMethod | undefined {
    return this.#queue?.[this.#head]?.method;
  }

  /** Constructing the grain (field initializers run now): the only time states and a journal may be declared. */
  get #constructing(): boolean {
    return this.state === ActivationState.Activating && this.instance === undefined;
  }

  // ---- GrainContext -------------------------------------------------------

  getGrain(type: GrainClass | string, key: string): unknown {
    return this.#host.getGrain(type, key, this);
  }

  createObserver(impl: object): unknown {
    if (this.ended) throw new ConfigurationError(`${this.idStr} is deactivated: it cannot create an observer`);
    const ref = this.#host.createObserver(impl, this);
    ((this.#x ??= new Extras()).observers ??= []).push(ref);
    return ref;
  }

  persistentState<T>(name: string, options: PersistentStateOptions<T>): PersistentState<T> {
    if (!this.#constructing) {
      throw new ConfigurationError(
        `persistentState('${name}') of ${this.idStr} must be declared while the grain is constructed (as a field initializer)`,
      );
    }
    const storageName = options?.storage ?? 'default';
    const provider = this.#host.storageProvider(storageName, this.idStr, name);
    if (typeof options?.initial !== 'function') {
      throw new ConfigurationError(
        `persistentState('${name}') of ${this.idStr} needs an 'initial' function giving the state of a grain with no record`,
      );
    }
    const s = new PersistentStateImpl<T>(
      { grainType: this.id.type, grainKey: this.id.key, stateName: name },
      provider,
      storageName,
      options.initial,
    );
    ((this.#x ??= new Extras()).states ??= []).push(s);
    return s;
  }

  journal(load: () => Promise<void>): JournalBinding {
    const options = this.type.journal;
    if (options === undefined || !this.#constructing) {
      throw new ConfigurationError(
        `the journal of ${this.idStr} is bound by JournaledGrain while the grain is constructed, and only for a journaled grain type`,
      );
    }
    const log = this.#host.eventLog(options.log, this.idStr);
    ((this.#x ??= new Extras()).states ??= []).push({ read: load });
    return {
      log,
      logName: options.log,
      address: { grainType: this.id.type, grainKey: this.id.key, logName: 'journal' },
      snapshotEvery: options.snapshotEvery,
      logger: this.#host.logger,
    };
  }

  registerTimer(callback: () => unknown, options: TimerOptions): TimerHandle {
    if (typeof callback !== 'function')
      throw new ConfigurationError(`registerTimer of ${this.idStr} needs a callback function`);
    if (this.state >= ActivationState.Deactivating)
      throw new ConfigurationError(`${this.idStr} is deactivating: it cannot register a timer`);
    const t = new GrainTimer(this, callback, options);
    ((this.#x ??= new Extras()).timers ??= new Set()).add(t);
    return t;
  }

  registerReminder(name: string, options: ReminderOptions): Promise<ReminderInfo> {
    if (this.type.reminder === undefined) {
      return Promise.reject(
        new ConfigurationError(
          `grain type '${this.type.name}' registers reminder '${name}' but has no receiveReminder(name, tick) method to deliver it to`,
        ),
      );
    }
    return this.#host.reminderService().register(this.idStr, name, options);
  }

  getChannel(namespace: string, key: string): BroadcastChannel<unknown> {
    return this.#host.channel(namespace, key);
  }

  streams(): GrainStreams {
    // The instance is read when used: a grain may get a stream handle while it is constructed.
    const x = (this.#x ??= new Extras());
    x.streams ??= this.#host.streams({
      instance: () => this.instance as object,
      type: this.id.type,
      key: this.id.key,
      ref: (type, key) => this.#host.getGrain(type, key, this),
    });
    return x.streams;
  }

  unregisterReminder(name: string): Promise<boolean> {
    return this.#host.reminderService().unregister(this.idStr, name);
  }

  getReminders(): Promise<ReminderInfo[]> {
    return this.#host.reminderService().list(this.idStr);
  }

  /** A timer was disposed. */
  timerDisposed(t: GrainTimer): void {
    this.#x?.timers?.delete(t);
  }

  deactivateOnIdle(): void {
    if (this.#pending === PendingDeactivation.None) this.#pending = PendingDeactivation.WhenIdle;
    if (this.running === 0 && this.state === ActivationState.Valid) queueMicrotask(() => this.#deactivateIfDue(false));
  }

  delayDeactivation(ms: number): void {
    if (!(ms >= 0))
      throw new ConfigurationError(
        `delayDeactivation of ${this.idStr} takes a non-negative number of ms, got ${String(ms)}`,
      );
    this.keepAliveUntil = Math.max(this.keepAliveUntil, this.#host.clock.now() + ms);
    if (this.#pending === PendingDeactivation.WhenIdle) this.#pending = PendingDeactivation.None;
  }

  // ---- CallerContext / CodecContext --------------------------------------

  callChain(): ChainNode {
    let m: Message | undefined;
    if (currentActivation === this) m = currentMessage;
    else if (this.running === 1) m = this.#sole;
    if (m !== this.#chainOf || this.#chainNode === undefined) {
      this.#chainOf = m;
      this.#idBytes ??= this.#host.clustered ? targetBytes(this.idStr) : undefined;
      this.#chainNode =
        this.#idBytes === undefined
          ? { id: this.idStr, parent: m?.chain, turn: m, local: true }
          : { id: this.idStr, parent: m?.chain, turn: m, local: true, bytes: this.#idBytes };
    }
    return this.#chainNode;
  }

  /** This grain's id as request headers write it, made on the first call this activation makes to another silo. */
  #idBytes: Uint8Array | undefined;

  reviveRef(id: RefIdentity): unknown {
    return this.#host.ref(id.type, id.key, this);
  }

  // ---- Lifecycle ------------------------------------------------------------

  /**
   * The one place the state changes: checks the transition, then does what
   * entering the new state means (events, timers, the waiting calls).
   * `outcome` is the error of a failed activation or of a forced drop, or
   * the winner's address when another silo's activation won.
   */
  #moveTo(next: ActivationState, outcome?: { err?: unknown; winner?: string }): void {
    const from = this.state;
    if ((allowedNext[from]! & (1 << next)) === 0) {
      // A runtime bug, never the user's: say which transition.
      throw new GranaryError(`activation ${this.idStr}: no transition from ${stateNames[from]} to ${stateNames[next]}`);
    }
    this.state = next;
    if (this.#host.tracer !== undefined) {
      const span = activating.get(this);
      if (span !== undefined) {
        activating.delete(this);
        endActivationSpan(span, next === ActivationState.FailedToActivate ? (outcome?.err ?? 'failed') : undefined);
      }
    }
    switch (next) {
      case ActivationState.Valid:
        this.idleSince = this.#host.clock.now();
        this.#host.activated(this);
        return;
      case ActivationState.FailedToActivate: {
        this.#disposeScoped();
        const err = outcome?.err;
        this.#host.activationFailed(this, err);
        for (const m of this.#takeQueue()) this.#calls.fail(m, err);
        break;
      }
      case ActivationState.Invalid:
        this.#disposeScoped();
        if (outcome?.winner !== undefined) {
          // Another silo hosts this grain: hand it every call that came here.
          this.#host.activationLost(this, outcome.winner, this.#takeQueue());
        } else {
          this.#host.deactivated(this, this.#reason);
          if (outcome?.err !== undefined) for (const m of this.#takeQueue()) this.#calls.fail(m, outcome.err);
          else for (const m of this.#takeQueue()) this.#host.redispatch(m);
        }
        break;
      default:
        return;
    }
    this.#pending = PendingDeactivation.None;
    this.#x?.resolveDeactivated?.();
  }

  /** Constructs the grain, loads its state and runs onActivate; queued calls run after. */
  activate(): void {
    this.#moveTo(ActivationState.Activating);
    const tracer = this.#host.tracer;
    if (tracer !== undefined) {
      const first = this.#queue?.[this.#head];
      activating.set(this, activationSpan(tracer, this.idStr, this.#host.siloInfo.address, first?.context));
    }
    if (this.pool === undefined && this.#host.clustered) {
      void this.#registerThenActivate();
      return;
    }
    if (!this.#construct()) return;
    if (this.#x?.states === undefined && !this.type.hasOnActivate) {
      // The fast path: nothing to await, the first call runs now.
      this.#moveTo(ActivationState.Valid);
      this.#pump();
      return;
    }
    void this.#activateAsync();
  }

  #construct(): boolean {
    try {
      this.instance = constructGrain(this.type.cls as new () => Grain, this);
      return true;
    } catch (e) {
      this.#moveTo(ActivationState.FailedToActivate, { err: e });
      return false;
    }
  }

  /** In a cluster: the directory decides first whether this activation may exist. */
  async #registerThenActivate(): Promise<void> {
    let winner: string | undefined;
    try {
      winner = await this.#host.registerActivation(this);
    } catch (e) {
      if (this.state === ActivationState.Activating) this.#moveTo(ActivationState.FailedToActivate, { err: e });
      return;
    }
    if (this.state !== ActivationState.Activating) {
      // Dropped while the directory decided (an abort, a stop that timed out):
      // the catalog let it go unregistered, so an entry it won goes now.
      if (winner === undefined) this.#host.unregister(this);
      return;
    }
    if (winner !== undefined) {
      this.#moveTo(ActivationState.Invalid, { winner });
      return;
    }
    this.registered = true;
    if (!this.#construct()) return;
    await this.#activateAsync();
  }

  async #activateAsync(): Promise<void> {
    try {
      const states = this.#x?.states;
      if (states !== undefined) {
        for (const s of states) await s.read();
        const x = this.#x as Extras;
        x.states = undefined;
        // Nothing else in it (no timer, observer, stream handle or stop under way): let it go.
        if (
          x.timers === undefined &&
          x.observers === undefined &&
          x.streams === undefined &&
          x.deactivated === undefined
        )
          this.#x = undefined;
      }
      if (this.type.hasOnActivate) await (this.instance as Grain).onActivate();
    } catch (e) {
      if (this.state === ActivationState.Activating) this.#moveTo(ActivationState.FailedToActivate, { err: e });
      return;
    }
    if (this.state !== ActivationState.Activating) return; // dropped meanwhile
    this.#moveTo(ActivationState.Valid);
    if (!this.#deactivateIfDue(true)) this.#pump();
  }

  /**
   * Begins a deactivation that was asked for, if it is due now; true if it
   * began. At the end of activation the calls that made it run first.
   */
  #deactivateIfDue(activationEnded: boolean): boolean {
    if (this.state !== ActivationState.Valid || this.running > 0) return false;
    switch (this.#pending) {
      case PendingDeactivation.None:
        return false;
      case PendingDeactivation.AfterActivation:
        this.#pending = PendingDeactivation.None;
        void this.deactivate(this.#reason);
        return this.state !== ActivationState.Valid;
      case PendingDeactivation.WhenIdle:
        if (activationEnded && this.queueLength > 0) return false;
        this.#reason = 'requested';
        this.#moveTo(ActivationState.Deactivating);
        void this.#finishDeactivation();
        return true;
      case PendingDeactivation.WhenDrained:
        if (this.#queue !== undefined) return false;
        this.#moveTo(ActivationState.Deactivating);
        void this.#finishDeactivation();
        return true;
    }
  }

  /**
   * Deactivates after the running turns end. Calls that arrive meanwhile wait
   * and are then delivered to a new activation: none is lost.
   */
  deactivate(reason: DeactivationReason): Promise<void> {
    const x = (this.#x ??= new Extras());
    x.deactivated ??= new Promise<void>((r) => (x.resolveDeactivated = r));
    switch (this.state) {
      case ActivationState.Created:
        // Never received a call: nothing to run down.
        this.#reason = reason;
        this.#moveTo(ActivationState.Invalid);
        break;
      case ActivationState.Activating:
        // Deactivate as soon as activation completes (or fails).
        this.#pending = PendingDeactivation.AfterActivation;
        this.#reason = reason;
        break;
      case ActivationState.Valid:
        this.#reason = reason;
        if (reason === 'shutdown' && (this.running > 0 || this.#queue !== undefined)) {
          // Graceful stop: calls already accepted run first.
          this.#pending = PendingDeactivation.WhenDrained;
          break;
        }
        this.#moveTo(ActivationState.Deactivating);
        if (this.running === 0) void this.#finishDeactivation();
        break;
      case ActivationState.Invalid:
      case ActivationState.FailedToActivate:
        x.resolveDeactivated?.();
        break;
      default:
        break;
    }
    return x.deactivated;
  }

  /**
   * Drops the activation at once, whatever runs (a crash, or a stop whose
   * deactivation timed out). Queued calls fail with `err`; running turns
   * finish unobserved.
   */
  forceInvalidate(err: unknown): void {
    if (this.ended) return;
    this.#moveTo(ActivationState.Invalid, { err });
  }

  async #finishDeactivation(): Promise<void> {
    this.#disposeScoped();
    if (this.type.hasOnDeactivate && this.instance !== undefined) {
      try {
        await this.instance.onDeactivate(this.#reason);
      } catch (e) {
        this.#host.logger.warn({ grain: this.idStr, err: e }, 'onDeactivate threw');
      }
    }
    if (this.state === ActivationState.Deactivating) this.#moveTo(ActivationState.Invalid);
  }

  /** Ends what lives only as long as the activation: its timers and its observers. */
  #disposeScoped(): void {
    const x = this.#x;
    if (x === undefined) return;
    if (x.observers !== undefined) {
      for (const o of x.observers) o.dispose();
      x.observers = undefined;
    }
    if (x.timers === undefined) return;
    for (const t of [...x.timers]) t.dispose();
    x.timers = undefined;
  }

  #takeQueue(): Message[] {
    const q = this.#queue;
    if (q === undefined) return [];
    const out = this.#head === 0 ? q : q.slice(this.#head);
    this.#queue = undefined;
    this.#head = 0;
    return out;
  }

  // ---- Scheduler ----------------------------------------------------------

  /** Delivers a call: runs it now if the rules allow, else queues it (or refuses a deadlock). */
  receive(msg: Message): void {
    // A meter in front of the tracker: metrics are on, and the call's latency starts here.
    const calls = this.#calls;
    if (calls !== this.#host.calls) (calls as CallMeter).arrived(msg);
    const state = this.state;
    if (state === ActivationState.Valid) {
      if (this.#mayRun(msg, this.#queue === undefined)) {
        this.#start(msg);
        return;
      }
    } else if (state >= ActivationState.Invalid) {
      this.#host.redispatch(msg);
      return;
    } else if (state === ActivationState.Created) {
      this.#enqueue(msg);
      this.activate();
      return;
    }
    if (msg.chain !== undefined && this.#deadlocked(msg.chain)) {
      this.#calls.fail(msg, new DeadlockError(chainPath(msg.chain, this.idStr)));
      return;
    }
    this.#enqueue(msg);
  }

  /**
   * Whether a call with this chain would wait for itself: this grain is in the
   * chain, waiting in a turn that is still running (or in onActivate /
   * onDeactivate). A chain node from another silo carries no turn: its grain
   * id alone decides.
   */
  #deadlocked(chain: ChainNode): boolean {
    for (let n: ChainNode | undefined = chain; n !== undefined; n = n.parent) {
      if (n.id !== this.idStr) continue;
      if (this.type.callChainReentrancy && this.state === ActivationState.Valid) return false;
      const turn = n.turn as Message | undefined;
      if (turn === undefined) {
        if (!n.local || this.state !== ActivationState.Valid) return true;
        continue;
      }
      if (this.#isRunning(turn)) return true;
    }
    return false;
  }

  #isRunning(m: Message): boolean {
    return this.#sole === m || (this.#several !== undefined && this.#several.includes(m));
  }

  #mayRun(msg: Message, queueEmpty: boolean): boolean {
    if (this.running === 0) return queueEmpty;
    const t = this.type;
    const m = msg.method;
    if (t.reentrant || m.alwaysInterleave) return true;
    if (t.callChainReentrancy && msg.chain !== undefined && chainContains(msg.chain, this.idStr)) return true;
    if (m.readOnly) return this.#exclusive === 0 && queueEmpty;
    return false;
  }

  #enqueue(msg: Message): void {
    if (this.#queue === undefined) this.#queue = [msg];
    else this.#queue.push(msg);
  }

  #pump(): void {
    if (this.#pumping) return; // a turn that ended synchronously inside the loop below
    const q = this.#queue;
    if (q === undefined) return;
    this.#pumping = true;
    try {
      while (this.#head < q.length) {
        const msg = q[this.#head] as Message;
        if (msg.done) {
          q[this.#head++] = undefined as never;
          continue;
        }
        if (!this.#mayRun(msg, true)) break;
        q[this.#head++] = undefined as never;
        this.#start(msg);
        if (this.state !== ActivationState.Valid) return;
      }
    } finally {
      this.#pumping = false;
      if (this.#queue === q) {
        if (this.#head >= q.length) {
          this.#queue = undefined;
          this.#head = 0;
        } else if (this.#head > 1024 && this.#head * 2 > q.length) {
          this.#queue = q.slice(this.#head);
          this.#head = 0;
        }
      }
    }
    if (this.running === 0) this.#deactivateIfDue(false);
  }

  #start(msg: Message): void {
    const m = msg.method;
    if (this.running++ === 0) this.#sole = msg;
    else {
      const several = (this.#several ??= []);
      if (this.#sole !== undefined) {
        several.push(this.#sole);
        this.#sole = undefined;
      }
      several.push(msg);
    }
    if (!m.alwaysInterleave && !m.readOnly) this.#exclusive++;
    // The synchronous part of the turn runs here, with the current message known.
    const prevMsg = currentMessage;
    const prevAct = currentActivation;
    currentMessage = msg;
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the running activation is the point
    currentActivation = this;
    let result: unknown;
    let thenable = false;
    try {
      const filters = this.#filters;
      const call =
        filters !== undefined && msg.tick === undefined
          ? new IncomingCall(filters, this.instance as Grain, this.id, m.name, m.fn, msg.args)
          : undefined;
      if (contextInUse) {
        // The turn runs in a context frame of its own: a RequestContext.set in it stays in it.
        result =
          call === undefined
            ? runInContext(msg.context, m.fn, this.instance, msg.args)
            : runInContext(msg.context, runChain, call, noArgs);
      } else {
        try {
          result = call === undefined ? m.fn.apply(this.instance, msg.args) : call.run();
        } finally {
          // The process's first RequestContext.set happened in this turn, outside any frame: take it back out.
          if (contextInUse) leaveFirstUse();
        }
      }
      if (!(result instanceof Promise) && result !== null && typeof result === 'object') {
        thenable = typeof (result as { then?: unknown }).then === 'function';
      }
    } catch (e) {
      currentMessage = prevMsg;
      currentActivation = prevAct;
      this.#calls.fail(msg, e);
      this.#end(msg);
      return;
    }
    currentMessage = prevMsg;
    currentActivation = prevAct;
    if (result instanceof Promise) {
      if (this.#awaiting === undefined) {
        // One turn at a time can use the activation's own settle handlers: no per-call closure.
        this.#awaiting = msg;
        if (this.#settled === undefined) this.#makeSettled();
        result.then(this.#settled, this.#failed as (e: unknown) => void);
      } else void this.#await(msg, result);
    } else if (thenable) {
      void this.#await(msg, result as Promise<unknown>); // a foreign thenable
    } else {
      this.#calls.succeed(msg, result);
      this.#end(msg);
    }
  }

  /** The turn whose promise the activation's own handlers wait on. */
  #awaiting: Message | undefined;
  #settled: ((v: unknown) => void) | undefined;
  #failed: ((e: unknown) => void) | undefined;

  /** Makes the activation's own settle handlers (two closures sharing one context). */
  #makeSettled(): void {
    this.#settled = (v: unknown): void => {
      const msg = this.#awaiting as Message;
      this.#awaiting = undefined;
      this.#calls.succeed(msg, v);
      this.#end(msg);
    };
    this.#failed = (e: unknown): void => {
      const msg = this.#awaiting as Message;
      this.#awaiting = undefined;
      this.#calls.fail(msg, e);
      this.#end(msg);
    };
  }

  /**
   * Called by idle collection when the activation was not used since its last
   * look: lets go of what only a busy activation needs (the settle handlers,
   * made again by the next call).
   */
  idle(): void {
    if (this.running === 0) {
      this.#settled = undefined;
      this.#failed = undefined;
    }
  }

  async #await(msg: Message, result: Promise<unknown>): Promise<void> {
    let v: unknown;
    try {
      v = await result;
    } catch (e) {
      this.#calls.fail(msg, e);
      this.#end(msg);
      return;
    }
    this.#calls.succeed(msg, v);
    this.#end(msg);
  }

  #end(msg: Message): void {
    const m = msg.method;
    this.running--;
    if (this.#sole === msg) this.#sole = undefined;
    else if (this.#several !== undefined) {
      const sv = this.#several;
      const i = sv.indexOf(msg);
      if (i >= 0) sv.splice(i, 1);
      if (this.running === 1 && sv.length === 1) this.#sole = sv.pop();
    }
    if (!m.alwaysInterleave && !m.readOnly) this.#exclusive--;
    if (msg.tick === undefined || msg.tick.keepAlive) this.used = true;
    if (this.state === ActivationState.Deactivating) {
      if (this.running === 0) void this.#finishDeactivation();
      return;
    }
    // A requested deactivation begins after this turn; queued calls then go to a new activation.
    if (this.running === 0 && this.#pending !== PendingDeactivation.None && this.#deactivateIfDue(false)) return;
    if (this.#queue !== undefined) this.#pump();
  }
}
