// Failover of the fleet sample under load: two silo processes on one shared
// data directory, the load generator against both, one silo SIGKILLed in the
// middle of the run. Devices must keep reporting through the survivor, the
// aggregates must converge to the devices' persisted counts, and nothing the
// generator saw acknowledged may be missing.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { runLoad } from '../../examples/fleet/load.ts';
import { eventually } from '../helpers.ts';

const SILO = new URL('../../examples/fleet/silo.ts', import.meta.url).pathname;

interface SiloProcess {
  child: ChildProcess;
  url: string;
  stderr: () => string;
}

/** Starts examples/fleet/silo.ts and waits for its ready line. */
async function startSilo(dataDir: string, clusterId: string): Promise<SiloProcess> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--conditions=source',
      SILO,
      ...['--http-port', '0', '--silo-port', '0', '--data-dir', dataDir, '--cluster-id', clusterId, '--mqtt', 'off'],
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GRANARY_LOG_LEVEL: 'warn' } },
  );
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-4000)));
  const lines = createInterface({ input: child.stdout! });
  const ready = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`silo not ready in 20 s: ${err}`)), 20_000);
    lines.on('line', (line) => {
      try {
        const m = JSON.parse(line) as { ready?: boolean; http?: string };
        if (m.ready === true && typeof m.http === 'string') {
          clearTimeout(timer);
          resolve(m.http);
        }
      } catch {
        // not the ready line
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`silo exited with ${code} before ready: ${err}`));
    });
  });
  try {
    return { child, url: await ready, stderr: () => err };
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
}

async function stopSilo(s: SiloProcess | undefined): Promise<void> {
  if (s === undefined || s.child.exitCode !== null || s.child.signalCode !== null) return;
  const exited = once(s.child, 'exit');
  s.child.kill('SIGTERM');
  const timer = setTimeout(() => s.child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

async function getJson(url: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}

describe('examples/fleet failover under load', () => {
  it('keeps taking telemetry through the surviving silo after one is killed, and loses nothing acknowledged', async (t) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'granary-fleet-failover-'));
    const clusterId = `fleet-failover-${randomUUID().slice(0, 8)}`;
    let a: SiloProcess | undefined;
    let b: SiloProcess | undefined;
    try {
      a = await startSilo(dataDir, clusterId);
      b = await startSilo(dataDir, clusterId);
      const survivor = b.url;
      let killedAt: number | undefined;
      let ackedAtKill = 0;
      const report = await runLoad({
        urls: [a.url, b.url],
        devices: 300,
        sites: 12,
        regions: 3,
        rate: 300,
        durationMs: 10_000,
        concurrency: 200,
        // Enough tries, backing off up to 2 s, to outlast the detection of the dead silo.
        tries: 14,
        timeoutMs: 3000,
        drainMs: 20_000,
        progressIntervalMs: 100,
        onProgress: (p) => {
          if (killedAt === undefined && p.elapsedMs >= 3000) {
            killedAt = p.elapsedMs;
            ackedAtKill = p.acked;
            a!.child.kill('SIGKILL');
          }
        },
      });
      t.diagnostic(
        `killed at ${Math.round(killedAt ?? 0)} ms; sent ${report.sent} acked ${report.acked} (${ackedAtKill} before the kill) ` +
          `failed ${report.failed} retries ${report.retries} errors ${JSON.stringify(report.errors)} ` +
          `p50 ${report.latency.p50Ms} ms p99 ${report.latency.p99Ms} ms max ${report.latency.maxMs} ms`,
      );
      assert.ok(killedAt !== undefined, 'silo a was killed');
      assert.ok(ackedAtKill > 0, 'acks before the kill');
      // Devices kept reporting: the run went on for 7 s after the kill at 300/s.
      assert.ok(report.acked - ackedAtKill > 300, `acks after the kill: ${report.acked - ackedAtKill}`);
      assert.ok(report.retries > 0, 'the killed silo cost retries');
      assert.equal(report.abandoned, 0);
      assert.equal(report.perDevice.size, 300);

      // Every device's persisted state holds at least what was acknowledged.
      const ids = [...report.perDevice.keys()];
      const readDevices = async () => {
        const out = new Map<string, { lastSeq: number; messages: number }>();
        for (let i = 0; i < ids.length; i += 20)
          await Promise.all(
            ids.slice(i, i + 20).map(async (id) => {
              const r = await getJson(`${survivor}/api/devices/${id}`);
              if (r.status === 200) out.set(id, { lastSeq: r.body.lastSeq, messages: r.body.messages });
              else assert.equal(r.status, 404, `${id}: ${JSON.stringify(r.body)}`);
            }),
          );
        return out;
      };
      const persisted = await readDevices();
      for (const [id, acked] of report.perDevice) {
        if (acked.highestSeq < 0) continue;
        const p = persisted.get(id);
        assert.ok(p !== undefined, `${id} acknowledged seq ${acked.highestSeq} but is unknown`);
        assert.ok(p.lastSeq >= acked.highestSeq, `${id}: last seq ${p.lastSeq} < acknowledged ${acked.highestSeq}`);
        assert.ok(p.messages >= acked.acked, `${id}: ${p.messages} messages < ${acked.acked} acknowledged`);
      }

      // The aggregates converge to the devices' own counts.
      let last = '';
      await eventually(
        'the fleet totals to equal the sum of the devices',
        async () => {
          const devices = await readDevices();
          let messages = 0;
          for (const d of devices.values()) messages += d.messages;
          const fleet = (await getJson(`${survivor}/api/fleet`)).body as { devices: number; messages: number };
          last = `fleet ${fleet.devices} devices ${fleet.messages} messages; devices ${devices.size} ${messages}`;
          if (fleet.devices === devices.size && fleet.messages === messages) return true;
          await new Promise((r) => setTimeout(r, 250));
          return false;
        },
        20_000,
      ).catch((e: Error) => {
        throw new Error(`${e.message} (${last})`);
      });
    } finally {
      await Promise.all([stopSilo(b), stopSilo(a)]);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
