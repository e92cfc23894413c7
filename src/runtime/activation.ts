// An activation: one in-memory instance of a grain, its mailbox and the turn
// scheduler that decides which call runs when (non-reentrant by default,
// read-only and always-interleave calls, reentrant grains, call chains).

import { ConfigurationError, DeadlockError } from '../errors.ts';
import {
  constructGrain,
  type DeactivationReason,
  type Grain,
  type GrainClass,
  type GrainContext,
  type SiloInfo,
  type TimerHandle,
  type TimerOptions,
} from '../grain/grain.ts';
import type { GrainId } from '../grain/identity.ts';
import type { GrainTypeInfo } from '../grain/options.ts';
import { chainContains, chainPath, type CallerContext, type ChainNode } from '../messaging/call-chain.ts';
import type { Message } from '../messaging/message.ts';
import { targetBytes } from '../messaging/protocol.ts';
import type { RefIdentity } from '../serialization/symbols.ts';
import type { JournalBinding } from '../journal/log.ts';
import type { ReminderInfo, ReminderOptions } from '../reminders/service.ts';
import { PersistentStateImpl, type PersistentState, type PersistentStateOptions } from '../storage/persistent-state.ts';
import type { Runtime } from './runtime.ts';
import { GrainTimer } from './timers.ts';

/** Lifecycle states, in order. */
export const enum ActivationState {
  Activating = 0,
  Valid = 1,
  Deactivating = 2,
  Invalid = 3,
}

/** The message whose turn is running synchronously right now, and its activation. */
export let currentMessage: Message | undefined;
export let currentActivation: Activation | undefined;

/** Something calls can be delivered to: an activation or a stateless-worker pool. */
export interface Target {
  receive(msg: Message): void;
  /** False once the target left the catalog; a cached reference must look again. */
  readonly live: boolean;
  /** True for a silo across the network: arguments are encoded there, not copied here. */
  readonly remote?: boolean;
}

/** One activation of a grain. */
export class Activation implements GrainContext, CallerContext, Target {
  readonly id: GrainId;
  readonly idStr: string;
  readonly type: GrainTypeInfo;
  readonly runtime: Runtime;
  /** The stateless-worker pool this activation belongs to, if any. */
  readonly pool: { remove(a: Activation): void } | undefined;
  state: ActivationState = ActivationState.Activating;
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
  /** Deactivate once the mailbox drains (graceful stop: accepted calls still run). */
  #draining = false;
  #chainOf: Message | undefined;
  #chainNode: ChainNode | undefined;

  /** Used since the collector last looked. */
  used = true;
  idleSince = 0;
  keepAliveUntil = 0;
  /** What is read before onActivate: persistent states, a journal. */
  #states: { read(): Promise<void> }[] | undefined;
  #timers: Set<GrainTimer> | undefined;
  #deactivateRequested = false;
  #stopRequested = false;
  /** Activation begins with the first call, so that a failure fails that call. */
  #started = false;
  #reason: DeactivationReason = 'idle';
  #deactivated: Promise<void> | undefined;
  #resolveDeactivated: (() => void) | undefined;

  constructor(
    runtime: Runtime,
    id: GrainId,
    idStr: string,
    type: GrainTypeInfo,
    pool: { remove(a: Activation): void } | undefined,
    seq: number,
  ) {
    this.runtime = runtime;
    this.seq = seq;
    this.id = id;
    this.idStr = idStr;
    this.type = type;
    this.pool = pool;
  }

  /** Whether the activation has received a call and begun activating. */
  get started(): boolean {
    return this.#started;
  }

  get live(): boolean {
    return this.state <= ActivationState.Valid;
  }

  get silo(): SiloInfo {
    return this.runtime.siloInfo;
  }

  get queueLength(): number {
    return this.#queue === undefined ? 0 : this.#queue.length - this.#head;
  }

  // ---- GrainContext -------------------------------------------------------

