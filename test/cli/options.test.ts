import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigurationError } from 'granary';
import { logLevel } from '../../src/cli/logging.ts';
import { envOf, flagOf, parseArgv, resolveOptions, show, type OptionTable } from '../../src/cli/options.ts';
import { namedSpecs, providerSpec } from '../../src/cli/providers.ts';
import { describeCommandOptions } from '../../src/cli/silo.ts';
import { allEnv, allFileKeys, callOptions, siloOptions, statusOptions } from '../../src/cli/tables.ts';

/** Resolves the silo's options from `argv`, `env` and a config file holding `file`. */
function silo(argv: string[], env: Record<string, string> = {}, file?: object): ReturnType<typeof resolveSilo> {
  let e = env;
  if (file !== undefined) {
    const path = join(mkdtempSync(join(tmpdir(), 'granary-cli-options-')), 'silo.json');
    writeFileSync(path, JSON.stringify(file));
    e = { GRANARY_CONFIG: path, ...env };
  }
  return resolveSilo(argv, e);
}

function resolveSilo(argv: string[], env: Record<string, string>) {
  return resolveOptions(siloOptions, parseArgv(siloOptions, argv, 'granary silo'), env, {
    fileKeys: allFileKeys,
    env: allEnv,
  });
}

function refuses(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ConfigurationError, `a ConfigurationError, got ${String(e)}`);
    assert.match(e.message, message);
    return true;
  });
}

describe('granary options: names', () => {
  it('derive each flag and variable from the config file key, so the three cannot drift', () => {
    const spec = siloOptions.responseTimeoutMs;
    assert.equal(flagOf('responseTimeoutMs', spec), 'response-timeout-ms');
    assert.equal(envOf('responseTimeoutMs', spec), 'GRANARY_RESPONSE_TIMEOUT_MS');
    assert.equal(flagOf('gateways', callOptions.gateways), 'gateway');
    assert.equal(envOf('gateways', callOptions.gateways), 'GRANARY_GATEWAYS');
    assert.equal(envOf('json', statusOptions.json), undefined);
    for (const name of [
      'GRANARY_CLUSTER_ID',
      'GRANARY_HOST',
      'GRANARY_PORT',
      'GRANARY_GATEWAY_PORT',
      'GRANARY_HTTP_PORT',
      'GRANARY_HTTP_HOST',
      'GRANARY_GRAINS',
      'GRANARY_MEMBERSHIP',
      'GRANARY_STORAGE',
      'GRANARY_REMINDERS',
      'GRANARY_STREAMS',
      'GRANARY_RESPONSE_TIMEOUT_MS',
      'GRANARY_COLLECTION_AGE_MS',
      'GRANARY_MIN_REMINDER_PERIOD_MS',
      'GRANARY_DEACTIVATION_TIMEOUT_MS',
      'GRANARY_LOG_LEVEL',
      'GRANARY_DASHBOARD_TOKEN',
      'GRANARY_CONFIG',
      'GRANARY_GATEWAYS',
    ])
      assert.ok(allEnv.includes(name), `${name} is read`);
  });
});

