// ClusterClient: an external client of a cluster. It connects to gateways
// (given, or read from the membership table), spreads requests over them,
// notices a gateway's death and moves to the others. Every routing decision
// is the gateway's: a client only needs grain type names.

import { outgoingTracing, tracerOf, type TracingOption } from '../observability/tracing.ts';
import { OutgoingCall, type OutgoingCallFilter } from '../messaging/filters.ts';
import {
  contextFromWire,
  contextInUse,
  currentContext,
  leaveFirstUse,
  runInContext,
  type ContextValues,
} from '../messaging/request-context.ts';
import { randomUUID } from 'node:crypto';
import {
  CancelledError,
  ConfigurationError,
  ErrorCodes,
  GranaryError,
  OverloadedError,
  SiloUnavailableError,
  TimeoutError,
  UnknownGrainTypeError,
  UnknownMethodError,
} from '../errors.ts';
import { Grain, type GrainClass } from '../grain/grain.ts';
import { grainId, OBSERVER_TYPE } from '../grain/identity.ts';
import { grainTypeInfo, type GrainTypeInfo, type MethodInfo } from '../grain/options.ts';
import { makeRef, RefCore, type GrainRef, type GrainRefBase, type ObserverRef, type Invoker } from '../grain/ref.ts';
import type { MembershipTable, SiloEntry, SiloStatus } from '../membership/table.ts';
import { Deadlines } from '../messaging/deadlines.ts';
import {
  Frame,
  RequestFlags,
  ResponseStatus,
  decodeRequestArgs,
  decodeRequestContext,
  contextBytes,
  decodeRequestHeader,
  encodeSystemCall,
  requestArgs,
  smallArgs,
  rejectionOf,
  requestHeadOf,
  responseBody,
  responseHeadBytes,
  responseId,
  responseStatus,
  responseValue,
  targetBytes,
} from '../messaging/protocol.ts';
import { PendingCalls } from '../messaging/pending-calls.ts';
import {
  checkSystemCallResult,
  settleSystemResult,
  type SystemCallArgs,
  type SystemCallName,
  type SystemCallResult,
} from '../messaging/system-calls.ts';
import type { DashboardSource } from '../observability/dashboard/model.ts';
import { defaultLogger, type Logger } from '../observability/logger.ts';
import type { CodecContext, RefIdentity } from '../serialization/symbols.ts';
import { encode } from '../serialization/codec.ts';
import { Connector, type Connection, type ConnectionHandler, type TransportLimits } from '../transport/index.ts';
import { availableParallelism } from 'node:os';
import { checkedId, type BroadcastChannel, type Stream } from '../streams/types.ts';
import { STREAM_WORKER_TYPE } from '../streams/worker.ts';
import { ClientStreams } from './streams.ts';

/** Options of `ClusterClient.connect`. Give `gateways` or `membership`. */
export interface ClusterClientOptions {
  /** The cluster to join; gateways of other clusters refuse the handshake. */
  clusterId: string;
  /** Gateway addresses, `host:port`. */
  gateways?: string[];
  /** Or a membership table to read the active silos' gateways from. */
  membership?: MembershipTable;
  /** Deadline of a call, in ms. Default 30 000. */
  responseTimeoutMs?: number;
  /** How often the gateway list is re-read from the membership table, in ms. Default 5000. */
  gatewayRefreshIntervalMs?: number;
  /** How long connect() tries to reach a first gateway, in ms. Default 10 000. */
  connectTimeoutMs?: number;
  transport?: TransportLimits;
  logger?: Logger;
  /** Filters around every call the client makes, outermost first (see docs/filters.md). Default: none. */
  outgoingFilters?: OutgoingCallFilter[];
  /**
   * OpenTelemetry spans for the client's calls, their context sent with each
   * call: `true` (the default) uses the global tracer provider if an SDK
   * registered one before connect; `false` turns it off; `{ tracerProvider }`.
   */
  tracing?: TracingOption;
}

const noopFn = (): undefined => undefined;
const noArgs: unknown[] = [];
function runOutgoing(this: OutgoingCall): Promise<unknown> {
  return this.run();
}
const noop = (): void => {};

