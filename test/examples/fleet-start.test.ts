import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually } from '../helpers.ts';

describe('examples/fleet: npm start', () => {
  it('runs two silos, the dashboard and the simulator, goes on without a broker, prints addresses that answer, and stops on SIGINT', async () => {
    const dataDir = join(mkdtempSync(join(tmpdir(), 'granary-fleet-start-')), 'data');
    // Port 0 everywhere: the printed addresses are the ones the processes really took.
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--conditions=source',
        'examples/fleet/start.ts',
        '--http-port',
        '0',
        '--silo-port',
        '0',
        '--dashboard-port',
        '0',
        '--data-dir',
        dataDir,
        '--cluster-id',
        'fleet-start-test',
        // No broker answers there: start.ts says so and goes on over HTTP.
        '--mqtt',
        'mqtt://127.0.0.1:1',
        '--devices',
        '40',
        '--rate',
        '40',
      ],
      { env: { ...process.env, GRANARY_LOG_LEVEL: 'error' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d) => (out += String(d)));
    child.stderr.on('data', (d) => (out += String(d)));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await eventually(
        'npm start to print its addresses',
        () => {
          if (child.exitCode !== null) throw new Error(`start.ts exited early:\n${out}`);
          return out.includes('Ctrl-C stops everything.');
        },
        60_000,
      );
      const line = (label: string): string[] => {
        const l = out.split('\n').find((x) => x.trimStart().startsWith(label));
        assert.ok(l, `a '${label}' line in:\n${out}`);
        return l.trim().split(/\s+/).slice(1);
      };
      const pages = line('page');
      assert.equal(pages.length, 2, 'a page on each silo');
      for (const page of pages) {
        const res = await fetch(page);
        assert.equal(res.status, 200, page);
        assert.match(await res.text(), /<title>Fleet<\/title>/);
      }
      const [api] = line('API');
      const openapi = await fetch(line('OpenAPI')[0] as string);
      assert.equal(openapi.status, 200);
      assert.ok(((await openapi.json()) as { paths: object }).paths);
      const [dashboard] = line('dashboard');
      assert.match(dashboard as string, /^http:\/\/127\.0\.0\.1:\d+\/dashboard$/);
      assert.equal((await fetch(dashboard as string)).status, 200);
      assert.match(out, /no MQTT broker answers at mqtt:\/\/127\.0\.0\.1:1: going on without MQTT/);
      assert.deepEqual(line('MQTT'), ['off']);
      // The simulator sends: the totals grow on both silos' API.
      await eventually(
        'the simulated devices to show in /api/fleet',
        async () => {
          const f = (await (await fetch(api as string)).json()) as { devices: number; messages: number };
          return f.devices > 0 && f.messages > 0;
        },
        30_000,
      );
      child.kill('SIGINT');
      assert.equal(await exited, 0, out);
      assert.match(out, /stopping: the simulator, then the silos/);
      for (const page of pages) await assert.rejects(fetch(page), `${page} closed once stopped`);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});
