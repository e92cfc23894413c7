// One silo of the fleet service with everything a silo process serves: the
// silo (SQLite membership, storage and reminders in a data directory that
// every silo of the local cluster shares), its HTTP API, its live feed, and
// its MQTT bridge. silo.ts runs it as a process; tests run it in-process.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  ClusterClient,
  Silo,
  defaultLogger,
  memoryStreams,
  registerError,
  type Logger,
  type MembershipOptions,
} from 'granary';
import { sqliteMembership, sqliteReminders, sqliteStorage } from 'granary/sqlite';
import { TooManyCommandsError, fleetGrains, fleetSettings, livenessPeriodMs } from './grains.ts';
import { buildHttp } from './http.ts';
import { LiveHub } from './live.ts';
import { startMqttBridge, type MqttBridge } from './mqtt.ts';

/** Options of `startFleetSilo`. Every field is optional. */
export interface FleetSiloOptions {
  /** Port of the HTTP API, 0 for a free one. Default 3000. */
  httpPort?: number;
  /** Host the HTTP API listens on. Default 127.0.0.1. */
  httpHost?: string;
  /** Silo-to-silo port, 0 for a free one. Default 11111. */
  siloPort?: number;
  /** Directory of the SQLite files (membership, state and reminders), shared by the silos of one local cluster. Default `.fleet`. */
  dataDir?: string;
  /** Cluster id. Default `fleet`. */
  clusterId?: string;
  /** MQTT broker URL, or null for no MQTT bridge. Default mqtt://127.0.0.1:1883. */
  mqtt?: string | null;
  /** First level of the MQTT topics (`<root>/<id>/telemetry`...). Default `fleet`. */
  mqttTopicRoot?: string;
  /** Port of the silo's HTTP endpoint with the cluster dashboard at /dashboard (and /metrics). Default: none. */
  dashboardPort?: number;
  /** A device that sent nothing for this long is offline, in ms. Default 60 000. */
  offlineAfterMs?: number;
  /** Pre-aggregation flush period, in ms. Default 250. */
  flushMs?: number;
  /** Period of the aggregators' pushes up the hierarchy, in ms. Default 500. */
  pushMs?: number;
  /** Period of the aggregators' durable resync reminder, in ms. Default 60 000. */
  resyncMs?: number;
  /** Failure-detection timing of the silo (tests make it fast). Default: the silo's. */
  membershipOptions?: MembershipOptions;
  /** Where the silo and the service log. Default: pino on stderr at GRANARY_LOG_LEVEL (default info). */
  logger?: Logger;
}

/** Defaults of FleetSiloOptions. */
export const fleetDefaults = Object.freeze({
  httpPort: 3000,
  httpHost: '127.0.0.1',
  siloPort: 11111,
  dataDir: '.fleet',
  clusterId: 'fleet',
  mqtt: 'mqtt://127.0.0.1:1883',
  mqttTopicRoot: 'fleet',
  offlineAfterMs: 60_000,
  flushMs: 250,
  pushMs: 500,
  resyncMs: 60_000,
});

/** A running fleet silo. */
export interface FleetSilo {
  /** Base URL of the HTTP API, like http://127.0.0.1:3000. */
  readonly url: string;
  readonly silo: Silo;
  /** The MQTT bridge, or undefined when MQTT is off. */
  readonly mqtt: MqttBridge | undefined;
  /** http://host:port/dashboard when a dashboard port was given. */
  readonly dashboard: string | undefined;
  /** Stops the bridge, the HTTP server and the silo, gracefully. */
  stop(): Promise<void>;
  /**
   * Ends as a crash would, for tests and drills: the silo aborts (no goodbye,
   * no deactivation: what was not written is lost), connections are cut.
   */
  abort(): Promise<void>;
}

let errorsRegistered = false;

/** Starts one silo of the fleet service with its HTTP API and MQTT bridge. */
export async function startFleetSilo(options: FleetSiloOptions = {}): Promise<FleetSilo> {
  const o = { ...fleetDefaults, ...options };
  const logger = options.logger ?? defaultLogger();
  fleetSettings.offlineAfterMs = o.offlineAfterMs;
  fleetSettings.flushMs = o.flushMs;
  fleetSettings.pushMs = o.pushMs;
  fleetSettings.resyncMs = o.resyncMs;
  fleetSettings.warn = (fields, msg) => logger.warn(fields, msg);
  if (!errorsRegistered) {
    // So that the HTTP layer sees the grain's own error class, not a RemoteError.
    registerError(TooManyCommandsError);
    errorsRegistered = true;
  }
  mkdirSync(o.dataDir, { recursive: true });
  const db = (name: string): string => join(o.dataDir, name);

  const silo = await Silo.start({
    clusterId: o.clusterId,
    grains: fleetGrains,
    host: '127.0.0.1',
    port: o.siloPort,
    // The live feed's cluster client connects here (see live.ts).
    gatewayPort: 0,
    membership: sqliteMembership({ path: db('cluster.db') }),
    storage: { default: sqliteStorage({ path: db('state.db') }) },
    reminders: sqliteReminders({ path: db('reminders.db') }),
    // Alert changes: memory streams reach every silo of the cluster with no
    // broker to run; they are at most once, which suits a feed whose exact
    // counterpart (devices in alert) lives in the aggregates.
    streams: { fleet: memoryStreams() },
    // Liveness reminders tick at half the offline time; the default floor is a minute.
    minReminderPeriodMs: Math.min(60_000, livenessPeriodMs(), o.resyncMs),
    ...(options.membershipOptions !== undefined ? { membershipOptions: options.membershipOptions } : {}),
    logger,
    // Every silo answers the dashboard; the one with a dashboard port serves the page.
    dashboard: true,
    ...(o.dashboardPort !== undefined ? { httpPort: o.dashboardPort } : {}),
  });

  let client: ClusterClient | undefined;
  let live: LiveHub | undefined;
  let http: Awaited<ReturnType<typeof buildHttp>> | undefined;
  let bridge: MqttBridge | undefined;
  try {
    client = await ClusterClient.connect({
      clusterId: o.clusterId,
      gateways: [silo.info.gatewayAddress as string],
      logger,
    });
    live = new LiveHub(silo, client);
    http = await buildHttp(silo, live);
    await http.listen({ port: o.httpPort, host: o.httpHost });
    if (o.mqtt !== null) bridge = await startMqttBridge(silo, o.mqtt, o.mqttTopicRoot);
  } catch (e) {
    await bridge?.stop();
    await live?.close();
    await http?.close();
    await client?.close();
    await silo.stop();
    throw e;
  }
  const addr = http.server.address();
  const url = `http://${o.httpHost}:${typeof addr === 'object' && addr !== null ? addr.port : o.httpPort}`;
  let stopping: Promise<void> | undefined;
  const [h, l, c] = [http, live, client];
  return {
    url,
    silo,
    mqtt: bridge,
    dashboard: silo.httpAddress !== undefined ? `http://${silo.httpAddress}/dashboard` : undefined,
    stop() {
      stopping ??= (async () => {
        await bridge?.stop();
        await l.close();
        await h.close();
        await c.close();
        await silo.stop();
      })();
      return stopping;
    },
    abort() {
      stopping ??= (async () => {
        h.server.closeAllConnections();
        await silo.abort();
        await Promise.allSettled([bridge?.stop(), l.close(), h.close(), c.close()]);
      })();
      return stopping;
    },
  };
}
