// Providers named on the command line: `memory`, `sqlite:<path>`,
// `postgres://...`, `redis://...`, `nats://host:port`. Checked when the
// options are read (the message names the flag, variable or file key), built
// when the command starts, loading the drivers it needs and only those.

import { ConfigurationError } from '../errors.ts';
import type { EventLog } from '../journal/log.ts';
import type { MembershipTable } from '../membership/table.ts';
import { memoryEventLog } from '../providers/memory/event-log.ts';
import { memoryReminders } from '../providers/memory/reminders.ts';
import { memoryStorage } from '../providers/memory/storage.ts';
import { sqliteEventLog } from '../providers/sqlite/event-log.ts';
import { sqliteMembership } from '../providers/sqlite/membership.ts';
import { sqliteReminders } from '../providers/sqlite/reminders.ts';
import { sqliteStorage } from '../providers/sqlite/storage.ts';
import type { ReminderTable } from '../reminders/table.ts';
import type { StorageProvider } from '../storage/provider.ts';
import { memoryStreams } from '../streams/memory.ts';
import type { StreamProvider } from '../streams/provider.ts';
import { mustBe, type Parse } from './options.ts';

/** Where a provider keeps its data. */
export type Store = 'memory' | 'sqlite' | 'postgres' | 'redis' | 'nats';

/** A provider as the command line names it. */
export interface ProviderSpec {
  readonly store: Store;
  /** The file path (sqlite), the URL (postgres, redis, nats); empty for memory. */
  readonly target: string;
}

/** How each store is written, for messages and --help. */
const syntax: Readonly<Record<Store, string>> = {
  memory: 'memory',
  sqlite: 'sqlite:<path>',
  postgres: 'postgres://...',
  redis: 'redis://...',
  nats: 'nats://host:port',
};

/** `a, b or c`. */
function orList(items: readonly string[]): string {
  return items.length <= 1 ? items.join('') : `${items.slice(0, -1).join(', ')} or ${items.at(-1) as string}`;
}

/** How a spec of one of `stores` is written, for --help: `memory | sqlite:<path> | ...`. */
export function specSyntax(stores: readonly Store[]): string {
  return stores.map((s) => syntax[s]).join(' | ');
}

function isUrl(text: string): boolean {
  try {
    new URL(text);
    return true;
  } catch {
    return false;
  }
}

/** A spec naming one of `stores`. */
export function providerSpec(stores: readonly Store[]): Parse<ProviderSpec> {
  const what = orList(stores.map((s) => syntax[s]));
  return (value, where) => {
    if (typeof value !== 'string') throw mustBe(where, what, value);
    const text = value.trim();
    const spec = specOf(text);
    if (spec === undefined || !stores.includes(spec.store)) throw mustBe(where, what, value);
    return spec;
  };
}

function specOf(text: string): ProviderSpec | undefined {
  if (text === 'memory') return { store: 'memory', target: '' };
  if (text.startsWith('sqlite:') && text.length > 'sqlite:'.length)
    return { store: 'sqlite', target: text.slice('sqlite:'.length) };
  if (/^postgres(ql)?:\/\/./.test(text) && isUrl(text)) return { store: 'postgres', target: text };
  if (/^rediss?:\/\/./.test(text) && isUrl(text)) return { store: 'redis', target: text };
  if (/^nats:\/\/./.test(text) && isUrl(text)) return { store: 'nats', target: text };
  return undefined;
}

const providerName = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * Named providers: `spec` (named `default`) or `name=spec,name=spec` in a flag
 * or variable; in the file also an object `{ "name": "spec" }`.
 */
