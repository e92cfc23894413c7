// The dashboard over HTTP, on node:http alone: the page, its JSON API and the
// server-sent events that update it. One `DashboardServer` is mounted on a
// silo's HTTP endpoint, or serves from a process of its own (serveDashboard).
//   GET  /dashboard                     the page (one self-contained HTML file)
//   GET  /dashboard/api/snapshot        the model the page shows, JSON
//   GET  /dashboard/api/events          text/event-stream: `snapshot` events, one per refresh
//   GET  /dashboard/api/grain?type=&key= a grain's location, activation, states, reminders
//   POST /dashboard/api/state           {type, key, state, etag, json}: an ETag-guarded edit
// The cluster is gathered once per refresh while a page is open, never when
// nobody watches. With a token, every path asks for it (Authorization: Bearer,
// or ?token= once, which sets an HttpOnly cookie); without one (loopback only),
// requests must name a loopback host, so another site cannot reach it by DNS
// rebinding, and an edit must be a JSON POST from the page's own origin.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCodes, GranaryError } from '../../errors.ts';
import type { Logger } from '../logger.ts';
import { DashboardView, type DashboardModel, type DashboardSource } from './model.ts';
import { isLoopback, tokenRequired, type DashboardOptions } from './options.ts';
import { dashboardPage } from './page.ts';

/** What a dashboard server reads and how it is reached. */
export interface DashboardServerOptions {
  readonly source: DashboardSource;
  readonly options: Readonly<Required<DashboardOptions>>;
  /** The bearer token; undefined serves without one, which only a loopback `host` may. */
  readonly token: string | undefined;
  /** The host it listens on. */
  readonly host: string;
  readonly logger: Logger;
  /** Shown in the page's title. */
  readonly title: string;
}

const JSON_TYPE = 'application/json; charset=utf-8';
const COOKIE = 'granary_dashboard';
/** Largest edit body accepted, in bytes. */
const MAX_BODY = 1 << 20;

const securityHeaders: Readonly<Record<string, string>> = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'content-security-policy':
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
};

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** HTTP status of a failure the page shows. */
function statusOf(e: unknown): number {
  if (!(e instanceof GranaryError)) return 500;
  switch (e.code) {
    case ErrorCodes.InconsistentState:
      return 409;
    case ErrorCodes.Configuration:
      return 400;
    case ErrorCodes.Timeout:
      return 504;
    case ErrorCodes.SiloUnavailable:
    case ErrorCodes.SiloStopped:
      return 503;
    default:
      return 500;
  }
}

function errorBody(e: unknown): { error: string; code: string } {
  return {
    error: e instanceof Error ? e.message : String(e),
    code: e instanceof GranaryError ? e.code : ErrorCodes.Error,
  };
}

/** The host part of a Host header (`[::1]:80` → `::1`). */
function hostOf(header: string | undefined): string {
  if (header === undefined) return '';
  if (header.startsWith('[')) return header.slice(1, header.indexOf(']'));
  const colon = header.lastIndexOf(':');
  return colon < 0 ? header : header.slice(0, colon);
}

/** Serves the dashboard's paths; the caller routes `/dashboard` and below to `handle`. */
export class DashboardServer {
  readonly #o: DashboardServerOptions;
  readonly #view: DashboardView;
  readonly #token: Buffer | undefined;
  readonly #page: string;
  readonly #streams = new Set<ServerResponse>();
  #latest: DashboardModel | undefined;
  #latestAt = 0;
  #gathering: Promise<DashboardModel> | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** The refresh loop runs (a gather in flight, or its next one scheduled). */
  #looping = false;
  #closed = false;

  constructor(o: DashboardServerOptions) {
    if (o.token === undefined && !isLoopback(o.host)) throw tokenRequired(o.host, 'the dashboard');
    this.#o = o;
    this.#view = new DashboardView(o.options);
    this.#token = o.token === undefined ? undefined : digest(o.token);
    this.#page = dashboardPage(o.title);
  }

  /** Pages open now (server-sent event streams). */
  get watchers(): number {
    return this.#streams.size;
  }

