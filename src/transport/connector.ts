// The dialing end of the transport: one connection per remote address, opened and
// handshaken on first use, reopened with exponential back-off when it drops, and
// failing fast with SiloUnavailableError while an address is unreachable.

import { connect as netConnect, type Socket } from 'node:net';
import { ConfigurationError, SiloUnavailableError, TransportError } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';
import { silentLogger } from '../observability/logger.ts';
import { Connection, type ConnectionHandler } from './connection.ts';
import { makeHello, type Hello, type HelloInit } from './handshake.ts';
import { resolveTransportLimits, type ResolvedTransportLimits, type TransportLimits } from './limits.ts';

// Design notes.
// - Per address: at most one connection and at most one attempt. get() on an open
//   connection returns a promise made once, when it opened; peek() is the
//   synchronous form for the hot path.
// - An attempt that fails (refused, reset, timed out, handshake refused) makes the
//   address "failing": until retryAt, get() rejects at once; the first get() after
//   retryAt makes the next attempt and waits for it, while other callers keep
//   failing fast. The delay doubles per failure from backoffMinMs to backoffMaxMs,
//   ±25% jitter so that silos do not reconnect in lockstep.
// - A connection that drops (not closed by us) is reopened in the background on
//   the same schedule, so the next call after the peer comes back finds it ready.
//   Addresses never connected are only tried on demand. markDead() stops all of it.

/** Options of a Connector. */
export interface ConnectorOptions {
  /** Our HELLO: `address` is our listening `host:port`, or a client id. */
  readonly hello: HelloInit;
  /** Receives the frames of every connection this connector opens. */
  readonly handler: ConnectionHandler;
  readonly limits?: TransportLimits;
  /** Default: silent. */
  readonly logger?: Logger;
  /** Called for each connection once its handshake has succeeded. */
  readonly onConnection?: (connection: Connection) => void;
  /** Source of jitter, [0, 1). Default Math.random. */
  readonly random?: () => number;
}

/** What a Connector knows about one address. */
export interface PeerStatus {
  readonly state: 'idle' | 'connecting' | 'open' | 'failing' | 'dead';
  /** Consecutive failed attempts. */
  readonly failures: number;
  /** Attempts made so far (successful or not). */
  readonly attempts: number;
  /** Milliseconds until the next attempt is allowed; 0 when it is. */
  readonly retryInMs: number;
  /** The back-off chosen after the last failure, in ms (0 before any). */
  readonly backoffMs: number;
  readonly lastError: string | undefined;
}

class Peer {
  readonly address: string;
  readonly host: string;
  readonly port: number;
  connection: Connection | undefined = undefined;
  /** Resolved when open; the attempt while connecting. */
  ready: Promise<Connection> | undefined = undefined;
  attempting = false;
  failures = 0;
  attempts = 0;
  retryAt = 0;
  backoffMs = 0;
  lastError: Error | undefined = undefined;
  dead = false;
  /** Reopen in the background after failures (set when an open connection dropped). */
  reconnect = false;
  timer: NodeJS.Timeout | undefined = undefined;

  constructor(address: string, host: string, port: number) {
    this.address = address;
    this.host = host;
    this.port = port;
  }
}

/** Splits `host:port` or `[v6]:port`; throws a ConfigurationError for anything else. */
export function parseAddress(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':');
  let host = colon > 0 ? address.slice(0, colon) : '';
  const portText = address.slice(colon + 1);
  const port = Number(portText);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (host === '' || portText === '' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigurationError(`invalid address '${address}': expected host:port with a port from 1 to 65535`);
  }
  return { host, port };
}

/** Keeps one outbound connection per remote address. */
export class Connector {
  /** Our HELLO as sent to every peer. */
  readonly hello: Hello;
  readonly #peers = new Map<string, Peer>();
  /** Every connection made, open or handshaking, for close(). */
  readonly #live = new Set<Connection>();
  readonly #options: ConnectorOptions;
  readonly #limits: ResolvedTransportLimits;
  readonly #logger: Logger;
  readonly #random: () => number;
  #closed = false;

