import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';

const cli = ['--import', 'tsx', '--conditions=source', 'src/cli/main.ts'];

describe('granary command', () => {
  it('runs a silo with the grains a module exports and stops it gracefully on SIGTERM', async () => {
    const child = spawn(
      process.execPath,
      [...cli, 'silo', '--grains', 'test/grains/basic.ts', '--storage', 'memory', '--port', '0', '--http-port', '0'],
      {
        env: { ...process.env, GRANARY_LOG_LEVEL: 'info' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let err = '';
    child.stderr.on('data', (d) => (err += String(d)));
    const deadline = Date.now() + 20_000;
    while (!err.includes('silo started')) {
      if (Date.now() > deadline || child.exitCode !== null) {
        child.kill('SIGKILL');
        assert.fail(`the silo did not start: ${err}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    try {
      assert.match(err, /"grains":\["box","counter","flaky","lifecycle"\]/);
      const http = /"httpAddress":"([^"]+)"/.exec(err)?.[1];
      assert.ok(http !== undefined, `no httpAddress in the start line: ${err}`);
      assert.equal((await fetch(`http://${http}/health/ready`)).status, 200);
    } catch (e) {
      // A failed check must not leave the silo running (the test run would never end).
      child.kill('SIGKILL');
      throw e;
    }
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    assert.equal(code, 0, err);
    assert.match(err, /SIGTERM: stopping silo gracefully[\s\S]*silo stopped/);
  });

  it('fails on bad arguments with exit code 2 and `granary [CODE]: message`', () => {
    const r = spawnSync(process.execPath, [...cli, 'silo', '--grains', 'test/helpers.ts', '--storage', 'memory'], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^granary \[GRANARY_CONFIGURATION\]: test\/helpers.ts exports no grain class/);
    const s = spawnSync(
      process.execPath,
      [...cli, 'silo', '--grains', 'test/grains/basic.ts', '--storage', 'postgres'],
      { encoding: 'utf8' },
    );
    assert.equal(s.status, 2);
    assert.match(
      s.stderr,
      /^granary \[GRANARY_CONFIGURATION\]: --storage takes 'memory', 'sqlite:<path>', 'postgres:\/\/...' or 'redis:\/\/...'/,
    );
    const unknown = spawnSync(process.execPath, [...cli, 'silo', '--grains', 'test/grains/basic.ts', '--nope'], {
      encoding: 'utf8',
    });
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /^granary \[GRANARY_CONFIGURATION\]: Unknown option '--nope'/);
    const command = spawnSync(process.execPath, [...cli, 'serve'], { encoding: 'utf8' });
    assert.equal(command.status, 2);
    assert.match(command.stderr, /^granary \[GRANARY_CONFIGURATION\]: unknown command 'serve'\nusage:/);
    const v = spawnSync(process.execPath, [...cli, 'version'], { encoding: 'utf8' });
    assert.match(v.stdout, /^\d+\.\d+\.\d+/);
  });
});

describe('granary command in a cluster', () => {
  it(
    'joins silos through a SQLite membership file, serves a client through their gateways, and stops on SIGTERM',
    { timeout: 60_000 },
    async () => {
      const { mkdtempSync } = await import('node:fs');
      const { tmpdir } = await import('node:os');
      const { join } = await import('node:path');
      const { ClusterClient, silentLogger } = await import('granary');
      const dir = mkdtempSync(join(tmpdir(), 'granary-cli-'));
      const start = (): { child: ReturnType<typeof spawn>; gateway: Promise<string>; log: () => string } => {
        const child = spawn(
          process.execPath,
          [
            ...cli,
            'silo',
            '--grains',
            'test/grains/basic.ts',
            '--storage',
            `sqlite:${join(dir, 'state.db')}`,
            '--membership',
            `sqlite:${join(dir, 'cluster.db')}`,
            '--cluster-id',
            'cli',
            '--port',
            '0',
            '--gateway-port',
            '0',
          ],
          {
            env: { ...process.env, GRANARY_LOG_LEVEL: 'info' },
            stdio: ['ignore', 'pipe', 'pipe'],
          },
        );
        let err = '';
        const gateway = new Promise<string>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no 'silo started' line: ${err}`)), 20_000);
          child.stderr?.on('data', (d) => {
            err += String(d);
            const m = /"gateway":"([^"]+)"[^\n]*"msg":"silo started"/.exec(err);
            if (m !== null) {
              clearTimeout(timer);
              resolve(m[1] as string);
            }
          });
        });
        return { child, gateway, log: () => err };
      };
      const a = start();
      const gwA = await a.gateway;
      const b = start();
      const gwB = await b.gateway;
      const client = await ClusterClient.connect({ clusterId: 'cli', gateways: [gwA, gwB], logger: silentLogger() });
      try {
        const values = await Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            client.getGrain<{ increment(by?: number): Promise<number> }>('counter', `c${i}`).increment(2),
          ),
        );
        assert.deepEqual(values, new Array(20).fill(2));
      } finally {
        await client.close();
      }
      for (const s of [a, b]) {
        s.child.kill('SIGTERM');
        const code = await new Promise<number | null>((resolve) => s.child.on('exit', (c) => resolve(c)));
        assert.equal(code, 0, s.log());
      }
    },
  );
});
