import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { ClusterClient, silentLogger } from 'granary';
import { sqliteMembership } from 'granary/sqlite';
import { CliSilo, runCli } from './support.ts';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'granary-cli-silo-'));
}

/** The JSON log line whose msg is `msg`. */
function logLine(stderr: string, msg: string): Record<string, unknown> {
  const line = stderr.split('\n').find((l) => l.includes(`"msg":${JSON.stringify(msg)}`));
  assert.ok(line !== undefined, `no '${msg}' line in:\n${stderr}`);
  return JSON.parse(line) as Record<string, unknown>;
}

/** Runs `check`; if it throws, the silo is killed first (a failed test must not leave it running). */
async function checking<T>(silo: CliSilo, check: () => T | Promise<T>): Promise<T> {
  try {
    return await check();
  } catch (e) {
    silo.kill();
    throw e;
  }
}

/** Activates grain slowStop/`key` on the silo, whose deactivation never ends: its graceful stop hangs. */
async function activateSlowStop(silo: CliSilo, key: string): Promise<void> {
  const client = await ClusterClient.connect({
    clusterId: 'dev',
    gateways: [silo.gateway as string],
    logger: silentLogger(),
  });
  try {
    assert.equal(await client.getGrain<{ ping(): Promise<string> }>('slowStop', key).ping(), key);
  } finally {
    await client.close();
  }
}

describe('granary silo: signals and exit codes', () => {
  it('stops gracefully with exit code 0 on SIGTERM, and on SIGINT', async () => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const silo = await CliSilo.start(['--grains', 'test/grains/basic.ts', '--storage', 'memory']);
      await checking(silo, () => {
        assert.deepEqual(logLine(silo.stderr, 'silo started')['grains'], ['box', 'counter', 'flaky', 'lifecycle']);
      });
      assert.equal(await silo.stop(signal), 0, silo.stderr);
      assert.match(silo.stderr, new RegExp(`${signal}: stopping silo gracefully[\\s\\S]*"msg":"silo stopped"`));
    }
  });

  for (const [first, second, code] of [
    ['SIGTERM', 'SIGINT', 130],
    ['SIGINT', 'SIGTERM', 143],
    ['SIGTERM', 'SIGTERM', 143],
  ] as const) {
    it(`stops at once with exit code ${code} on a ${second} during the graceful stop a ${first} began`, async () => {
      const silo = await CliSilo.start([
        '--grains',
        'test/grains/slow-stop.ts',
        '--storage',
        'memory',
        '--port',
        '0',
        '--gateway-port',
        '0',
        '--deactivation-timeout-ms',
        '600000',
      ]);
      await checking(silo, async () => {
        await activateSlowStop(silo, 'a');
        silo.child.kill(first);
        await silo.logged(new RegExp(`${first}: stopping silo gracefully`), `that ${first} began the stop`);
        await silo.logged(/"msg":"silo stopping"/, 'that the stop is under way');
      });
      assert.equal(await silo.stop(second), code, silo.stderr);
      assert.match(silo.stderr, new RegExp(`second ${second}: stopping at once`));
      assert.doesNotMatch(silo.stderr, /"msg":"silo stopped"/);
    });
  }

  it('exits with code 1 when the graceful stop overruns --stop-timeout-ms', async () => {
    const silo = await CliSilo.start(
      ['--grains', 'test/grains/slow-stop.ts', '--port', '0', '--gateway-port', '0', '--stop-timeout-ms', '300'],
      { GRANARY_STORAGE: 'memory', GRANARY_DEACTIVATION_TIMEOUT_MS: '600000' },
    );
    await checking(silo, () => activateSlowStop(silo, 'b'));
    assert.equal(await silo.stop('SIGTERM'), 1, silo.stderr);
    assert.match(silo.stderr, /the graceful stop did not finish within 300 ms \(--stop-timeout-ms\)/);
  });

  it('exits with code 1 when the silo cannot start: its port is taken', async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    try {
      const { port } = taken.address() as AddressInfo;
      const o = await runCli([
        'silo',
        '--grains',
        'test/grains/basic.ts',
        '--storage',
        'memory',
        '--port',
        String(port),
      ]);
      assert.equal(o.code, 1, o.stderr);
      assert.match(o.stderr, new RegExp(`granary silo could not start: \\[[A-Z_]+\\]: .*${port}`));
    } finally {
      await new Promise((r) => taken.close(r));
    }
  });

  it('exits with code 3 when the cluster declares the silo dead', { timeout: 60_000 }, async () => {
    const dir = tempDir();
    const path = join(dir, 'cluster.db');
    const silo = await CliSilo.start([
      '--grains',
      'test/grains/basic.ts',
      '--storage',
      'memory',
      '--membership',
      `sqlite:${path}`,
      '--cluster-id',
      'doomed',
      '--port',
      '0',
      '--membership-options',
      '{"tableRefreshIntervalMs": 100}',
    ]);
    // Vote it dead in its table, as the other silos would.
    const table = sqliteMembership({ path });
    await checking(silo, async () => {
      await table.init({ clusterId: 'doomed', logger: silentLogger() });
      const snap = await table.readAll();
      const row = snap.entries.find((e) => e.entry.address === silo.address);
      assert.ok(row !== undefined, `no row of ${silo.address}`);
      const now = Date.now();
      const dead = { ...row.entry, status: 'Dead' as const, suspicions: [{ by: 'test@1', at: now }] };
      const next = { version: snap.version.version + 1, etag: snap.version.etag };
      assert.equal(await table.update(dead, row.etag, next), true);
    });
    await table.close();
    assert.equal(await silo.exited, 3, silo.stderr);
    assert.match(silo.stderr, /declared dead/);
  });
});