export function namedSpecs(stores: readonly Store[]): Parse<Record<string, ProviderSpec>> {
  const one = providerSpec(stores);
  return (value, where) => {
    let entries: Array<[string, unknown]>;
    if (typeof value === 'string') {
      // A comma starts another provider only where `name=` follows it (URLs may hold commas).
      entries = value.split(/,(?=\s*[A-Za-z0-9_.-]+=)/).map((part, i): [string, unknown] => {
        // A URL's own `key=value` (its query) is no name: a name is all the text before its '='.
        const m = /^\s*([A-Za-z0-9_.-]+)=(.*)$/s.exec(part);
        if (m !== null) return [m[1] as string, m[2]];
        if (i > 0) throw mustBe(where, `name=spec after the first provider`, part);
        return ['default', part];
      });
    } else if (value !== null && typeof value === 'object' && !Array.isArray(value)) entries = Object.entries(value);
    else throw mustBe(where, `a provider (${specSyntax(stores)}) or named ones (name=spec,...)`, value);
    if (entries.length === 0) throw mustBe(where, 'at least one provider', value);
    const out: Record<string, ProviderSpec> = {};
    for (const [name, spec] of entries) {
      if (!providerName.test(name)) throw mustBe(`${where} (provider name)`, 'letters, digits, ".", "_" or "-"', name);
      if (Object.hasOwn(out, name)) throw mustBe(where, `providers of distinct names`, `${name} twice`);
      out[name] = one(spec, `${where} (provider '${name}')`);
    }
    return out;
  };
}

/** How a spec reads back, for logs (redact before logging: URLs may hold passwords). */
export function specText(spec: ProviderSpec): string {
  return spec.store === 'memory' ? 'memory' : spec.store === 'sqlite' ? `sqlite:${spec.target}` : spec.target;
}

/** A store the role has no provider for: the spec's parser lets none through, so this is a bug. */
function unsupported(role: string, spec: ProviderSpec): never {
  throw new ConfigurationError(`no ${role} provider for ${spec.store}`);
}

export async function membershipOf(spec: ProviderSpec): Promise<MembershipTable> {
  switch (spec.store) {
    case 'sqlite':
      return sqliteMembership({ path: spec.target });
    case 'postgres': {
      const { postgresMembership } = await import('../providers/postgres/index.ts');
      return postgresMembership({ connectionString: spec.target });
    }
    case 'redis': {
      const { redisMembership } = await import('../providers/redis/index.ts');
      return redisMembership({ url: spec.target });
    }
    default:
      return unsupported('membership', spec);
  }
}

export async function storageOf(spec: ProviderSpec): Promise<StorageProvider> {
  switch (spec.store) {
    case 'memory':
      return memoryStorage();
    case 'sqlite':
      return sqliteStorage({ path: spec.target });
    case 'postgres': {
      const { postgresStorage } = await import('../providers/postgres/index.ts');
      return postgresStorage({ connectionString: spec.target });
    }
    case 'redis': {
      const { redisStorage } = await import('../providers/redis/index.ts');
      return redisStorage({ url: spec.target });
    }
    default:
      return unsupported('storage', spec);
  }
}

export async function eventLogOf(spec: ProviderSpec): Promise<EventLog> {
  switch (spec.store) {
    case 'memory':
      return memoryEventLog();
    case 'sqlite':
      return sqliteEventLog({ path: spec.target });
    case 'postgres': {
      const { postgresEventLog } = await import('../providers/postgres/index.ts');
      return postgresEventLog({ connectionString: spec.target });
    }
    default:
      return unsupported('event log', spec);
  }
}

export async function remindersOf(spec: ProviderSpec): Promise<ReminderTable> {
  switch (spec.store) {
    case 'memory':
      return memoryReminders();
    case 'sqlite':
      return sqliteReminders({ path: spec.target });
    case 'postgres': {
      const { postgresReminders } = await import('../providers/postgres/index.ts');
      return postgresReminders({ connectionString: spec.target });
    }
    case 'redis': {
      const { redisReminders } = await import('../providers/redis/index.ts');
      return redisReminders({ url: spec.target });
    }
    default:
      return unsupported('reminder', spec);
  }
}

export async function streamsOf(spec: ProviderSpec): Promise<StreamProvider> {
  switch (spec.store) {
    case 'memory':
      return memoryStreams();
    case 'nats': {
      const { natsStreams } = await import('../providers/nats/index.ts');
      return natsStreams({ servers: spec.target });
    }
    default:
      return unsupported('stream', spec);
  }
}

/** Builds every provider of a record of named specs. */
export async function buildNamed<P>(
  specs: Record<string, ProviderSpec>,
  build: (spec: ProviderSpec) => Promise<P>,
): Promise<Record<string, P>> {
  const out: Record<string, P> = {};
  for (const [name, spec] of Object.entries(specs)) out[name] = await build(spec);
  return out;
}
