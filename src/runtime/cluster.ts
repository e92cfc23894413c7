// The silo's cluster layer: its listeners and connections, the membership
// service, the directory partition, placement with load reports, and remote
// calls (requests out, responses back, system calls for the control plane).
// The runtime hands it the calls it cannot serve locally.

import type { ContextValues } from '../messaging/request-context.ts';
import { hostname } from 'node:os';
import type { Clock } from '../clock.ts';
import {
  ConfigurationError,
  GranaryError,
  OverloadedError,
  ProtocolError,
  SiloStoppedError,
  SiloUnavailableError,
  TimeoutError,
} from '../errors.ts';
import { GrainDirectory, directoryHandlers } from '../directory/directory.ts';
import type { GrainTypeInfo } from '../grain/options.ts';
import { MembershipService, type ClusterView, type MembershipOptions, type Prober } from '../membership/service.ts';
import type { MembershipTable } from '../membership/table.ts';
import type { Message, RemoteReply } from '../messaging/message.ts';
import {
  Frame,
  RequestFlags,
  ResponseStatus,
  readRequestHeader,
  RequestHeaderSlot,
  type RequestHeader,
  encodeSystemCall,
  encodeSystemResult,
  requestArgs,
  requestHeadOf,
  smallArgs,
  contextBytes,
  rejectionOf,
  rejectionStatus,
  responseBody,
  responseHeadBytes,
  responseHeadOf,
  responseId,
  responseStatus,
  responseValue,
  targetBytes,
} from '../messaging/protocol.ts';
import type { Logger } from '../observability/logger.ts';
import { place, type PlacementCandidate } from '../placement/placement.ts';
import { decode, encode } from '../serialization/codec.ts';
import {
  Connector,
  listen,
  makeHello,
  PeerTraffic,
  type Connection,
  type ConnectionHandler,
  type Listener,
  type TransportLimits,
} from '../transport/index.ts';
import type { SiloInfo } from '../grain/grain.ts';
import type { CodecContext } from '../serialization/symbols.ts';
import { MessageKind } from '../messaging/message.ts';
import {
  checkSystemCallResult,
  clientSystemCalls,
  decodeSystemCall,
  settleSystemResult,
  dispatchSystemCall,
  type DashboardCallName,
  type SystemCallArgs,
  type SystemCallFrame,
  type SystemCallHandlers,
  type SystemCallName,
  type SystemCallResult,
  type WireClusterStatus,
} from '../messaging/system-calls.ts';
import { failingTarget, type Target } from './activation.ts';
import { PendingCalls } from '../messaging/pending-calls.ts';
import type { CallSettler } from './call-tracker.ts';
import { parseObserverKey, SILO_OBSERVER_OWNER, unreachableObserver } from './observers.ts';

/** An activation as the directory knows it: its grain and its incarnation on this silo. */
export interface DirectoryActivation {
  readonly idStr: string;
  readonly seq: number;
}

/** What the cluster layer needs from the rest of the silo. */
export interface ClusterHost {
  /** Set once the silo knows the address it listens on. */
  siloInfo: SiloInfo;
  /** Settles calls sent to other silos, and calls that came from them. */
  readonly calls: CallSettler & { cancelRemote(conn: object, reqId: number): void };
  /** Where references in results revived outside any activation are bound. */
  readonly codecContext: CodecContext;
  /** Activations here now, for placement and load reports. */
  readonly activationCount: number;
  /** Calls in flight that this silo waits on or must answer (a graceful stop waits for them). */
  readonly pendingCalls: number;
  /** The cluster layer is up: activations register in the directory from now on. */
  attachCluster(c: SiloCluster): void;
  /** Delivers a call that came over the wire. */
  receiveRemote(h: RequestHeader, buf: Buffer, reply: RemoteReply | undefined, conn: object): void;
  /** Delivers again a call that could not be sent. */
  redispatch(msg: Message): void;
  /** Another silo changed a reminder this silo owns. */
  reminderChanged(grainId: string, name: string): Promise<void>;
  /** Local registered activations as directory entries. */
  localEntries(address: string): Iterable<[string, { address: string; activation: number }]>;
  /** Another silo's activation of a local grain won in the directory. */
  duplicateFound(grain: string, winner: string): void;
}

/** The handlers of the dashboard's system calls, which need more of the silo than the cluster layer has. */
export type DashboardHandlers = Pick<SystemCallHandlers, DashboardCallName>;

/** Options of the cluster layer, given through SiloOptions. */
export interface ClusterConfig {
  readonly clusterId: string;
  readonly host: string;
  readonly port: number;
  readonly gatewayPort: number | undefined;
  readonly membership: MembershipTable;
  readonly membershipOptions: MembershipOptions;
  readonly transport: TransportLimits | undefined;
  readonly loadReportIntervalMs: number;
  readonly systemCallTimeoutMs: number;
  readonly maxForwardCount: number;
  readonly maxPendingRequests: number;
  readonly logger: Logger;
  /** Loggers of the parts of the cluster layer (their subsystems); each defaults to `logger`. */
  readonly loggers?: Readonly<Partial<Record<'transport' | 'membership' | 'directory', Logger>>>;
  /** The silo's clock: failure detection reads time through it. */
  readonly clock: Clock;
}