  getGrain(type: GrainClass | string, key: string): unknown {
    return this.runtime.getGrain(type, key, this);
  }

  persistentState<T>(name: string, options: PersistentStateOptions<T>): PersistentState<T> {
    if (this.state !== ActivationState.Activating || this.instance !== undefined) {
      throw new Error(
        `persistentState('${name}') of ${this.idStr} must be declared while the grain is constructed (as a field initializer)`,
      );
    }
    const storageName = options?.storage ?? 'default';
    const provider = this.runtime.storageProvider(storageName, this.idStr, name);
    if (typeof options?.initial !== 'function') {
      throw new TypeError(
        `persistentState('${name}') of ${this.idStr} needs an 'initial' function giving the state of a grain with no record`,
      );
    }
    const s = new PersistentStateImpl<T>(
      { grainType: this.id.type, grainKey: this.id.key, stateName: name },
      provider,
      storageName,
      options.initial,
    );
    (this.#states ??= []).push(s);
    return s;
  }

  journal(load: () => Promise<void>): JournalBinding {
    const options = this.type.journal;
    if (options === undefined || this.state !== ActivationState.Activating || this.instance !== undefined) {
      throw new Error(
        `the journal of ${this.idStr} is bound by JournaledGrain while the grain is constructed, and only for a journaled grain type`,
      );
    }
    const log = this.runtime.eventLog(options.log, this.idStr);
    (this.#states ??= []).push({ read: load });
    return {
      log,
      logName: options.log,
      address: { grainType: this.id.type, grainKey: this.id.key, logName: 'journal' },
      snapshotEvery: options.snapshotEvery,
      logger: this.runtime.logger,
    };
  }

  registerTimer(callback: () => unknown, options: TimerOptions): TimerHandle {
    if (typeof callback !== 'function') throw new TypeError(`registerTimer of ${this.idStr} needs a callback function`);
    if (this.state >= ActivationState.Deactivating)
      throw new Error(`${this.idStr} is deactivating: it cannot register a timer`);
    const t = new GrainTimer(this, callback, options);
    (this.#timers ??= new Set()).add(t);
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
    return this.runtime.reminderService().register(this.idStr, name, options);
  }

  unregisterReminder(name: string): Promise<boolean> {
    return this.runtime.reminderService().unregister(this.idStr, name);
  }

  getReminders(): Promise<ReminderInfo[]> {
    return this.runtime.reminderService().list(this.idStr);
  }

  /** A timer was disposed. */
  timerDisposed(t: GrainTimer): void {
    this.#timers?.delete(t);
  }

  deactivateOnIdle(): void {
    this.#deactivateRequested = true;
    if (this.running === 0 && this.state === ActivationState.Valid)
      queueMicrotask(() => this.#maybeDeactivateRequested());
  }

  #maybeDeactivateRequested(): void {
    if (this.#deactivateRequested && this.running === 0 && this.state === ActivationState.Valid)
      void this.deactivate('requested');
  }

  delayDeactivation(ms: number): void {
    if (!(ms >= 0))
      throw new RangeError(`delayDeactivation of ${this.idStr} takes a non-negative number of ms, got ${String(ms)}`);
    this.keepAliveUntil = Math.max(this.keepAliveUntil, Date.now() + ms);
    this.#deactivateRequested = false;
  }

  // ---- CallerContext / CodecContext --------------------------------------

  callChain(): ChainNode {
    let m: Message | undefined;
    if (currentActivation === this) m = currentMessage;
    else if (this.running === 1) m = this.#sole;
    if (m !== this.#chainOf || this.#chainNode === undefined) {
      this.#chainOf = m;
      this.#idBytes ??= this.runtime.clustered ? targetBytes(this.idStr) : undefined;
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
    return this.runtime.ref(id.type, id.key, this);
  }

  // ---- Lifecycle ------------------------------------------------------------

  /** Constructs the grain, loads its state and runs onActivate; queued calls run after. */
  activate(): void {
    this.#started = true;
    if (this.pool === undefined && this.runtime.clustered) {
      void this.#registerThenActivate();
      return;
    }
    try {
      this.instance = constructGrain(this.type.cls as new () => Grain, this);
    } catch (e) {
      this.#failActivation(e);
      return;
    }
    this.idleSince = Date.now();
    if (this.#states === undefined && !this.type.hasOnActivate) {
      this.state = ActivationState.Valid;
      this.runtime.activated(this);
      this.#pump();
      return;
    }
    void this.#activateAsync();
  }

  /** In a cluster: the directory decides first whether this activation may exist. */
  async #registerThenActivate(): Promise<void> {
    let winner: string | undefined;
    try {
      winner = await this.runtime.registerActivation(this);
    } catch (e) {
      this.#failActivation(e);
      return;
    }
    if (winner !== undefined) {
      // Another silo hosts this grain: hand it every call that came here.
      this.state = ActivationState.Invalid;
      this.runtime.activationLost(this, winner, this.#takeQueue());
      this.#resolveDeactivated?.();
      return;
    }
    this.registered = true;
    try {
      this.instance = constructGrain(this.type.cls as new () => Grain, this);
    } catch (e) {
      this.#failActivation(e);
      return;
    }
    this.idleSince = Date.now();
    await this.#activateAsync();
  }

  async #activateAsync(): Promise<void> {
    try {
      if (this.#states !== undefined) {
        for (const s of this.#states) await s.read();
      }
      if (this.type.hasOnActivate) await (this.instance as Grain).onActivate();
    } catch (e) {
      this.#failActivation(e);
      return;
    }
    this.state = ActivationState.Valid;
    this.runtime.activated(this);
    if (this.#stopRequested) {
      void this.deactivate(this.#reason);
      if (this.state !== ActivationState.Valid) return;
    }
    if (this.#deactivateRequested && this.queueLength === 0) {
      void this.deactivate('requested');
      return;
    }
    this.#pump();
  }

  #failActivation(err: unknown): void {
    this.state = ActivationState.Invalid;
    this.#disposeTimers();
    this.runtime.activationFailed(this, err);
    const q = this.#takeQueue();
    for (const m of q) this.runtime.fail(m, err);
    this.#resolveDeactivated?.();
  }

  /**
   * Deactivates after the running turns end. Calls that arrive meanwhile wait
   * and are then delivered to a new activation: none is lost.
   */
  deactivate(reason: DeactivationReason): Promise<void> {
    this.#deactivated ??= new Promise<void>((r) => (this.#resolveDeactivated = r));
    switch (this.state) {
      case ActivationState.Activating:
        if (!this.#started) {
          // Never received a call: nothing to run down.
          this.state = ActivationState.Invalid;
          this.runtime.deactivated(this, reason);
          this.#resolveDeactivated?.();
          break;
        }
        // Deactivate as soon as activation completes (or fails).
        this.#stopRequested = true;
        this.#reason = reason;
        break;
      case ActivationState.Valid:
        this.#reason = reason;
        if (reason === 'shutdown' && (this.running > 0 || this.#queue !== undefined)) {
          // Graceful stop: calls already accepted run first.
          this.#draining = true;
          break;
        }
        this.state = ActivationState.Deactivating;
        if (this.running === 0) void this.#finishDeactivation();
        break;
      case ActivationState.Invalid:
        this.#resolveDeactivated?.();
        break;
      default:
        break;
    }
    return this.#deactivated;
  }

  /**
   * Drops the activation at once, whatever runs (a stop whose deactivation
   * timed out). Queued calls fail with `err`; running turns finish unobserved.
   */
  forceInvalidate(err: unknown): void {
    if (this.state === ActivationState.Invalid) return;
    this.state = ActivationState.Invalid;
    this.#disposeTimers();
    this.runtime.deactivated(this, this.#reason);
    for (const m of this.#takeQueue()) this.runtime.fail(m, err);
    this.#resolveDeactivated?.();
  }

  async #finishDeactivation(): Promise<void> {
    this.#disposeTimers();
    if (this.type.hasOnDeactivate && this.instance !== undefined) {
      try {
        await this.instance.onDeactivate(this.#reason);
      } catch (e) {
        this.runtime.logger.warn({ grain: this.idStr, err: e }, 'onDeactivate threw');
      }
    }
    this.state = ActivationState.Invalid;
    this.runtime.deactivated(this, this.#reason);
    for (const m of this.#takeQueue()) this.runtime.redispatch(m);
    this.#resolveDeactivated?.();
  }

  #disposeTimers(): void {
    if (this.#timers === undefined) return;
    for (const t of [...this.#timers]) t.dispose();
    this.#timers = undefined;
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
    const state = this.state;
    if (state === ActivationState.Valid) {
      if (this.#mayRun(msg, this.#queue === undefined)) {
        this.#start(msg);
        return;
      }
    } else if (state === ActivationState.Invalid) {
      this.runtime.redispatch(msg);
      return;
    } else if (!this.#started) {
      this.#enqueue(msg);
      this.activate();
      return;
    }
    if (msg.chain !== undefined && this.#deadlocked(msg.chain)) {
      this.runtime.fail(msg, new DeadlockError(chainPath(msg.chain, this.idStr)));
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
    if (this.running === 0 && this.state === ActivationState.Valid) this.#idleAfterTurns();
  }

  /** Nothing runs: deactivate if asked to, or if draining and the mailbox is empty. */
  #idleAfterTurns(): void {
    if (this.#deactivateRequested) void this.deactivate('requested');
    else if (this.#draining && this.#queue === undefined) void this.deactivate(this.#reason);
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
      result = m.fn.apply(this.instance, msg.args);
      if (!(result instanceof Promise) && result !== null && typeof result === 'object') {
        thenable = typeof (result as { then?: unknown }).then === 'function';
      }
    } catch (e) {
      currentMessage = prevMsg;
      currentActivation = prevAct;
      this.runtime.fail(msg, e);
      this.#end(msg);
      return;
    }
    currentMessage = prevMsg;
    currentActivation = prevAct;
    if (result instanceof Promise) {
      if (this.#awaiting === undefined) {
        // One turn at a time can use the activation's own settle handlers: no per-call closure.
        this.#awaiting = msg;
        result.then((this.#settled ??= this.#makeSettled(true)), (this.#failed ??= this.#makeSettled(false)));
      } else void this.#await(msg, result);
    } else if (thenable) {
      void this.#await(msg, result as Promise<unknown>); // a foreign thenable
    } else {
      this.runtime.succeed(msg, result);
      this.#end(msg);
    }
  }

  /** The turn whose promise the activation's own handlers wait on. */
  #awaiting: Message | undefined;
  #settled: ((v: unknown) => void) | undefined;
  #failed: ((e: unknown) => void) | undefined;

  #makeSettled(ok: boolean): (v: unknown) => void {
    return (v: unknown): void => {
      const msg = this.#awaiting as Message;
      this.#awaiting = undefined;
      if (ok) this.runtime.succeed(msg, v);
      else this.runtime.fail(msg, v);
      this.#end(msg);
    };
  }

  async #await(msg: Message, result: Promise<unknown>): Promise<void> {
    let v: unknown;
    try {
      v = await result;
    } catch (e) {
      this.runtime.fail(msg, e);
      this.#end(msg);
      return;
    }
    this.runtime.succeed(msg, v);
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
    if (this.running === 0 && this.#deactivateRequested) {
      // Deactivate after this turn; queued calls go to a new activation.
      void this.deactivate('requested');
      return;
    }
    if (this.#queue !== undefined) this.#pump();
    else if (this.running === 0 && this.state === ActivationState.Valid) this.#idleAfterTurns();
  }
}
