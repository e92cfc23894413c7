import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import mqtt from 'mqtt';
import { LatencyHistogram, runLoad, type LoadReport } from '../../examples/fleet/load.ts';
import { eventually } from '../helpers.ts';

const LOAD = new URL('../../examples/fleet/load.ts', import.meta.url).pathname;

interface Received {
  device: string;
  seq: number;
  body: Record<string, unknown>;
}

/** A telemetry endpoint that answers at once (or with `status`, or never), recording what it accepted. */
async function telemetryServer(opts: { status?: number; hang?: boolean; chunked?: boolean } = {}) {
  const received: Received[] = [];
  const server = http.createServer((req, res) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (data += c));
    req.on('end', () => {
      if (opts.hang) return;
      const m = /^\/api\/devices\/([^/]+)\/telemetry$/.exec(req.url ?? '');
      if (req.method !== 'POST' || !m) {
        res.writeHead(404).end();
        return;
      }
      if (opts.status !== undefined) {
        res.writeHead(opts.status, { 'content-type': 'application/json' }).end('{"error":"no"}');
        return;
      }
      const body = JSON.parse(data) as Record<string, unknown>;
      received.push({ device: m[1]!, seq: body['seq'] as number, body });
      const answer = JSON.stringify({ seq: body['seq'], commands: [] });
      if (opts.chunked) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write(answer.slice(0, 5));
        res.end(answer.slice(5));
      } else res.writeHead(200, { 'content-type': 'application/json' }).end(answer);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return {
    url,
    received,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

async function closedPort(): Promise<string> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

/** Everything the generator counts as acknowledged was received by some server. */
function assertNothingAckedLost(report: LoadReport, received: Received[]): void {
  const highest = new Map<string, number>();
  for (const r of received) highest.set(r.device, Math.max(highest.get(r.device) ?? -1, r.seq));
  let acked = 0;
  for (const [device, d] of report.perDevice) {
    acked += d.acked;
    if (d.highestSeq >= 0) assert.ok((highest.get(device) ?? -1) >= d.highestSeq, `${device} seq ${d.highestSeq}`);
  }
  assert.equal(acked, report.acked);
}

/**
 * A stand-in for the service on the broker: takes telemetry under a topic root
 * of its own and acks each message `answer` (given `device/seq`) lets through.
 */
async function mqttResponder(
  name: string,
  answer: (key: string) => boolean,
): Promise<{ responder: mqtt.MqttClient; root: string; received: Received[] }> {
  const root = `${name}-${process.pid}`;
  const responder = await mqtt.connectAsync('mqtt://127.0.0.1:1883', { clientId: root, connectTimeout: 5000 });
  const received: Received[] = [];
  responder.on('message', (topic, payload) => {
    const device = topic.split('/')[1]!;
    const body = JSON.parse(payload.toString()) as Record<string, unknown>;
    if (!answer(`${device}/${String(body['seq'])}`)) return;
    received.push({ device, seq: body['seq'] as number, body });
    responder.publish(`${root}/${device}/ack`, JSON.stringify({ seq: body['seq'] }), { qos: 1 });
  });
  await responder.subscribeAsync(`${root}/+/telemetry`, { qos: 1 });
  return { responder, root, received };
}

describe('examples/fleet load generator', () => {
  it('sends exactly the messages asked, each the next seq of its device, with plausible telemetry', async () => {
    const server = await telemetryServer({ chunked: true });
    try {
      const report = await runLoad({
        urls: [server.url],
        messages: 600,
        rate: 3000,
        devices: 40,
        sites: 8,
        regions: 3,
      });
      assert.equal(report.stoppedBy, 'messages');
      assert.equal(report.sent, 600);
      assert.equal(report.acked, 600);
      assert.equal(report.failed + report.abandoned + report.retries, 0);
      assert.deepEqual(report.errors, {});
      assert.equal(server.received.length, 600);
      // Round-robin over 40 devices (a device still in flight is skipped): each
      // device's seqs run 0, 1, 2 … in order.
      const byDevice = new Map<string, number[]>();
      for (const r of server.received) byDevice.set(r.device, [...(byDevice.get(r.device) ?? []), r.seq]);
      assert.equal(byDevice.size, 40);
      for (const [device, seqs] of byDevice) {
        assert.match(device, /^dev-\d{6}$/);
        assert.deepEqual(
          seqs,
          seqs.map((_, i) => i),
        );
        const n = seqs.length;
        assert.deepEqual(report.perDevice.get(device), { highestSeq: n - 1, acked: n, highestSent: n - 1 });
      }
      for (const { body } of server.received) {
        assert.ok(['vehicle', 'meter', 'sensor'].includes(body['kind'] as string));
        assert.match(body['site'] as string, /^site-[0-7]$/);
        assert.match(body['region'] as string, /^region-[0-2]$/);
        const battery = body['battery'] as number;
        assert.ok(battery >= 0 && battery <= 100, `battery ${battery}`);
        assert.ok(typeof body['ts'] === 'number' && Number.isInteger(body['seq']));
        const readings = body['readings'] as Record<string, number>;
        const key = { vehicle: 'speed', meter: 'watts', sensor: 'temperature' }[body['kind'] as string]!;
        assert.equal(typeof readings[key], 'number');
        if (body['kind'] === 'vehicle') assert.equal(typeof (body['position'] as { lat: number }).lat, 'number');
      }
      // A site always lies in the same region.
      const regionOfSite = new Map<string, string>();
      for (const { body } of server.received) {
        const s = body['site'] as string;
        assert.equal(regionOfSite.get(s) ?? body['region'], body['region']);
        regionOfSite.set(s, body['region'] as string);
      }
    } finally {
      await server.close();
    }
  });

  it('in random order too, each device sends its seqs in order, one message at a time', async () => {
    const server = await telemetryServer();
    try {
      const report = await runLoad({ urls: [server.url], messages: 300, rate: 3000, devices: 20, order: 'random' });
      assert.equal(report.acked, 300);
      const byDevice = new Map<string, number[]>();
      for (const r of server.received) byDevice.set(r.device, [...(byDevice.get(r.device) ?? []), r.seq]);
      let total = 0;
      for (const [device, seqs] of byDevice) {
        assert.deepEqual(
          seqs,
          seqs.map((_, i) => i),
          device,
        );
        total += seqs.length;
        assert.equal(report.perDevice.get(device)?.acked, seqs.length);
      }
      assert.equal(total, 300);
      // Random, not round-robin: the devices' counts differ.
      assert.ok(new Set([...byDevice.values()].map((s) => s.length)).size > 1);
    } finally {
      await server.close();
    }
  });

  it('paces to the target rate: a 1 s run at 300/s sends at most 300 messages', async () => {
    const server = await telemetryServer();
    try {
      const report = await runLoad({ urls: [server.url], rate: 300, durationMs: 1000, devices: 100 });
      assert.equal(report.stoppedBy, 'duration');
      assert.ok(report.sent <= 301, `sent ${report.sent}`);
      assert.ok(report.sent >= 150, `sent ${report.sent}`);
      assert.equal(report.acked, report.sent);
      assert.equal(server.received.length, report.sent);
    } finally {
      await server.close();
    }
  });

  it('reports percentiles that agree with its histogram', async () => {
    const server = await telemetryServer();
    try {
      const report = await runLoad({ urls: [server.url], messages: 400, rate: 4000, devices: 100 });
      const { latency, histogram } = report;
      assert.equal(latency.count, report.acked);
      assert.equal(
        histogram.reduce((n, b) => n + b.count, 0),
        latency.count,
      );
      assert.ok(latency.minMs <= latency.p50Ms && latency.p50Ms <= latency.p90Ms);
      assert.ok(latency.p90Ms <= latency.p99Ms && latency.p99Ms <= latency.p999Ms && latency.p999Ms <= latency.maxMs);
      for (const [q, value] of [
        [0.5, latency.p50Ms],
        [0.9, latency.p90Ms],
        [0.99, latency.p99Ms],
      ] as const) {
        const rank = Math.ceil(q * latency.count);
        let seen = 0;
        const bucket = histogram.find((b) => (seen += b.count) >= rank)!;
        assert.ok(value >= bucket.fromMs && value <= bucket.toMs, `p${q * 100} ${value} in ${JSON.stringify(bucket)}`);
      }
      assert.ok(latency.maxMs >= histogram[histogram.length - 1]!.fromMs);
    } finally {
      await server.close();
    }
  });

  it('histogram: log-linear buckets within 1.6% of the value, quantiles by rank', () => {
    const h = new LatencyHistogram();
    for (let i = 1; i <= 1000; i++) h.recordMs(i);
    for (const [q, want] of [
      [0.5, 500],
      [0.9, 900],
      [0.99, 990],
    ] as const) {
      const got = h.quantileMs(q);
      assert.ok(Math.abs(got - want) / want < 0.016, `q${q}: ${got}`);
    }
    assert.equal(h.quantileMs(1), 1000);
    assert.equal(h.summary().maxMs, 1000);
    assert.equal(h.summary().minMs, 1);
    for (const us of [0, 1, 127, 128, 129, 1000, 65_535, 1e6, 6e7, 2 ** 31 - 1]) {
      const [from, to] = LatencyHistogram.boundsOf(LatencyHistogram.indexOf(us));
      assert.ok(from <= us && us < to, `${us} in [${from}, ${to})`);
      assert.ok(to - from <= Math.max(1, from / 64), `${us}: width ${to - from}`);
    }
  });

  it('retries a refused, failing or silent server on the next URL and loses nothing acknowledged', async () => {
    const live = await telemetryServer();
    const failing = await telemetryServer({ status: 503 });
    const silent = await telemetryServer({ hang: true });
    const refused = await closedPort();
    try {
      const report = await runLoad({
        urls: [refused, failing.url, silent.url, live.url],
        messages: 200,
        rate: 1000,
        devices: 50,
        tries: 4,
        timeoutMs: 300,
      });
      assert.equal(report.sent, 200);
      assert.equal(
        report.acked,
        200,
        JSON.stringify({ failed: report.failed, abandoned: report.abandoned, errors: report.errors }),
      );
      assert.equal(report.failed, 0);
      assert.ok(report.retries > 0);
      assert.ok((report.errors['ECONNREFUSED'] ?? 0) > 0, JSON.stringify(report.errors));
      assert.ok((report.errors['http-503'] ?? 0) > 0, JSON.stringify(report.errors));
      assert.ok((report.errors['timeout'] ?? 0) > 0, JSON.stringify(report.errors));
      assert.equal(live.received.length, 200);
      assertNothingAckedLost(report, live.received);
    } finally {
      await Promise.all([live.close(), failing.close(), silent.close()]);
    }
  });

  it('survives one of two servers going away mid-run: its messages go to the other', async () => {
    const a = await telemetryServer();
    const b = await telemetryServer();
    let closed: Promise<void> | undefined;
    let bBeforeClose = 0;
    try {
      const report = await runLoad({
        urls: [a.url, b.url],
        messages: 800,
        rate: 800,
        devices: 100,
        progressIntervalMs: 50,
        onProgress: (p) => {
          if (closed === undefined && p.acked >= 200) {
            bBeforeClose = b.received.length;
            closed = a.close();
          }
        },
      });
      assert.ok(closed, 'server a was closed');
      await closed;
      assert.equal(report.sent, 800);
      assert.equal(report.acked, 800);
      assert.equal(report.failed, 0);
      assert.ok(b.received.length - bBeforeClose > 300, `b after close: ${b.received.length - bBeforeClose}`);
      assertNothingAckedLost(report, [...a.received, ...b.received]);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('stops on abort and still reports', async () => {
    const server = await telemetryServer();
    const controller = new AbortController();
    try {
      const report = await runLoad({
        urls: [server.url],
        rate: 500,
        durationMs: 60_000,
        devices: 100,
        signal: controller.signal,
        progressIntervalMs: 50,
        onProgress: (p) => {
          if (p.acked >= 50) controller.abort();
        },
      });
      assert.equal(report.stoppedBy, 'abort');
      assert.ok(report.sent >= 50 && report.sent < 1000, `sent ${report.sent}`);
      assert.equal(report.acked + report.failed + report.abandoned, report.sent);
      assertNothingAckedLost(report, server.received);
    } finally {
      await server.close();
    }
  });

  it('over MQTT: publishes QoS 1 on fleet/<id>/telemetry and counts the acks on fleet/<id>/ack', async () => {
    // A topic root of its own, so that no fleet service on this broker takes these messages.
    const { responder, root, received } = await mqttResponder('fleet-load-test', () => true);
    try {
      const report = await runLoad({
        transport: 'mqtt',
        mqttTopicRoot: root,
        messages: 300,
        rate: 1500,
        devices: 60,
        mqttClients: 3,
      });
      assert.equal(report.sent, 300);
      assert.equal(report.acked, 300);
      assert.equal(report.latency.count, 300);
      assert.equal(new Set(received.map((r) => `${r.device}/${r.seq}`)).size, 300);
      assertNothingAckedLost(report, received);
    } finally {
      await responder.endAsync(true);
    }
  });

  it('over MQTT: publishes again, after the ack timeout, a message whose ack never came', async () => {
    // Each message's first publish is lost: the device must send the same seq again.
    const seen = new Set<string>();
    const { responder, root, received } = await mqttResponder('fleet-load-test-retry', (key) => {
      if (seen.has(key)) return true;
      seen.add(key);
      return false;
    });
    try {
      const report = await runLoad({
        transport: 'mqtt',
        mqttTopicRoot: root,
        messages: 60,
        rate: 600,
        devices: 30,
        timeoutMs: 300,
      });
      assert.equal(report.sent, 60);
      assert.equal(report.acked, 60);
      // At least one retry each (more if a slow machine lets a second ack time out too).
      // (A message waiting out its backoff is not timed out again: about one retry each, not two.)
      assert.ok(report.retries >= 60 && report.retries < 90, `retries ${report.retries}`);
      assert.deepEqual(report.errors, { 'ack-timeout': report.retries });
      assert.equal(new Set(received.map((r) => `${r.device}/${r.seq}`)).size, 60);
      assertNothingAckedLost(report, received);
    } finally {
      await responder.endAsync(true);
    }
  });

  it('the command line rejects bad flags with exit code 2, naming the flag', async () => {
    const run = async (args: string[]) => {
      const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', LOAD, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (out += c.toString()));
      const [code] = (await once(child, 'exit')) as [number];
      return { code, out };
    };
    for (const [args, flag] of [
      [['--rate', 'fast'], '--rate'],
      [['--transport', 'udp'], '--transport'],
      [['--url', 'ftp://x'], '--url'],
      [['--duration', '10 parsecs'], '--duration'],
      [['--bogus'], '--bogus'],
    ] as const) {
      const { code, out } = await run([...args]);
      assert.equal(code, 2, `${args.join(' ')}: ${out}`);
      assert.ok(out.includes(flag), `${args.join(' ')}: ${out}`);
    }
    const help = await run(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.out, /--devices/);
  });

  it('the command line stops on SIGINT and still prints its report', async () => {
    const server = await telemetryServer();
    try {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', '--conditions=source', LOAD, '--url', server.url, '--rate', '200', '--duration', '60s'],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      const exited = once(child, 'exit');
      await eventually('the first messages', () => server.received.length >= 20, 20_000);
      child.kill('SIGINT');
      const [code] = (await exited) as [number];
      assert.equal(code, 0, out);
      assert.match(out, /stopped by abort/);
      assert.match(out, /latency +p50/);
      assert.ok(server.received.length < 2000);
    } finally {
      await server.close();
    }
  });

  it('the command line runs a short load and prints its report', async () => {
    const server = await telemetryServer();
    try {
      const child = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          '--conditions=source',
          LOAD,
          '--url',
          server.url,
          '--messages',
          '100',
          '--rate',
          '1k',
          '--json',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      const [code] = (await once(child, 'exit')) as [number];
      assert.equal(code, 0);
      const report = JSON.parse(out) as { sent: number; acked: number; latency: { p99Ms: number } };
      assert.equal(report.sent, 100);
      assert.equal(report.acked, 100);
      assert.equal(server.received.length, 100);
    } finally {
      await server.close();
    }
  });
});