/**
 * How long a new activation waits for the entry of a stopping silo's activation
 * to go (its stop unregisters it, or it ends Dead) before it gives in.
 */
const LEAVING_WAIT_MAX_MS = 60_000;

/** A silo across the network, as a delivery target. */
class RemoteTarget implements Target {
  readonly live = true;
  readonly remote = true;
  readonly #cluster: SiloCluster;
  readonly address: string;
  constructor(cluster: SiloCluster, address: string) {
    this.#cluster = cluster;
    this.address = address;
  }
  receive(msg: Message): void {
    this.#cluster.send(msg, this.address);
  }
  /** Sends with the target's header bytes when the caller keeps them; `cached`: see SiloCluster.send. */
  send(msg: Message, target: Uint8Array | undefined, cached: boolean): void {
    this.#cluster.send(msg, this.address, target, cached);
  }
}

/**
 * A remote target kept on a grain reference, so its next calls skip the
 * catalog, the directory cache and placement: good while the directory's
 * routes have not changed since it was taken.
 */
class KeptRoute implements Target {
  readonly remote = true;
  readonly #dir: GrainDirectory;
  readonly #version: number;
  readonly #to: RemoteTarget;
  constructor(dir: GrainDirectory, to: RemoteTarget) {
    this.#dir = dir;
    this.#version = dir.routeVersion;
    this.#to = to;
  }
  /** The grain's id as request headers write it: encoded once, for every call through this route. */
  #bytes: Uint8Array | undefined;
  /**
   * Whether the directory cache named this route's silo when the route was first
   * used: then it still does while the route is live (any change to the cache
   * changes the route version), and responses need not set it again.
   */
  #cached: boolean | undefined;
  get live(): boolean {
    return this.#dir.routeVersion === this.#version;
  }
  receive(msg: Message): void {
    if (this.#cached === undefined) {
      this.#cached = this.#dir.cached(msg.targetId) === this.#to.address;
      if (msg.targetId.length < 16_384) this.#bytes = targetBytes(msg.targetId);
    }
    this.#to.send(msg, this.#bytes, this.#cached);
  }
}

/** The response path of the calls that came in on one connection. */
class ConnectionReply implements RemoteReply {
  readonly #conn: Connection;
  constructor(conn: Connection) {
    this.#conn = conn;
  }
  respond(reqId: number, status: number, value: unknown): void {
    if (this.#conn.state === 'closed') return;
    if (status === ResponseStatus.Ok) {
      // A small value (a number, a short string...) is written straight into the outgoing batch.
      const head = responseHeadOf(reqId, status, value);
      if (head !== undefined) {
        this.#conn.sendHead(Frame.Response, head, NO_BODY);
        return;
      }
    }
    // A failure says on the wire what kind it is: try again, or a bug to fix.
    if (status !== ResponseStatus.Ok) status = rejectionStatus(value);
    let body: Uint8Array;
    try {
      body = responseBody(status, value);
    } catch (e) {
      status = rejectionStatus(e);
      body = responseBody(status, e);
    }
    try {
      this.#conn.send2(Frame.Response, responseHeadBytes(reqId, status), body);
    } catch (e) {
      // Too large for a frame: the caller still gets an answer, and the turn
      // that made the result still ends (a throw here would leave it running).
      const err = e instanceof GranaryError ? e : new GranaryError(`cannot send the response: ${String(e)}`);
      status = rejectionStatus(err);
      this.#conn.send2(Frame.Response, responseHeadBytes(reqId, status), responseBody(status, err));
    }
  }
  relocated(targetId: string, address: string): void {
    if (this.#conn.state !== 'closed') this.#conn.send(Frame.Location, encode([targetId, address]));
  }
}

const NO_BODY = new Uint8Array(0);

const replies = new WeakMap<Connection, ConnectionReply>();
function replyOf(conn: Connection): ConnectionReply {
  let r = replies.get(conn);
  if (r === undefined) replies.set(conn, (r = new ConnectionReply(conn)));
  return r;
}

interface SystemPending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  timer: NodeJS.Timeout;
  address: string;
}

/** The cluster layer of one silo. */
export class SiloCluster implements ConnectionHandler, Prober {
  readonly address: string;
  readonly generation: number;
  readonly gatewayAddress: string | null;
  readonly #host: ClusterHost;
  readonly #cfg: ClusterConfig;
  readonly #logger: Logger;
  readonly #listener: Listener;
  readonly #gateway: Listener | undefined;
  readonly #connector: Connector;
  readonly membership: MembershipService;
  readonly directory: GrainDirectory;
  /** Frames and bytes to and from each peer, for metrics. */
  readonly traffic: PeerTraffic;
  /** What answers the dashboard's system calls; the silo sets it (see hosting/dashboard.ts). */
  dashboard: DashboardHandlers | undefined;
  /**
   * Calls sent to other silos, by request id. Request ids are even, plus 1 when
   * the directory cache named the callee's silo as the call was sent (see
   * KeptRoute): the response of such a call does not look the cache up again.
   */
  readonly #pending = new PendingCalls<Message>();
  #reqSeq = 0;
  /** Every incoming request's header is read into this one object (see #onRequest). */
  readonly #header = new RequestHeaderSlot(true);
  readonly #sysPending = new Map<number, SystemPending>();
  /** The receiving end of every system call. */
  readonly #handlers: SystemCallHandlers;
  #sysSeq = 0;
  readonly #loads = new Map<string, number>();
  readonly #remotes = new Map<string, RemoteTarget>();
  /** Clients connected to this silo's gateway, by client id (observers are called through them). */
  readonly #clients = new Map<string, Connection>();
  /** Silos that refused a connection since the last view change: not placed on, not trusted in the cache. */
  readonly #unreachable = new Set<string>();
  #view: ClusterView;
  #loadTimer: NodeJS.Timeout | undefined;
  #stopping = false;
  /** Late in a graceful stop: requests from clients are answered with SiloStoppedError. */
  #refusingClients = false;
  #closed = false;

