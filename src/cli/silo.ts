// `granary silo`: runs a silo hosting the grain classes some modules export,
// configured from a file, GRANARY_* variables and flags (siloOptions), until
// a signal stops it (gracefully the first time, at once the second) or the
// cluster declares it dead. Its exit code says which.

import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ConfigurationError } from '../errors.ts';
import { Grain, type GrainClass } from '../grain/grain.ts';
import { redactSecrets, type SiloOptions } from '../hosting/options.ts';
import { Silo } from '../hosting/silo.ts';
import type { Logger } from '../observability/logger.ts';
import { describeFailure, Exit } from './exit.ts';
import { flushLogs, useLogLevel } from './logging.ts';
import { parseArgv, resolveOptions, type OptionValues, type Resolution } from './options.ts';
import {
  buildNamed,
  eventLogOf,
  membershipOf,
  remindersOf,
  specText,
  storageOf,
  streamsOf,
  type ProviderSpec,
} from './providers.ts';
import { allEnv, allFileKeys, siloOptions } from './tables.ts';

type Values = OptionValues<typeof siloOptions>;

/** Grain classes among a module's exports. */
function grainClasses(mod: Record<string, unknown>): GrainClass[] {
  return Object.values(mod).filter((v): v is GrainClass => typeof v === 'function' && v.prototype instanceof Grain);
}

async function loadGrains(modules: readonly string[], where: string): Promise<GrainClass[]> {
  const out: GrainClass[] = [];
  for (const m of modules) {
    let mod: Record<string, unknown>;
    try {
      mod = (await import(pathToFileURL(resolve(m)).href)) as Record<string, unknown>;
    } catch (e) {
      throw new ConfigurationError(`cannot load ${m} (${where}): ${(e as Error)?.message ?? String(e)}`);
    }
    const found = grainClasses(mod);
    if (found.length === 0)
      throw new ConfigurationError(`${m} (${where}) exports no grain class (a class that extends Grain)`);
    out.push(...found);
  }
  return out;
}

/** Event logs and reminders go where grain state goes unless told otherwise; a store with no event log gives memory. */
function defaultsFromStorage(v: Values): {
  storage: Record<string, ProviderSpec>;
  eventLogs: Record<string, ProviderSpec>;
  reminders: ProviderSpec;
  /** The event logs fell back to memory: the storage's store keeps none. */
  eventLogsInMemory: boolean;
} {
  const storage = v.storage ?? { default: { store: 'sqlite', target: '.granary/state.db' } };
  const main = storage['default'] ?? Object.values(storage)[0] ?? { store: 'memory', target: '' };
  const eventLogsInMemory = v.eventLogs === undefined && main.store === 'redis';
  return {
    storage,
    reminders: v.reminders ?? main,
    eventLogs: v.eventLogs ?? { default: eventLogsInMemory ? { store: 'memory', target: '' } : main },
    eventLogsInMemory,
  };
}

/**
 * The command's effective options as the start log shows them: every value
 * given or defaulted here, providers as their specs, secrets redacted, and
 * where each given value came from.
 */
export function describeCommandOptions(
  values: Values,
  sources: Resolution<typeof siloOptions>['sources'],
): { options: Record<string, unknown>; from: Record<string, string> } {
  const shown: Record<string, unknown> = {};
  const d = defaultsFromStorage(values);
  const all: Record<string, unknown> = {
    ...values,
    storage: d.storage,
    reminders: d.reminders,
    eventLogs: d.eventLogs,
  };
  for (const [key, value] of Object.entries(all)) {
    if (value === undefined) continue;
    const spec = siloOptions[key as keyof typeof siloOptions];
    if ('secret' in spec && spec.secret) shown[key] = '***';
    else if (isSpec(value)) shown[key] = specText(value);
    else if (isSpecRecord(value))
      shown[key] = Object.fromEntries(Object.entries(value).map(([n, s]) => [n, specText(s)]));
    else shown[key] = value;
  }
  const from: Record<string, string> = {};
  for (const key of Object.keys(shown)) from[key] = sources[key as keyof typeof sources] ?? 'default';
  return { options: redactSecrets(shown), from };
}

function isSpec(v: unknown): v is ProviderSpec {
  return typeof v === 'object' && v !== null && 'store' in v && 'target' in v;
}

function isSpecRecord(v: unknown): v is Record<string, ProviderSpec> {
  return (
    typeof v === 'object' &&
    v !== null &&
    !Array.isArray(v) &&
    Object.values(v).length > 0 &&
    Object.values(v).every(isSpec)
  );
}

