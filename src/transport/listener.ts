// The accepting end of the transport: a TCP server whose connections are handed
// to the upper layer only once their handshake has succeeded. Closing it closes
// the server and every connection it accepted.

import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../observability/logger.ts';
import { silentLogger } from '../observability/logger.ts';
import { TransportError } from '../errors.ts';
import { Connection, type ConnectionHandler } from './connection.ts';
import { makeHello, type Hello, type HelloInit, type PeerRole } from './handshake.ts';
import { resolveTransportLimits, type ResolvedTransportLimits, type TransportLimits } from './limits.ts';

/** Options of `listen`. */
export interface ListenOptions {
  /** Interface to bind. Default `127.0.0.1`. */
  readonly host?: string;
  /** Port to bind; 0 picks a free one. */
  readonly port: number;
  /**
   * Our HELLO. `address` defaults to the bound `host:port`; set it when binding a
   * wildcard host (`0.0.0.0`, `::`), which peers cannot dial.
   */
  readonly hello: Omit<HelloInit, 'address'> & { readonly address?: string };
  readonly limits?: TransportLimits;
  /** Default: silent. */
  readonly logger?: Logger;
  /** Receives each connection once its handshake has succeeded, synchronously, before its first frame. */
  readonly onConnection: (connection: Connection) => void;
  /** A handler set on every accepted connection; otherwise set one in onConnection. */
  readonly handler?: ConnectionHandler;
  /** Roles let in. Default: both `silo` and `client`. */
  readonly acceptRoles?: readonly PeerRole[];
}

function formatEndpoint(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Binds a listener; resolves once it accepts connections. Rejects with a TransportError whose cause is the socket error (EADDRINUSE...). */
export function listen(options: ListenOptions): Promise<Listener> {
  return Listener.start(options);
}

/** A bound transport server. */
export class Listener {
  /** The bound `host:port`. */
  readonly address: string;
  readonly host: string;
  readonly port: number;
  /** Our HELLO as sent to every peer. */
  readonly hello: Hello;
  readonly #server: Server;
  readonly #connections = new Set<Connection>();
  readonly #options: ListenOptions;
  readonly #limits: ResolvedTransportLimits;
  readonly #logger: Logger;
  #closing: Promise<void> | undefined;

  /** Use `listen()`. */
  static async start(options: ListenOptions): Promise<Listener> {
    const limits = resolveTransportLimits(options.limits);
    const host = options.host ?? '127.0.0.1';
    const server = createServer({ noDelay: true });
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error): void => {
        reject(
          new TransportError(`cannot listen on ${formatEndpoint(host, options.port)}: ${error.message}`, {
            cause: error,
          }),
        );
      };
      server.once('error', onError);
      server.listen({ host, port: options.port }, () => {
        server.off('error', onError);
        resolve();
      });
    });
    const bound = server.address();
    const port = typeof bound === 'object' && bound !== null ? bound.port : options.port;
    return new Listener(server, options, limits, host, port);
  }

  private constructor(
    server: Server,
    options: ListenOptions,
    limits: ResolvedTransportLimits,
    host: string,
    port: number,
  ) {
    this.#server = server;
    this.#options = options;
    this.#limits = limits;
    this.#logger = options.logger ?? silentLogger();
    this.host = host;
    this.port = port;
    this.address = formatEndpoint(host, port);
    this.hello = makeHello({ ...options.hello, address: options.hello.address ?? this.address }, limits.maxFrameBytes);
    server.on('connection', (socket: Socket) => this.#accept(socket));
    server.on('error', (error: Error) => {
      this.#logger.error(
        { address: this.address, error: error.message },
        `transport listener ${this.address} failed: ${error.message}`,
      );
    });
    this.#logger.info({ address: this.address, hello: this.hello, limits }, `transport listening on ${this.address}`);
  }

  /** Connections accepted and not yet closed, handshaking ones included. */
  get connections(): ReadonlySet<Connection> {
    return this.#connections;
  }

  /** Stops accepting and closes every accepted connection (gracefully: pending frames are written). */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      for (const connection of this.#connections) connection.close('listener closed');
      this.#logger.info({ address: this.address }, `transport listener ${this.address} closed`);
    });
    return this.#closing;
  }

  #accept(socket: Socket): void {
    if (this.#closing !== undefined) {
      socket.destroy();
      return;
    }
    const options = this.#options;
    const onConnection = options.onConnection;
    const connection = new Connection(socket, {
      side: 'accept',
      hello: this.hello,
      limits: this.#limits,
      logger: this.#logger,
      ...(options.handler === undefined ? {} : { handler: options.handler }),
      ...(options.acceptRoles === undefined ? {} : { acceptRoles: options.acceptRoles }),
      onOpen: onConnection,
    });
    this.#connections.add(connection);
    void connection.closed.then(() => this.#connections.delete(connection));
  }
}