  private constructor(
    host: ClusterHost,
    cfg: ClusterConfig,
    listener: Listener,
    gateway: Listener | undefined,
    generation: number,
    traffic: PeerTraffic,
    onDeclaredDead: () => void,
  ) {
    this.#host = host;
    this.traffic = traffic;
    this.dashboard = undefined;
    this.#cfg = cfg;
    this.#logger = cfg.logger;
    this.#listener = listener;
    this.#gateway = gateway;
    this.address = listener.address;
    this.generation = generation;
    this.gatewayAddress = gateway?.address ?? null;
    this.#connector = new Connector({
      hello: makeHello({ clusterId: cfg.clusterId, address: this.address, generation, role: 'silo' }),
      handler: this,
      ...(cfg.transport !== undefined ? { limits: cfg.transport } : {}),
      logger: cfg.loggers?.transport ?? cfg.logger,
      onConnection: (c) => {
        traffic.track(c);
        void c.closed.then(() => this.#connectionLost(c));
      },
    });
    this.directory = new GrainDirectory(
      this.address,
      { call: (a, op, args) => this.systemCall(a, op, args), refresh: () => this.membership.refresh() },
      cfg.loggers?.directory ?? cfg.logger,
    );
    this.membership = new MembershipService(
      cfg.membership,
      { address: this.address, generation, gatewayAddress: this.gatewayAddress },
      this,
      cfg.loggers?.membership ?? cfg.logger,
      { ...cfg.membershipOptions, clock: cfg.clock },
      onDeclaredDead,
    );
    this.#view = this.membership.view;
    this.membership.subscribe((v) => this.#onView(v));
    this.#handlers = {
      ...directoryHandlers(this.directory),
      ping: () => true,
      refresh: () => {
        void this.membership.refresh();
        return null;
      },
      probe: ([target, timeoutMs]) => this.probe(target, timeoutMs),
      load: ([activations], caller) => {
        if (caller !== undefined) this.#loads.set(caller, activations);
        return null;
      },
      'reminder.changed': async ([grainId, name]) => {
        await this.#host.reminderChanged(grainId, name);
        return null;
      },
      'cluster.status': async () => this.#status(),
      'dashboard.silo': (args, caller) => this.#dashboard()['dashboard.silo'](args, caller),
      'dashboard.cluster': (args, caller) => this.#dashboard()['dashboard.cluster'](args, caller),
      'dashboard.grain': (args, caller) => this.#dashboard()['dashboard.grain'](args, caller),
      'dashboard.writeState': (args, caller) => this.#dashboard()['dashboard.writeState'](args, caller),
      'dashboard.local': (args, caller) => this.#dashboard()['dashboard.local'](args, caller),
      'dashboard.deactivate': (args, caller) => this.#dashboard()['dashboard.deactivate'](args, caller),
    };
  }