let capturedResolve: (v: unknown) => void = noop;
let capturedReject: (e: unknown) => void = noop;
function capture(res: (v: unknown) => void, rej: (e: unknown) => void): void {
  capturedResolve = res;
  capturedReject = rej;
}

/** A call in flight from this client: what a response, a deadline or a cancel needs, and no more. */
// Fields are `declare`d and set in the constructor only: one shape, no define-semantics cost per call.
/** Times a call refused unrun by a stopping gateway is sent again through another. */
const MAX_REFUSALS = 3;

/** The body of a request whose arguments went into its header. */
const NO_BODY = new Uint8Array(0);

class ClientCall {
  declare readonly targetId: string;
  declare readonly method: MethodInfo;
  declare readonly args: unknown[];
  declare readonly timeoutMs: number;
  declare epoch: number;
  declare resolve: (v: unknown) => void;
  declare reject: (e: unknown) => void;
  declare done: boolean;
  /** The gateway it went through, and its request id there. */
  declare via: string | undefined;
  declare reqId: number;
  declare cancel: { readonly callerSignal: AbortSignal; readonly listener: () => void } | undefined;
  /** The request context the call carries. */
  declare context: ContextValues | undefined;
  /** What the call is sent with again when a stopping gateway refused it unrun. */
  declare signal: AbortSignal | undefined;
  declare target: Buffer | undefined;
  /** Times a stopping gateway refused it. */
  declare refusals: number;
  declare prev: ClientCall | undefined;
  declare next: ClientCall | undefined;

  constructor(targetId: string, method: MethodInfo, args: unknown[], timeoutMs: number) {
    this.targetId = targetId;
    this.method = method;
    this.args = args;
    this.timeoutMs = timeoutMs;
    this.epoch = 0;
    this.resolve = noop;
    this.reject = noop;
    this.done = false;
    this.via = undefined;
    this.reqId = 0;
    this.cancel = undefined;
    this.context = undefined;
    this.signal = undefined;
    this.target = undefined;
    this.refusals = 0;
    this.prev = undefined;
    this.next = undefined;
  }

  promise(): Promise<unknown> {
    const p = new Promise(capture);
    this.resolve = capturedResolve;
    this.reject = capturedReject;
    return p;
  }
}

export type { ObserverRef };

/** The cluster as the silo behind one gateway sees it (`ClusterClient.clusterStatus`). */
export interface ClusterStatus {
  /** The silo that answered. */
  readonly silo: string;
  /** The membership table as that silo read it just now: every row, dead silos' too. */
  readonly members: readonly SiloEntry[];
  /**
   * Activations by silo address, as placement sees them there: the answering
   * silo's count now, the others' as they last reported it (every
   * `loadReportIntervalMs`). A silo that has not reported yet is missing.
   */
  readonly activations: ReadonlyMap<string, number>;
}

/** A system call this client waits on. */
interface SystemPending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  readonly timer: NodeJS.Timeout;
  /** The gateway it went to. */
  readonly via: string | undefined;
}

/** A client connected to a cluster through its gateways. */
export class ClusterClient implements Invoker, ConnectionHandler {
  readonly id: string;
  readonly #opts: ClusterClientOptions;
  readonly #logger: Logger;
  readonly #connector: Connector;
  readonly #deadlines: Deadlines<ClientCall>;
  /** Calls waiting for a response, by request id (even ids, in sequence: see PendingCalls). */
  readonly #pending = new PendingCalls<ClientCall>();
  readonly #methods = new Map<string, MethodInfo>();
  readonly #types = new Map<object, GrainTypeInfo>();
  readonly #rootCtx: CodecContext;
  readonly #observers = new Map<string, object>();
  #observerSeq = 0;
  #gateways: string[] = [];
  /** Open gateway connections, in the order they opened; calls go round robin over them. */
  #open: Connection[] = [];
  /** Gateways that said their silo is stopping: tried last when none is open. */
  readonly #leavingGateways = new Set<string>();
  #next = 0;
  #reqSeq = 0;
  readonly #sysPending = new Map<number, SystemPending>();
  #sysSeq = 0;
  #refresh: NodeJS.Timeout | undefined;
  #closed = false;
  /** The outgoing filters; undefined when there are none. */
  readonly #outgoing: readonly OutgoingCallFilter[] | undefined;

