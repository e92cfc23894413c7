// The silo runtime: the catalog of activations, call dispatch, deadlines and
// cancellation, idle collection, and the settling of callers' promises.
// Everything a call touches between a reference and a grain method is here
// or in activation.ts.

import type { ReminderService } from '../reminders/service.ts';
import {
  CancelledError,
  ConfigurationError,
  SiloStoppedError,
  TimeoutError,
  UnknownGrainTypeError,
  UnknownMethodError,
  GranaryError,
} from '../errors.ts';
import { Grain, type GrainClass, type SiloInfo } from '../grain/grain.ts';
import { grainId, OBSERVER_TYPE, type GrainId } from '../grain/identity.ts';
import { grainTypeInfo, type GrainTypeInfo, type MethodInfo } from '../grain/options.ts';
import { makeRef, RefCore, type GrainRefBase, type Invoker } from '../grain/ref.ts';
import type { CallerContext, ChainNode } from '../messaging/call-chain.ts';
import { Deadlines } from '../messaging/deadlines.ts';
import { Message, type RemoteReply } from '../messaging/message.ts';
import { RequestFlags, ResponseStatus, decodeRequestArgs, type RequestHeader } from '../messaging/protocol.ts';
import type { SiloCluster } from './cluster.ts';
import { channels } from '../observability/channels.ts';
import type { Logger } from '../observability/logger.ts';
import { copy, copyArgs } from '../serialization/codec.ts';
import type { CodecContext, RefIdentity } from '../serialization/symbols.ts';
import type { StorageProvider } from '../storage/provider.ts';
import type { EventLog } from '../journal/log.ts';
import { Activation, ActivationState, currentActivation, type Target } from './activation.ts';
import { WorkerPool } from './worker-pool.ts';

/**
 * Awaits a call so that a failure's stack also shows the caller's frames: V8
 * knows the chain of awaiting async functions only while one of them runs, so
 * the frames are taken here, in the caller's await chain, and only on failure.
 */
async function withCallerStack(p: Promise<unknown>): Promise<unknown> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof Error && typeof e.stack === 'string') {
      const here = new Error().stack ?? '';
      // Drop the message line and this function's own frame.
      const frames = here.split('\n').slice(2).join('\n');
      if (frames !== '') e.stack = `${e.stack}\n    --- the call, on the caller's side ---\n${frames}`;
    }
    throw e;
  }
}

const observerMethods = new Map<string, MethodInfo>();
const noop = (): undefined => undefined;
/** Method info for a call by name on an observer (its class lives in the client). */
function observerMethod(name: string): MethodInfo {
  let m = observerMethods.get(name);
  if (m === undefined)
    observerMethods.set(name, (m = { name, fn: noop, readOnly: false, alwaysInterleave: false, oneWay: false }));
  return m;
}

/** What the runtime needs from the silo. */
export interface RuntimeConfig {
  readonly siloInfo: SiloInfo;
  readonly logger: Logger;
  readonly responseTimeoutMs: number;
  readonly collectionAgeMs: number;
  readonly collectionQuantumMs: number | undefined;
  readonly maxForwardCount: number;
  readonly storage: ReadonlyMap<string, StorageProvider>;
  readonly eventLogs: ReadonlyMap<string, EventLog>;
  readonly cpus: number;
  readonly callerStacks: boolean;
  readonly deactivationTimeoutMs: number;
}

/** The runtime of one silo. */
export class Runtime implements Invoker {
  /** Set again once the silo knows the address it listens on. */
  siloInfo: SiloInfo;
  logger: Logger;
  readonly #cfg: RuntimeConfig;
  readonly #types = new Map<string, GrainTypeInfo>();
  readonly #byClass = new Map<object, GrainTypeInfo>();
  readonly #catalog = new Map<string, Target>();
  readonly #deadlines: Deadlines<Message>;
  readonly #rootCtx: CodecContext;
  #stopping = false;
  #collector: NodeJS.Timeout | undefined;
  #activations = 0;
  /** Activation numbers start at a random point, so a restarted silo on the same address never reuses one. */
  #seq = Math.floor(Math.random() * 2 ** 40);
  #cluster: SiloCluster | undefined;
  /** Calls that came over the wire with a signal, by connection and request id, for Cancel frames. */
  readonly #remoteCancels = new Map<object, Map<number, Message>>();

