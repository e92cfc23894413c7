import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually } from '../helpers.ts';
import { childEnv, cli, CliSilo, runCli } from './support.ts';

/** `granary dashboard <args>` in a child process, once it printed its address. */
async function startDashboard(args: readonly string[]) {
  const child = spawn(process.execPath, [...cli, 'dashboard', ...args], {
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += String(d)));
  child.stderr.on('data', (d) => (out += String(d)));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let url = '';
  try {
    await eventually(
      'granary dashboard to print its address',
      () => {
        if (child.exitCode !== null) throw new Error(`granary dashboard exited: ${out}`);
        url = /at (http:\/\/\S+\/dashboard)\n/.exec(out)?.[1] ?? '';
        return url !== '';
      },
      30_000,
    );
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return { child, url, exited, output: () => out };
}

interface Snapshot {
  readonly silos: ReadonlyArray<{ address: string; status: string }>;
  readonly types: ReadonlyArray<{ type: string; activations: number }>;
}

describe('granary dashboard', () => {
  it('serves the dashboard of a cluster found through its membership table, and stops on SIGTERM with exit code 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'granary-cli-dashboard-'));
    const membership = `sqlite:${join(dir, 'membership.db')}`;
    // No HTTP port: the silo serves no page, but answers a dashboard served elsewhere.
    const silo = await CliSilo.start([
      '--grains',
      'test/grains/basic.ts',
      '--storage',
      'memory',
      '--reminders',
      'memory',
      '--port',
      '0',
      '--gateway-port',
      '0',
      '--membership',
      membership,
      '--dashboard',
      'true',
    ]);
    try {
      const call = await runCli(['call', 'counter/alice', 'increment', '5', '--gateway', silo.gateway as string]);
      assert.equal(call.code, 0, call.stderr);
      const dash = await startDashboard(['--membership', membership, '--port', '0', '--title', 'fleet']);
      try {
        const page = await fetch(dash.url);
        assert.equal(page.status, 200);
        assert.match(await page.text(), /fleet/);
        let snapshot: Snapshot | undefined;
        await eventually(
          'the dashboard to show the silo and its counter activation',
          async () => {
            const res = await fetch(`${dash.url}/api/snapshot`);
            if (res.status !== 200) return false;
            const s = (await res.json()) as Snapshot;
            snapshot = s;
            const counter = s.types.find((t) => t.type === 'counter');
            return s.silos.some((x) => x.address === silo.address) && counter !== undefined && counter.activations >= 1;
          },
          20_000,
        );
        assert.equal(snapshot?.silos.find((x) => x.address === silo.address)?.status, 'active');
      } finally {
        dash.child.kill('SIGTERM');
      }
      assert.equal(await dash.exited, 0, dash.output());
    } finally {
      silo.kill();
    }
  });

  it('refuses a host beyond loopback without a token, before it connects, with exit code 2', async () => {
    const r = await runCli(['dashboard', '--gateway', '127.0.0.1:1', '--host', '0.0.0.0']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--host.*beyond loopback.*token/);
  });

  it('needs a way to the cluster, and says so', async () => {
    const r = await runCli(['dashboard']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /granary dashboard needs --gateway HOST:PORT/);
  });

  it('exits with code 1 when no gateway answers', async () => {
    const r = await runCli(['dashboard', '--gateway', '127.0.0.1:1', '--timeout', '1000']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /no gateway answered/);
  });

  it('is listed by granary help, with its own --help', async () => {
    const help = await runCli(['help']);
    assert.match(help.stdout, /dashboard +serve the live dashboard of a cluster/);
    const own = await runCli(['dashboard', '--help']);
    assert.equal(own.code, 0);
    assert.match(own.stdout, /--dashboard-token TOKEN/);
    assert.match(own.stdout, /env GRANARY_DASHBOARD_PORT/);
  });
});