describe('granary options: sources', () => {
  it('take a flag over its variable over the config file key, and say where each came from', () => {
    const r = silo(
      ['--response-timeout-ms', '3000', '--grains', 'a.js', '--grains=b.js'],
      { GRANARY_RESPONSE_TIMEOUT_MS: '2000', GRANARY_COLLECTION_AGE_MS: '70000', GRANARY_PORT: '' },
      { responseTimeoutMs: 1000, collectionAgeMs: 60000, port: 5000, grains: ['c.js'], clusterId: 'prod' },
    );
    assert.deepEqual(
      [r.values.responseTimeoutMs, r.values.collectionAgeMs, r.values.port, r.values.grains, r.values.clusterId],
      [3000, 70000, 5000, ['a.js', 'b.js'], 'prod'],
    );
    const file = r.configFile as string;
    assert.deepEqual(r.sources, {
      config: 'GRANARY_CONFIG',
      responseTimeoutMs: '--response-timeout-ms',
      collectionAgeMs: 'GRANARY_COLLECTION_AGE_MS',
      // An empty variable is an unset one.
      port: `${file}: port`,
      grains: '--grains',
      clusterId: `${file}: clusterId`,
    });
  });

  it('read lists from repeated flags, comma-separated variables and file arrays', () => {
    assert.deepEqual(silo([], { GRANARY_GRAINS: 'a.js, b.js' }).values.grains, ['a.js', 'b.js']);
    const args = parseArgv(
      callOptions,
      ['--gateway', 'h:1', '--gateway', 'h:2', 'counter/a', 'get', '-5'],
      'granary call',
    );
    assert.deepEqual(args.flags.get('gateways'), ['h:1', 'h:2']);
    assert.deepEqual(args.positionals, ['counter/a', 'get', '-5']);
    assert.deepEqual(parseArgv(callOptions, ['x/y', 'm', '--', '--gateway'], 'granary call').positionals, [
      'x/y',
      'm',
      '--gateway',
    ]);
  });

  it('refuse a bad value naming its flag, variable or file key, and what to give', () => {
    refuses(() => silo([], { GRANARY_PORT: 'abc' }), /^GRANARY_PORT must be a port number 0-65535, got 'abc'$/);
    refuses(() => silo(['--gateway-port', '70000']), /^--gateway-port must be a port number 0-65535, got '70000'$/);
    refuses(() => silo([], {}, { port: 1.5 }), /silo\.json: port must be a port number 0-65535, got 1\.5$/);
    refuses(
      () => silo([], { GRANARY_CLUSTER_ID: 'no spaces' }),
      /^GRANARY_CLUSTER_ID must be a cluster id, got 'no spaces'$/,
    );
    refuses(
      () => silo([], {}, { clusterId: '-dash' }),
      /silo\.json: clusterId must be letters, digits, "\.", "_" and "-" \(starting with a letter or digit/,
    );
    refuses(
      () => silo([], { GRANARY_RESPONSE_TIMEOUT_MS: '0' }),
      /^GRANARY_RESPONSE_TIMEOUT_MS must be a whole number of milliseconds from 1 to 2147483647, got '0'$/,
    );
    refuses(() => silo(['--max-forward-count', '300']), /^--max-forward-count must be an integer from 0 to 255/);
    refuses(() => silo([], { GRANARY_CALLER_STACKS: 'maybe' }), /^GRANARY_CALLER_STACKS must be true or false/);
    refuses(
      () => silo([], { GRANARY_MEMBERSHIP_OPTIONS: '{"probeTimeoutMs": -1}' }),
      /^GRANARY_MEMBERSHIP_OPTIONS: membership option probeTimeoutMs must be an integer from 1 to/,
    );
    refuses(
      () => silo([], { GRANARY_MEMBERSHIP_OPTIONS: '{"probeTimeoutMS": 5}' }),
      /unknown membership option 'probeTimeoutMS' \(did you mean 'probeTimeoutMs'\?\)/,
    );
    refuses(() => silo(['--transport', '{oops']), /^--transport must be transport options as JSON/);
    refuses(() => silo(['--log-level', 'loud']), /^--log-level must be a log level \(trace, debug, info/);
    refuses(
      () => silo(['--dashboard-token', 'has space']),
      /^--dashboard-token must be a token without spaces, got \*\*\*$/,
    );
    refuses(() => silo(['--port']), /^--port needs a value \(N\); see granary silo --help$/);
  });

  it('refuse unknown config file keys and flags with the name they most likely meant', () => {
    refuses(
      () => silo([], {}, { respnseTimeoutMs: 5 }),
      /^unknown key 'respnseTimeoutMs' in config file \S+silo\.json \(did you mean 'responseTimeoutMs'\?\); known keys: /,
    );
    refuses(() => silo(['--cluster', 'x']), /^unknown flag --cluster for granary silo \(did you mean --cluster-id\?\)/);
    // A key another command takes (a client's gateways) is ignored: one file can serve the silo and the tools.
    assert.equal(silo([], {}, { gateways: ['h:1'] }).values.clusterId, undefined);
    refuses(
      () => resolveSilo([], { GRANARY_CONFIG: '/nonexistent/silo.json' }),
      /^cannot read config file \/nonexistent\/silo\.json \(GRANARY_CONFIG\)/,
    );
  });

  it('warn about GRANARY_* variables no command reads, with the one most likely meant', () => {
    const r = silo([], { GRANARY_GATEWAY_PROT: '1', GRANARY_TEST_POSTGRES: 'x', GRANARY_GATEWAYS: 'h:1' });
    assert.deepEqual(r.warnings, [
      'environment variable GRANARY_GATEWAY_PROT is not a Granary setting (did you mean GRANARY_GATEWAY_PORT?); ignored',
    ]);
  });
});

describe('granary options: providers', () => {
  it('read one provider, or named ones, of the stores a role takes', () => {
    const storage = namedSpecs(['memory', 'sqlite', 'postgres', 'redis']);
    assert.deepEqual(storage('sqlite:.granary/x.db', 'w'), { default: { store: 'sqlite', target: '.granary/x.db' } });
    assert.deepEqual(storage('memory,archive=postgres://u@h/db?sslmode=require', 'w'), {
      default: { store: 'memory', target: '' },
      archive: { store: 'postgres', target: 'postgres://u@h/db?sslmode=require' },
    });
    assert.deepEqual(storage({ default: 'memory', cold: 'redis://h:6379' }, 'w'), {
      default: { store: 'memory', target: '' },
      cold: { store: 'redis', target: 'redis://h:6379' },
    });
    const streams = namedSpecs(['memory', 'nats']);
    assert.deepEqual(streams('live=memory,events=nats://127.0.0.1:4222', 'w'), {
      live: { store: 'memory', target: '' },
      events: { store: 'nats', target: 'nats://127.0.0.1:4222' },
    });
    refuses(
      () => streams('redis://h', 'GRANARY_STREAMS'),
      /^GRANARY_STREAMS \(provider 'default'\) must be memory or nats:\/\/host:port, got 'redis:\/\/h'$/,
    );
    refuses(
      () => providerSpec(['sqlite', 'postgres', 'redis'])('memory', '--membership'),
      /^--membership must be sqlite:<path>, postgres:\/\/... or redis:\/\/..., got 'memory'$/,
    );
  });

  it('never show a password or the dashboard token, in messages or in the start log', () => {
    assert.equal(show('postgres://app:hunter2@db/x'), "'postgres://app:***@db/x'");
    assert.equal(show('postgresql:/app:hunter2@db/x'), "'postgresql:/app:***@db/x'");
    assert.equal(show('host=db password=hunter2'), "'host=db password=***'");
    const r = silo(
      [],
      {},
      {
        membership: 'postgres://app:hunter2@db:5432/granary',
        storage: 'redis://:hunter3@cache:6379',
        streams: 'events=nats://user:hunter4@nats:4222',
        dashboardToken: 'hunter5-a-token-of-16-or-more',
      },
    );
    const logged = JSON.stringify(describeCommandOptions(r.values, r.sources));
    assert.doesNotMatch(logged, /hunter/);
    assert.match(logged, /"membership":"postgres:\/\/app:\*\*\*@db:5432\/granary"/);
    assert.match(logged, /"dashboardToken":"\*\*\*"/);
    // Reminders and event logs follow the storage unless given: redis keeps no event logs.
    assert.match(logged, /"reminders":"redis:\/\/:\*\*\*@cache:6379"/);
    assert.match(logged, /"eventLogs":\{"default":"memory"\}/);
  });

  it('read log levels for all and per subsystem', () => {
    assert.equal(logLevel('debug', 'w'), 'debug');
    assert.equal(logLevel('info, membership=debug,transport=warn', 'w'), 'info,membership=debug,transport=warn');
    refuses(() => logLevel('info,warn', '--log-level'), /one level for all at most/);
    refuses(() => logLevel('membership=loud', '--log-level'), /^--log-level must be a log level/);
  });
});

describe('granary options: tables', () => {
  it('give every option help, and a placeholder to every option that takes a value', () => {
    for (const table of [siloOptions, callOptions, statusOptions] as OptionTable[])
      for (const [key, spec] of Object.entries(table)) {
        assert.ok(spec.help.length > 10, `${key} has help`);
        if (spec.arg === undefined) assert.ok(['callerStacks', 'json'].includes(key), `${key} is a switch`);
      }
  });
});
