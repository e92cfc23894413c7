// The dashboard served by a process that is not a silo (`granary dashboard`):
// it reads the cluster through a connected client, which asks a gateway's silo
// for the snapshot (the `dashboard.*` system calls open to clients).

import { createServer, type Server } from 'node:http';
import { TransportError } from '../../errors.ts';
import { silentLogger, type Logger } from '../logger.ts';
import type { DashboardSource } from './model.ts';
import {
  DASHBOARD_TOKEN_ENV,
  checkDashboardToken,
  dashboardDefaults,
  resolveDashboardOptions,
  type DashboardOptions,
} from './options.ts';
import { DashboardServer } from './server.ts';

/** Options of `serveDashboard`. */
export interface ServeDashboardOptions extends DashboardOptions {
  /** What the page reads: a `ClusterClient` (its gateways' silos must have the dashboard on). */
  readonly client: { dashboardSource(): DashboardSource };
  /** Host to listen on. Default `127.0.0.1`; anything else needs `token`. */
  readonly host?: string;
  /** Port to listen on; 0 picks a free one. Default 8081. */
  readonly port?: number;
  /** Bearer token the page and its API ask for. Default: the GRANARY_DASHBOARD_TOKEN environment variable, else none (loopback only). */
  readonly token?: string;
  /** The page's title, e.g. the cluster id. Default `cluster`. */
  readonly title?: string;
  readonly logger?: Logger;
}

/** A dashboard being served; `close()` ends it (the client stays connected: close it yourself). */
export interface ServedDashboard {
  /** `http://host:port/dashboard`. */
  readonly url: string;
  close(): Promise<void>;
}

/** The default port of `serveDashboard`. */
export const DASHBOARD_PORT = 8081;

/**
 * Serves the dashboard from this process at `http://host:port/dashboard`,
 * reading the cluster through `client`. Refuses (ConfigurationError) to
 * listen beyond loopback without a token; rejects with a TransportError when
 * it cannot listen.
 */
export async function serveDashboard(o: ServeDashboardOptions): Promise<ServedDashboard> {
  const host = o.host ?? '127.0.0.1';
  const port = o.port ?? DASHBOARD_PORT;
  const logger = o.logger ?? silentLogger();
  const envToken = process.env[DASHBOARD_TOKEN_ENV];
  const token =
    o.token !== undefined
      ? checkDashboardToken(o.token, 'serveDashboard option token')
      : envToken !== undefined && envToken !== ''
        ? checkDashboardToken(envToken, DASHBOARD_TOKEN_ENV)
        : undefined;
  // The dashboard's own options, out of the rest (the option check refuses unknown names).
  const own = Object.fromEntries(
    Object.keys(dashboardDefaults).map((k) => [k, (o as unknown as Record<string, unknown>)[k]]),
  );
  const dashboard = new DashboardServer({
    source: o.client.dashboardSource(),
    options: resolveDashboardOptions(own, 'serveDashboard options'),
    token,
    host,
    logger,
    title: o.title ?? 'cluster',
  });
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === '/' && (req.method === 'GET' || req.method === 'HEAD')) {
      res.statusCode = 302;
      res.setHeader('location', '/dashboard');
      res.end();
      return;
    }
    dashboard.handle(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: Error) =>
      reject(new TransportError(`cannot serve the dashboard on ${host}:${port}: ${e.message}`, { cause: e })),
    );
    server.listen({ host, port }, () => resolve());
  });
  const bound = server.address();
  const actual = typeof bound === 'object' && bound !== null ? bound.port : port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${actual}/dashboard`;
  logger.info({ url, token: token !== undefined }, 'dashboard listening');
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        dashboard.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
