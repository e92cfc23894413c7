// A process of the fleet service: one silo, its HTTP API and its MQTT bridge.
//
//   tsx --conditions=source examples/fleet/silo.ts --http-port 3000 --silo-port 11111 \
//     --data-dir .fleet [--cluster-id fleet] [--mqtt mqtt://127.0.0.1:1883 | --mqtt off] \
//     [--dashboard-port 8080] [--offline-after-ms 60000] [--stop-with-parent]
//
// Each flag can also come from the environment (FLEET_HTTP_PORT, FLEET_SILO_PORT,
// FLEET_DATA_DIR, FLEET_CLUSTER_ID, FLEET_MQTT, FLEET_DASHBOARD_PORT,
// FLEET_OFFLINE_AFTER_MS); a flag wins. When ready it prints one JSON line on
// stdout: {"ready":true,"http":"http://127.0.0.1:3000",...}. SIGTERM and
// SIGINT stop it gracefully (exit 0); a silo the cluster declared dead exits 3.
// With --stop-with-parent it also stops when its stdin ends: the process that
// started it (npm start) is gone, even if it died without a word; and it leaves
// SIGINT to that parent, which stops its silos one after the other.

import { parseArgs } from 'node:util';
import { startFleetSilo, type FleetSiloOptions } from './app.ts';

const flags = {
  'http-port': 'FLEET_HTTP_PORT',
  'silo-port': 'FLEET_SILO_PORT',
  'data-dir': 'FLEET_DATA_DIR',
  'cluster-id': 'FLEET_CLUSTER_ID',
  mqtt: 'FLEET_MQTT',
  'dashboard-port': 'FLEET_DASHBOARD_PORT',
  'offline-after-ms': 'FLEET_OFFLINE_AFTER_MS',
} as const;
type Flag = keyof typeof flags;

function usage(message: string): never {
  process.stderr.write(
    `fleet silo: ${message}\nflags: ${Object.keys(flags)
      .map((f) => `--${f}`)
      .join(' ')}\n`,
  );
  process.exit(2);
}

const { values } = (() => {
  try {
    return parseArgs({
      options: {
        ...(Object.fromEntries(Object.keys(flags).map((f) => [f, { type: 'string' }])) as Record<
          Flag,
          { type: 'string' }
        >),
        'stop-with-parent': { type: 'boolean' },
      },
      strict: true,
    });
  } catch (e) {
    return usage((e as Error).message);
  }
})();

function get(flag: Flag): string | undefined {
  return (values as unknown as Partial<Record<Flag, string>>)[flag] ?? process.env[flags[flag]];
}

function port(flag: Flag): number | undefined {
  const v = get(flag);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) usage(`--${flag} must be a port from 0 to 65535, got ${v}`);
  return n;
}

const options: FleetSiloOptions = {};
const httpPort = port('http-port');
if (httpPort !== undefined) options.httpPort = httpPort;
const siloPort = port('silo-port');
if (siloPort !== undefined) options.siloPort = siloPort;
const dashboardPort = port('dashboard-port');
if (dashboardPort !== undefined) options.dashboardPort = dashboardPort;
const dataDir = get('data-dir');
if (dataDir !== undefined) options.dataDir = dataDir;
const clusterId = get('cluster-id');
if (clusterId !== undefined) options.clusterId = clusterId;
const mqtt = get('mqtt');
if (mqtt !== undefined) options.mqtt = mqtt === 'off' ? null : mqtt;
const offline = get('offline-after-ms');
if (offline !== undefined) {
  const n = Number(offline);
  if (!Number.isInteger(n) || n < 100) usage(`--offline-after-ms must be an integer of at least 100, got ${offline}`);
  options.offlineAfterMs = n;
}

const app = await startFleetSilo(options);
process.stdout.write(
  `${JSON.stringify({
    ready: true,
    http: app.url,
    silo: app.silo.info.address,
    gateway: app.silo.info.gatewayAddress ?? null,
    dashboard: app.dashboard ?? null,
    mqtt: app.mqtt === undefined ? null : (options.mqtt ?? 'mqtt://127.0.0.1:1883'),
    pid: process.pid,
  })}\n`,
);

function stop(): void {
  void app.stop().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`fleet silo: stop failed: ${String(e)}\n`);
      process.exit(1);
    },
  );
}
process.once('SIGTERM', stop);
if (values['stop-with-parent'] !== true) process.once('SIGINT', stop);
else {
  // Ctrl-C in a terminal signals the whole process group: the parent stops its silos one after
  // the other (SIGTERM), so this one leaves the SIGINT to it rather than stop at the same time.
  process.on('SIGINT', () => {});
  process.stdin.once('end', stop);
  process.stdin.once('error', stop);
  process.stdin.resume();
}
void app.silo.terminated.then((how) => {
  if (how === 'declared dead') process.exit(3);
});
