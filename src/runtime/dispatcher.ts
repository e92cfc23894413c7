// The dispatcher: where a call goes. A call from a reference (invoke), from
// the wire (receiveRemote) or from the reminder service becomes a Message and
// is delivered to its target: a local activation (the catalog), another silo
// (the cluster layer: directory cache, placement), or an observer. Calls whose
// activation went away are delivered again (redispatch) or forwarded.

import { CHANNEL_METHOD, STREAM_METHOD } from '../streams/types.ts';
import { ConfigurationError, ForwardLimitError, SiloStoppedError, UnknownGrainTypeError } from '../errors.ts';
import type { GrainClass, SiloInfo } from '../grain/grain.ts';
import { grainId, OBSERVER_TYPE, type GrainId } from '../grain/identity.ts';
import type { GrainTypeInfo, MethodInfo } from '../grain/options.ts';
import { makeRef, RefCore, type GrainRefBase, type Invoker } from '../grain/ref.ts';
import type { CallerContext, ChainNode } from '../messaging/call-chain.ts';
import { Message, MessageKind, type RemoteReply } from '../messaging/message.ts';
import { OutgoingCall, type OutgoingCallFilter } from '../messaging/filters.ts';
import {
  RequestFlags,
  ResponseStatus,
  decodeRequestArgs,
  decodeRequestContext,
  type RequestHeader,
} from '../messaging/protocol.ts';
import {
  contextForLocalCall,
  contextFromWire,
  contextInUse,
  currentContext,
  leaveFirstUse,
  runInContext,
  type ContextValues,
} from '../messaging/request-context.ts';
import { copyArgs } from '../serialization/codec.ts';
import type { CodecContext } from '../serialization/symbols.ts';
import { Activation, currentActivation, failingTarget, type Target } from './activation.ts';
import type { CallTracker } from './call-tracker.ts';
import type { Catalog, LocalTarget } from './catalog.ts';
import type { SiloCluster } from './cluster.ts';
import { unknownMethod, type GrainTypes } from './grain-types.ts';
import { observerMethod, type Observers } from './observers.ts';

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
      const here: { stack?: string } = {};
      Error.captureStackTrace(here);
      // Drop the message line and this function's own frame.
      const frames = (here.stack ?? '').split('\n').slice(2).join('\n');
      if (frames !== '') e.stack = `${e.stack}\n    --- the call, on the caller's side ---\n${frames}`;
    }
    throw e;
  }
}

/** Call options of the silo. */
export interface DispatchOptions {
  readonly responseTimeoutMs: number;
  readonly maxForwardCount: number;
  readonly callerStacks: boolean;
  /** Filters around every call a grain or the silo makes; empty for none. */
  readonly outgoingFilters: readonly OutgoingCallFilter[];
}

const noArgs: unknown[] = [];
function runOutgoing(this: OutgoingCall): Promise<unknown> {
  return this.run();
}

/** What the dispatcher needs from the silo. */
export interface DispatchHost {
  readonly siloInfo: SiloInfo;
  /** Where references revived outside any activation are bound. */
  readonly codecContext: CodecContext;
}

/** Routes and delivers the calls of one silo. */
export class Dispatcher implements Invoker {
  readonly #host: DispatchHost;
  readonly #options: DispatchOptions;
  readonly #types: GrainTypes;
  readonly #catalog: Catalog;
  readonly #calls: CallTracker;
  readonly #observers: Observers;
  /** The outgoing filters; undefined when there are none. */
  readonly #outgoing: readonly OutgoingCallFilter[] | undefined;
  /** The cluster layer of a networked silo. */
  cluster: SiloCluster | undefined;

  constructor(
    host: DispatchHost,
    options: DispatchOptions,
    types: GrainTypes,
    catalog: Catalog,
    calls: CallTracker,
    observers: Observers,
  ) {
    this.#host = host;
    this.#options = options;
    this.#types = types;
    this.#catalog = catalog;
    this.#calls = calls;
    this.#observers = observers;
    this.#outgoing = options.outgoingFilters.length === 0 ? undefined : options.outgoingFilters;
  }