  private constructor(opts: ClusterClientOptions) {
    this.#opts = opts;
    const tracer = tracerOf(opts.tracing);
    const filters = [
      ...(tracer === undefined ? [] : [outgoingTracing(tracer, 'client')]),
      ...(opts.outgoingFilters ?? []),
    ];
    this.#outgoing = filters.length > 0 ? Object.freeze(filters) : undefined;
    this.id = `client-${randomUUID()}`;
    this.#logger = (opts.logger ?? defaultLogger()).child({ client: this.id });
    this.#deadlines = new Deadlines((m) => this.#expire(m));
    this.#rootCtx = { reviveRef: (r: RefIdentity) => this.#ref(r.type, r.key) };
    this.#connector = new Connector({
      hello: { clusterId: opts.clusterId, address: this.id, generation: Date.now(), role: 'client' },
      handler: this,
      ...(opts.transport !== undefined ? { limits: opts.transport } : {}),
      logger: this.#logger,
      onConnection: (c) => {
        this.#open.push(c);
        void c.closed.then(() => this.#lost(c));
        // A gateway that said it is leaving was kept only for want of another: now there is one.
        if (this.#leavingGateways.size > 0) this.#retireLeaving();
      },
    });
  }

  /** Connects to a cluster; resolves once a gateway answered. */
  static async connect(options: ClusterClientOptions): Promise<ClusterClient> {
    if (typeof options?.clusterId !== 'string' || options.clusterId === '')
      throw new ConfigurationError('ClusterClient.connect needs a clusterId');
    const filters: unknown = options.outgoingFilters;
    if (filters !== undefined && (!Array.isArray(filters) || filters.some((f) => typeof f !== 'function')))
      throw new ConfigurationError(
        'ClusterClient option outgoingFilters must be an array of filter functions (ctx) => Promise<void>',
      );
    const tracing: unknown = options.tracing;
    if (
      tracing !== undefined &&
      typeof tracing !== 'boolean' &&
      typeof (tracing as { tracerProvider?: { getTracer?: unknown } })?.tracerProvider?.getTracer !== 'function'
    )
      throw new ConfigurationError(
        'ClusterClient option tracing must be true, false or { tracerProvider } (an OpenTelemetry TracerProvider)',
      );
    if ((options.gateways === undefined || options.gateways.length === 0) && options.membership === undefined) {
      throw new ConfigurationError(
        'ClusterClient.connect needs gateways (host:port list) or a membership table to find them',
      );
    }
    const c = new ClusterClient(options);
    try {
      await c.#start();
    } catch (e) {
      await c.close();
      throw e;
    }
    return c;
  }