describe('granary silo: options from a file, the environment and flags', () => {
  it('takes flags over GRANARY_* variables over the config file, and logs where each value came from', async () => {
    const dir = tempDir();
    const file = join(dir, 'silo.json');
    writeFileSync(
      file,
      JSON.stringify({
        grains: ['test/grains/basic.ts'],
        clusterId: 'from-file',
        port: 0,
        gatewayPort: 0,
        storage: 'memory',
        reminders: 'memory',
        responseTimeoutMs: 1111,
        collectionAgeMs: 60_000,
        dashboardToken: 'file-secret-token',
      }),
    );
    const silo = await CliSilo.start(['--response-timeout-ms', '3333'], {
      GRANARY_CONFIG: file,
      GRANARY_CLUSTER_ID: 'from-env',
      GRANARY_RESPONSE_TIMEOUT_MS: '2222',
      GRANARY_STREAMS: 'live=memory',
      GRANARY_GATEWAY_PROT: '1',
    });
    const started = await checking(silo, () => {
      const started = logLine(silo.stderr, 'silo started');
      assert.equal(started['clusterId'], 'from-env');
      assert.equal(started['responseTimeoutMs'], 3333);
      assert.equal(started['collectionAgeMs'], 60_000);
      assert.deepEqual(started['streams'], { live: 'memory' });
      const options = logLine(silo.stderr, 'granary silo options');
      assert.equal(options['config'], file);
      assert.deepEqual(options['from'], {
        config: 'GRANARY_CONFIG',
        grains: `${file}: grains`,
        clusterId: 'GRANARY_CLUSTER_ID',
        port: `${file}: port`,
        gatewayPort: `${file}: gatewayPort`,
        storage: `${file}: storage`,
        eventLogs: 'default',
        reminders: `${file}: reminders`,
        streams: 'GRANARY_STREAMS',
        responseTimeoutMs: '--response-timeout-ms',
        collectionAgeMs: `${file}: collectionAgeMs`,
        dashboardToken: `${file}: dashboardToken`,
        logLevel: 'GRANARY_LOG_LEVEL',
      });
      assert.equal((options['options'] as Record<string, unknown>)['dashboardToken'], '***');
      assert.doesNotMatch(silo.stderr, /file-secret-token/);
      assert.match(
        silo.stderr,
        /environment variable GRANARY_GATEWAY_PROT is not a Granary setting \(did you mean GRANARY_GATEWAY_PORT\?\)/,
      );
      return started;
    });
    assert.equal(typeof started['gateway'], 'string');
    assert.equal(await silo.stop(), 0, silo.stderr);
  });

  it('refuses a bad value, an unknown config key or flag, and grainless modules with exit code 2, naming the source', async () => {
    const dir = tempDir();
    const file = join(dir, 'silo.json');
    writeFileSync(file, JSON.stringify({ grains: 'test/grains/basic.ts', gatewayPrt: 0 }));
    const basic = ['--grains', 'test/grains/basic.ts', '--storage', 'memory'];
    const cases: Array<[args: string[], env: Record<string, string>, message: RegExp]> = [
      [
        basic,
        { GRANARY_PORT: 'abc' },
        /^granary \[GRANARY_CONFIGURATION\]: GRANARY_PORT must be a port number 0-65535, got 'abc'\n$/,
      ],
      [
        ['--config', file],
        {},
        new RegExp(
          `^granary \\[GRANARY_CONFIGURATION\\]: unknown key 'gatewayPrt' in config file ${file} \\(did you mean 'gatewayPort'\\?\\)`,
        ),
      ],
      [
        [...basic, '--prot', '1'],
        {},
        /^granary \[GRANARY_CONFIGURATION\]: unknown flag --prot for granary silo \(did you mean --port\?\); see granary silo --help/,
      ],
      [
        ['--grains', 'test/helpers.ts'],
        {},
        /^granary \[GRANARY_CONFIGURATION\]: test\/helpers.ts \(--grains\) exports no grain class/,
      ],
      [['--storage', 'memory'], {}, /^granary \[GRANARY_CONFIGURATION\]: granary silo needs --grains <module>/],
      [
        ['--grains', 'test/grains/basic.ts'],
        { GRANARY_STORAGE: 'postgres' },
        /^granary \[GRANARY_CONFIGURATION\]: GRANARY_STORAGE \(provider 'default'\) must be memory, sqlite:<path>, postgres:\/\/... or redis:\/\/..., got 'postgres'\n$/,
      ],
      [
        basic,
        { GRANARY_MEMBERSHIP: 'postgresql:/user:hunter2@db/x' },
        /^granary \[GRANARY_CONFIGURATION\]: GRANARY_MEMBERSHIP must be sqlite:<path>, postgres:\/\/... or redis:\/\/..., got 'postgresql:\/user:\*\*\*@db\/x'\n$/,
      ],
    ];
    const outcomes = await Promise.all(cases.map(([args, env]) => runCli(['silo', ...args], env)));
    outcomes.forEach((o, i) => {
      const [args, env, message] = cases[i] as (typeof cases)[number];
      assert.equal(o.code, 2, `granary silo ${args.join(' ')} with ${JSON.stringify(env)}: ${o.stderr}`);
      assert.match(o.stderr, message);
    });
  });
});

describe('granary silo in a cluster', () => {
  it(
    'joins silos through a SQLite membership file, serves a client through their gateways, and stops on SIGTERM',
    { timeout: 60_000 },
    async () => {
      const dir = tempDir();
      const args = [
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
      ];
      const a = await CliSilo.start(args);
      const b = await checking(a, () => CliSilo.start(args));
      try {
        const client = await ClusterClient.connect({
          clusterId: 'cli',
          gateways: [a.gateway as string, b.gateway as string],
          logger: silentLogger(),
        });
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
      } catch (e) {
        a.kill();
        b.kill();
        throw e;
      }
      for (const s of [a, b]) assert.equal(await s.stop(), 0, s.stderr);
    },
  );
});
