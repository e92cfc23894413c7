#!/usr/bin/env node
// The `granary` command: run a silo hosting the grain classes a module
// exports; SIGTERM or SIGINT stops it gracefully.

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { readFileSync } from 'node:fs';
import { ConfigurationError, ErrorCodes, GranaryError } from '../errors.ts';
import { Grain, type GrainClass } from '../grain/grain.ts';
import { Silo } from '../hosting/silo.ts';
import { memoryStorage } from '../providers/memory/storage.ts';
import { sqliteStorage } from '../providers/sqlite/storage.ts';
import { sqliteMembership } from '../providers/sqlite/membership.ts';
import type { MembershipTable } from '../membership/table.ts';
import type { StorageProvider } from '../storage/provider.ts';
import { memoryReminders } from '../providers/memory/reminders.ts';
import { sqliteReminders } from '../providers/sqlite/reminders.ts';
import type { ReminderTable } from '../reminders/table.ts';

const USAGE = `usage:
  granary silo --grains <module> [--host H] [--port N] [--gateway-port N] [--cluster-id ID]
               [--membership sqlite:<path> | postgres:<url> | redis:<url>]
               [--storage memory | sqlite:<path> | postgres:<url> | redis:<url>]
               [--reminders memory | sqlite:<path> | postgres:<url> | redis:<url>]
               [--min-reminder-period-ms MS] [--collection-age-ms MS]
               [--http-port N] [--http-host H]
      Starts a silo hosting every grain class the module exports. With
      --membership (or a port) it listens and joins that cluster. With
      --http-port it serves /health/startup, /health/live, /health/ready
      and /metrics (on --http-host, default --host).
      SIGTERM or SIGINT stops it gracefully; exit code 3 if the cluster
      declared it dead.
  granary version
  granary help`;

/** Grain classes among a module's exports. */
export function grainClasses(mod: Record<string, unknown>): GrainClass[] {
  return Object.values(mod).filter((v): v is GrainClass => typeof v === 'function' && v.prototype instanceof Grain);
}

/** Parses `--membership`. */
export async function parseMembership(spec: string): Promise<MembershipTable> {
  if (spec.startsWith('sqlite:') && spec.length > 7) return sqliteMembership({ path: spec.slice(7) });
  if (spec.startsWith('postgres:') || spec.startsWith('postgresql:')) {
    const { postgresMembership } = await import('../providers/postgres/index.ts');
    return postgresMembership({ connectionString: spec });
  }
  if (spec.startsWith('redis:')) {
    const { redisMembership } = await import('../providers/redis/index.ts');
    return redisMembership({ url: spec });
  }
  throw new ConfigurationError(`--membership takes 'sqlite:<path>', 'postgres://...' or 'redis://...', got '${spec}'`);
}

/** Parses `--storage`. */
export async function parseStorage(spec: string): Promise<StorageProvider> {
  if (spec === 'memory') return memoryStorage();
  if (spec.startsWith('sqlite:') && spec.length > 'sqlite:'.length)
    return sqliteStorage({ path: spec.slice('sqlite:'.length) });
  if (spec.startsWith('postgres:') || spec.startsWith('postgresql:')) {
    const { postgresStorage } = await import('../providers/postgres/index.ts');
    return postgresStorage({ connectionString: spec });
  }
  if (spec.startsWith('redis:')) {
    const { redisStorage } = await import('../providers/redis/index.ts');
    return redisStorage({ url: spec });
  }
  throw new ConfigurationError(
    `--storage takes 'memory', 'sqlite:<path>', 'postgres://...' or 'redis://...', got '${spec}'`,
  );
}

/** Parses `--reminders`. */
export async function parseReminders(spec: string): Promise<ReminderTable> {
  if (spec === 'memory') return memoryReminders();
  if (spec.startsWith('sqlite:') && spec.length > 'sqlite:'.length)
    return sqliteReminders({ path: spec.slice('sqlite:'.length) });
  if (spec.startsWith('postgres:') || spec.startsWith('postgresql:')) {
    const { postgresReminders } = await import('../providers/postgres/index.ts');
    return postgresReminders({ connectionString: spec });
  }
  if (spec.startsWith('redis:')) {
    const { redisReminders } = await import('../providers/redis/index.ts');
    return redisReminders({ url: spec });
  }
  throw new ConfigurationError(
    `--reminders takes 'memory', 'sqlite:<path>', 'postgres://...' or 'redis://...', got '${spec}'`,
  );
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** `parseArgs`, its refusals (an unknown option, a missing value) as ConfigurationError. */
function parseOptions<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (e) {
    throw new ConfigurationError(`${(e as Error)?.message ?? String(e)}\n${USAGE}`);
  }
}