  constructor(options: ConnectorOptions) {
    this.#options = options;
    this.#limits = resolveTransportLimits(options.limits);
    this.#logger = options.logger ?? silentLogger();
    this.#random = options.random ?? Math.random;
    this.hello = makeHello(options.hello, this.#limits.maxFrameBytes);
    this.#logger.debug({ hello: this.hello, limits: this.#limits }, 'transport connector started');
  }

  /** The open connection to `address`, if there is one. Never connects. */
  peek(address: string): Connection | undefined {
    return this.#peers.get(address)?.connection;
  }

  /**
   * A ready connection to `address` (`host:port`), connecting and handshaking on first
   * use; concurrent callers share the attempt. Rejects with a SiloUnavailableError when
   * the address cannot be reached, at once while it is failing or dead.
   */
  get(address: string): Promise<Connection> {
    let peer = this.#peers.get(address);
    if (peer?.ready !== undefined && peer.connection !== undefined) return peer.ready;
    if (peer === undefined) {
      try {
        peer = this.#peer(address);
      } catch (error) {
        return Promise.reject(error);
      }
    }
    if (this.#closed)
      return Promise.reject(new SiloUnavailableError(`cannot reach ${address}: the connector is closed`));
    if (peer.dead) return Promise.reject(new SiloUnavailableError(`silo ${address} is dead`));
    if (peer.failures > 0 && (peer.attempting || Date.now() < peer.retryAt))
      return Promise.reject(this.#failFast(peer));
    if (peer.attempting && peer.ready !== undefined) return peer.ready;
    return this.#attempt(peer);
  }

  /** What is known about `address`. */
  status(address: string): PeerStatus {
    const peer = this.#peers.get(address);
    if (peer === undefined)
      return { state: 'idle', failures: 0, attempts: 0, retryInMs: 0, backoffMs: 0, lastError: undefined };
    const state = peer.dead
      ? 'dead'
      : peer.connection !== undefined
        ? 'open'
        : peer.attempting
          ? 'connecting'
          : peer.failures > 0
            ? 'failing'
            : 'idle';
    return {
      state,
      failures: peer.failures,
      attempts: peer.attempts,
      retryInMs: peer.failures > 0 ? Math.max(0, peer.retryAt - Date.now()) : 0,
      backoffMs: peer.backoffMs,
      lastError: peer.lastError?.message,
    };
  }

  /** Stops trying `address` for good: its connection is closed and get() fails at once. */
  markDead(address: string): void {
    let peer = this.#peers.get(address);
    if (peer === undefined) {
      try {
        peer = this.#peer(address);
      } catch {
        return;
      }
    }
    if (peer.dead) return;
    peer.dead = true;
    peer.reconnect = false;
    clearTimeout(peer.timer);
    peer.timer = undefined;
    this.#logger.info({ peer: address }, `silo ${address} marked dead: no more connection attempts`);
    peer.connection?.close('silo marked dead');
  }

  /** Forgets everything about `address` (dead mark and back-off included) and closes its connection. */
  forget(address: string): void {
    const peer = this.#peers.get(address);
    if (peer === undefined) return;
    this.#peers.delete(address);
    peer.dead = true;
    clearTimeout(peer.timer);
    peer.connection?.close('address forgotten');
  }

  /** Closes every connection and stops every attempt; later get() calls fail. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const peer of this.#peers.values()) {
      clearTimeout(peer.timer);
      peer.timer = undefined;
    }
    const closing: Promise<unknown>[] = [];
    for (const connection of this.#live) {
      connection.close('connector closed');
      closing.push(connection.closed);
    }
    await Promise.all(closing);
  }

  #peer(address: string): Peer {
    const { host, port } = parseAddress(address);
    const peer = new Peer(address, host, port);
    this.#peers.set(address, peer);
    return peer;
  }

  #failFast(peer: Peer): SiloUnavailableError {
    const wait = Math.max(0, peer.retryAt - Date.now());
    const last = peer.lastError?.message ?? 'unknown error';
    const next = peer.attempting ? 'an attempt is in progress' : `next attempt in ${wait} ms`;
    return new SiloUnavailableError(
      `silo ${peer.address} is unreachable (${peer.failures} failed attempts, last: ${last}); ${next}`,
      { cause: peer.lastError },
    );
  }

  #attempt(peer: Peer): Promise<Connection> {
    peer.attempting = true;
    peer.attempts++;
    const attempt = this.#connect(peer).then(
      (connection) => this.#opened(peer, connection),
      (error: unknown) => {
        throw this.#failed(peer, error);
      },
    );
    peer.ready = attempt;
    return attempt;
  }

  async #connect(peer: Peer): Promise<Connection> {
    const timeoutMs = this.#limits.connectTimeoutMs;
    const socket: Socket = netConnect({ host: peer.host, port: peer.port, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error): void => {
        clearTimeout(timer);
        reject(error);
      };
      const timer = setTimeout(() => {
        socket.off('error', onError);
        socket.destroy();
        reject(new TransportError(`connect timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('error', onError);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        resolve();
      });
    });
    const connection = new Connection(socket, {
      side: 'connect',
      hello: this.hello,
      limits: this.#limits,
      logger: this.#logger,
      handler: this.#options.handler,
      peerName: peer.address,
    });
    this.#live.add(connection);
    void connection.closed.then((info) => {
      this.#live.delete(connection);
      if (peer.connection !== connection) return;
      peer.connection = undefined;
      peer.ready = undefined;
      if (peer.dead || this.#closed || info.kind === 'local') return;
      // Dropped under us: reopen in the background, first after the shortest delay.
      peer.reconnect = true;
      this.#schedule(peer, this.#backoff(1));
    });
    await connection.ready;
    return connection;
  }

  #opened(peer: Peer, connection: Connection): Connection {
    peer.attempting = false;
    if (peer.dead || this.#closed) {
      connection.close(peer.dead ? 'silo marked dead' : 'connector closed');
      throw new SiloUnavailableError(
        peer.dead ? `silo ${peer.address} is dead` : `cannot reach ${peer.address}: the connector is closed`,
      );
    }
    if (peer.failures > 0)
      this.#logger.info({ peer: peer.address, failures: peer.failures }, `reconnected to ${peer.address}`);
    peer.failures = 0;
    peer.lastError = undefined;
    peer.reconnect = false;
    peer.connection = connection;
    peer.ready = Promise.resolve(connection);
    if (connection.state !== 'open') {
      // Closed between its handshake and now: the close handler ran before peer.connection was set.
      peer.connection = undefined;
      peer.ready = undefined;
      throw new SiloUnavailableError(
        `connection with ${peer.address} closed right after its handshake: ${connection.closeInfo?.reason ?? 'closed'}`,
      );
    }
    this.#options.onConnection?.(connection);
    return connection;
  }

  #failed(peer: Peer, error: unknown): Error {
    peer.attempting = false;
    peer.ready = undefined;
    if (error instanceof SiloUnavailableError && (peer.dead || this.#closed)) return error;
    const cause = error instanceof Error ? error : new TransportError(String(error));
    peer.failures++;
    peer.lastError = cause;
    const delay = this.#backoff(peer.failures);
    peer.backoffMs = delay;
    peer.retryAt = Date.now() + delay;
    const line = `cannot connect to ${peer.address} (attempt ${peer.attempts}): ${cause.message}; next attempt in ${delay} ms`;
    if (peer.failures === 1) this.#logger.info({ peer: peer.address, error: cause.message, retryInMs: delay }, line);
    else this.#logger.debug({ peer: peer.address, error: cause.message, retryInMs: delay }, line);
    if (peer.reconnect && !peer.dead && !this.#closed) this.#schedule(peer, delay);
    return new SiloUnavailableError(`cannot reach silo ${peer.address}: ${cause.message}`, { cause });
  }

  /** Delay before the attempt after `failures` failures: doubling from the minimum, capped, ±25% jitter. */
  #backoff(failures: number): number {
    const { backoffMinMs, backoffMaxMs } = this.#limits;
    const base = Math.min(backoffMaxMs, backoffMinMs * 2 ** Math.min(failures - 1, 30));
    return Math.max(1, Math.min(backoffMaxMs, Math.round(base * (0.75 + 0.5 * this.#random()))));
  }

  #schedule(peer: Peer, delay: number): void {
    clearTimeout(peer.timer);
    peer.timer = setTimeout(() => {
      peer.timer = undefined;
      if (peer.dead || this.#closed || peer.connection !== undefined || peer.attempting) return;
      this.#attempt(peer).catch(() => {});
    }, delay);
    peer.timer.unref();
  }
}