  async #start(): Promise<void> {
    const o = this.#opts;
    if (o.membership !== undefined) {
      await o.membership.init({ clusterId: o.clusterId, logger: this.#logger });
      await this.#readGateways();
      this.#refresh = setInterval(() => {
        this.#readGateways().then(
          () => this.#connectNew(),
          (e: unknown) => this.#logger.warn({ err: e }, 'could not read gateways from the membership table'),
        );
      }, o.gatewayRefreshIntervalMs ?? 5000);
      this.#refresh.unref();
    }
    if (o.gateways !== undefined) this.#gateways = [...new Set([...this.#gateways, ...o.gateways])];
    const deadline = Date.now() + (o.connectTimeoutMs ?? 10_000);
    for (;;) {
      const results = await Promise.allSettled(this.#gateways.map((g) => this.#connector.get(g)));
      if (results.some((r) => r.status === 'fulfilled')) return;
      if (Date.now() > deadline) {
        const why = results
          .map((r, i) => `${this.#gateways[i]}: ${r.status === 'rejected' ? (r.reason as Error).message : 'ok'}`)
          .join('; ');
        throw new SiloUnavailableError(
          `no gateway of cluster '${o.clusterId}' could be reached (${why || 'no gateways known'})`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
      if (o.membership !== undefined) await this.#readGateways().catch(() => undefined);
    }
  }

  async #readGateways(): Promise<void> {
    const snap = await (this.#opts.membership as MembershipTable).readAll();
    const found = snap.entries
      .filter((e) => e.entry.status === 'Active' && e.entry.gatewayAddress !== null)
      .map((e) => e.entry.gatewayAddress as string);
    this.#gateways = [...new Set([...found, ...(this.#opts.gateways ?? [])])];
  }

  /** Opens connections to known gateways that have none (new silos), so calls spread over them too. */
  #connectNew(): void {
    if (this.#closed) return;
    for (const g of this.#gateways) {
      const c = this.#connector.peek(g);
      if (c === undefined || !c.isOpen) this.#connector.get(g).catch(() => undefined); // retried at the next read
    }
  }

  /** Gateways this client knows. */
  get gateways(): readonly string[] {
    return this.#gateways;
  }

  /** A reference to a grain, by class or by type name. */
  getGrain<T extends Grain>(type: GrainClass<T>, key: string): GrainRef<T>;
  getGrain<T>(type: string, key: string): GrainRef<T>;
  getGrain(type: GrainClass | string, key: string): unknown {
    if (typeof key !== 'string') throw new ConfigurationError(`a grain key is a string, got ${typeof key}`);
    if (typeof type === 'string') return this.#ref(type, key);
    let info = this.#types.get(type);
    if (info === undefined) {
      if (typeof type !== 'function' || !(type.prototype instanceof Grain))
        throw new UnknownGrainTypeError(`${String(type)} is not a grain class`);
      info = grainTypeInfo(type as new () => object, Grain.prototype, availableParallelism());
      this.#types.set(type, info);
    }
    return makeRef(new RefCore(grainId(info.name, key), `${info.name}/${key}`, info, this, undefined, undefined));
  }

  /**
   * Makes an object that grains can call back: pass the result to a grain (as
   * an argument, or kept in its state); its calls reach `impl` here, through
   * the gateway this client used when it made it. `dispose()` stops delivery.
   */
  createObserver<T extends object>(impl: T): ObserverRef<T> {
    if (impl === null || typeof impl !== 'object')
      throw new ConfigurationError('createObserver takes an object whose methods grains will call');
    const gw = this.#gateway();
    if (gw === undefined)
      throw new SiloUnavailableError('no gateway is connected: an observer needs one to be reached through');
    const key = `${this.id}.${++this.#observerSeq}@${gw.peer?.address ?? ''}`;
    this.#observers.set(key, impl);
    const ref = this.#ref(OBSERVER_TYPE, key) as ObserverRef<T>;
    Object.defineProperty(ref, 'dispose', { value: () => void this.#observers.delete(key), enumerable: false });
    return ref;
  }

  #streams: ClientStreams | undefined;

  /**
   * A handle to stream `key` in `namespace` of the cluster's stream provider
   * `provider`: publish through the gateways, subscribe with any function
   * (the subscription ends when the client closes or goes away).
   */
  getStream<T>(provider: string, namespace: string, key: string): Stream<T> {
    this.#streams ??= new ClientStreams({
      id: this.id,
      logger: this.#logger,
      grain: (type, key) => this.#ref(type, key),
      createObserver: (impl) => this.createObserver(impl),
    });
    return this.#streams.getStream<T>(provider, namespace, key);
  }

  /** A handle to broadcast channel `key` of `namespace`: publishing goes through a gateway. */
  getChannel<T>(namespace: string, key: string): BroadcastChannel<T> {
    const { namespace: ns, key: k } = checkedId('broadcast', namespace, key);
    const id = { namespace: ns, key: k };
    const worker = this.#ref(STREAM_WORKER_TYPE, '') as unknown as { broadcast(c: unknown, i: unknown): Promise<void> };
    return { id, publish: (item: T) => worker.broadcast(id, item) };
  }

  #ref(type: string, key: string): GrainRefBase<unknown> {
    return makeRef(new RefCore(grainId(type, key), `${type}/${key}`, undefined, this, undefined, undefined));
  }

  ref(type: string, key: string): GrainRefBase<unknown> {
    return this.#ref(type, key);
  }

  #method(name: string): MethodInfo {
    let m = this.#methods.get(name);
    if (m === undefined)
      this.#methods.set(name, (m = { name, fn: noopFn, readOnly: false, alwaysInterleave: false, oneWay: false }));
    return m;
  }

  /** The next open gateway connection, round robin. */
  #gateway(): Connection | undefined {
    const open = this.#open;
    const n = open.length;
    for (let i = 0; i < n; i++) {
      let k = this.#next + i;
      if (k >= n) k -= n;
      const c = open[k] as Connection;
      if (c.isOpen) {
        this.#next = k + 1 >= n ? 0 : k + 1;
        return c;
      }
    }
    return undefined;
  }

  invoke(core: RefCore, method: MethodInfo | string, args: unknown[]): Promise<unknown> {
    const filters = this.#outgoing;
    if (filters === undefined) return this.#call(core, method, args);
    const call = new OutgoingCall(
      filters,
      core.id,
      typeof method === 'string' ? method : method.name,
      undefined,
      args,
      (a) => this.#call(core, method, a),
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

  /** A call past the outgoing filters. */
  #call(core: RefCore, method: MethodInfo | string, args: unknown[]): Promise<unknown> {
    if (this.#closed) return Promise.reject(new SiloUnavailableError('the client is closed'));
    const m = typeof method === 'string' ? this.#method(method) : method;
    const n = args.length;
    let signal: AbortSignal | undefined;
    if (n > 0 && args[n - 1] instanceof AbortSignal) {
      signal = args[n - 1] as AbortSignal;
      args.length = n - 1;
      if (signal.aborted)
        return Promise.reject(
          new CancelledError(`call to ${core.idStr}.${m.name} was cancelled before it was sent`, {
            cause: signal.reason,
          }),
        );
    }
    // The reference keeps its target's header bytes (core.target is the invoker's to use).
    let target = core.target as Buffer | undefined;
    if (target === undefined) {
      try {
        core.target = target = targetBytes(core.idStr);
      } catch (e) {
        return Promise.reject(e);
      }
    }
    const msg = new ClientCall(core.idStr, m, args, core.options?.timeoutMs ?? this.#opts.responseTimeoutMs ?? 30_000);
    if (contextInUse) msg.context = currentContext();
    const p = m.oneWay ? Promise.resolve(undefined) : msg.promise();
    const conn = this.#gateway();
    if (conn !== undefined) this.#send(conn, msg, signal, target);
    else this.#sendWhenOpen(msg, signal, target, undefined);
    return p;
  }

  /**
   * No gateway to send through right now (reconnects are under way, or the only
   * one open is `avoid`): waits for one of the others, within the deadline.
   */
  #sendWhenOpen(msg: ClientCall, signal: AbortSignal | undefined, target: Buffer, avoid: Connection | undefined): void {
    const staying = this.#gateways.filter((g) => !this.#leavingGateways.has(g) && g !== avoid?.peer?.address);
    const tryAll = (staying.length > 0 || avoid !== undefined ? staying : this.#gateways).map((g) =>
      this.#connector.get(g),
    );
    Promise.any(tryAll).then(
      (c) => this.#send(c, msg, signal, target),
      () =>
        this.#fail(
          msg,
          new SiloUnavailableError(
            `no gateway reachable for the call to ${msg.targetId}.${msg.method.name} (${this.#gateways.join(', ') || 'none known'})`,
          ),
        ),
    );
  }

  /**
   * A stopping gateway refused the call before it ran (it had sent Leaving
   * first, on the same connection, so it is out of the rotation now): the call
   * goes again through another gateway, a few times at most. False when
   * there is no other gateway: the caller then gets the refusal.
   */
  #sendElsewhere(msg: ClientCall, from: Connection): boolean {
    const conn = this.#gateway();
    const others =
      conn !== undefined && conn !== from
        ? true
        : this.#gateways.some((g) => !this.#leavingGateways.has(g) && g !== from.peer?.address);
    // No other gateway to go through: the caller gets the refusal, which says so.
    if (!others) return false;
    msg.refusals++;
    this.#deadlines.remove(msg);
    this.#release(msg);
    const target = msg.target as Buffer;
    if (conn !== undefined && conn !== from) this.#send(conn, msg, msg.signal, target);
    else this.#sendWhenOpen(msg, msg.signal, target, from);
    return true;
  }

  #send(conn: Connection, msg: ClientCall, signal: AbortSignal | undefined, target: Buffer): void {
    if (msg.done) return;
    if (conn.backlogged) {
      this.#fail(
        msg,
        new OverloadedError(
          `gateway ${conn.peerName} is not reading (${conn.bufferedBytes} bytes wait to be sent, limit maxQueuedBytes): call to ${msg.targetId}.${msg.method.name} refused`,
        ),
      );
      return;
    }
    const reqId = (this.#reqSeq = (this.#reqSeq + 2) >>> 0 || 2);
    try {
      // Bad arguments, a header that cannot be written or a frame over the limit: refused here, unsent.
      // Small arguments (numbers, short strings...) are written into the header in place.
      const inPlace = smallArgs(msg.args) ? msg.args : undefined;
      const body = inPlace === undefined ? requestArgs(msg.args) : NO_BODY;
      const context = msg.context === undefined ? undefined : contextBytes(msg.context.values);
      conn.sendHead(
        Frame.Request,
        requestHeadOf(
          reqId,
          (msg.method.oneWay ? RequestFlags.OneWay : 0) |
            (signal !== undefined ? RequestFlags.Signal : 0) |
            (context !== undefined ? RequestFlags.Context : 0),
          msg.targetId,
          target,
          msg.method.name,
          msg.timeoutMs,
          null,
          0,
          context,
          inPlace,
        ),
        body,
      );
    } catch (e) {
      this.#fail(msg, e);
      return;
    }
    msg.reqId = reqId;
    msg.via = conn.peer?.address;
    msg.signal = signal;
    msg.target = target;
    if (!msg.method.oneWay) {
      this.#pending.set(reqId, msg);
      this.#deadlines.add(msg);
      if (signal !== undefined) {
        const onAbort = (): void => {
          if (msg.done) return;
          this.#pending.delete(reqId);
          if (conn.state === 'open') conn.send(Frame.Cancel, encode([reqId]));
          this.#fail(
            msg,
            new CancelledError(`call to ${msg.targetId}.${msg.method.name} was cancelled by the caller`, {
              cause: signal.reason,
            }),
          );
        };
        signal.addEventListener('abort', onAbort, { once: true });
        msg.cancel = { callerSignal: signal, listener: onAbort };
      }
    }
  }

  /**
   * The cluster as one gateway's silo sees it: its membership table, read
   * now, and the activation counts silos report to it for placement. For
   * operators' tools; `timeoutMs` defaults to the client's `responseTimeoutMs`.
   */
  async clusterStatus(timeoutMs = this.#opts.responseTimeoutMs ?? 30_000): Promise<ClusterStatus> {
    const [silo, members, loads] = await this.#systemCall('cluster.status', [], timeoutMs);
    return {
      silo,
      members: members.map(([address, generation, status, gateway, hostName, startedAt, iAmAliveAt, votes]) => ({
        address,
        generation,
        status: status as SiloStatus,
        gatewayAddress: gateway,
        hostName,
        startedAt,
        iAmAliveAt,
        suspicions: votes.map(([by, at]) => ({ by, at })),
      })),
      activations: new Map(loads),
    };
  }

  /**
   * What `serveDashboard` reads through this client: the cluster's snapshot,
   * a grain's details and ETag-guarded state edits, each asked of a gateway's
   * silo, which must have its dashboard on (silo option `dashboard`).
   */
  dashboardSource(timeoutMs = this.#opts.responseTimeoutMs ?? 30_000): DashboardSource {
    return {
      cluster: () => this.#systemCall('dashboard.cluster', [], timeoutMs),
      grain: (type, key) => this.#systemCall('dashboard.grain', [type, key], timeoutMs),
      writeState: (type, key, state, etag, json) =>
        this.#systemCall('dashboard.writeState', [type, key, state, etag, json], timeoutMs),
    };
  }

  /** A control-plane call to one gateway's silo (only those in `clientSystemCalls` are answered). */
  async #systemCall<N extends SystemCallName>(
    name: N,
    args: SystemCallArgs<N>,
    timeoutMs: number,
  ): Promise<SystemCallResult<N>> {
    if (this.#closed) throw new SiloUnavailableError('the client is closed');
    let conn = this.#gateway();
    if (conn === undefined) {
      try {
        conn = await Promise.any(this.#gateways.map((g) => this.#connector.get(g)));
      } catch {
        throw new SiloUnavailableError(
          `no gateway reachable for system call ${name} (${this.#gateways.join(', ') || 'none known'})`,
        );
      }
    }
    const via = conn.peer?.address;
    const seq = (this.#sysSeq = (this.#sysSeq + 1) >>> 0 || 1);
    const value = await new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#sysPending.delete(seq);
        reject(new TimeoutError(`system call ${name} to gateway ${via ?? '?'} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.#sysPending.set(seq, { resolve, reject, timer, via });
      (conn as Connection).send(Frame.SystemCall, encodeSystemCall(seq, name, args));
    });
    return checkSystemCallResult(name, value);
  }

  #onSystemResult(body: Buffer): void {
    settleSystemResult(body, this.#sysPending, this.#logger);
  }

  #release(msg: ClientCall): void {
    const c = msg.cancel;
    if (c !== undefined) c.callerSignal.removeEventListener('abort', c.listener);
  }

  #fail(msg: ClientCall, err: unknown): void {
    if (msg.done) return;
    msg.done = true;
    this.#deadlines.remove(msg);
    this.#release(msg);
    msg.reject(err);
  }

  #expire(msg: ClientCall): void {
    if (msg.done) return;
    this.#pending.delete(msg.reqId);
    msg.done = true;
    this.#release(msg);
    msg.reject(new TimeoutError(`call to ${msg.targetId}.${msg.method.name} timed out after ${msg.timeoutMs} ms`));
  }

  onFrame(type: number, buf: Buffer, start: number, end: number, conn: Connection): boolean {
    if (type === Frame.Location) return true; // routing is the gateway's
    if (type === Frame.Leaving) {
      this.#leaving(conn);
      return true;
    }
    if (type === Frame.Request) {
      this.#observerCall(buf, start, end, conn);
      return true;
    }
    if (type === Frame.SystemResult) {
      this.#onSystemResult(buf.subarray(start, end));
      return true;
    }
    if (type !== Frame.Response) return false;
    const reqId = responseId(buf, start, end);
    const status = responseStatus(buf, start);
    const msg = this.#pending.get(reqId);
    if (msg === undefined) return true;
    this.#pending.delete(reqId);
    let value: unknown;
    try {
      value = responseValue(buf, this.#rootCtx, start, end);
    } catch (e) {
      this.#fail(msg, e);
      return true;
    }
    if (msg.done) return true;
    if (status !== ResponseStatus.Ok) {
      value = rejectionOf(status, value);
      if (
        value instanceof GranaryError &&
        value.code === ErrorCodes.SiloStopped &&
        msg.refusals < MAX_REFUSALS &&
        !this.#closed &&
        this.#sendElsewhere(msg, conn)
      )
        return true;
    }
    msg.done = true;
    this.#deadlines.remove(msg);
    this.#release(msg);
    if (status === ResponseStatus.Ok) msg.resolve(value);
    else {
      if (value instanceof Error && typeof value.stack === 'string')
        value.stack += `\n    at <grain call> ${msg.targetId}.${msg.method.name} (through gateway ${msg.via ?? '?'})`;
      msg.reject(value);
    }
    return true;
  }

  /** A grain calls one of this client's observers. */
  #observerCall(buf: Buffer, start: number, end: number, conn: Connection): void {
    const h = decodeRequestHeader(buf, start, end);
    const oneWay = (h.flags & RequestFlags.OneWay) !== 0;
    const respond = (status: number, value: unknown): void => {
      if (oneWay || conn.state !== 'open') return;
      let out: Uint8Array;
      try {
        out = responseBody(status, value);
      } catch (e) {
        status = ResponseStatus.Error;
        out = responseBody(status, e);
      }
      conn.send2(Frame.Response, responseHeadBytes(h.reqId, status), out);
    };
    const key = h.targetId.slice(OBSERVER_TYPE.length + 1);
    const impl = this.#observers.get(key) as Record<string, unknown> | undefined;
    const fn = impl?.[h.method];
    if (impl === undefined || typeof fn !== 'function') {
      respond(
        ResponseStatus.Error,
        new UnknownMethodError(
          impl === undefined
            ? `observer ${key} is disposed or unknown to this client`
            : `observer ${key} has no method '${h.method}'`,
        ),
      );
      return;
    }
    let args: unknown[];
    let context: ContextValues | undefined;
    try {
      args = decodeRequestArgs(buf, h, this.#rootCtx);
      if ((h.flags & RequestFlags.Context) !== 0)
        context = contextFromWire(decodeRequestContext(buf, h, this.#rootCtx));
    } catch (e) {
      respond(ResponseStatus.Error, e);
      return;
    }
    Promise.resolve()
      .then(() =>
        contextInUse
          ? runInContext(context, fn as (...a: unknown[]) => unknown, impl, args)
          : (fn as (...a: unknown[]) => unknown).apply(impl, args),
      )
      .then(
        (v) => respond(ResponseStatus.Ok, v),
        (e: unknown) => respond(ResponseStatus.Error, e),
      );
  }

  /**
   * A gateway said its silo is stopping: new calls go to the other gateways
   * (unless it is the last one), while its calls in flight are still answered.
   */
  #leaving(conn: Connection): void {
    const address = conn.peer?.address;
    if (address !== undefined) this.#leavingGateways.add(address);
    if (this.#open.length === 1 && this.#open[0] === conn) {
      // The last gateway: keep using it until another one opens.
      this.#connectNew();
      return;
    }
    this.#retireLeaving();
  }

  /** Takes gateways that said they are leaving out of the rotation, keeping at least one connection. */
  #retireLeaving(): void {
    for (let i = this.#open.length - 1; i >= 0 && this.#open.length > 1; i--) {
      const address = (this.#open[i] as Connection).peer?.address;
      if (address !== undefined && this.#leavingGateways.has(address)) this.#open.splice(i, 1);
    }
    if (this.#next >= this.#open.length) this.#next = 0;
  }

  /** A gateway connection closed: its calls in flight fail with SiloUnavailableError; new calls go to the others. */
  #lost(conn: Connection): void {
    const i = this.#open.indexOf(conn);
    if (i >= 0) {
      this.#open.splice(i, 1);
      if (this.#next >= this.#open.length) this.#next = 0;
    }
    const address = conn.peer?.address;
    if (address === undefined) return;
    this.#leavingGateways.delete(address);
    if (!this.#closed)
      this.#logger.warn(
        { gateway: address, reason: conn.closeInfo?.reason },
        'gateway connection lost; using the other gateways',
      );
    const err = new SiloUnavailableError(`gateway ${address} went away while the call was in flight`);
    for (const [id, msg] of this.#pending.entries()) {
      if (msg.via === address) {
        this.#pending.delete(id);
        this.#fail(msg, err);
      }
    }
    for (const [seq, p] of this.#sysPending) {
      if (p.via === address) {
        this.#sysPending.delete(seq);
        clearTimeout(p.timer);
        p.reject(err);
      }
    }
  }

  /** Closes every gateway connection; calls in flight fail with SiloUnavailableError. */
  async close(): Promise<void> {
    if (this.#closed) return;
    // Its stream subscriptions end with it (while it can still tell the silos).
    await this.#streams?.close();
    this.#closed = true;
    if (this.#refresh !== undefined) clearInterval(this.#refresh);
    const err = new SiloUnavailableError('the client was closed');
    for (const [, msg] of this.#pending.entries()) this.#fail(msg, err);
    this.#pending.clear();
    for (const p of this.#sysPending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.#sysPending.clear();
    this.#deadlines.close();
    await this.#connector.close();
    await this.#opts.membership?.close();
  }
}
