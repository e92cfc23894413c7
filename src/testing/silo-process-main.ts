// The child side of SiloProcess: builds the silo described in
// GRANARY_SILO_PROCESS, reports its addresses, stops gracefully on SIGTERM,
// and exits with code 3 if the cluster declares it dead.

import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ConfigurationError } from '../errors.ts';
import { Grain, type GrainClass } from '../grain/grain.ts';
import type { MembershipTable } from '../membership/table.ts';
import { memoryMembership } from '../providers/memory/membership.ts';
import { memoryStorage } from '../providers/memory/storage.ts';
import { sqliteMembership } from '../providers/sqlite/membership.ts';
import { sqliteStorage } from '../providers/sqlite/storage.ts';
import { sqliteReminders } from '../providers/sqlite/reminders.ts';
import { memoryReminders } from '../providers/memory/reminders.ts';
import type { ReminderTable } from '../reminders/table.ts';
import { Silo } from '../hosting/silo.ts';
import type { StorageProvider } from '../storage/provider.ts';
import type { ProviderSpec, SiloProcessOptions, StreamSpec } from './process.ts';
import { memoryStreams } from '../streams/memory.ts';
import type { StreamProvider } from '../streams/provider.ts';

async function membershipOf(spec: ProviderSpec): Promise<MembershipTable> {
  switch (spec.kind) {
    case 'memory':
      return memoryMembership();
    case 'sqlite':
      return sqliteMembership({
        path: spec.path,
        ...(spec.tablePrefix !== undefined ? { tablePrefix: spec.tablePrefix } : {}),
      });
    case 'postgres': {
      const { postgresMembership } = await import('../providers/postgres/index.ts');
      return postgresMembership({
        connectionString: spec.connectionString,
        ...(spec.tablePrefix !== undefined ? { tablePrefix: spec.tablePrefix } : {}),
      });
    }
    case 'redis': {
      const { redisMembership } = await import('../providers/redis/index.ts');
      return redisMembership({ url: spec.url, ...(spec.keyPrefix !== undefined ? { keyPrefix: spec.keyPrefix } : {}) });
    }
  }
}

async function storageOf(spec: ProviderSpec | undefined): Promise<StorageProvider> {
  if (spec === undefined || spec.kind === 'memory') return memoryStorage();
  switch (spec.kind) {
    case 'sqlite':
      return sqliteStorage({
        path: spec.path,
        ...(spec.tablePrefix !== undefined ? { tablePrefix: spec.tablePrefix } : {}),
      });
    case 'postgres': {
      const { postgresStorage } = await import('../providers/postgres/index.ts');
      return postgresStorage({
        connectionString: spec.connectionString,
        ...(spec.tablePrefix !== undefined ? { tablePrefix: spec.tablePrefix } : {}),
      });
    }
    case 'redis': {
      const { redisStorage } = await import('../providers/redis/index.ts');
      return redisStorage({ url: spec.url, ...(spec.keyPrefix !== undefined ? { keyPrefix: spec.keyPrefix } : {}) });
    }
  }
}

async function remindersOf(spec: ProviderSpec | undefined): Promise<ReminderTable> {
  if (spec === undefined || spec.kind === 'memory') return memoryReminders();
  switch (spec.kind) {
    case 'sqlite':
      return sqliteReminders({
        path: spec.path,
        ...(spec.tablePrefix !== undefined ? { tablePrefix: spec.tablePrefix } : {}),
      });
    case 'postgres': {
      const { postgresReminders } = await import('../providers/postgres/index.ts');
      return postgresReminders({
        connectionString: spec.connectionString,
        ...(spec.tablePrefix !== undefined ? { tablePrefix: spec.tablePrefix } : {}),
      });
    }
    case 'redis': {
      const { redisReminders } = await import('../providers/redis/index.ts');
      return redisReminders({ url: spec.url, ...(spec.keyPrefix !== undefined ? { keyPrefix: spec.keyPrefix } : {}) });
    }
  }
}

async function streamsOf(specs: Record<string, StreamSpec> | undefined): Promise<Record<string, StreamProvider>> {
  const out: Record<string, StreamProvider> = {};
  for (const [name, spec] of Object.entries(specs ?? {})) {
    if (spec.kind === 'memory') out[name] = memoryStreams();
    else {
      const { natsStreams } = await import('../providers/nats/index.ts');
      out[name] = natsStreams({
        servers: spec.servers,
        ...(spec.queues !== undefined ? { queues: spec.queues } : {}),
        ...(spec.ackWaitMs !== undefined ? { ackWaitMs: spec.ackWaitMs } : {}),
      });
    }
  }
  return out;
}

const opts = JSON.parse(process.env['GRANARY_SILO_PROCESS'] ?? 'null') as SiloProcessOptions | null;
if (opts === null) throw new ConfigurationError('GRANARY_SILO_PROCESS is not set');
const mod = (await import(pathToFileURL(resolve(opts.grains)).href)) as Record<string, unknown>;
const grains = Object.values(mod).filter(
  (v): v is GrainClass => typeof v === 'function' && v.prototype instanceof Grain,
);
const silo = await Silo.start({
  ...(opts.siloOptions as object),
  clusterId: opts.clusterId,
  grains,
  host: '127.0.0.1',
  port: 0,
  ...(opts.gateway !== false ? { gatewayPort: 0 } : {}),
  membership: await membershipOf(opts.membership),
  storage: { default: await storageOf(opts.storage) },
  reminders: await remindersOf(opts.reminders),
  streams: await streamsOf(opts.streams),
  ...(opts.membershipOptions !== undefined ? { membershipOptions: opts.membershipOptions } : {}),
});
const alive = setInterval(() => {}, 1 << 30);
void silo.terminated.then((how) => {
  clearInterval(alive);
  process.exit(how === 'declared dead' ? 3 : 0);
});
process.on('SIGTERM', () => void silo.stop());
process.send?.({
  type: 'ready',
  address: silo.info.address,
  gateway: silo.cluster?.gatewayAddress ?? null,
  http: silo.httpAddress ?? null,
});
