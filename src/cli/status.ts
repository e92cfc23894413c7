// `granary status`: the membership table (from the table itself, or as a
// gateway reads it) and each silo's activation count as placement sees it,
// as a table or as JSON. Its exit code says whether the cluster is healthy.

import { type ClusterClient, type ClusterStatus } from '../client/client.ts';
import { TimeoutError } from '../errors.ts';
import { redactSecrets, siloDefaults } from '../hosting/options.ts';
import { membershipDefaults } from '../membership/service.ts';
import type { SiloEntry } from '../membership/table.ts';
import type { Logger } from '../observability/logger.ts';
import { checkReadable, connectClient, startClientCommand } from './connect.ts';
import { describeFailure, Exit } from './exit.ts';
import { membershipOf, specText, type ProviderSpec } from './providers.ts';
import { statusOptions } from './tables.ts';

/** A silo's state as an operator reads it, from its row. */
export type Health = 'active' | 'suspected' | 'joining' | 'shutting down' | 'left' | 'declared dead';

/**
 * The health of a row at time `now`: Active with a death vote younger than
 * the votes' expiry is suspected; a Dead row with a vote cast after its last
 * I-am-alive was declared dead, one without left by itself.
 */
export function healthOf(e: SiloEntry, now: number): Health {
  switch (e.status) {
    case 'Active':
      return e.suspicions.some((s) => now - s.at < membershipDefaults.deathVoteExpirationMs) ? 'suspected' : 'active';
    case 'Joining':
      return 'joining';
    case 'ShuttingDown':
      return 'shutting down';
    case 'Dead':
      return e.suspicions.some((s) => s.at >= e.iAmAliveAt) ? 'declared dead' : 'left';
  }
}

/** One silo in the report. */
export interface SiloReport {
  readonly address: string;
  readonly generation: number;
  readonly status: SiloEntry['status'];
  readonly health: Health;
  readonly hostName: string;
  readonly gateway: string | null;
  readonly startedAt: string;
  readonly iAmAliveAt: string;
  readonly suspicions: ReadonlyArray<{ readonly by: string; readonly at: string }>;
  /** As the answering gateway's silo last heard it; null when it has no report (or none was reachable). */
  readonly activations: number | null;
}

/** What `granary status --json` prints. */
export interface StatusReport {
  readonly clusterId: string;
  /** Where the table was read: the membership spec (redacted), or `gateway <address>`. */
  readonly table: string;
  /** The silo whose load reports the activations are, or null. */
  readonly loadFrom: string | null;
  /** Why there are no activation counts, when there are none. */
  readonly loadError: string | null;
  /** Exit code 0: every active silo unsuspected, none declared dead lately, at least one active. */
  readonly healthy: boolean;
  readonly silos: readonly SiloReport[];
}

const iso = (t: number): string => new Date(t).toISOString();

/** The report of `members` and `activations` at `now`. */
export function statusReport(
  members: readonly SiloEntry[],
  activations: ReadonlyMap<string, number> | undefined,
  now: number,
  deadWithinMs: number,
  header: Pick<StatusReport, 'clusterId' | 'table' | 'loadFrom' | 'loadError'>,
): StatusReport {
  const rank = (h: Health): number => (h === 'left' || h === 'declared dead' ? 1 : 0);
  const sorted = [...members]
    .map((e) => ({ e, h: healthOf(e, now) }))
    .sort(
      (a, b) =>
        rank(a.h) - rank(b.h) ||
        (rank(a.h) === 0 ? a.e.address.localeCompare(b.e.address) : b.e.iAmAliveAt - a.e.iAmAliveAt),
    );
  let healthy = sorted.some(({ h }) => h === 'active' || h === 'suspected');
  for (const { e, h } of sorted) {
    if (h === 'suspected') healthy = false;
    if (h === 'declared dead' && now - Math.max(...e.suspicions.map((s) => s.at)) <= deadWithinMs) healthy = false;
  }
  return {
    ...header,
    healthy,
    silos: sorted.map(({ e, h }) => ({
      address: e.address,
      generation: e.generation,
      status: e.status,
      health: h,
      hostName: e.hostName,
      gateway: e.gatewayAddress,
      startedAt: iso(e.startedAt),
      iAmAliveAt: iso(e.iAmAliveAt),
      suspicions: e.suspicions.map((s) => ({ by: s.by, at: iso(s.at) })),
      activations: h === 'left' || h === 'declared dead' ? null : (activations?.get(e.address) ?? null),
    })),
  };
}

