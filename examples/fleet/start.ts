// `npm start`: the fleet service as a local cluster of two silo processes
// (silo.ts) on the embedded SQLite defaults, the cluster dashboard, the MQTT
// bridge when a broker answers, and a simulator of devices sending telemetry.
//
//   npm start                                  # HTTP on 3000 and 3001, dashboard on 8080
//   npm start -- --devices 5000 --rate 500     # more devices, faster
//   npm start -- --rate 0                      # no simulator
//
// Flags (env in brackets): --http-port (FLEET_HTTP_PORT, default 3000; the
// second silo takes the next port, or a free one when 0), --silo-port
// (FLEET_SILO_PORT, default 11111, likewise), --dashboard-port
// (FLEET_DASHBOARD_PORT, default 8080), --data-dir (FLEET_DATA_DIR, default
// .fleet), --cluster-id (FLEET_CLUSTER_ID, default fleet), --mqtt
// (FLEET_MQTT, default mqtt://127.0.0.1:1883, or off), --devices
// (FLEET_DEVICES, default 2000), --rate (FLEET_RATE, messages per second,
// default 200). Ctrl-C stops the simulator, then the silos, gracefully.
// The simulator is the load generator's runLoad (load.ts) at a modest rate.

import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runLoad } from './load.ts';

const flags = {
  'http-port': ['FLEET_HTTP_PORT', '3000'],
  'silo-port': ['FLEET_SILO_PORT', '11111'],
  'dashboard-port': ['FLEET_DASHBOARD_PORT', '8080'],
  'data-dir': ['FLEET_DATA_DIR', '.fleet'],
  'cluster-id': ['FLEET_CLUSTER_ID', 'fleet'],
  mqtt: ['FLEET_MQTT', 'mqtt://127.0.0.1:1883'],
  devices: ['FLEET_DEVICES', '2000'],
  rate: ['FLEET_RATE', '200'],
} as const;
type Flag = keyof typeof flags;

function fail(message: string): never {
  process.stderr.write(`fleet: ${message}\n`);
  process.exit(2);
}

let parsed: Partial<Record<Flag, string>>;
try {
  const { values } = parseArgs({
    options: {
      ...(Object.fromEntries(Object.keys(flags).map((f) => [f, { type: 'string' }])) as Record<
        Flag,
        { type: 'string' }
      >),
      help: { type: 'boolean' },
    },
  });
  if (values.help === true) {
    const rows = Object.entries(flags).map(([f, [env, d]]) => `  --${f.padEnd(15)} ${env.padEnd(21)} default ${d}`);
    process.stdout.write(
      `npm start -- [flags]: the fleet service on a local cluster of two silos\n${rows.join('\n')}\n`,
    );
    process.exit(0);
  }
  parsed = values as unknown as Partial<Record<Flag, string>>;
} catch (e) {
  fail(
    `${(e as Error).message}; flags: ${Object.keys(flags)
      .map((f) => `--${f}`)
      .join(' ')}`,
  );
}
const get = (f: Flag): string => parsed[f] ?? process.env[flags[f][0]] ?? flags[f][1];
function int(f: Flag, max: number): number {
  const n = Number(get(f));
  if (!Number.isInteger(n) || n < 0 || n > max) fail(`--${f} must be an integer from 0 to ${max}, got ${get(f)}`);
  return n;
}

const httpPort = int('http-port', 65534);
const siloPort = int('silo-port', 65534);
const dashboardPort = int('dashboard-port', 65535);
const devices = int('devices', 1_000_000);
const rate = int('rate', 1_000_000);
const dataDir = get('data-dir');
const clusterId = get('cluster-id');
const next = (port: number): number => (port === 0 ? 0 : port + 1);

/** Whether something accepts TCP connections at the broker's address, within a second. */
function answers(url: string): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: u.hostname, port: Number(u.port || 1883), timeout: 1000 });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('timeout', () => done(false));
    socket.once('error', () => done(false));
  });
}

let mqtt: string | null = get('mqtt') === 'off' ? null : get('mqtt');
if (mqtt !== null && !(await answers(mqtt))) {
  process.stdout.write(`no MQTT broker answers at ${mqtt}: going on without MQTT (HTTP only)\n`);
  mqtt = null;
}

