// `granary dashboard`: serves the live dashboard from this process, reading
// the cluster through a client (the gateways' silos answer it), until a
// signal. For a cluster whose silos have no HTTP port of their own, or to
// keep the page off the silos' hosts.

import { ConfigurationError } from '../errors.ts';
import { siloDefaults } from '../hosting/options.ts';
import { DASHBOARD_TOKEN_ENV, isLoopback, tokenRequired } from '../observability/dashboard/options.ts';
import { DASHBOARD_PORT, serveDashboard } from '../observability/dashboard/serve.ts';
import { connectClient, startClientCommand } from './connect.ts';
import { describeFailure, Exit } from './exit.ts';
import { dashboardOptions } from './tables.ts';

/** Runs `granary dashboard`; resolves with the exit code once a signal stopped it. */
export async function runDashboard(argv: readonly string[]): Promise<number> {
  const command = 'granary dashboard';
  const { r, logger } = startClientCommand(dashboardOptions, argv, command);
  const v = r.values;
  const clusterId = v.clusterId ?? siloDefaults.clusterId;
  const timeoutMs = v.timeoutMs ?? 10_000;
  const host = v.host ?? '127.0.0.1';
  // The token rule before the connect: a refusal is a usage error, whatever the gateways do.
  const envToken = process.env[DASHBOARD_TOKEN_ENV];
  if (!isLoopback(host) && v.dashboardToken === undefined && (envToken === undefined || envToken === ''))
    throw tokenRequired(host, `${command} (${r.sources.host ?? 'host'})`);

  // Signals first: one during the connect still ends the command cleanly.
  let signalled: (sig: NodeJS.Signals) => void = () => {};
  const firstSignal = new Promise<NodeJS.Signals>((resolve) => (signalled = resolve));
  const onSignal = (sig: NodeJS.Signals): void => signalled(sig);
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    let client;
    try {
      client = await connectClient(v, timeoutMs, logger, r.sources.membership ?? 'membership');
    } catch (e) {
      if (e instanceof ConfigurationError) throw e;
      process.stderr.write(`${command}: no gateway answered: ${describeFailure(e)}\n`);
      return Exit.Failed;
    }
    try {
      const served = await serveDashboard({
        ...v.dashboard,
        client,
        host,
        port: v.port ?? DASHBOARD_PORT,
        ...(v.dashboardToken !== undefined ? { token: v.dashboardToken } : {}),
        title: v.title ?? clusterId,
        logger,
      }).catch((e: unknown) => {
        if (e instanceof ConfigurationError) throw e;
        process.stderr.write(`${command}: ${describeFailure(e)}\n`);
        return undefined;
      });
      if (served === undefined) return Exit.Failed;
      process.stdout.write(`dashboard of cluster ${clusterId} at ${served.url}\n`);
      await firstSignal;
      await served.close();
      return Exit.Ok;
    } finally {
      await client.close();
    }
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}
