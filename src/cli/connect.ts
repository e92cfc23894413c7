// How the client commands (`granary call`, `granary status`) reach a
// cluster: through gateways given, or found in the silos' membership table.

import { existsSync } from 'node:fs';
import { ClusterClient } from '../client/client.ts';
import { ConfigurationError } from '../errors.ts';
import { siloDefaults } from '../hosting/options.ts';
import type { Logger } from '../observability/logger.ts';
import { useLogLevel } from './logging.ts';
import { parseArgv, resolveOptions, type OptionTable, type Resolution } from './options.ts';
import { membershipOf, type ProviderSpec } from './providers.ts';
import { allFileKeys } from './tables.ts';

/** The options every client command takes. */
export interface ClientValues {
  readonly clusterId?: string;
  readonly gateways?: readonly string[];
  readonly membership?: ProviderSpec;
  readonly timeoutMs?: number;
}

/** Fails unless the command has a way to the cluster. */
export function needCluster(v: ClientValues, command: string): void {
  if (v.gateways === undefined && v.membership === undefined)
    throw new ConfigurationError(
      `${command} needs --gateway HOST:PORT (or GRANARY_GATEWAYS) or --membership SPEC (or GRANARY_MEMBERSHIP); see ${command} --help`,
    );
}

/**
 * The start of a client command that takes no arguments (`granary status`,
 * `granary dashboard`): its options resolved, a way to the cluster checked,
 * and its logger (level `warn` unless the options say otherwise).
 */
export function startClientCommand<T extends OptionTable>(
  table: T,
  argv: readonly string[],
  command: string,
): { r: Resolution<T>; logger: Logger } {
  const args = parseArgv(table, argv, command);
  if (args.positionals.length > 0)
    throw new ConfigurationError(`${command} takes no arguments, got '${args.positionals[0]}'; see ${command} --help`);
  const r = resolveOptions(table, args, process.env, { fileKeys: allFileKeys });
  needCluster(r.values as ClientValues, command);
  const level = (r.values as { logLevel?: string }).logLevel;
  const { logger, warning } = useLogLevel(level, 'warn', (r.sources as { logLevel?: string }).logLevel);
  if (warning !== undefined) logger.warn({}, warning);
  return { r, logger };
}

/**
 * A membership spec a client reads: an SQLite file must exist already (opening
 * a mistyped path would create an empty table and find no silos).
 */
export function checkReadable(spec: ProviderSpec, where: string): void {
  if (spec.store === 'sqlite' && spec.target !== ':memory:' && !existsSync(spec.target))
    throw new ConfigurationError(
      `${where}: no membership file ${spec.target} (give the file the silos' --membership names)`,
    );
}

/** Connects a client as the command's options say; `timeoutMs` bounds finding a gateway. */
export async function connectClient(
  v: ClientValues,
  timeoutMs: number,
  logger: Logger,
  membershipWhere: string,
): Promise<ClusterClient> {
  if (v.membership !== undefined) checkReadable(v.membership, membershipWhere);
  return ClusterClient.connect({
    clusterId: v.clusterId ?? siloDefaults.clusterId,
    ...(v.gateways !== undefined ? { gateways: [...v.gateways] } : {}),
    ...(v.membership !== undefined ? { membership: await membershipOf(v.membership) } : {}),
    responseTimeoutMs: timeoutMs,
    connectTimeoutMs: timeoutMs,
    logger,
  });
}