  /** Serves one request to `/dashboard` or below. */
  handle(req: IncomingMessage, res: ServerResponse): void {
    for (const [k, v] of Object.entries(securityHeaders)) res.setHeader(k, v);
    const url = new URL(req.url ?? '/', 'http://dashboard');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    if (!this.#admitted(req, res, url, path)) return;
    const get = req.method === 'GET' || req.method === 'HEAD';
    if (path === '/dashboard' && get) return this.#send(res, 200, 'text/html; charset=utf-8', this.#page);
    if (path === '/dashboard/api/snapshot' && get) {
      this.#model().then(
        (m) => this.#json(res, 200, m),
        (e: unknown) => this.#json(res, statusOf(e), errorBody(e)),
      );
      return;
    }
    if (path === '/dashboard/api/events' && req.method === 'GET') return this.#stream(req, res);
    if (path === '/dashboard/api/grain' && get) {
      const type = url.searchParams.get('type') ?? '';
      const key = url.searchParams.get('key') ?? '';
      this.#o.source.grain(type, key).then(
        (g) => this.#json(res, 200, g),
        (e: unknown) => this.#json(res, statusOf(e), errorBody(e)),
      );
      return;
    }
    if (path === '/dashboard/api/state' && req.method === 'POST') return this.#edit(req, res);
    const known = ['/dashboard/api/snapshot', '/dashboard/api/events', '/dashboard/api/grain', '/dashboard/api/state'];
    if (path === '/dashboard' || known.includes(path)) {
      res.setHeader('allow', path === '/dashboard/api/state' ? 'POST' : 'GET, HEAD');
      return this.#json(res, 405, { error: `method ${req.method ?? '?'} not allowed on ${path}` });
    }
    this.#json(res, 404, { error: `no such path: ${path}`, paths: ['/dashboard', ...known] });
  }

  /** Whether the request may go on; if not, the answer (401, 403, or the redirect that sets the cookie) is sent. */
  #admitted(req: IncomingMessage, res: ServerResponse, url: URL, path: string): boolean {
    if (this.#token === undefined) {
      if (!isLoopback(hostOf(req.headers.host))) {
        this.#json(res, 403, {
          error: 'this dashboard answers only requests to a loopback host name (127.0.0.1, localhost, [::1])',
        });
        return false;
      }
      return true;
    }
    const given = url.searchParams.get('token');
    if (given !== null && req.method === 'GET' && this.#matches(given)) {
      // Once: the token leaves the address bar (and the history) for an HttpOnly cookie.
      url.searchParams.delete('token');
      res.setHeader('set-cookie', `${COOKIE}=${encodeURIComponent(given)}; HttpOnly; SameSite=Strict; Path=/dashboard`);
      res.setHeader('location', `${path}${url.search}`);
      this.#send(res, 303, 'text/plain; charset=utf-8', 'see the dashboard\n');
      return false;
    }
    const auth = req.headers.authorization;
    if (auth !== undefined && /^bearer /i.test(auth) && this.#matches(auth.slice(7).trim())) return true;
    const cookie = (req.headers.cookie ?? '')
      .split(';')
      .map((c) => c.trim())
      .find((c) => c.startsWith(`${COOKIE}=`));
    if (cookie !== undefined) {
      let value = '';
      try {
        value = decodeURIComponent(cookie.slice(COOKIE.length + 1));
      } catch {
        value = '';
      }
      if (this.#matches(value)) return true;
    }
    res.setHeader('www-authenticate', 'Bearer realm="granary dashboard"');
    this.#json(res, 401, {
      error: 'the dashboard needs its token: Authorization: Bearer <token>, or open /dashboard?token=<token> once',
    });
    return false;
  }

  /** Constant-time comparison (of digests, so lengths never differ). */
  #matches(candidate: string): boolean {
    return this.#token !== undefined && timingSafeEqual(digest(candidate), this.#token);
  }

  // ---- Snapshots ----------------------------------------------------------------------

  /** The latest model, gathered now unless one from this refresh interval is at hand. */
  #model(): Promise<DashboardModel> {
    if (this.#latest !== undefined && Date.now() - this.#latestAt < this.#o.options.refreshIntervalMs)
      return Promise.resolve(this.#latest);
    return this.#gather();
  }

  #gather(): Promise<DashboardModel> {
    this.#gathering ??= this.#o.source
      .cluster()
      .then((c) => {
        const m = this.#view.update(c);
        this.#latest = m;
        this.#latestAt = Date.now();
        return m;
      })
      .finally(() => (this.#gathering = undefined));
    return this.#gathering;
  }

  #stream(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write(`retry: 2000\n\n`);
    this.#streams.add(res);
    const gone = (): void => {
      this.#streams.delete(res);
    };
    req.on('close', gone);
    res.on('error', gone);
    if (this.#latest !== undefined) res.write(`event: snapshot\ndata: ${JSON.stringify(this.#latest)}\n\n`);
    if (!this.#looping) {
      this.#looping = true;
      this.#tick();
    }
  }

  /** One refresh: gather, send to every open page, and schedule the next while any is open. */
  #tick(): void {
    this.#timer = undefined;
    if (this.#closed || this.#streams.size === 0) {
      this.#looping = false;
      return;
    }
    const started = Date.now();
    this.#gather()
      .then(
        (m) => this.#broadcast('snapshot', m),
        (e: unknown) => {
          this.#o.logger.debug({ err: e }, 'dashboard: the cluster could not be gathered');
          this.#broadcast('failure', errorBody(e));
        },
      )
      .finally(() => {
        if (this.#closed || this.#streams.size === 0) {
          this.#looping = false;
          return;
        }
        const wait = Math.max(0, this.#o.options.refreshIntervalMs - (Date.now() - started));
        this.#timer = setTimeout(() => this.#tick(), wait);
        this.#timer.unref();
      });
  }

  #broadcast(event: string, data: unknown): void {
    const frame = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const s of this.#streams) s.write(frame);
  }

  // ---- Edits ------------------------------------------------------------------------

  #edit(req: IncomingMessage, res: ServerResponse): void {
    const type = req.headers['content-type'] ?? '';
    if (!/^application\/json\b/i.test(type)) {
      this.#json(res, 415, { error: 'an edit is a JSON body (content-type: application/json)' });
      return;
    }
    // A browser sends Origin with a POST: it must be this host (no other site's page may edit).
    const origin = req.headers.origin;
    if (
      origin !== undefined &&
      origin !== `http://${req.headers.host ?? ''}` &&
      origin !== `https://${req.headers.host ?? ''}`
    ) {
      this.#json(res, 403, { error: `an edit from another origin (${origin}) is refused` });
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      if (size > MAX_BODY) {
        this.#json(res, 413, { error: `an edit may hold at most ${MAX_BODY} bytes` });
        return;
      }
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      } catch {
        this.#json(res, 400, { error: 'the body is not JSON' });
        return;
      }
      const { type: grainType, key, state, etag, json } = body;
      if (
        typeof grainType !== 'string' ||
        typeof key !== 'string' ||
        typeof state !== 'string' ||
        typeof json !== 'string' ||
        (etag !== null && typeof etag !== 'string')
      ) {
        this.#json(res, 400, {
          error: 'an edit is { type: string, key: string, state: string, etag: string | null, json: string }',
        });
        return;
      }
      this.#o.source.writeState(grainType, key, state, etag, json).then(
        (r) => this.#json(res, 200, r),
        (e: unknown) => this.#json(res, statusOf(e), errorBody(e)),
      );
    });
  }

  #json(res: ServerResponse, code: number, body: unknown): void {
    this.#send(res, code, JSON_TYPE, JSON.stringify(body));
  }

  #send(res: ServerResponse, code: number, type: string, text: string): void {
    if (res.headersSent) return;
    res.statusCode = code;
    res.setHeader('content-type', type);
    res.setHeader('content-length', Buffer.byteLength(text));
    res.end(res.req.method === 'HEAD' ? undefined : text);
  }

  /** Ends the open pages' streams and the refresh loop. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const s of this.#streams) s.end();
    this.#streams.clear();
  }
}
