// The dashboard's options, defaults and checks, shared by a silo's endpoint
// (`dashboard` silo option) and a dashboard served apart from any silo
// (`serveDashboard`); and the token rule: a dashboard listening beyond
// loopback is never served without one.

import { ConfigurationError } from '../../errors.ts';

/** Options of the dashboard. Every field is optional; defaults in `dashboardDefaults`. */
export interface DashboardOptions {
  /** A grain taking at least this many calls per second is flagged as a hot grain. Default 1000. */
  hotGrainCallsPerSecond?: number;
  /** A grain with at least this many calls waiting in its mailbox is flagged as a bottleneck. Default 100. */
  hotGrainQueueLength?: number;
  /** How often the page is updated while one is open, in ms. Default 1000. */
  refreshIntervalMs?: number;
  /** How long a silo's snapshot is waited for before it shows as unreachable, in ms. Default 800. */
  siloTimeoutMs?: number;
  /** Hot grains shown. Default 10. */
  hotGrainsShown?: number;
  /** Membership events kept in memory (the oldest go first). Default 200. */
  eventLogSize?: number;
}

/** Defaults of DashboardOptions. */
export const dashboardDefaults: Readonly<Required<DashboardOptions>> = Object.freeze({
  hotGrainCallsPerSecond: 1000,
  hotGrainQueueLength: 100,
  refreshIntervalMs: 1000,
  siloTimeoutMs: 800,
  hotGrainsShown: 10,
  eventLogSize: 200,
});

/** The environment variable a token is read from when no option gives one. */
export const DASHBOARD_TOKEN_ENV = 'GRANARY_DASHBOARD_TOKEN';

/** Shortest token accepted: a token is a secret, not a password to type. */
export const MIN_TOKEN_LENGTH = 16;

const limits: Readonly<Record<keyof DashboardOptions, readonly [number, number]>> = {
  hotGrainCallsPerSecond: [1, 1e9],
  hotGrainQueueLength: [1, 1e9],
  refreshIntervalMs: [100, 3_600_000],
  siloTimeoutMs: [10, 60_000],
  hotGrainsShown: [1, 64],
  eventLogSize: [1, 100_000],
};

/** `options` with defaults filled in; a ConfigurationError names `${where}.<field>` and what it must be. */
export function resolveDashboardOptions(options: unknown, where: string): Readonly<Required<DashboardOptions>> {
  if (options === undefined || options === true) return dashboardDefaults;
  if (options === null || typeof options !== 'object' || Array.isArray(options))
    throw new ConfigurationError(
      `${where} must be true, false or an object of dashboard options (see dashboardDefaults), got ${typeof options}`,
    );
  const out: Record<string, number> = { ...dashboardDefaults };
  for (const [key, value] of Object.entries(options)) {
    if (!Object.hasOwn(limits, key))
      throw new ConfigurationError(
        `unknown dashboard option '${key}' (${where}); known: ${Object.keys(limits).join(', ')}`,
      );
    if (value === undefined) continue;
    const [min, max] = limits[key as keyof DashboardOptions];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
      throw new ConfigurationError(
        `${where}.${key} must be a whole number from ${min} to ${max}, got ${String(value)}`,
      );
    out[key] = value;
  }
  return Object.freeze(out) as Required<DashboardOptions>;
}

/** Checks a token (an option or the environment variable); a ConfigurationError names `where`. */
export function checkDashboardToken(token: unknown, where: string): string {
  if (typeof token !== 'string' || token.length < MIN_TOKEN_LENGTH || /\s/.test(token))
    throw new ConfigurationError(
      `${where} must be a secret of at least ${MIN_TOKEN_LENGTH} characters with no spaces (e.g. the output of \`openssl rand -hex 24\`)`,
    );
  return token;
}

/** Whether `host` is a loopback address: only processes of this machine reach what listens there. */
export function isLoopback(host: string): boolean {
  const h = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/**
 * The refusal of a dashboard that would listen beyond loopback with no token:
 * it is never served open.
 */
export function tokenRequired(host: string, what: string): ConfigurationError {
  return new ConfigurationError(
    `${what} listens on ${host}, beyond loopback, and a dashboard there is never served without a token: ` +
      `set dashboardToken (or the ${DASHBOARD_TOKEN_ENV} environment variable) to a secret of at least ${MIN_TOKEN_LENGTH} characters, ` +
      `or listen on 127.0.0.1`,
  );
}
