// A silo's HTTP endpoint, on node:http alone: Kubernetes' health probes and
// Prometheus' scrape. It starts before the rest of the silo (the startup probe
// answers while storage opens and the silo joins) and closes after the rest.
//   GET|HEAD /health/startup  /health/live  /health/ready   JSON { status, silo, reason? }
//   GET|HEAD /metrics                                       Prometheus text
// No log line per request: the kubelet probes every few seconds.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { TransportError } from '../errors.ts';
import type { ProbeKind, SiloHealth } from './health.ts';
import type { Logger } from './logger.ts';

/** What the endpoint serves. */
export interface HttpEndpointOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly health: SiloHealth;
  /** The metrics as Prometheus text; undefined when the silo has metrics off (then /metrics is a 404). */
  readonly metrics: { readonly contentType: string; text(): Promise<string> } | undefined;
  readonly logger: Logger;
}

const probes: ReadonlyMap<string, ProbeKind> = new Map([
  ['/health/startup', 'startup'],
  ['/health/live', 'live'],
  ['/health/ready', 'ready'],
]);

const JSON_TYPE = 'application/json; charset=utf-8';

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The running endpoint. */
export class HttpEndpoint {
  readonly #server: Server;
  readonly #o: HttpEndpointOptions;
  /** Set again by the silo once it knows its own address (the endpoint starts before). */
  logger: Logger;
  #address: string;
  #closing: Promise<void> | undefined;

  private constructor(o: HttpEndpointOptions) {
    this.#o = o;
    this.logger = o.logger;
    this.#address = hostPort(o.host, o.port);
    this.#server = createServer((req, res) => this.#serve(req, res));
  }

  /** `host:port` it listens on (the port it was given, or the one picked for 0). */
  get address(): string {
    return this.#address;
  }

  /** Listens; rejects with a TransportError naming the address when it cannot (EADDRINUSE...). */
  static async start(o: HttpEndpointOptions): Promise<HttpEndpoint> {
    const self = new HttpEndpoint(o);
    const server = self.#server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: Error) =>
        reject(
          new TransportError(`cannot serve HTTP on ${hostPort(o.host, o.port)}: ${e.message} (silo option httpPort)`, {
            cause: e,
          }),
        ),
      );
      server.listen({ host: o.host, port: o.port }, () => resolve());
    });
    const bound = server.address();
    if (typeof bound === 'object' && bound !== null) self.#address = hostPort(o.host, bound.port);
    server.on('error', (e: Error) => self.logger.error({ err: e, address: self.address }, 'HTTP endpoint failed'));
    o.logger.info({ address: self.address, metrics: o.metrics !== undefined }, 'HTTP endpoint listening');
    return self;
  }

  #serve(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const head = req.method === 'HEAD';
    if (req.method !== 'GET' && !head) {
      res.setHeader('allow', 'GET, HEAD');
      this.#json(res, head, 405, { status: 'fail', reason: `method ${req.method ?? '?'} not allowed: GET or HEAD` });
      return;
    }
    const kind = probes.get(path);
    if (kind !== undefined) {
      const r = this.#o.health.probe(kind);
      const body: Record<string, string> = { status: r.status, silo: this.#o.health.address };
      if (r.reason !== undefined) body['reason'] = r.reason;
      this.#json(res, head, r.ok ? 200 : 503, body);
      return;
    }
    const metrics = this.#o.metrics;
    if (path === '/metrics' && metrics !== undefined) {
      metrics.text().then(
        (text) => this.#send(res, head, 200, metrics.contentType, text),
        (e: unknown) => {
          this.logger.warn({ err: e }, 'metrics could not be collected');
          this.#json(res, head, 500, { status: 'fail', reason: 'metrics could not be collected' });
        },
      );
      return;
    }
    const paths = [...probes.keys(), ...(metrics !== undefined ? ['/metrics'] : [])];
    this.#json(res, head, 404, { status: 'fail', reason: `no such path: ${path}`, paths });
  }

  #json(res: ServerResponse, head: boolean, code: number, body: object): void {
    this.#send(res, head, code, JSON_TYPE, JSON.stringify(body));
  }

  #send(res: ServerResponse, head: boolean, code: number, type: string, text: string): void {
    res.statusCode = code;
    res.setHeader('content-type', type);
    res.setHeader('cache-control', 'no-store');
    res.setHeader('content-length', Buffer.byteLength(text));
    if (head) res.end();
    else res.end(text);
  }

  /** Stops listening and closes every connection (kept-alive ones included). */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
      this.logger.info({ address: this.address }, 'HTTP endpoint closed');
    });
    return this.#closing;
  }
}