  #dashboard(): DashboardHandlers {
    if (this.dashboard === undefined)
      throw new ConfigurationError(
        `silo ${this.address} answers no dashboard calls (it is not a Silo's cluster layer)`,
      );
    return this.dashboard;
  }

  /** Binds the listeners, joins the membership table and becomes active. */
  static async start(host: ClusterHost, config: ClusterConfig, onDeclaredDead: () => void): Promise<SiloCluster> {
    let cfg = config;
    const generation = Date.now();
    const hello = { clusterId: cfg.clusterId, generation, role: 'silo' as const };
    let self: SiloCluster | undefined;
    const handler: ConnectionHandler = {
      onFrame: (type, buf, start, end, conn) => (self as SiloCluster).onFrame(type, buf, start, end, conn),
    };
    const traffic = new PeerTraffic();
    const common = {
      ...(cfg.transport !== undefined ? { limits: cfg.transport } : {}),
      logger: cfg.loggers?.transport ?? cfg.logger,
      handler,
    };
    const listener = await listen({
      host: cfg.host,
      port: cfg.port,
      hello,
      acceptRoles: ['silo'],
      onConnection: (c) => traffic.track(c),
      ...common,
    });
    // Log lines name the address the silo really listens on (port 0 picks one).
    const bound = (l: Logger | undefined): Logger => (l ?? config.logger).child({ silo: listener.address });
    cfg = {
      ...cfg,
      logger: bound(cfg.logger),
      loggers: {
        transport: bound(cfg.loggers?.transport),
        membership: bound(cfg.loggers?.membership),
        directory: bound(cfg.loggers?.directory),
      },
    };
    let gateway: Listener | undefined;
    try {
      if (cfg.gatewayPort !== undefined)
        gateway = await listen({
          host: cfg.host,
          port: cfg.gatewayPort,
          hello,
          acceptRoles: ['client'],
          onConnection: (c) => {
            traffic.track(c);
            self?.clientConnected(c);
          },
          ...common,
        });
      await cfg.membership.init({
        clusterId: cfg.clusterId,
        logger: (cfg.loggers?.membership ?? cfg.logger).child({ membership: cfg.membership.kind }),
      });
      self = new SiloCluster(host, cfg, listener, gateway, generation, traffic, onDeclaredDead);
      // Before the join makes this silo Active (the others place grains here at once, and
      // its gateway takes calls), its runtime must register what it activates in the
      // directory and know its own address: an activation made before would never be
      // registered, and a second one could be made elsewhere.
      host.attachCluster(self);
      host.siloInfo = Object.freeze({
        address: self.address,
        clusterId: cfg.clusterId,
        gatewayAddress: self.gatewayAddress,
      });
      await self.membership.join();
    } catch (e) {
      await listener.close();
      await gateway?.close();
      if (self !== undefined) await self.#connector.close();
      throw e;
    }
    const started = self;
    // Tell the others now rather than at their next table read: until every silo has the new
    // view, two silos can disagree on who owns a grain's directory entry.
    await started.gossip();
    started.#loadTimer = setInterval(() => started.#reportLoad(), cfg.loadReportIntervalMs);
    started.#loadTimer.unref();
    return started;
  }

  /** The current view of active silos. */
  get view(): ClusterView {
    return this.#view;
  }

  #remote(address: string): RemoteTarget {
    let t = this.#remotes.get(address);
    if (t === undefined) this.#remotes.set(address, (t = new RemoteTarget(this, address)));
    return t;
  }

  /** A target a reference may keep for its next calls (see KeptRoute), if `t` is one worth keeping. */
  keep(t: Target): Target | undefined {
    return t instanceof RemoteTarget ? new KeptRoute(this.directory, t) : undefined;
  }

  /**
   * Where a call to a grain this silo does not host goes: a remote silo, or
   * undefined to activate it here. The cache first, then placement.
   */
  route(
    idStr: string,
    type: GrainTypeInfo,
    grain: { type: string; key: string },
    context: ContextValues | undefined,
  ): Target | undefined {
    const view = this.#view;
    if (view.active.size === 0) return this.#stopping ? this.#unavailable(idStr) : undefined;
    const cached = this.directory.cached(idStr);
    if (cached !== undefined && cached !== this.address && view.active.has(cached) && !this.#unreachable.has(cached))
      return this.#remote(cached);
    const candidates: PlacementCandidate[] = [];
    for (const a of view.active.keys()) {
      if (this.#unreachable.has(a)) continue;
      if (a === this.address) {
        if (!this.#stopping) candidates.push({ address: a, activations: this.#host.activationCount });
      } else candidates.push({ address: a, activations: this.#loads.get(a) ?? 0 });
    }
    if (candidates.length === 0) return this.#unavailable(idStr);
    const chosen = place(type.placement, grain, idStr, candidates, this.address, context?.values);
    if (chosen === this.address) return undefined;
    // Count the placement at once: load reports are periodic, and a burst of new grains
    // would otherwise all go to whichever silo looked lightest at the last report.
    this.#loads.set(chosen, (this.#loads.get(chosen) ?? 0) + 1);
    return this.#remote(chosen);
  }

  #unavailable(idStr: string): Target {
    return failingTarget(
      this.#host.calls,
      () => new SiloUnavailableError(`no active silo can host ${idStr}: the cluster has no other member`),
    );
  }

  // ---- Observers --------------------------------------------------------------

  /** A client connected to this gateway. */
  clientConnected(conn: Connection): void {
    const id = conn.peer?.address;
    if (id === undefined) return;
    this.#clients.set(id, conn);
    if (this.#stopping) this.#tellLeaving(conn);
    void conn.closed.then(() => {
      if (this.#clients.get(id) === conn) this.#clients.delete(id);
      this.#connectionLost(conn);
    });
  }

  /**
   * Where calls to an observer go. Its key is `clientId.n@gateway`: the
   * gateway the client made it through, which relays to the client.
   */
  observerTarget(key: string): Target {
    const where = parseObserverKey(key);
    const gone = (why: string): Target => unreachableObserver(this.#host.calls, key, why);
    if (where === undefined) return gone('malformed observer key');
    const { owner: clientId, address: gateway } = where;
    if (clientId === SILO_OBSERVER_OWNER) {
      // An observer a grain or the silo's own code made: it lives on that silo.
      if (gateway !== this.address && this.#view.active.has(gateway)) return this.#remote(gateway);
      return gone(`silo ${gateway} is not an active member`);
    }
    if (gateway === this.gatewayAddress) {
      const conn = this.#clients.get(clientId);
      if (conn === undefined || conn.state !== 'open')
        return gone(`client ${clientId} is not connected to gateway ${gateway}`);
      return { live: true, remote: true, receive: (msg: Message) => this.#sendOn(conn, msg, clientId) };
    }
    for (const s of this.#view.active.values()) if (s.gatewayAddress === gateway) return this.#remote(s.address);
    return gone(`no active silo has gateway ${gateway}`);
  }

  // ---- Directory hooks --------------------------------------------------------

  /** Registers a new local activation; resolves to undefined if it won, else to the winner's address. */
  async register(a: DirectoryActivation): Promise<string | undefined> {
    const entry = { address: this.address, activation: a.seq };
    const giveUpAt = Date.now() + LEAVING_WAIT_MAX_MS;
    for (let wait = 25; ; wait = Math.min(wait * 2, 500)) {
      const won = await this.directory.register(a.idStr, entry);
      if (won.address === this.address && won.activation === a.seq) return undefined;
      if (won.address === this.address) {
        // Another activation on this very silo won (an older incarnation still registered): take its place.
        this.directory.registerLocal(a.idStr, entry, false);
        return undefined;
      }
      // The winner's silo is stopping (its activation is on its way out and would forward our
      // calls straight back here), or refused our connection (it crashed, and is not declared
      // dead yet: our calls to it would fail). Wait for its entry to go, as it will once the
      // silo is gone or declared dead, rather than bounce calls. A view change clears the
      // unreachable mark: if the silo is alive after all, the next round forwards to it.
      if (
        !this.#closed &&
        Date.now() < giveUpAt &&
        (this.#view.leaving.has(won.address) || !(await this.#reachable(won.address)))
      ) {
        await new Promise((r) => setTimeout(r, wait));
        continue;
      }
      this.directory.cache(a.idStr, won.address);
      return won.address;
    }
  }

  /** Whether a connection to `address` is open or can be opened now; marks it unreachable if not. */
  async #reachable(address: string): Promise<boolean> {
    if (this.#unreachable.has(address)) return false;
    if (this.#connector.peek(address)?.isOpen === true) return true;
    try {
      await this.#connector.get(address);
      return true;
    } catch {
      this.#unreachable.add(address);
      this.directory.routeVersion++;
      return false;
    }
  }

  unregister(a: DirectoryActivation): void {
    if (this.#closed) return;
    this.directory.unregister(a.idStr, { address: this.address, activation: a.seq });
  }

  // ---- Outgoing calls -----------------------------------------------------------

  /**
   * Sends a call to another silo; a failure to reach it fails the call at once.
   * `target`: the grain id's header bytes, when the caller keeps them. `cached`:
   * the directory cache names `address` for the grain, and still will if the
   * response comes back before the routes change.
   */
  send(msg: Message, address: string, target?: Uint8Array, cached = false): void {
    if (msg.done) return;
    const conn = this.#connector.peek(address);
    if (conn !== undefined && conn.isOpen) {
      this.#sendOn(conn, msg, address, target, cached);
      return;
    }
    this.#connector.get(address).then(
      (c) => this.#sendOn(c, msg, address, target, cached),
      (e: unknown) => this.#unsent(msg, address, e),
    );
  }

  /**
   * A call could not be sent: the silo refused the connection, so the call never
   * left. Route it again elsewhere (a hop), and look at the table sooner.
   */
  #unsent(msg: Message, address: string, e: unknown): void {
    this.#unreachable.add(address);
    this.directory.routeVersion++;
    this.directory.invalidate(msg.targetId, address);
    void this.membership.refresh();
    const err =
      e instanceof SiloUnavailableError
        ? e
        : new SiloUnavailableError(`silo ${address} is unavailable: ${(e as Error)?.message ?? String(e)}`, {
            cause: e,
          });
    if (msg.done) return;
    if (msg.hops >= this.#cfg.maxForwardCount || this.#closed) {
      this.#host.calls.fail(msg, err);
      return;
    }
    msg.hops++;
    this.#host.redispatch(msg);
  }

  #sendOn(conn: Connection, msg: Message, address: string, target?: Uint8Array, cached = false): void {
    if (msg.done) return;
    let args = msg.args;
    let flags = msg.method.oneWay ? RequestFlags.OneWay : 0;
    if (msg.cancel !== undefined) {
      flags |= RequestFlags.Signal;
      args = args.slice(0, -1);
    }
    const seq = (this.#reqSeq = (this.#reqSeq + 2) >>> 0 || 2);
    const reqId = cached ? seq + 1 : seq;
    let body: Uint8Array;
    let context: Uint8Array | undefined;
    /** Arguments the header writes in place (small values), else undefined and `body` holds them. */
    let inPlace: unknown[] | undefined;
    try {
      if (smallArgs(args)) {
        inPlace = args;
        body = NO_BODY;
      } else body = requestArgs(args);
      if (msg.context !== undefined) {
        context = contextBytes(msg.context.values);
        flags |= RequestFlags.Context;
      }
    } catch (e) {
      this.#host.calls.fail(msg, e);
      return;
    }
    if (conn.backlogged) {
      this.#host.calls.fail(
        msg,
        new OverloadedError(
          `silo ${address} is not reading (${conn.bufferedBytes} bytes wait to be sent, limit maxQueuedBytes): call to ${msg.targetId}.${msg.method.name} refused`,
        ),
      );
      return;
    }
    if (!msg.method.oneWay && this.#pending.size >= this.#cfg.maxPendingRequests) {
      this.#host.calls.fail(
        msg,
        new OverloadedError(
          `too many calls waiting for other silos (${this.#pending.size}, limit maxPendingRequests): call to ${msg.targetId}.${msg.method.name} refused`,
        ),
      );
      return;
    }
    try {
      // A header that cannot be written (too long) or a frame over the limit is refused here, unsent.
      conn.sendHead(
        Frame.Request,
        requestHeadOf(
          reqId,
          flags,
          msg.targetId,
          target,
          msg.method.name,
          msg.timeoutMs,
          msg.chain,
          msg.hops,
          context,
          inPlace,
        ),
        body,
      );
    } catch (e) {
      this.#host.calls.fail(msg, e);
      return;
    }
    msg.reqId = reqId;
    msg.via = address;
    if (msg.kind === MessageKind.Call) msg.kind = MessageKind.Outbound;
    if (!msg.method.oneWay) this.#pending.set(reqId, msg);
  }

  /** The caller gave up on a call (deadline, cancel): forget it, and tell the callee to cancel. */
  abandon(msg: Message, cancelCallee: boolean): void {
    if (msg.via === undefined || this.#pending.get(msg.reqId) !== msg) return;
    this.#pending.delete(msg.reqId);
    if (cancelCallee) {
      const conn = this.#connector.peek(msg.via);
      if (conn !== undefined && conn.state === 'open') conn.send(Frame.Cancel, encode([msg.reqId]));
    }
  }

  #connectionLost(conn: Connection): void {
    const address = conn.peer?.address;
    if (address === undefined) return;
    const err = new SiloUnavailableError(
      `connection to silo ${address} was lost${conn.closeInfo !== undefined ? `: ${conn.closeInfo.reason}` : ''}`,
    );
    for (const [id, msg] of this.#pending.entries()) {
      if (msg.via === address) {
        this.#pending.delete(id);
        this.#host.calls.fail(msg, err);
      }
    }
    for (const [seq, p] of this.#sysPending) {
      if (p.address === address) {
        this.#sysPending.delete(seq);
        clearTimeout(p.timer);
        p.reject(err);
      }
    }
  }

  // ---- Incoming frames ------------------------------------------------------------

  onFrame(type: number, buf: Buffer, start: number, end: number, conn: Connection): boolean {
    switch (type) {
      case Frame.Request:
        this.#onRequest(buf, start, end, conn);
        return true;
      case Frame.Response:
        this.#onResponse(buf, start, end);
        return true;
      case Frame.Cancel: {
        const [reqId] = decode(buf, undefined, start, end) as [number];
        this.#host.calls.cancelRemote(conn, reqId);
        return true;
      }
      case Frame.Location: {
        const [grain, address] = decode(buf, undefined, start, end) as [string, string];
        if (typeof grain === 'string' && typeof address === 'string') this.directory.cache(grain, address);
        return true;
      }
      case Frame.SystemCall:
        this.#onSystemCall(buf.subarray(start, end), conn);
        return true;
      case Frame.SystemResult:
        this.#onSystemResult(buf.subarray(start, end));
        return true;
      default:
        return false;
    }
  }

  #onRequest(buf: Buffer, start: number, end: number, conn: Connection): void {
    // Read into one reused object: the host reads it synchronously, before the next request.
    const h = readRequestHeader(buf, start, end, this.#header);
    if (this.#refusingClients && conn.peer?.role === 'client') {
      // The stop drained what came before; what a client sends now did not run: it retries elsewhere.
      if ((h.flags & RequestFlags.OneWay) === 0)
        replyOf(conn).respond(
          h.reqId,
          ResponseStatus.Error,
          new SiloStoppedError(
            `silo ${this.address} is stopping: call ${h.targetId}.${h.method} through another gateway`,
          ),
        );
      return;
    }
    this.#host.receiveRemote(h, buf, (h.flags & RequestFlags.OneWay) !== 0 ? undefined : replyOf(conn), conn);
  }

  #onResponse(buf: Buffer, start: number, end: number): void {
    const reqId = responseId(buf, start, end);
    const status = responseStatus(buf, start);
    const msg = this.#pending.take(reqId);
    if (msg === undefined) return; // the caller gave up (deadline, cancel)
    let value: unknown;
    try {
      value = responseValue(buf, msg.caller ?? this.#host.codecContext, start, end);
    } catch (e) {
      this.#host.calls.fail(msg, e);
      return;
    }
    // Learn where the grain lives, unless the cache said so when the call was sent (an odd request id).
    if ((reqId & 1) === 0 && msg.via !== undefined && this.directory.cached(msg.targetId) !== msg.via)
      this.directory.cache(msg.targetId, msg.via);
    if (status === ResponseStatus.Ok) this.#host.calls.succeed(msg, value);
    else this.#host.calls.fail(msg, rejectionOf(status, value));
  }

  // ---- System calls -------------------------------------------------------------

  /** A control-plane call to another silo (or this one); arguments and result typed by the system-call table. */
  async systemCall<N extends SystemCallName>(
    address: string,
    name: N,
    args: SystemCallArgs<N>,
    timeoutMs = this.#cfg.systemCallTimeoutMs,
  ): Promise<SystemCallResult<N>> {
    if (address === this.address) return this.#handlers[name](args, undefined);
    const conn = this.#connector.peek(address) ?? (await this.#connector.get(address));
    const seq = (this.#sysSeq = (this.#sysSeq + 1) >>> 0 || 1);
    const value = await new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#sysPending.delete(seq);
        reject(new TimeoutError(`system call ${name} to ${address} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.#sysPending.set(seq, { resolve, reject, timer, address });
      conn.send(Frame.SystemCall, encodeSystemCall(seq, name, args));
    });
    return checkSystemCallResult(name, value);
  }

  #onSystemCall(body: Buffer, conn: Connection): void {
    let call: SystemCallFrame;
    try {
      call = decodeSystemCall(body);
    } catch (e) {
      this.#logger.warn({ peer: conn.peer?.address, err: e }, 'dropped a malformed system call frame');
      return;
    }
    // The caller may be gone by the time the answer is ready (its connection closed, and its
    // side failed the call then): the answer is dropped, never thrown where nobody awaits it.
    const answer = (ok: boolean, value: unknown): void => {
      if (conn.state !== 'open') return;
      let body: Uint8Array;
      try {
        body = encodeSystemResult(call.seq, ok, value);
      } catch (e) {
        body = encodeSystemResult(
          call.seq,
          false,
          new GranaryError(`the answer to ${String(call.name)} could not be encoded: ${(e as Error).message}`),
        );
      }
      conn.send(Frame.SystemResult, body);
    };
    Promise.resolve()
      .then(() => {
        // Clients reach a gateway, whose control plane is the silos' own: they may only ask.
        if (conn.peer?.role === 'client' && !clientSystemCalls.has(call.name as SystemCallName))
          throw new ProtocolError(`system call ${String(call.name)} is not open to clients`);
        return dispatchSystemCall(this.#handlers, call.name, call.args, conn.peer?.address);
      })
      .then(
        (v) => answer(true, v),
        (e: unknown) => answer(false, e instanceof Error ? e : new GranaryError(String(e))),
      );
  }

  #onSystemResult(body: Buffer): void {
    settleSystemResult(body, this.#sysPending, this.#logger);
  }

  // ---- Prober -------------------------------------------------------------------

  probe(address: string, timeoutMs: number): Promise<boolean> {
    return this.systemCall(address, 'ping', [], timeoutMs).then(
      () => true,
      () => false,
    );
  }

  probeIndirect(via: string, target: string, timeoutMs: number): Promise<boolean> {
    return this.systemCall(via, 'probe', [target, timeoutMs], timeoutMs).then(
      (r) => r,
      () => false,
    );
  }

  // ---- Views and load -----------------------------------------------------------

  #onView(view: ClusterView): void {
    const old = this.#view;
    this.#view = view;
    this.#unreachable.clear();
    this.directory.routeVersion++;
    for (const a of view.active.keys()) if (!old.active.has(a)) this.#connector.forget(a);
    // Every silo that left the active set, or the directory's ring (a stopping silo that is now dead).
    for (const a of old.directoryRing.members) {
      if (view.active.has(a)) continue;
      if (old.active.has(a)) {
        this.#loads.delete(a);
        this.#remotes.delete(a);
        this.traffic.forget(a);
      }
      if (view.dead.has(a)) {
        this.#connector.markDead(a);
        const err = new SiloUnavailableError(`silo ${a} was declared dead`);
        for (const [id, msg] of this.#pending.entries()) {
          if (msg.via === a) {
            this.#pending.delete(id);
            this.#host.calls.fail(msg, err);
          }
        }
      }
    }
    void this.directory.viewChanged(view, this.#host.localEntries(this.address), (grain, winner) =>
      this.#host.duplicateFound(grain, winner.address),
    );
  }

  /** This silo's answer to `cluster.status`: the table as read now, and the load reports it holds. */
  async #status(): Promise<WireClusterStatus> {
    const snap = await this.#cfg.membership.readAll();
    const members = snap.entries.map(({ entry: e }): WireClusterStatus[1][number] => [
      e.address,
      e.generation,
      e.status,
      e.gatewayAddress,
      e.hostName,
      Math.round(e.startedAt),
      Math.round(e.iAmAliveAt),
      e.suspicions.map((s): [string, number] => [s.by, Math.round(s.at)]),
    ]);
    const loads: Array<[string, number]> = [[this.address, this.#host.activationCount]];
    for (const [a, n] of this.#loads) if (a !== this.address) loads.push([a, n]);
    return [this.address, members, loads];
  }

  #reportLoad(): void {
    const count = this.#host.activationCount;
    for (const a of this.#view.active.keys()) {
      if (a !== this.address) this.systemCall(a, 'load', [count]).catch(() => undefined);
    }
  }

  // ---- Stop ---------------------------------------------------------------------

  /** Graceful stop, first part: leave the active set so that no new work is placed here. */
  async beginStop(): Promise<void> {
    this.#stopping = true;
    // Clients send their new calls to other gateways from now on; calls already sent are answered.
    for (const conn of this.#clients.values()) this.#tellLeaving(conn);
    try {
      await this.membership.shuttingDown();
    } catch (e) {
      this.#logger.warn({ err: e }, 'could not mark this silo ShuttingDown; others will see it leave');
    }
    await this.gossip();
  }

  #tellLeaving(conn: Connection): void {
    if (conn.state === 'open') conn.send(Frame.Leaving, new Uint8Array(0));
  }

  /**
   * Waits until every call this silo accepted has been answered and every call
   * it sent on has come back, or `timeoutMs` passed (then they fail as the
   * connections close). Resolves to the number still in flight.
   */
  async #drain(timeoutMs: number): Promise<number> {
    const until = Date.now() + timeoutMs;
    const inFlight = (): number => this.#host.pendingCalls + this.#pending.size;
    while (inFlight() > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    return inFlight();
  }

  /** Tells every other active silo to re-read the table now (a status changed). */
  async gossip(): Promise<void> {
    await Promise.all(
      [...this.#view.active.keys()]
        .filter((a) => a !== this.address)
        .map((a) => this.systemCall(a, 'refresh', [], 1000).catch(() => undefined)),
    );
  }

  get stopping(): boolean {
    return this.#stopping;
  }

  /** Graceful stop, last part: hand the directory over, leave the table, close connections. */
  async finishStop(drainTimeoutMs: number): Promise<void> {
    // Calls accepted before the stop, and those forwarded from here since, finish first.
    let left = await this.#drain(drainTimeoutMs);
    // Clients had the Leaving frame before the drain; from now on their calls are
    // refused (not run), and those that slipped in meanwhile finish first.
    this.#refusingClients = true;
    if (left === 0) left = await this.#drain(drainTimeoutMs);
    if (left > 0)
      this.#logger.warn({ calls: left, timeoutMs: drainTimeoutMs }, 'calls still in flight at the end of the stop');
    await this.directory.handOffAll();
    await this.membership.leave();
    await this.gossip();
    await this.close();
  }

  /** Closes everything at once (abrupt stop, or after a graceful one). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopping = true;
    this.membership.stop();
    if (this.#loadTimer !== undefined) clearInterval(this.#loadTimer);
    const err = new SiloUnavailableError(`silo ${this.address} stopped`);
    const pending = this.#pending.entries();
    this.#pending.clear();
    for (const [, msg] of pending) this.#host.calls.fail(msg, err);
    for (const p of this.#sysPending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.#sysPending.clear();
    await Promise.all([this.#listener.close(), this.#gateway?.close(), this.#connector.close()]);
    await this.#cfg.membership.close();
  }

  /** For logs and diagnostics. */
  describe(): object {
    return { address: this.address, generation: this.generation, gateway: this.gatewayAddress, host: hostname() };
  }
}