/** The SiloOptions the command's values make, and warnings about them. */
async function siloOptionsOf(
  v: Values,
  grains: GrainClass[],
): Promise<{
  options: SiloOptions;
  warnings: string[];
}> {
  const options: Record<string, unknown> = {};
  const warnings: string[] = [];
  for (const [key, spec] of Object.entries(siloOptions)) {
    const value = v[key as keyof Values];
    if (value === undefined) continue;
    if ('silo' in spec) options[key] = value;
  }
  const d = defaultsFromStorage(v);
  if (d.eventLogsInMemory)
    warnings.push(
      'the storage is redis, which keeps no event logs: journaled grains log in memory (give --event-logs)',
    );
  options['grains'] = grains;
  options['storage'] = await buildNamed(d.storage, storageOf);
  options['eventLogs'] = await buildNamed(d.eventLogs, eventLogOf);
  options['reminders'] = await remindersOf(d.reminders);
  if (v.membership !== undefined) options['membership'] = await membershipOf(v.membership);
  if (v.streams !== undefined) options['streams'] = await buildNamed(v.streams, streamsOf);
  return { options: options as SiloOptions, warnings };
}

/** Runs `granary silo`; resolves with the exit code. */
export async function runSilo(argv: readonly string[]): Promise<number> {
  const args = parseArgv(siloOptions, argv, 'granary silo');
  if (args.positionals.length > 0)
    throw new ConfigurationError(
      `granary silo takes no arguments, got '${args.positionals[0]}' (flags start with --); see granary silo --help`,
    );
  const r = resolveOptions(siloOptions, args, process.env, { fileKeys: allFileKeys, env: allEnv });
  const v = r.values;
  if (v.grains === undefined)
    throw new ConfigurationError(
      'granary silo needs --grains <module> (or GRANARY_GRAINS, or "grains" in the config file); see granary silo --help',
    );
  const { logger, warning } = useLogLevel(v.logLevel, 'info', r.sources.logLevel);
  const log = logger.child({ command: 'granary silo' });
  const grains = await loadGrains(v.grains, r.sources.grains ?? 'grains');
  const built = await siloOptionsOf(v, grains);
  const { warnings } = built;
  // One logger for the command's lines and the silo's: one stream, lines in the order they happened.
  const options: SiloOptions = { ...built.options, logger };
  log.info({ config: r.configFile ?? null, ...describeCommandOptions(v, r.sources) }, 'granary silo options');
  for (const w of [...(warning !== undefined ? [warning] : []), ...r.warnings, ...warnings]) log.warn({}, w);
  const stopTimeout =
    v.stopTimeoutMs === undefined
      ? undefined
      : { ms: v.stopTimeoutMs, where: r.sources.stopTimeoutMs ?? 'stopTimeoutMs' };
  return serve(options, log, stopTimeout);
}

/**
 * Starts the silo and serves until a signal or a death declaration. Signal
 * handlers go in first: a signal during the start stops the silo once it is
 * up, a second one ends the process at once.
 */
async function serve(
  options: SiloOptions,
  log: Logger,
  stopTimeout: { readonly ms: number; readonly where: string } | undefined,
): Promise<number> {
  let signalled: (sig: NodeJS.Signals) => void = () => {};
  const firstSignal = new Promise<NodeJS.Signals>((r) => (signalled = r));
  let got: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (got !== undefined) {
      log.warn({ signal: sig }, `second ${sig}: stopping at once`);
      const code = sig === 'SIGINT' ? Exit.SecondSigint : Exit.SecondSigterm;
      void flushLogs(200).then(() => process.exit(code));
      return;
    }
    got = sig;
    log.info({ signal: sig }, `${sig}: stopping silo gracefully (send it again to stop at once)`);
    signalled(sig);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // Serve until told to stop, whatever handles the silo holds (one that runs alone holds none).
  const alive = setInterval(() => {}, 1 << 30);
  try {
    let silo: Silo;
    try {
      silo = await Silo.start(options);
    } catch (e) {
      if (e instanceof ConfigurationError) throw e;
      log.error({ err: e }, 'the silo could not start');
      process.stderr.write(`granary silo could not start: ${describeFailure(e)}\n`);
      return Exit.Failed;
    }
    const ending = await Promise.race([firstSignal.then(() => 'signal' as const), silo.terminated]);
    if (ending === 'declared dead') return Exit.DeclaredDead;
    const stopped = silo.stop().then(
      () => Exit.Ok,
      (e: unknown) => {
        log.error({ err: e }, 'the graceful stop failed');
        return Exit.Failed;
      },
    );
    if (stopTimeout === undefined) return await stopped;
    let timer: NodeJS.Timeout | undefined;
    const overran = new Promise<number>((r) => {
      timer = setTimeout(() => {
        log.error(
          { stopTimeoutMs: stopTimeout.ms },
          `the graceful stop did not finish within ${stopTimeout.ms} ms (${stopTimeout.where})`,
        );
        r(Exit.Failed);
      }, stopTimeout.ms);
    });
    const code = await Promise.race([stopped, overran]);
    clearTimeout(timer);
    return code;
  } finally {
    clearInterval(alive);
  }
}