/** `2026-12-07 10:00:05Z`. */
function shortTime(text: string): string {
  return text.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function ago(text: string, now: number): string {
  const s = Math.round((now - Date.parse(text)) / 1000);
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

/** The report as a table, for people. */
export function formatStatus(r: StatusReport, now: number): string {
  const live = r.silos.filter((s) => s.health !== 'left' && s.health !== 'declared dead').length;
  const lines = [
    `cluster ${r.clusterId}: ${live} of ${r.silos.length} silos in the table are live; ${r.healthy ? 'healthy' : 'NOT healthy'}`,
    `table: ${r.table}; activations: ${r.loadFrom !== null ? `as silo ${r.loadFrom} last heard them` : `unknown (${r.loadError ?? 'no gateway'})`}`,
    '',
  ];
  const state = (s: SiloReport): string =>
    s.health === 'suspected'
      ? `Active, suspected (${s.suspicions.length} vote${s.suspicions.length === 1 ? '' : 's'})`
      : s.health === 'declared dead'
        ? 'Dead (declared)'
        : s.health === 'left'
          ? 'Dead (left)'
          : s.status;
  const rows = [
    ['ADDRESS', 'GENERATION', 'STATUS', 'HOST', 'GATEWAY', 'STARTED', 'LAST I-AM-ALIVE', 'ACTIVATIONS'],
    ...r.silos.map((s) => [
      s.address,
      String(s.generation),
      state(s),
      s.hostName,
      s.gateway ?? '-',
      shortTime(s.startedAt),
      `${shortTime(s.iAmAliveAt)} (${ago(s.iAmAliveAt, now)})`,
      s.activations === null ? '-' : String(s.activations),
    ]),
  ];
  const widths = (rows[0] as string[]).map((_, i) => Math.max(...rows.map((row) => (row[i] as string).length)));
  for (const row of rows)
    lines.push(
      row
        .map((c, i) => c.padEnd(widths[i] as number))
        .join('  ')
        .trimEnd(),
    );
  if (r.silos.length === 0) lines.push('(no silos in the table)');
  return lines.join('\n');
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TimeoutError(`${what} took longer than ${ms} ms (--timeout)`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The table as the membership provider gives it. */
async function readTable(
  spec: ProviderSpec,
  clusterId: string,
  timeoutMs: number,
  logger: Logger,
): Promise<SiloEntry[]> {
  const table = await membershipOf(spec);
  try {
    await withTimeout(table.init({ clusterId, logger }), timeoutMs, 'opening the membership table');
    const snap = await withTimeout(table.readAll(), timeoutMs, 'reading the membership table');
    return snap.entries.map((e) => e.entry);
  } finally {
    await table.close();
  }
}

/** Runs `granary status`; resolves with the exit code. */
export async function runStatus(argv: readonly string[]): Promise<number> {
  const command = 'granary status';
  const { r, logger } = startClientCommand(statusOptions, argv, command);
  const v = r.values;
  const clusterId = v.clusterId ?? siloDefaults.clusterId;
  const timeoutMs = v.timeoutMs ?? 10_000;

  let members: SiloEntry[] | undefined;
  let table: string;
  if (v.membership !== undefined) {
    checkReadable(v.membership, r.sources.membership ?? 'membership');
    members = await readTable(v.membership, clusterId, timeoutMs, logger);
    table = redactSecrets(specText(v.membership));
  } else table = `as gateway ${(v.gateways ?? []).join(', ')} reads it`;

  // The load reports, and without a table of our own the table too, from a gateway.
  const gateways =
    v.gateways ??
    (members ?? [])
      .filter((e) => e.status === 'Active' && e.gatewayAddress !== null)
      .map((e) => e.gatewayAddress as string);
  let status: ClusterStatus | undefined;
  let loadError: string | null = null;
  if (gateways.length === 0) loadError = 'no active silo has a gateway';
  else {
    let client: ClusterClient | undefined;
    try {
      client = await connectClient({ clusterId, gateways }, timeoutMs, logger, 'gateway');
      status = await client.clusterStatus(timeoutMs);
    } catch (e) {
      // Without a table read here, the gateway's answer is the whole report: no answer is a failure.
      if (members === undefined) throw e;
      loadError = describeFailure(e);
    } finally {
      await client?.close();
    }
  }
  if (members === undefined) {
    members = [...(status as ClusterStatus).members];
    table = `as silo ${(status as ClusterStatus).silo} read it`;
  }
  const now = Date.now();
  const report = statusReport(members, status?.activations, now, v.deadWithinMs ?? 600_000, {
    clusterId,
    table,
    loadFrom: status?.silo ?? null,
    loadError,
  });
  process.stdout.write(v.json === true ? `${JSON.stringify(report, null, 2)}\n` : `${formatStatus(report, now)}\n`);
  return report.healthy ? Exit.Ok : Exit.Unhealthy;
}
