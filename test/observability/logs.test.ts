import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { ConfigurationError, Grain, Silo, grain, memoryMembership, type Logger } from 'granary';
import { TestCluster, fastMembership } from 'granary/testing';
import { resolveSiloOptions, type SiloFallbacks } from '../../src/hosting/options.ts';
import { parseLogLevels, subsystemLogger } from '../../src/observability/logger.ts';
import { memoryEventLog } from '../../src/providers/memory/event-log.ts';
import { memoryReminders } from '../../src/providers/memory/reminders.ts';
import { memoryStorage } from '../../src/providers/memory/storage.ts';

/** A pino logger at `level` whose lines (parsed) land in `lines`. */
function capturing(level = 'info'): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { logger, lines };
}

const DEBUG = 20;
const INFO = 30;

@grain('obs.talker')
class Talker extends Grain {
  async hello(n: number): Promise<number> {
    return n + 1;
  }
  async relay(key: string): Promise<number> {
    return this.getGrain(Talker, key).hello(1);
  }
}

const fallbacks: SiloFallbacks = {
  storage: () => memoryStorage(),
  eventLog: () => memoryEventLog(),
  reminders: () => memoryReminders(),
  membership: () => memoryMembership(),
};

/** Runs `f` with GRANARY_LOG_LEVEL set to `spec`, then puts it back. */
function withEnv<T>(spec: string, f: () => T): T {
  const before = process.env['GRANARY_LOG_LEVEL'];
  process.env['GRANARY_LOG_LEVEL'] = spec;
  try {
    return f();
  } finally {
    if (before === undefined) delete process.env['GRANARY_LOG_LEVEL'];
    else process.env['GRANARY_LOG_LEVEL'] = before;
  }
}

describe('log levels per subsystem', () => {
  const silos: Silo[] = [];
  let cluster: TestCluster | undefined;
  after(async () => {
    await cluster?.stop();
    await Promise.all(silos.map((s) => s.stop()));
  });

  it('give each subsystem a child logger of its own, at the level logLevels gives it', async () => {
    const { logger, lines } = capturing('info');
    const silo = await withEnv('silent', () =>
      Silo.start({
        grains: [Talker],
        port: 0,
        membership: memoryMembership(),
        membershipOptions: fastMembership,
        logger,
        logLevels: { transport: 'debug', membership: 'warn' },
      }),
    );
    silos.push(silo);
    const of = (subsystem: string): Array<Record<string, unknown>> => lines.filter((l) => l['subsystem'] === subsystem);
    assert.ok(
      of('transport').some((l) => l['level'] === DEBUG),
      'transport logs at debug below its parent logger',
    );
    assert.deepEqual(
      of('membership').filter((l) => (l['level'] as number) < 40),
      [],
      'membership logs nothing below warn (its join logs the view at info)',
    );
    const started = of('silo').find((l) => l['msg'] === 'silo started');
    assert.ok(started !== undefined, 'the start line comes from subsystem silo');
    assert.equal(started['silo'], silo.info.address, 'lines name the address the silo listens on');
    assert.deepEqual(started['logLevels'], { transport: 'debug', membership: 'warn' });
    assert.deepEqual(
      lines.filter((l) => l['subsystem'] === undefined).map((l) => l['msg']),
      [],
      'every line of a silo names its subsystem',
    );
  });

  it('name the address the silo listens on in the lines of the HTTP endpoint, which starts before it is known', async () => {
    const { logger, lines } = capturing('info');
    const silo = await Silo.start({ grains: [Talker], port: 0, httpPort: 0, logger });
    await silo.stop();
    const closed = lines.find((l) => l['msg'] === 'HTTP endpoint closed');
    assert.equal(closed?.['subsystem'], 'http');
    assert.equal(closed?.['silo'], silo.info.address);
    assert.notEqual(silo.info.address, '127.0.0.1:0');
  });

  it('take GRANARY_LOG_LEVEL=info,membership=debug over the option, and refuse a bad one', () => {
    const r = withEnv('info, membership=debug ,transport=warn', () =>
      resolveSiloOptions({ logLevels: { membership: 'error', storage: 'warn' } }, fallbacks),
    );
    assert.deepEqual({ ...r.logLevels }, { membership: 'debug', storage: 'warn', transport: 'warn' });
    assert.deepEqual(parseLogLevels('warn'), { level: 'warn', subsystems: {} });
    assert.deepEqual(parseLogLevels('directory=trace'), { level: undefined, subsystems: { directory: 'trace' } });
    assert.throws(() => parseLogLevels('info,membrship=debug'), /'membrship' is not a subsystem/);
    assert.throws(() => parseLogLevels('loud'), /'loud' has no log level/);
    assert.throws(
      () => resolveSiloOptions({ logLevels: { membrship: 'debug' } } as never, fallbacks),
      (e: unknown) => e instanceof ConfigurationError && /did you mean 'membership'/.test(e.message),
    );
    assert.throws(
      () => resolveSiloOptions({ logLevels: { membership: 'loud' } } as never, fallbacks),
      /logLevels\.membership must be one of trace, debug/,
    );
  });

  it('filter a logger that is not pino, which can only make it quieter', () => {
    const seen: string[] = [];
    const fake = (tag: string): Logger => ({
      debug: (_f, m) => void seen.push(`${tag} debug ${m}`),
      info: (_f, m) => void seen.push(`${tag} info ${m}`),
      warn: (_f, m) => void seen.push(`${tag} warn ${m}`),
      error: (_f, m) => void seen.push(`${tag} error ${m}`),
      child: () => fake(`${tag}+`),
    });
    const http = subsystemLogger(fake('base'), 'http', 'warn');
    http.info({}, 'a');
    http.warn({}, 'b');
    http.child({ x: 1 }).debug({}, 'c');
    http.child({ x: 1 }).error({}, 'd');
    assert.deepEqual(seen, ['base+ warn b', 'base++ error d']);
  });

  it('never write a line per grain call at the default level, local, remote or from a client', async () => {
    const { logger, lines } = capturing('info');
    cluster = await TestCluster.start({ silos: 2, grains: [Talker], siloOptions: { logger } });
    const [a, b] = cluster.silos as [Silo, Silo];
    const client = cluster.client;
    const batch = async (n: number, tag: string): Promise<void> => {
      for (let i = 0; i < n; i++) {
        await a.getGrain(Talker, `${tag}-${i % 20}`).hello(i);
        await b.getGrain(Talker, `${tag}-${i % 20}`).relay(`${tag}-other-${i % 20}`);
        await client.getGrain(Talker, `${tag}-${i % 20}`).hello(i);
      }
    };
    // A first batch opens what a first call opens; the second (new grains, then warm ones) must log nothing.
    await batch(20, 'first');
    const before = lines.length;
    await batch(200, 'second');
    const during = lines.slice(before).filter((l) => (l['level'] as number) >= INFO);
    assert.deepEqual(
      during.map((l) => `${String(l['subsystem'])}: ${String(l['msg'])}`),
      [],
      '600 calls wrote log lines at info or above',
    );
  });
});
