import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { systemClock, type Clock } from '../../src/clock.ts';
import { ConfigurationError } from '../../src/errors.ts';
import {
  describeSiloOptions,
  redactSecrets,
  resolveSiloOptions,
  siloDefaults,
  type SiloFallbacks,
  type SiloOptions,
} from '../../src/hosting/options.ts';
import { Grain } from '../../src/grain/grain.ts';
import { membershipDefaults } from '../../src/membership/service.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { memoryEventLog } from '../../src/providers/memory/event-log.ts';
import { memoryMembership } from '../../src/providers/memory/membership.ts';
import { memoryReminders } from '../../src/providers/memory/reminders.ts';
import { memoryStorage } from '../../src/providers/memory/storage.ts';
import type { StorageProvider } from '../../src/storage/provider.ts';
import { transportDefaults } from '../../src/transport/limits.ts';

class Counter extends Grain {}

/** Memory fallbacks that count how often each is made. */
function fallbacks(): SiloFallbacks & { made: string[] } {
  const made: string[] = [];
  return {
    made,
    storage: () => (made.push('storage'), memoryStorage()),
    eventLog: () => (made.push('eventLog'), memoryEventLog()),
    reminders: () => (made.push('reminders'), memoryReminders()),
    membership: () => (made.push('membership'), memoryMembership()),
  };
}

const logger = silentLogger();

/** Resolving `options` (untyped, as JavaScript callers give them) fails naming `option` and, if given, `value`. */
function refused(options: Record<string, unknown>, option: RegExp, value?: string): void {
  assert.throws(
    () => resolveSiloOptions({ logger, ...options } as SiloOptions, fallbacks()),
    (e: unknown) => {
      assert.ok(e instanceof ConfigurationError, `expected a ConfigurationError for ${JSON.stringify(options)}`);
      assert.match(e.message, option);
      if (value !== undefined) assert.ok(e.message.includes(value), `"${e.message}" does not show ${value}`);
      return true;
    },
  );
}