/** What a silo process printed when it was ready. */
interface Ready {
  http: string;
  silo: string;
  dashboard: string | null;
}

interface Child {
  process: ChildProcess;
  ready: Ready;
}

const children: Child[] = [];
let stopping = false;

/** Starts silo.ts and waits for its ready line. */
function startSilo(args: string[]): Promise<Child> {
  const entry = fileURLToPath(new URL('./silo.ts', import.meta.url));
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--conditions=source', entry, ...args, '--stop-with-parent'],
    {
      // Info logs of two silos would bury the addresses; warnings and errors come through.
      env: { GRANARY_LOG_LEVEL: 'warn', ...process.env },
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer): void => {
      out += String(d);
      const line = out.split('\n').find((l) => l.startsWith('{"ready":true'));
      if (line === undefined) return;
      child.stdout.off('data', onData);
      child.stdout.resume();
      resolve({ process: child, ready: JSON.parse(line) as Ready });
    };
    child.stdout.on('data', onData);
    child.once('exit', (code, signal) => {
      if (!stopping) reject(new Error(`a silo process exited before it was ready (${code ?? signal}): ${out}`));
    });
  });
}

const common = ['--data-dir', dataDir, '--cluster-id', clusterId, '--mqtt', mqtt ?? 'off'];
const controller = new AbortController();
let simulation: Promise<unknown> | undefined;

async function stop(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    process.stdout.write('stopping: the simulator, then the silos\n');
    controller.abort();
    await simulation?.catch(() => {});
    // One after the other, the second first: its grains move to the first, which then stops alone.
    for (const c of [...children].reverse()) {
      await new Promise<void>((resolve) => {
        if (c.process.exitCode !== null || c.process.signalCode !== null) return resolve();
        const timer = setTimeout(() => c.process.kill('SIGKILL'), 30_000);
        c.process.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
        c.process.kill('SIGTERM');
      });
    }
  }
  process.exit(code);
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => void stop(0));

try {
  children.push(
    await startSilo([
      '--http-port',
      String(httpPort),
      '--silo-port',
      String(siloPort),
      '--dashboard-port',
      String(dashboardPort),
      ...common,
    ]),
  );
  children.push(
    await startSilo(['--http-port', String(next(httpPort)), '--silo-port', String(next(siloPort)), ...common]),
  );
} catch (e) {
  process.stderr.write(`fleet: ${(e as Error).message}\n`);
  await stop(1);
}
for (const [i, c] of children.entries())
  c.process.once('exit', (code, signal) => {
    if (stopping) return;
    process.stdout.write(`silo ${i + 1} (${c.ready.silo}) exited (${code ?? signal}); the other goes on\n`);
    if (children.every((x) => x.process.exitCode !== null || x.process.signalCode !== null)) void stop(1);
  });

const [first, second] = children.map((c) => c.ready) as [Ready, Ready];
const lines = [
  `fleet: a local cluster of two silos ('${clusterId}', data in ${dataDir})`,
  `  page       ${first.http}/   ${second.http}/`,
  `  API        ${first.http}/api/fleet   ${second.http}/api/fleet`,
  `  OpenAPI    ${first.http}/openapi.json`,
  `  dashboard  ${first.dashboard ?? '(none)'}`,
  `  MQTT       ${mqtt === null ? 'off' : `${mqtt}  (devices publish on fleet/<id>/telemetry)`}`,
  `  simulator  ${rate > 0 ? `${devices} devices, ${rate} messages/s over HTTP` : 'off'}`,
  'Ctrl-C stops everything.',
];
process.stdout.write(`${lines.join('\n')}\n`);

if (rate > 0) {
  simulation = runLoad({
    urls: [first.http, second.http],
    devices,
    rate,
    transport: 'http',
    durationMs: Infinity,
    signal: controller.signal,
    // Seqs go on from the clock, so a run over the data of an earlier one is counted, not taken for repeats.
    startSeq: Date.now(),
    progressIntervalMs: 10_000,
    onProgress: (p) =>
      process.stdout.write(
        `simulator: ${p.acked} acknowledged, ${Math.round(p.rate)}/s, p99 ${p.p99Ms} ms, ${p.failed} failed\n`,
      ),
  }).catch((e: unknown) => process.stderr.write(`fleet: the simulator stopped: ${(e as Error).message}\n`));
}