  // ---- References -----------------------------------------------------------

  getGrain(type: GrainClass | string, key: string, caller: CallerContext | undefined): GrainRefBase<unknown> {
    if (typeof key !== 'string') throw new ConfigurationError(`a grain key is a string, got ${typeof key}`);
    if (typeof type === 'string') return this.ref(type, key, caller);
    const info = this.#types.ofClass(type);
    return makeRef(new RefCore(grainId(info.name, key), info.idPrefix + key, info, this, caller, undefined));
  }

  ref(type: string, key: string, caller: CallerContext | undefined): GrainRefBase<unknown> {
    const info = this.#types.get(type);
    const idStr = info === undefined ? `${type}/${key}` : info.idPrefix + key;
    return makeRef(new RefCore(grainId(type, key), idStr, info, this, caller, undefined));
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
    return this.#call(
      new RefCore(grainId(typeName, key), `${typeName}/${key}`, type, this, undefined, undefined),
      type.reminder,
      args,
      undefined,
    );
  }

  /**
   * Where batches of stream items for grain `typeName/key` go, wherever it
   * lives (see grain/stream-consumer.ts). Made once per subscriber: its
   * reference keeps the grain's route, as a grain's own references do.
   */
  streamDeliverer(typeName: string, key: string): (args: unknown[]) => Promise<unknown> {
    const type = this.#types.get(typeName);
    if (type === undefined) {
      return () =>
        Promise.reject(
          new UnknownGrainTypeError(
            `stream items for grain ${typeName}/${key} cannot be delivered: this silo does not know grain type '${typeName}'`,
          ),
        );
    }
    const core = new RefCore(grainId(typeName, key), `${typeName}/${key}`, type, this, undefined, undefined);
    return (args) => this.#call(core, type.stream, args, undefined);
  }

  /** Delivers a broadcast channel item to grain `typeName/key` (see streams/channels.ts). */
  deliverChannel(typeName: string, key: string, args: unknown[]): Promise<unknown> {
    const type = this.#types.get(typeName);
    if (type === undefined) {
      return Promise.reject(
        new UnknownGrainTypeError(
          `a channel item for grain ${typeName}/${key} cannot be delivered: this silo does not know grain type '${typeName}'`,
        ),
      );
    }
    return this.#call(
      new RefCore(grainId(typeName, key), `${typeName}/${key}`, type, this, undefined, undefined),
      type.channel,
      args,
      undefined,
    );
  }

  // ---- Calls from references ---------------------------------------------------

  invoke(core: RefCore, method: MethodInfo | string, args: unknown[]): Promise<unknown> {
    const caller = core.caller ?? currentActivation;
    const filters = this.#outgoing;
    if (filters === undefined) return this.#call(core, method, args, caller);
    const call = new OutgoingCall(
      filters,
      core.id,
      typeof method === 'string' ? method : method.name,
      caller instanceof Activation ? caller.id : undefined,
      args,
      (a) => this.#call(core, method, a, caller),
    );
    // The chain runs in its own request context: a filter's RequestContext.set reaches the call, not the caller.
    if (contextInUse) return runInContext(currentContext(), runOutgoing, call, noArgs) as Promise<unknown>;
    try {
      return call.run();
    } finally {
      // The process's first RequestContext.set happened in a filter, outside any frame: take it back out.
      if (contextInUse) leaveFirstUse();
    }
  }

  /** A call past the outgoing filters: route it and hand it to its target. */
  #call(
    core: RefCore,
    method: MethodInfo | string,
    args: unknown[],
    caller: CallerContext | undefined,
  ): Promise<unknown> {
    let type = core.type;
    if (type === undefined) {
      type = this.#types.get(core.id.type);
      if (type === undefined && core.id.type === OBSERVER_TYPE)
        return this.#callObserver(core, typeof method === 'string' ? method : method.name, args, caller);
      if (type === undefined) {
        return Promise.reject(this.#types.unknownType(core.id.type, core.idStr, this.#host.siloInfo.address));
      }
    }
    let m: MethodInfo;
    if (typeof method === 'string') {
      const found = type.methods.get(method);
      if (found === undefined) return Promise.reject(unknownMethod(type, method, core.idStr));
      m = found;
    } else m = method;
    if (this.#catalog.stopping && this.cluster === undefined) {
      // A stopping silo takes no new work from outside, and makes no new activations; calls in
      // flight between its grains still reach the activations that are draining.
      const existing = this.#catalog.get(core.idStr);
      if (caller === undefined || existing === undefined || !existing.live) {
        return Promise.reject(
          new SiloStoppedError(
            `silo ${this.#host.siloInfo.address} is stopping: call to ${core.idStr}.${m.name} refused`,
          ),
        );
      }
    }
    const context = contextInUse ? currentContext() : undefined;
    let target = core.target as Target | undefined;
    if (target === undefined || !target.live) {
      target = this.#route(core.id, core.idStr, type, context);
      if (target.remote !== true) core.target = target;
      else if (this.cluster !== undefined) core.target = this.cluster.keep(target);
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
        this.#catalog.discardUnused(target as LocalTarget);
        return Promise.reject(e);
      }
    }
    const timeoutMs = core.options?.timeoutMs ?? this.#options.responseTimeoutMs;
    if (m.oneWay) {
      const msg = new Message(MessageKind.OneWay, core.idStr, m, args, undefined, caller, timeoutMs);
      if (context !== undefined) msg.context = target.remote === true ? context : contextForLocalCall(context);
      if (signal !== undefined && !this.#calls.attachSignal(msg, signal)) {
        if (target.remote !== true) this.#catalog.discardUnused(target as LocalTarget);
        return Promise.resolve(undefined);
      }
      target.receive(msg);
      return Promise.resolve(undefined);
    }
    const msg = new Message(
      MessageKind.Call,
      core.idStr,
      m,
      args,
      caller === undefined ? undefined : caller.callChain(),
      caller,
      timeoutMs,
    );
    if (context !== undefined) msg.context = target.remote === true ? context : contextForLocalCall(context);
    const p = msg.promise();
    this.#calls.track(msg);
    if (signal === undefined || this.#calls.attachSignal(msg, signal)) target.receive(msg);
    else if (target.remote !== true) this.#catalog.discardUnused(target as LocalTarget);
    return this.#options.callerStacks ? withCallerStack(p) : p;
  }

  /** A call to an observer: to this silo's own, or through the client's gateway (always encoded). */
  #callObserver(core: RefCore, name: string, args: unknown[], caller: CallerContext | undefined): Promise<unknown> {
    const msg = new Message(
      MessageKind.Call,
      core.idStr,
      observerMethod(name),
      args,
      caller?.callChain(),
      caller,
      core.options?.timeoutMs ?? this.#options.responseTimeoutMs,
    );
    const p = msg.promise();
    this.#calls.track(msg);
    this.#observerTarget(core.id.key).receive(msg);
    return p;
  }

  #observerTarget(key: string): Target {
    return this.#observers.target(key) ?? this.cluster?.observerTarget(key) ?? this.#observers.unreachable(key);
  }

  /**
   * The target of a call: the local activation, else (in a cluster) the silo
   * the directory cache or placement names, else a new local activation.
   */
  #route(id: GrainId, idStr: string, type: GrainTypeInfo, context: ContextValues | undefined): Target {
    const t = this.#catalog.get(idStr);
    if (t !== undefined && (t.live || !this.#catalog.stopping)) return t;
    const cluster = this.cluster;
    const stopping = this.#catalog.stopping;
    if (type.maxLocalWorkers > 0) {
      // Stateless workers live on the caller's silo, unless it is stopping.
      if (stopping && cluster !== undefined) return cluster.route(idStr, type, id, context) ?? this.#refuse(idStr);
    } else if (cluster !== undefined) {
      const remote = cluster.route(idStr, type, id, context);
      if (remote !== undefined) return remote;
      if (stopping) return this.#refuse(idStr);
    }
    return this.#catalog.create(id, idStr, type);
  }

  #refuse(idStr: string): Target {
    return failingTarget(
      this.#calls,
      () => new SiloStoppedError(`silo ${this.#host.siloInfo.address} is stopping and no other silo can take ${idStr}`),
    );
  }

  #systemMethod(type: GrainTypeInfo, name: string): MethodInfo | undefined {
    if (name === 'receiveReminder') return type.reminder;
    if (name === STREAM_METHOD) return type.stream;
    if (name === CHANNEL_METHOD) return type.channel;
    return undefined;
  }

  /** Delivers a call whose activation went away before running it. */
  redispatch(msg: Message): void {
    // Re-queueing on this silo is no hop: each new activation runs at least the call that made it, so this ends.
    if (msg.done || msg.kind === MessageKind.Tick) return;
    if (this.#catalog.stopping && this.cluster === undefined) {
      this.#calls.fail(
        msg,
        new SiloStoppedError(
          `silo ${this.#host.siloInfo.address} stopped before the call to ${msg.targetId}.${msg.method.name} could run`,
        ),
      );
      return;
    }
    const slash = msg.targetId.indexOf('/');
    const typeName = msg.targetId.slice(0, slash);
    // A call to an observer whose silo could not be reached: routed as observer calls are (it fails if the observer is gone).
    if (typeName === OBSERVER_TYPE) return this.#observerTarget(msg.targetId.slice(slash + 1)).receive(msg);
    const type = this.#types.get(typeName) as GrainTypeInfo;
    this.#route(grainId(type.name, msg.targetId.slice(slash + 1)), msg.targetId, type, msg.context).receive(msg);
  }

  /** Sends a call on to another silo, counting the hop. */
  forward(msg: Message, address: string): void {
    if (msg.done) return;
    if (++msg.hops > this.#options.maxForwardCount || this.cluster === undefined) {
      this.#calls.fail(msg, this.#forwardLimit(msg.targetId, msg.method.name, msg.hops - 1));
      return;
    }
    msg.reply?.relocated(msg.targetId, address);
    this.cluster.send(msg, address);
  }

  #forwardLimit(targetId: string, method: string, hops: number): ForwardLimitError {
    return new ForwardLimitError(
      `call to ${targetId}.${method} was forwarded ${hops} times without reaching an activation (limit maxForwardCount ${this.#options.maxForwardCount})`,
    );
  }

  // ---- Calls from the wire ---------------------------------------------------------

  /**
   * Delivers a call that came over the wire (from a silo or a client through this
   * gateway); `h` was read from `buf`, which holds the arguments where `h` says.
   */
  receiveRemote(h: RequestHeader, buf: Buffer, reply: RemoteReply | undefined, conn: object): void {
    // A silo that sent the call here placed it here: activate here and let the directory decide.
    // A client's call (through this gateway) is placed as a local call would be.
    const fromSilo = (conn as { peer?: { role?: string } }).peer?.role === 'silo';
    const stopping = this.#catalog.stopping;
    let context: ContextValues | undefined;
    if ((h.flags & RequestFlags.Context) !== 0) {
      try {
        context = contextFromWire(decodeRequestContext(buf, h, this.#host.codecContext));
      } catch (e) {
        reply?.respond(h.reqId, ResponseStatus.Error, e);
        return;
      }
    }
    // The common case first: the grain is here.
    let target: Target | undefined = this.#catalog.get(h.targetId);
    let type: GrainTypeInfo | undefined;
    if (target !== undefined && target.live && !stopping) type = (target as LocalTarget).type;
    else {
      target = undefined;
      const slash = h.targetId.indexOf('/');
      const typeName = slash < 0 ? h.targetId : h.targetId.slice(0, slash);
      const key = slash < 0 ? '' : h.targetId.slice(slash + 1);
      type = this.#types.get(typeName);
      if (type === undefined && typeName === OBSERVER_TYPE) {
        this.#relayToObserver(h, buf, reply, key);
        return;
      }
      if (type === undefined) {
        reply?.respond(
          h.reqId,
          ResponseStatus.Error,
          this.#types.unknownType(typeName, h.targetId, this.#host.siloInfo.address),
        );
        return;
      }
      const id = grainId(typeName, key);
      target =
        fromSilo && !stopping
          ? this.#catalog.getOrCreate(id, h.targetId, type)
          : this.#route(id, h.targetId, type, context);
    }
    // receiveReminder and stream deliveries are not callable by clients; the services of other silos call them.
    const m = type.methods.get(h.method) ?? (fromSilo ? this.#systemMethod(type, h.method) : undefined);
    if (m === undefined) {
      if (target.remote !== true) this.#catalog.discardUnused(target as LocalTarget);
      reply?.respond(h.reqId, ResponseStatus.Error, unknownMethod(type, h.method, h.targetId));
      return;
    }
    let args: unknown[];
    try {
      args = decodeRequestArgs(
        buf,
        h,
        target.remote === true ? this.#host.codecContext : (target as unknown as CodecContext),
      );
    } catch (e) {
      if (target.remote !== true) this.#catalog.discardUnused(target as LocalTarget);
      reply?.respond(h.reqId, ResponseStatus.Error, e);
      return;
    }
    let chain: ChainNode | undefined;
    if (h.chain !== null)
      for (let i = h.chain.length - 1; i >= 0; i--) chain = { id: h.chain[i] as string, parent: chain };
    const msg = new Message(
      reply === undefined ? MessageKind.OneWay : MessageKind.Inbound,
      h.targetId,
      m,
      args,
      chain,
      undefined,
      h.timeoutMs > 0 ? h.timeoutMs : this.#options.responseTimeoutMs,
    );
    msg.hops = h.hops;
    msg.reply = reply;
    msg.replyId = h.reqId;
    msg.context = context;
    if ((h.flags & RequestFlags.Signal) !== 0) this.#calls.attachRemoteSignal(msg, conn);
    if (reply !== undefined) this.#calls.track(msg);
    if (target.remote === true && fromSilo) msg.hops++;
    if (msg.hops > this.#options.maxForwardCount) {
      this.#calls.fail(msg, this.#forwardLimit(h.targetId, h.method, msg.hops));
      return;
    }
    target.receive(msg);
  }

  /** A call to an observer that came over the wire: to this silo's own, or on towards the client's gateway. */
  #relayToObserver(h: RequestHeader, buf: Buffer, reply: RemoteReply | undefined, key: string): void {
    let args: unknown[];
    try {
      args = decodeRequestArgs(buf, h, this.#host.codecContext);
    } catch (e) {
      reply?.respond(h.reqId, ResponseStatus.Error, e);
      return;
    }
    const msg = new Message(
      reply === undefined ? MessageKind.OneWay : MessageKind.Inbound,
      h.targetId,
      observerMethod(h.method),
      args,
      undefined,
      undefined,
      h.timeoutMs > 0 ? h.timeoutMs : this.#options.responseTimeoutMs,
    );
    msg.hops = h.hops + 1;
    msg.reply = reply;
    msg.replyId = h.reqId;
    if (reply !== undefined) this.#calls.track(msg);
    this.#observerTarget(key).receive(msg);
  }

  /** Forwards the calls queued on an activation that lost its registration to one on `winner`. */
  forwardAll(queued: Message[], winner: string): void {
    for (const m of queued) this.forward(m, winner);
  }
}