describe('silo options', () => {
  it('fill in every default, making only the providers a silo of one needs', () => {
    const f = fallbacks();
    const r = resolveSiloOptions({ logger }, f);
    assert.equal(r.clusterId, siloDefaults.clusterId);
    assert.equal(r.host, '127.0.0.1');
    assert.equal(r.port, 11111);
    assert.equal(r.gatewayPort, undefined);
    assert.equal(r.responseTimeoutMs, 30_000);
    assert.equal(r.collectionAgeMs, 900_000);
    assert.equal(r.collectionQuantumMs, undefined);
    assert.equal(r.deactivationTimeoutMs, 30_000);
    assert.equal(r.maxForwardCount, 2);
    assert.equal(r.callerStacks, false);
    assert.equal(r.minReminderPeriodMs, 60_000);
    assert.equal(r.reminderRefreshIntervalMs, 60_000);
    assert.equal(r.loadReportIntervalMs, 1000);
    assert.equal(r.maxPendingRequests, 100_000);
    assert.equal(r.systemCallTimeoutMs, 5000);
    assert.deepEqual(r.grains, []);
    assert.deepEqual(r.membershipOptions, membershipDefaults);
    assert.deepEqual(r.transport, transportDefaults);
    assert.equal(r.clock, systemClock);
    assert.equal(r.logger, logger);
    assert.deepEqual([...r.storage.keys()], ['default']);
    assert.deepEqual([...r.eventLogs.keys()], ['default']);
    assert.equal(r.reminders.kind, 'memory');
    // Alone: no membership table, no sockets.
    assert.equal(r.networked, false);
    assert.equal(r.membership, undefined);
    assert.deepEqual(f.made.sort(), ['eventLog', 'reminders', 'storage']);
    assert.deepEqual([...r.given], ['logger']);
    assert.ok(Object.isFrozen(r) && Object.isFrozen(siloDefaults));
    // No HTTP endpoint, no metrics, every subsystem at the logger's level.
    assert.equal(r.httpPort, undefined);
    assert.equal(r.httpHost, '127.0.0.1');
    assert.equal(r.metrics, false);
    assert.deepEqual({ ...r.logLevels }, {});
  });

  it("give the HTTP endpoint the silo's host unless told otherwise, and metrics with it", () => {
    const r = resolveSiloOptions({ logger, host: '10.0.0.7', httpPort: 9090 }, fallbacks());
    assert.deepEqual([r.httpHost, r.httpPort, r.metrics], ['10.0.0.7', 9090, true]);
    const quiet = resolveSiloOptions({ logger, httpPort: 0, httpHost: '0.0.0.0', metrics: false }, fallbacks());
    assert.deepEqual([quiet.httpHost, quiet.httpPort, quiet.metrics], ['0.0.0.0', 0, false]);
    assert.equal(resolveSiloOptions({ logger, metrics: true }, fallbacks()).httpPort, undefined);
    assert.equal(describeSiloOptions(r).http, '10.0.0.7:9090');
    assert.equal(describeSiloOptions(resolveSiloOptions({ logger }, fallbacks())).http, null);
    // The same port on another host is no clash; a silo alone binds no `port`.
    assert.equal(resolveSiloOptions({ logger, httpPort: 11111 }, fallbacks()).httpPort, 11111);
    assert.equal(
      resolveSiloOptions({ logger, port: 7000, httpPort: 7000, httpHost: '0.0.0.0' }, fallbacks()).httpPort,
      7000,
    );
  });

  it('keep what the user gave, and say which options were given', () => {
    const f = fallbacks();
    const storage = memoryStorage();
    const clock: Clock = { now: () => 0, setTimeout: systemClock.setTimeout, setInterval: systemClock.setInterval };
    const r = resolveSiloOptions(
      {
        clusterId: 'orders-eu.1',
        grains: [Counter],
        port: 0,
        gatewayPort: 0,
        storage: { default: storage, archive: storage },
        responseTimeoutMs: 250,
        collectionQuantumMs: 100,
        membershipOptions: { probeTimeoutMs: 200, missedProbesLimit: 2 },
        transport: { maxFrameBytes: 1024 },
        maxForwardCount: 0,
        callerStacks: true,
        clock,
        logger,
        host: undefined,
      } as unknown as SiloOptions,
      f,
    );
    assert.equal(r.clusterId, 'orders-eu.1');
    assert.deepEqual(r.grains, [Counter]);
    assert.equal(r.port, 0);
    assert.equal(r.gatewayPort, 0);
    assert.equal(r.host, '127.0.0.1');
    assert.deepEqual(
      [...r.storage],
      [
        ['default', storage],
        ['archive', storage],
      ],
    );
    assert.equal(r.responseTimeoutMs, 250);
    assert.equal(r.collectionQuantumMs, 100);
    assert.deepEqual(r.membershipOptions, { ...membershipDefaults, probeTimeoutMs: 200, missedProbesLimit: 2 });
    assert.deepEqual(r.transport, { ...transportDefaults, maxFrameBytes: 1024 });
    assert.equal(r.maxForwardCount, 0);
    assert.equal(r.callerStacks, true);
    assert.equal(r.clock, clock);
    // A port makes the silo listen and join; the memory membership table stands in for a missing one.
    assert.equal(r.networked, true);
    assert.equal(r.membership?.kind, 'memory');
    assert.deepEqual(f.made.sort(), ['eventLog', 'membership', 'reminders']);
    // An option given as undefined counts as not given.
    assert.deepEqual([...r.given].sort(), [
      'callerStacks',
      'clock',
      'clusterId',
      'collectionQuantumMs',
      'gatewayPort',
      'grains',
      'logger',
      'maxForwardCount',
      'membershipOptions',
      'port',
      'responseTimeoutMs',
      'storage',
      'transport',
    ]);
  });

  it('refuse a bad value with a ConfigurationError naming the option and the value', () => {
    refused({ clusterId: 'my cluster' }, /silo option clusterId/, '"my cluster"');
    refused({ clusterId: '' }, /silo option clusterId/, '""');
    refused({ clusterId: 'x'.repeat(129) }, /silo option clusterId/);
    refused({ host: '' }, /silo option host/, '""');
    refused({ port: 70_000 }, /silo option port must be an integer from 0 to 65535/, '70000');
    refused({ port: 1.5 }, /silo option port/, '1.5');
    refused({ port: '11111' }, /silo option port/, '"11111"');
    refused({ gatewayPort: -1 }, /silo option gatewayPort/, '-1');
    refused({ port: 30_000, gatewayPort: 30_000 }, /gatewayPort and port must differ/, '30000');
    for (const v of [0, -1, 0.5, 1500.5, Number.NaN, Infinity, 2 ** 31, '30s'])
      refused({ responseTimeoutMs: v }, /silo option responseTimeoutMs must be a whole number of milliseconds from 1/);
    for (const name of [
      'collectionAgeMs',
      'collectionQuantumMs',
      'deactivationTimeoutMs',
      'minReminderPeriodMs',
      'reminderRefreshIntervalMs',
      'loadReportIntervalMs',
      'systemCallTimeoutMs',
    ])
      refused({ [name]: -5 }, new RegExp(`silo option ${name} must be a whole number of milliseconds`), '-5');
    refused({ maxForwardCount: 256 }, /silo option maxForwardCount must be an integer from 0 to 255/, '256');
    refused({ maxForwardCount: -1 }, /silo option maxForwardCount/, '-1');
    refused({ maxPendingRequests: 0 }, /silo option maxPendingRequests/, '0');
    refused({ callerStacks: 'yes' }, /silo option callerStacks must be true or false/, '"yes"');
    refused({ grains: Counter }, /silo option grains must be an array/);
    refused({ grains: [Counter, 42] }, /silo option grains\[1\] must be a grain class/, '42');
    refused({ storage: { default: {} } }, /storage provider 'default' \(silo option storage\.default\)/);
    refused({ storage: memoryStorage() }, /silo option storage must be a record of named storage providers/);
    refused({ eventLogs: { audit: 'log' } }, /event log 'audit' \(silo option eventLogs\.audit\)/, '"log"');
    refused({ reminders: {} }, /silo option reminders is not a reminder table/);
    refused({ membership: memoryStorage() }, /silo option membership is not a membership table/);
    refused({ transport: { maxFrameBytes: 0 } }, /transport option maxFrameBytes/, '0');
    refused({ transport: 5 }, /silo option transport must be an object/, '5');
    refused({ logger: console.log }, /silo option logger must be a logger/);
    refused({ httpPort: 70_000 }, /silo option httpPort must be an integer from 0 to 65535/, '70000');
    refused({ httpPort: 8080, gatewayPort: 8080 }, /httpPort and gatewayPort must differ/, '8080');
    refused({ port: 8080, httpPort: 8080 }, /httpPort and port must differ/, '8080');
    refused({ httpHost: 'my host' }, /silo option httpHost must be a host name/, '"my host"');
    refused({ metrics: 1 }, /silo option metrics must be true or false/, '1');
    refused({ logLevels: 'debug' }, /silo option logLevels must be an object of log levels/, '"debug"');
    refused({ logLevels: { storage: 'verbose' } }, /silo option logLevels\.storage must be one of trace/, '"verbose"');
    refused(
      { logLevels: { transprot: 'debug' } },
      /unknown logLevels subsystem 'transprot' \(did you mean 'transport'\?\)/,
    );
    refused({ clock: Date }, /silo option clock must be a clock/);
    assert.throws(() => resolveSiloOptions(null as never, fallbacks()), /silo options must be an object, got null/);
  });

  it('refuse an unknown option, suggesting the one most likely meant', () => {
    refused({ prot: 11111 }, /unknown silo option 'prot' \(did you mean 'port'\?\)/);
    refused({ responseTimeout: 100 }, /unknown silo option 'responseTimeout' \(did you mean 'responseTimeoutMs'\?\)/);
    refused({ ClusterID: 'a' }, /unknown silo option 'ClusterID' \(did you mean 'clusterId'\?\)/);
    refused({ colour: 'blue' }, /unknown silo option 'colour'; known: clusterId, grains, host, port/);
  });

  it('check the membership options as strictly as the others', () => {
    refused({ membershipOptions: { probeTimeoutMs: 0 } }, /membership option probeTimeoutMs must be an integer/, '0');
    refused({ membershipOptions: { missedProbesLimit: 1.5 } }, /membership option missedProbesLimit/, '1.5');
    refused({ membershipOptions: { numVotesForDeathDeclaration: 0 } }, /membership option numVotesForDeathDeclaration/);
    refused({ membershipOptions: { joinTimeoutMs: '10s' } }, /membership option joinTimeoutMs/, '"10s"');
    refused(
      { membershipOptions: { probeInterval: 100 } },
      /unknown membership option 'probeInterval' \(did you mean 'probeIntervalMs'\?\)/,
    );
    refused({ membershipOptions: [] }, /silo option membershipOptions must be an object/);
  });

  it('redact passwords and tokens in URLs, connection strings and secret fields', () => {
    const input = {
      pg: 'postgres://app:hunter2@db.internal:5432/orders?sslmode=require',
      redis: 'redis://:s3cret@cache:6379/0',
      keyValue: "host=db user=app password='hunter 2' dbname=orders",
      ado: 'Server=db;User Id=app;Password=hunter2;Database=orders',
      query: 'https://api.example.com/v1?token=abc123&page=2',
      message: 'could not connect to postgres://app:hunter2@db/orders: refused',
      nested: { apiKey: 'k-123', password: 'pw', plain: 'db.internal', list: ['nats://u:pw2@n:4222'] },
      port: 5432,
    };
    const before = JSON.stringify(input);
    const out = redactSecrets(input);
    const text = JSON.stringify(out);
    for (const secret of ['hunter2', 'hunter 2', 's3cret', 'abc123', 'k-123', '"pw"', 'pw2'])
      assert.ok(!text.includes(secret), `${secret} leaked: ${text}`);
    assert.equal(out.pg, 'postgres://app:***@db.internal:5432/orders?sslmode=require');
    assert.equal(out.redis, 'redis://:***@cache:6379/0');
    assert.equal(out.keyValue, 'host=db user=app password=*** dbname=orders');
    assert.equal(out.ado, 'Server=db;User Id=app;Password=***;Database=orders');
    assert.equal(out.query, 'https://api.example.com/v1?token=***&page=2');
    assert.equal(out.message, 'could not connect to postgres://app:***@db/orders: refused');
    assert.deepEqual(out.nested, {
      apiKey: '***',
      password: '***',
      plain: 'db.internal',
      list: ['nats://u:***@n:4222'],
    });
    assert.equal(out.port, 5432);
    assert.equal(JSON.stringify(input), before, 'the input was changed');
  });

  it('summarise the effective options for the start log as plain values, leaking nothing a provider holds', () => {
    const inner = memoryStorage();
    const secretive: StorageProvider & { connectionString: string } = {
      kind: 'postgres',
      init: (ctx) => inner.init(ctx),
      read: (a) => inner.read(a),
      write: (a, s, e) => inner.write(a, s, e),
      clear: (a, e) => inner.clear(a, e),
      close: () => inner.close(),
      connectionString: 'postgres://app:hunter2@db/orders',
    };
    const r = resolveSiloOptions(
      { logger, clusterId: 'orders', grains: [Counter], storage: { default: secretive }, gatewayPort: 30_000 },
      fallbacks(),
    );
    const summary = describeSiloOptions(r);
    assert.deepEqual(JSON.parse(JSON.stringify(summary)), summary, 'the summary holds only plain values');
    assert.ok(!JSON.stringify(summary).includes('hunter2'));
    assert.equal(summary.clusterId, 'orders');
    assert.equal(summary.gatewayPort, 30_000);
    assert.equal(summary.networked, true);
    assert.deepEqual(summary.grains, ['Counter']);
    assert.deepEqual(summary.storage, { default: 'postgres' });
    assert.equal(summary.membership, 'memory');
    assert.equal(summary.collectionQuantumMs, 'auto');
    assert.equal(summary.clock, 'system');
    assert.deepEqual(summary.given, ['clusterId', 'gatewayPort', 'grains', 'logger', 'storage']);
    assert.equal(describeSiloOptions(resolveSiloOptions({ logger }, fallbacks())).membership, 'none');
  });
});