  constructor(cfg: RuntimeConfig) {
    this.#cfg = cfg;
    this.siloInfo = cfg.siloInfo;
    this.logger = cfg.logger;
    this.#deadlines = new Deadlines(this.#expire);
    this.#rootCtx = { reviveRef: (id: RefIdentity) => this.ref(id.type, id.key, undefined) };
  }

  /** Registers a grain class; its type name must be unique. */
  register(cls: GrainClass): GrainTypeInfo {
    const info = grainTypeInfo(cls as new () => object, Grain.prototype, this.#cfg.cpus);
    const prev = this.#types.get(info.name);
    if (prev !== undefined && prev.cls !== info.cls) {
      throw new ConfigurationError(
        `two grain classes use the type name '${info.name}' (${prev.cls.name} and ${info.cls.name}): give one another name with @grain('...')`,
      );
    }
    this.#types.set(info.name, info);
    this.#byClass.set(cls, info);
    return info;
  }

  /** The silo's reminder service, set once the silo has started. */
  reminders: ReminderService | undefined;

  /** The reminder service, or a clear error while the silo has none (not started yet, or stopping). */
  reminderService(): ReminderService {
    if (this.reminders === undefined)
      throw new SiloStoppedError(
        `silo ${this.siloInfo.address} has no reminder service running (starting or stopping)`,
      );
    return this.reminders;
  }

  /** Joins the runtime to its cluster layer (a networked silo). */
  attachCluster(c: SiloCluster): void {
    this.#cluster = c;
  }

  /** Whether activations register in a cluster directory. */
  get clustered(): boolean {
    return this.#cluster !== undefined;
  }

  /** Registered grain types by name. */
  get types(): ReadonlyMap<string, GrainTypeInfo> {
    return this.#types;
  }

  /** Activations in memory now (stateless workers counted one by one). */
  get activationCount(): number {
    return this.#activations;
  }

  /** Calls waiting for a result. */
  get pendingCalls(): number {
    return this.#deadlines.size;
  }

  /** The root codec context: references revived here belong to no activation. */
  get codecContext(): CodecContext {
    return this.#rootCtx;
  }

  // ---- References -----------------------------------------------------------

  getGrain(type: GrainClass | string, key: string, caller: CallerContext | undefined): GrainRefBase<unknown> {
    if (typeof key !== 'string') throw new TypeError(`a grain key is a string, got ${typeof key}`);
    if (typeof type === 'string') return this.ref(type, key, caller);
    const info = this.#byClass.get(type);
    if (info === undefined) {
      throw new UnknownGrainTypeError(
        `grain class ${String((type as { name?: unknown })?.name)} is not registered with this silo: add it to the silo's 'grains' option`,
      );
    }
    return makeRef(new RefCore(grainId(info.name, key), `${info.name}/${key}`, info, this, caller, undefined));
  }

  ref(type: string, key: string, caller: CallerContext | undefined): GrainRefBase<unknown> {
    return makeRef(new RefCore(grainId(type, key), `${type}/${key}`, this.#types.get(type), this, caller, undefined));
  }

  /** Delivers a reminder tick: `receiveReminder(...args)` on the grain, wherever it lives. */
  deliverReminder(typeName: string, key: string, args: unknown[]): Promise<unknown> {
    const type = this.#types.get(typeName);
    if (type?.reminder === undefined) {
      return Promise.reject(
        new UnknownGrainTypeError(
          type === undefined
            ? `a reminder of grain ${typeName}/${key} cannot be delivered: this silo does not know grain type '${typeName}'`
            : `a reminder of grain ${typeName}/${key} cannot be delivered: grain type '${typeName}' has no receiveReminder method`,
        ),
      );
    }
    return this.invoke(
      new RefCore(grainId(typeName, key), `${typeName}/${key}`, type, this, undefined, undefined),
      type.reminder,
      args,
    );
  }

  // ---- Calls ----------------------------------------------------------------

  invoke(core: RefCore, method: MethodInfo | string, args: unknown[]): Promise<unknown> {
    let type = core.type;
    if (type === undefined) {
      type = this.#types.get(core.id.type);
      if (type === undefined && core.id.type === OBSERVER_TYPE && this.#cluster !== undefined) {
        return this.#callObserver(core, typeof method === 'string' ? method : method.name, args);
      }
      if (type === undefined) {
        const known = [...this.#types.keys()].join(', ') || 'none';
        return Promise.reject(
          new UnknownGrainTypeError(
            `unknown grain type '${core.id.type}' (calling ${core.idStr}); this silo hosts: ${known}`,
          ),
        );
      }
    }
    let m: MethodInfo;
    if (typeof method === 'string') {
      const found = type.methods.get(method);
      if (found === undefined) {
        const known = [...type.methods.keys()].join(', ') || 'none';
        return Promise.reject(
          new UnknownMethodError(
            `grain type '${type.name}' has no method '${method}' (calling ${core.idStr}); its methods: ${known}`,
          ),
        );
      }
      m = found;
    } else m = method;
    if (this.#stopping && this.#cluster === undefined) {
      // A stopping silo takes no new work from outside, and makes no new activations; calls in
      // flight between its grains still reach the activations that are draining.
      const existing = this.#catalog.get(core.idStr);
      if ((core.caller === undefined && currentActivation === undefined) || existing === undefined || !existing.live) {
        return Promise.reject(
          new SiloStoppedError(`silo ${this.siloInfo.address} is stopping: call to ${core.idStr}.${m.name} refused`),
        );
      }
    }
    let target = core.target as Target | undefined;
    if (target === undefined || !target.live) {
      target = this.#lookup(core.id, core.idStr, type);
      if (target.remote !== true) core.target = target;
      else if (this.#cluster !== undefined) core.target = this.#cluster.keep(target);
    }

    const n = args.length;
    let signal: AbortSignal | undefined;
    if (n > 0 && args[n - 1] instanceof AbortSignal) {
      signal = args[n - 1] as AbortSignal;
      args.length = n - 1;
    }
    if (target.remote !== true) {
      try {
        copyArgs(args, target as unknown as CodecContext);
      } catch (e) {
        this.#discardUnused(target);
        return Promise.reject(e);
      }
    }
    const caller = core.caller ?? currentActivation;
    const timeoutMs = core.options?.timeoutMs ?? this.#cfg.responseTimeoutMs;
    const msg = new Message(
      core.idStr,
      m,
      args,
      m.oneWay || caller === undefined ? undefined : caller.callChain(),
      caller,
      timeoutMs,
    );
    if (m.oneWay) {
      if (signal !== undefined && !this.#attachSignal(msg, signal)) {
        this.#discardUnused(target);
        return Promise.resolve(undefined);
      }
      target.receive(msg);
      return Promise.resolve(undefined);
    }
    const p = msg.promise();
    this.#deadlines.add(msg);
    if (signal === undefined || this.#attachSignal(msg, signal)) target.receive(msg);
    else this.#discardUnused(target);
    return this.#cfg.callerStacks ? withCallerStack(p) : p;
  }

  /** Removes a target created for a call that was then never delivered. */
  #discardUnused(t: Target): void {
    if (t instanceof Activation) {
      if (!t.started) void t.deactivate('error');
    } else if (t instanceof WorkerPool && t.workers.length === 0) {
      t.live = false;
      this.poolEmpty(t);
    }
  }

  /** A call to a client's observer: through the client's gateway, always encoded. */
  #callObserver(core: RefCore, name: string, args: unknown[]): Promise<unknown> {
    const target = (this.#cluster as SiloCluster).observerTarget(core.id.key);
    const caller = core.caller ?? currentActivation;
    const msg = new Message(
      core.idStr,
      observerMethod(name),
      args,
      caller?.callChain(),
      caller,
      core.options?.timeoutMs ?? this.#cfg.responseTimeoutMs,
    );
    const p = msg.promise();
    this.#deadlines.add(msg);
    target.receive(msg);
    return p;
  }

  /** Gives the callee its own signal in the caller's argument slot; false if already aborted. */
  #attachSignal(msg: Message, signal: AbortSignal): boolean {
    const controller = new AbortController();
    msg.args.push(controller.signal);
    if (signal.aborted) {
      controller.abort(signal.reason);
      this.fail(
        msg,
        new CancelledError(`call to ${msg.targetId}.${msg.method.name} was cancelled before it was sent`, {
          cause: signal.reason,
        }),
      );
      return false;
    }
    const cancel = { callerSignal: signal, controller, listener: undefined as (() => void) | undefined };
    cancel.listener = () => {
      controller.abort(signal.reason);
      if (msg.via !== undefined) this.#cluster?.abandon(msg, true);
      this.fail(
        msg,
        new CancelledError(`call to ${msg.targetId}.${msg.method.name} was cancelled by the caller`, {
          cause: signal.reason,
        }),
      );
    };
    signal.addEventListener('abort', cancel.listener, { once: true });
    msg.cancel = cancel;
    return true;
  }

  #lookup(id: GrainId, idStr: string, type: GrainTypeInfo): Target {
    let t = this.#catalog.get(idStr);
    if (t === undefined || (!t.live && this.#stopping)) {
      if (type.maxLocalWorkers > 0) {
        if (this.#stopping && this.#cluster !== undefined)
          return this.#cluster.route(idStr, type, id) ?? this.#refuse(idStr);
        t = new WorkerPool(this, id, idStr, type);
      } else {
        if (this.#cluster !== undefined) {
          const remote = this.#cluster.route(idStr, type, id);
          if (remote !== undefined) return remote;
          if (this.#stopping) return this.#refuse(idStr);
        }
        t = this.newActivation(id, idStr, type, undefined);
      }
      this.#catalog.set(idStr, t);
    }
    return t;
  }

  /** The local target for a grain, activating it here if needed. */
  #lookupHere(id: GrainId, idStr: string, type: GrainTypeInfo): Target {
    let t = this.#catalog.get(idStr);
    if (t === undefined) {
      t =
        type.maxLocalWorkers > 0
          ? new WorkerPool(this, id, idStr, type)
          : this.newActivation(id, idStr, type, undefined);
      this.#catalog.set(idStr, t);
    }
    return t;
  }

  #refuse(idStr: string): Target {
    return {
      live: true,
      remote: true,
      receive: (msg: Message) =>
        this.fail(
          msg,
          new SiloStoppedError(`silo ${this.siloInfo.address} is stopping and no other silo can take ${idStr}`),
        ),
    };
  }

  /** Creates an activation; it activates when it receives its first call. */
  newActivation(id: GrainId, idStr: string, type: GrainTypeInfo, pool: WorkerPool | undefined): Activation {
    const a = new Activation(this, id, idStr, type, pool, ++this.#seq);
    this.#activations++;
    this.#ensureCollector();
    // A grain now here: routes kept on references may point elsewhere for it.
    if (this.#cluster !== undefined && pool === undefined) this.#cluster.directory.routeVersion++;
    return a;
  }

  /** Delivers a call whose activation went away before running it. */
  redispatch(msg: Message): void {
    // Re-queueing on this silo is no hop: each new activation runs at least the call that made it, so this ends.
    if (msg.done || msg.tick !== undefined) return;
    if (this.#stopping && this.#cluster === undefined) {
      this.fail(
        msg,
        new SiloStoppedError(
          `silo ${this.siloInfo.address} stopped before the call to ${msg.targetId}.${msg.method.name} could run`,
        ),
      );
      return;
    }
    const slash = msg.targetId.indexOf('/');
    const type = this.#types.get(msg.targetId.slice(0, slash)) as GrainTypeInfo;
    this.#lookup(grainId(type.name, msg.targetId.slice(slash + 1)), msg.targetId, type).receive(msg);
  }

  readonly #expire = (msg: Message): void => {
    if (msg.done) return;
    msg.done = true;
    this.#releaseSignal(msg, true);
    if (msg.via !== undefined) this.#cluster?.abandon(msg, true);
    if (msg.reply !== undefined) return; // the caller, on its own silo, times out by itself
    msg.reject(new TimeoutError(`call to ${msg.targetId}.${msg.method.name} timed out after ${msg.timeoutMs} ms`));
  };

  #releaseSignal(msg: Message, abortCallee: boolean): void {
    const c = msg.cancel;
    if (c === undefined) return;
    if (c.listener !== undefined) c.callerSignal.removeEventListener('abort', c.listener);
    c.listener = undefined;
    if (abortCallee && !c.controller.signal.aborted)
      c.controller.abort(new TimeoutError(`call to ${msg.targetId}.${msg.method.name} timed out`));
  }

  /** Settles a call with its result. */
  succeed(msg: Message, value: unknown): void {
    if (msg.tick !== undefined) {
      msg.tick.tickDone(undefined);
      return;
    }
    if (msg.done) return;
    msg.done = true;
    if (msg.cancel !== undefined) this.#releaseSignal(msg, false);
    if (msg.method.oneWay) return;
    this.#deadlines.remove(msg);
    if (msg.reply !== undefined) {
      this.#forgetRemoteCancel(msg);
      msg.reply.respond(msg.replyId, ResponseStatus.Ok, value);
      return;
    }
    const t = typeof value;
    if (value === null || (t !== 'object' && t !== 'function' && t !== 'symbol')) {
      msg.resolve(value);
      return;
    }
    let v: unknown;
    try {
      v = copy(value, msg.caller ?? this.#rootCtx, 'result');
    } catch (e) {
      msg.reject(e);
      return;
    }
    msg.resolve(v);
  }

  /** Settles a call with an error. */
  fail(msg: Message, err: unknown): void {
    if (msg.tick !== undefined) {
      msg.tick.tickDone(err ?? new Error('timer tick threw undefined'));
      return;
    }
    if (msg.done) return;
    msg.done = true;
    if (msg.cancel !== undefined) this.#releaseSignal(msg, false);
    if (msg.method.oneWay) {
      if (!(err instanceof CancelledError))
        this.logger.warn({ grain: msg.targetId, method: msg.method.name, err }, 'one-way call failed');
      return;
    }
    this.#deadlines.remove(msg);
    if (msg.reply !== undefined) {
      this.#forgetRemoteCancel(msg);
      msg.reply.respond(msg.replyId, ResponseStatus.Error, err);
      return;
    }
    let e: unknown;
    try {
      e = copy(err, msg.caller ?? this.#rootCtx, 'error');
    } catch {
      e = new GranaryError(
        `call to ${msg.targetId}.${msg.method.name} failed with an error that cannot be copied: ${String(err)}`,
      );
    }
    if (e !== err && e instanceof Error && typeof e.stack === 'string') {
      // The grain's frames, then the call and the grains waiting on it.
      let s = `${e.stack}\n    at <grain call> ${msg.targetId}.${msg.method.name}`;
      for (let n = msg.chain; n !== undefined; n = n.parent) s += `\n    at <awaited by grain> ${n.id}`;
      e.stack = s;
    }
    msg.reject(e);
  }

  /** Settles a call with a value decoded from the wire (already a fresh copy). */
  succeedDecoded(msg: Message, value: unknown): void {
    if (msg.done) return;
    msg.done = true;
    if (msg.cancel !== undefined) this.#releaseSignal(msg, false);
    this.#deadlines.remove(msg);
    if (msg.reply !== undefined) {
      msg.reply.respond(msg.replyId, ResponseStatus.Ok, value);
      return;
    }
    msg.resolve(value);
  }

  /**
   * Delivers a call that came over the wire (from a silo or a client through this
   * gateway); `h` was read from `buf`, which holds the arguments where `h` says.
   */
  receiveRemote(h: RequestHeader, buf: Buffer, reply: RemoteReply | undefined, conn: object): void {
    // A silo that sent the call here placed it here: activate here and let the directory decide.
    // A client's call (through this gateway) is placed as a local call would be.
    const fromSilo = (conn as { peer?: { role?: string } }).peer?.role === 'silo';
    // The common case first: the grain is here.
    let target: Target | undefined = this.#catalog.get(h.targetId);
    let type: GrainTypeInfo | undefined;
    if (target !== undefined && target.live && !this.#stopping) type = (target as Activation | WorkerPool).type;
    else {
      target = undefined;
      const slash = h.targetId.indexOf('/');
      const typeName = slash < 0 ? h.targetId : h.targetId.slice(0, slash);
      const key = slash < 0 ? '' : h.targetId.slice(slash + 1);
      type = this.#types.get(typeName);
      if (type === undefined && typeName === OBSERVER_TYPE && this.#cluster !== undefined) {
        this.#relayToObserver(h, buf, reply, key);
        return;
      }
      if (type === undefined) {
        reply?.respond(
          h.reqId,
          ResponseStatus.Error,
          new UnknownGrainTypeError(
            `unknown grain type '${typeName}' (calling ${h.targetId}); silo ${this.siloInfo.address} hosts: ${[...this.#types.keys()].join(', ') || 'none'}`,
          ),
        );
        return;
      }
      const id = grainId(typeName, key);
      target =
        fromSilo && !this.#stopping ? this.#lookupHere(id, h.targetId, type) : this.#lookup(id, h.targetId, type);
    }
    // receiveReminder is not callable by clients; the reminder service of another silo may call it.
    const m = type.methods.get(h.method) ?? (fromSilo && h.method === 'receiveReminder' ? type.reminder : undefined);
    if (m === undefined) {
      this.#discardUnused(target);
      reply?.respond(
        h.reqId,
        ResponseStatus.Error,
        new UnknownMethodError(
          `grain type '${type.name}' has no method '${h.method}' (calling ${h.targetId}); its methods: ${[...type.methods.keys()].join(', ') || 'none'}`,
        ),
      );
      return;
    }
    let args: unknown[];
    try {
      args = decodeRequestArgs(buf, h, target.remote === true ? this.#rootCtx : (target as unknown as CodecContext));
    } catch (e) {
      this.#discardUnused(target);
      reply?.respond(h.reqId, ResponseStatus.Error, e);
      return;
    }
    let chain: ChainNode | undefined;
    if (h.chain !== null)
      for (let i = h.chain.length - 1; i >= 0; i--) chain = { id: h.chain[i] as string, parent: chain };
    const msg = new Message(
      h.targetId,
      m,
      args,
      chain,
      undefined,
      h.timeoutMs > 0 ? h.timeoutMs : this.#cfg.responseTimeoutMs,
    );
    msg.hops = h.hops;
    msg.reply = reply;
    msg.replyId = h.reqId;
    if ((h.flags & RequestFlags.Signal) !== 0) {
      const controller = new AbortController();
      args.push(controller.signal);
      msg.cancel = { callerSignal: controller.signal, controller, listener: undefined };
      if (reply !== undefined) {
        let byConn = this.#remoteCancels.get(conn);
        if (byConn === undefined) this.#remoteCancels.set(conn, (byConn = new Map()));
        byConn.set(h.reqId, msg);
      }
    }
    if (reply !== undefined) this.#deadlines.add(msg);
    if (target.remote === true && fromSilo) msg.hops++;
    if (msg.hops > this.#cfg.maxForwardCount) {
      this.fail(
        msg,
        new GranaryError(
          `call to ${h.targetId}.${h.method} was forwarded ${msg.hops} times without reaching an activation`,
          'GRANARY_FORWARD_LIMIT',
        ),
      );
      return;
    }
    target.receive(msg);
  }

  /** A call to a client's observer, relayed towards the client's gateway. */
  #relayToObserver(h: RequestHeader, buf: Buffer, reply: RemoteReply | undefined, key: string): void {
    let args: unknown[];
    try {
      args = decodeRequestArgs(buf, h, this.#rootCtx);
    } catch (e) {
      reply?.respond(h.reqId, ResponseStatus.Error, e);
      return;
    }
    const msg = new Message(
      h.targetId,
      observerMethod(h.method),
      args,
      undefined,
      undefined,
      h.timeoutMs > 0 ? h.timeoutMs : this.#cfg.responseTimeoutMs,
    );
    msg.hops = h.hops + 1;
    msg.reply = reply;
    msg.replyId = h.reqId;
    if (reply !== undefined) this.#deadlines.add(msg);
    (this.#cluster as SiloCluster).observerTarget(key).receive(msg);
  }

  /** A Cancel frame: abort the callee's signal of that call. */
  cancelRemote(conn: object, reqId: number): void {
    const msg = this.#remoteCancels.get(conn)?.get(reqId);
    if (msg === undefined) return;
    this.#forgetRemoteCancel(msg);
    msg.cancel?.controller.abort(new CancelledError('cancelled by the caller'));
    if (msg.via !== undefined) this.#cluster?.abandon(msg, true); // forwarded on: cancel there too
    // The call is settled for nobody: its caller already gave up.
    msg.done = true;
    this.#deadlines.remove(msg);
  }

  #forgetRemoteCancel(msg: Message): void {
    if (msg.cancel === undefined || msg.reply === undefined) return;
    for (const [conn, byConn] of this.#remoteCancels) {
      if (byConn.get(msg.replyId) === msg) {
        byConn.delete(msg.replyId);
        if (byConn.size === 0) this.#remoteCancels.delete(conn);
        return;
      }
    }
  }

  /** In a cluster: registers an activation; resolves to the winner's address if another won. */
  registerActivation(a: Activation): Promise<string | undefined> {
    return this.#cluster === undefined ? Promise.resolve(undefined) : this.#cluster.register(a);
  }

  /** An activation lost its registration to one on `winner`: its calls go there. */
  activationLost(a: Activation, winner: string, queued: Message[]): void {
    this.#remove(a);
    for (const m of queued) this.forward(m, winner);
  }

  /** Sends a call on to another silo, counting the hop. */
  forward(msg: Message, address: string): void {
    if (msg.done) return;
    if (++msg.hops > this.#cfg.maxForwardCount || this.#cluster === undefined) {
      this.fail(
        msg,
        new GranaryError(
          `call to ${msg.targetId}.${msg.method.name} was forwarded ${msg.hops - 1} times without reaching an activation`,
          'GRANARY_FORWARD_LIMIT',
        ),
      );
      return;
    }
    msg.reply?.relocated(msg.targetId, address);
    this.#cluster.send(msg, address);
  }

  /** Local activations as directory entries (for re-registration on a view change). */
  *localEntries(address: string): Iterable<[string, { address: string; activation: number }]> {
    for (const t of this.#catalog.values()) {
      if (t instanceof Activation && t.registered && t.state <= ActivationState.Valid)
        yield [t.idStr, { address, activation: t.seq }];
    }
  }

  /** Another activation of a local grain won in the directory: deactivate ours; its calls follow. */
  duplicateFound(grain: string, winner: string): void {
    const t = this.#catalog.get(grain);
    if (!(t instanceof Activation)) return;
    this.logger.warn(
      { grain, winner },
      'duplicate activation found: deactivating this one, its callers go to the other',
    );
    t.registered = false;
    void t.deactivate('requested');
  }

  // ---- Activation events -------------------------------------------------

  activated(a: Activation): void {
    if (channels.activationCreated.hasSubscribers)
      channels.activationCreated.publish({ silo: this.siloInfo.address, grain: a.idStr, type: a.type.name });
  }

  activationFailed(a: Activation, err: unknown): void {
    this.#remove(a);
    this.logger.warn({ grain: a.idStr, err }, 'activation failed');
    if (channels.activationFailed.hasSubscribers)
      channels.activationFailed.publish({ silo: this.siloInfo.address, grain: a.idStr, type: a.type.name, error: err });
  }

  deactivated(a: Activation, reason: string): void {
    this.#remove(a);
    if (channels.activationDeactivated.hasSubscribers)
      channels.activationDeactivated.publish({
        silo: this.siloInfo.address,
        grain: a.idStr,
        type: a.type.name,
        reason,
      });
  }

  #remove(a: Activation): void {
    this.#activations--;
    if (a.registered) {
      a.registered = false;
      this.#cluster?.unregister(a);
    }
    if (a.pool !== undefined) a.pool.remove(a);
    else if (this.#catalog.get(a.idStr) === a) this.#catalog.delete(a.idStr);
  }

  poolEmpty(p: WorkerPool): void {
    if (this.#catalog.get(p.idStr) === p) this.#catalog.delete(p.idStr);
  }

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

  // ---- Idle collection -------------------------------------------------------

  #quantum(): number {
    if (this.#cfg.collectionQuantumMs !== undefined) return this.#cfg.collectionQuantumMs;
    let min = this.#cfg.collectionAgeMs;
    for (const t of this.#types.values())
      if (t.collectionAgeMs !== undefined && t.collectionAgeMs < min) min = t.collectionAgeMs;
    return Math.max(5, Math.min(60_000, Math.floor(min / 4)));
  }

  #ensureCollector(): void {
    if (this.#collector !== undefined || this.#stopping) return;
    this.#collector = setInterval(this.#collect, this.#quantum());
    this.#collector.unref();
  }

  readonly #collect = (): void => {
    const now = Date.now();
    const defAge = this.#cfg.collectionAgeMs;
    for (const t of this.#catalog.values()) {
      if (t instanceof WorkerPool) {
        for (const w of [...t.workers]) this.#consider(w, now, defAge);
      } else this.#consider(t as Activation, now, defAge);
    }
    if (this.#catalog.size === 0 && this.#collector !== undefined) {
      clearInterval(this.#collector);
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
    if (now < a.keepAliveUntil) return;
    if (now - a.idleSince >= (a.type.collectionAgeMs ?? defAge)) void a.deactivate('idle');
  }

  // ---- Stop -----------------------------------------------------------------

  /** Drops every activation at once with no deactivation (a crash, for tests). */
  abandon(): void {
    this.#stopping = true;
    if (this.#collector !== undefined) clearInterval(this.#collector);
    this.#collector = undefined;
    const err = new SiloStoppedError(`silo ${this.siloInfo.address} was aborted`);
    for (const t of [...this.#catalog.values()]) {
      if (t instanceof WorkerPool) for (const w of [...t.workers]) w.forceInvalidate(err);
      else (t as Activation).forceInvalidate(err);
    }
    this.#deadlines.close();
  }

  /**
   * Refuses new calls and deactivates every activation, letting running turns
   * and accepted calls finish. Activations still busy after
   * `deactivationTimeoutMs` are dropped with a warning.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#collector !== undefined) clearInterval(this.#collector);
    this.#collector = undefined;
    const acts: Activation[] = [];
    for (const t of [...this.#catalog.values()]) {
      if (t instanceof WorkerPool) acts.push(...t.workers);
      else acts.push(t as Activation);
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), this.#cfg.deactivationTimeoutMs);
    });
    const done = await Promise.race([
      Promise.all(acts.map((a) => a.deactivate('shutdown'))).then(() => false),
      timedOut,
    ]);
    clearTimeout(timer);
    if (done) {
      const stuck = acts.filter((a) => a.state !== ActivationState.Invalid);
      this.logger.warn(
        {
          grains: stuck.slice(0, 20).map((a) => a.idStr),
          count: stuck.length,
          timeoutMs: this.#cfg.deactivationTimeoutMs,
        },
        'activations did not deactivate in time; dropping them',
      );
      for (const a of stuck)
        a.forceInvalidate(new SiloStoppedError(`silo ${this.siloInfo.address} stopped before the call could run`));
    }
    this.#deadlines.close();
  }
}