async function silo(argv: string[]): Promise<void> {
  const { values } = parseOptions({
    args: argv,
    options: {
      grains: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      'cluster-id': { type: 'string' },
      'gateway-port': { type: 'string' },
      membership: { type: 'string' },
      storage: { type: 'string', default: 'sqlite:.granary/state.db' },
      reminders: { type: 'string', default: 'sqlite:.granary/state.db' },
      'min-reminder-period-ms': { type: 'string' },
      'collection-age-ms': { type: 'string' },
      'http-port': { type: 'string' },
      'http-host': { type: 'string' },
    },
    strict: true,
  });
  if (values.grains === undefined) throw new ConfigurationError('granary silo needs --grains <module>');
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(resolve(values.grains)).href)) as Record<string, unknown>;
  } catch (e) {
    throw new ConfigurationError(`cannot load --grains ${values.grains}: ${(e as Error)?.message ?? String(e)}`);
  }
  const grains = grainClasses(mod);
  if (grains.length === 0)
    throw new ConfigurationError(`${values.grains} exports no grain class (a class that extends Grain)`);
  const num = (name: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new ConfigurationError(`--${name} takes a number, got '${v}'`);
    return n;
  };
  const port = num('port', values.port);
  const gatewayPort = num('gateway-port', values['gateway-port']);
  const membership = values.membership !== undefined ? await parseMembership(values.membership) : undefined;
  const age = num('collection-age-ms', values['collection-age-ms']);
  const minPeriod = num('min-reminder-period-ms', values['min-reminder-period-ms']);
  const httpPort = num('http-port', values['http-port']);
  const s = await Silo.start({
    grains,
    storage: { default: await parseStorage(values.storage) },
    reminders: await parseReminders(values.reminders),
    ...(minPeriod !== undefined ? { minReminderPeriodMs: minPeriod } : {}),
    ...(values.host !== undefined ? { host: values.host } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(gatewayPort !== undefined ? { gatewayPort } : {}),
    ...(membership !== undefined ? { membership } : {}),
    ...(values['cluster-id'] !== undefined ? { clusterId: values['cluster-id'] } : {}),
    ...(age !== undefined ? { collectionAgeMs: age } : {}),
    ...(httpPort !== undefined ? { httpPort } : {}),
    ...(values['http-host'] !== undefined ? { httpHost: values['http-host'] } : {}),
  });
  // Serve until a signal says stop, whatever handles the silo holds.
  const alive = setInterval(() => {}, 1 << 30);
  let stopping = false;
  const stop = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    clearInterval(alive);
    process.stderr.write(`${sig}: stopping silo gracefully\n`);
    s.stop().then(
      () => process.exit(0),
      (e: unknown) => {
        process.stderr.write(`granary ${describeFailure(e, 'stop failed: ')}\n`);
        process.exit(1);
      },
    );
  };
  void s.terminated.then((how) => {
    if (how === 'declared dead') {
      clearInterval(alive);
      process.exit(3);
    }
  });
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'silo':
      return silo(rest);
    case 'version':
    case '--version':
      console.log(version());
      return;
    case 'help':
    case '--help':
    case undefined:
      console.log(USAGE);
      return;
    default:
      throw new ConfigurationError(`unknown command '${cmd}'\n${USAGE}`);
  }
}

/** `[CODE]: message` of a failure; one that is not a GranaryError has code GRANARY_ERROR. */
function describeFailure(e: unknown, prefix = ''): string {
  const code = e instanceof GranaryError ? e.code : ErrorCodes.Error;
  return `[${code}]: ${prefix}${(e as Error)?.message ?? String(e)}`;
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`granary ${describeFailure(e)}\n`);
  process.exit(2);
});
