// The options of a silo, resolved once at start: the user's `SiloOptions`
// become `ResolvedSiloOptions`, with every default filled in, every option
// checked (a ConfigurationError names the option and the bad value, and an
// unknown option gets a "did you mean"), and a summary for the start log with
// secrets redacted. Nothing past this point reads a raw option.

import type { TracingOption } from '../observability/tracing.ts';
import type { IncomingCallFilter, OutgoingCallFilter } from '../messaging/filters.ts';
import { MAX_TIMER_MS, systemClock, type Clock } from '../clock.ts';
import { ConfigurationError } from '../errors.ts';
import type { AnyGrainClass } from '../grain/grain.ts';
import type { EventLog } from '../journal/log.ts';
import { membershipDefaults, type MembershipOptions } from '../membership/service.ts';
import type { MembershipTable } from '../membership/table.ts';
import {
  LOG_LEVELS,
  LOG_SUBSYSTEMS,
  defaultLogger,
  envLogLevels,
  isLogLevel,
  type LogLevel,
  type LogSubsystem,
  type Logger,
} from '../observability/logger.ts';
import type { ReminderTable } from '../reminders/table.ts';
import type { StorageProvider } from '../storage/provider.ts';
import type { StreamProvider } from '../streams/provider.ts';
import { resolveTransportLimits, type ResolvedTransportLimits, type TransportLimits } from '../transport/limits.ts';

/** Options of `Silo.start`. Every field is optional. */
export interface SiloOptions {
  /** Cluster this silo belongs to: letters, digits, `.`, `_` and `-`, at most 128. Default `dev`. */
  clusterId?: string;
  /** Grain classes this silo hosts. */
  grains?: AnyGrainClass[];
  /** Host of the silo-to-silo endpoint. Default `127.0.0.1`. */
  host?: string;
  /** Port of the silo-to-silo endpoint, 0 to pick a free one. Default 11111. */
  port?: number;
  /** Port for external clients, 0 to pick a free one; not `port`. Default: none. */
  gatewayPort?: number;
  /** Named storage providers; `default` is used when a state names none. Default `{ default: memoryStorage() }`. */
  storage?: Record<string, StorageProvider>;
  /** Named event logs of journaled grains; `default` is used when a grain names none. Default `{ default: memoryEventLog() }`. */
  eventLogs?: Record<string, EventLog>;
  /**
   * The durable reminder table. Default `memoryReminders()`: reminders that live
   * as long as this process (give SQLite, PostgreSQL or Redis for durable ones).
   */
  reminders?: ReminderTable;
  /** Named stream providers, e.g. `{ events: memoryStreams() }`. Default: none (no streams). */
  streams?: Record<string, StreamProvider>;
  /** Shortest period a reminder may have, in ms. Default 60 000 (as Orleans); tests use less. */
  minReminderPeriodMs?: number;
  /** How often a silo re-reads the reminders of its ring ranges from the table, in ms. Default 60 000. */
  reminderRefreshIntervalMs?: number;
  /** Deadline of a call, in ms. Default 30 000. */
  responseTimeoutMs?: number;
  /** Idle time after which an activation is deactivated, in ms. Default 900 000 (15 minutes). */
  collectionAgeMs?: number;
  /** How often idle activations are looked for, in ms. Default: a quarter of the smallest collection age, at most 60 000. */
  collectionQuantumMs?: number;
  /** How long stop() waits for an activation to finish its turns and onDeactivate, in ms. Default 30 000. */
  deactivationTimeoutMs?: number;
  /** How many times a call may be forwarded to a new activation, 0 to 255. Default 2. */
  maxForwardCount?: number;
  /**
   * Add the caller's own JavaScript frames to the stack of an error a call
   * returns. Without it the stack holds the grain's frames, the call, and the
   * grains waiting on it. Costs an extra await on every call (about a quarter
   * of local call throughput), so it is for debugging. Default false.
   */
  callerStacks?: boolean;
  /**
   * Filters around every call to a grain of this silo, outermost first; a
   * grain class's own `onIncomingCall(ctx)` runs inside them. See docs/filters.md.
   * Default: none.
   */
  incomingFilters?: IncomingCallFilter[];
  /** Filters around every call the silo's grains (and the silo itself) make, outermost first. Default: none. */
  outgoingFilters?: OutgoingCallFilter[];
  /**
   * OpenTelemetry spans for grain calls, activations and storage operations:
   * `true` (the default) uses the global tracer provider when an SDK registered
   * one before the silo started, and costs nothing when none did; `false` turns
   * tracing off; `{ tracerProvider }` uses that provider. See docs/operations.md.
   */
  tracing?: TracingOption;
  /**
   * The membership table that makes this silo one of a cluster. With it (or with
   * `gatewayPort`, or `port`), the silo listens on `host:port` (0 picks a free port)
   * and joins; without any of them it runs alone, with no sockets. Default: none.
   */
  membership?: MembershipTable;
  /** Failure-detection timing; see `membershipDefaults`. */
  membershipOptions?: MembershipOptions;
  /** Transport limits (frame size, time-outs); see `transportDefaults`. */
  transport?: TransportLimits;
  /** How often a silo tells the others its activation count (placement), in ms. Default 1000. */
  loadReportIntervalMs?: number;
  /** Calls this silo may have waiting on other silos at once; past it calls fail with code GRANARY_OVERLOADED. Default 100 000. */
  maxPendingRequests?: number;
  /** Deadline of control-plane calls between silos (directory, probes), in ms. Default 5000. */
  systemCallTimeoutMs?: number;
  /** Where the silo logs; a pino logger fits. Default: pino at GRANARY_LOG_LEVEL (default info) to stderr. */
  logger?: Logger;
  /**
   * Log levels per subsystem (see `LOG_SUBSYSTEMS`), e.g. `{ membership: 'debug', directory: 'warn' }`.
   * `GRANARY_LOG_LEVEL=info,membership=debug` sets them too, and wins over this option.
   * Default: every subsystem at the logger's level.
   */
  logLevels?: Partial<Record<LogSubsystem, LogLevel>>;
  /**
   * Port of the silo's HTTP endpoint: health probes (`/health/startup`, `/health/live`,
   * `/health/ready`) and Prometheus metrics (`/metrics`); 0 picks a free one. Default: none (no endpoint).
   */
  httpPort?: number;
  /** Host the HTTP endpoint listens on; in Kubernetes `0.0.0.0`, so the kubelet reaches the probes. Default: `host`. */
  httpHost?: string;
  /**
   * Count calls, activations, messages and storage operations for `/metrics` and `silo.metrics()`.
   * Costs a few counters per grain call, and two clock reads per timed one (one in 8 past a grain
   * type's first 64). Default: true when `httpPort` is given, else false.
   */
  metrics?: boolean;
  /** Where the silo reads the time and sets its timers. Default: the system clock; tests give a `ManualClock`. */
  clock?: Clock;
}

/** Defaults of SiloOptions (the providers' defaults are the memory ones; see `SiloFallbacks`). */
export const siloDefaults = Object.freeze({
  clusterId: 'dev',
  host: '127.0.0.1',
  port: 11111,
  responseTimeoutMs: 30_000,
  collectionAgeMs: 15 * 60_000,
  maxForwardCount: 2,
  callerStacks: false,
  deactivationTimeoutMs: 30_000,
  loadReportIntervalMs: 1000,
  systemCallTimeoutMs: 5000,
  maxPendingRequests: 100_000,
  minReminderPeriodMs: 60_000,
  reminderRefreshIntervalMs: 60_000,
} as const satisfies { [K in keyof SiloOptions]?: SiloOptions[K] });

/**
 * Makers of the default providers, handed in by the caller (the silo passes
 * the memory providers), so that options need not import any provider.
 * Each is called only when its option is not given (membership: only when
 * the silo is networked).
 */
export interface SiloFallbacks {
  storage(): StorageProvider;
  eventLog(): EventLog;
  reminders(): ReminderTable;
  membership(): MembershipTable;
}

/**
 * SiloOptions with every default filled in and every value checked. A
 * networked silo (`membership`, `gatewayPort` or `port` given) always has a
 * membership table; one that runs alone has none.
 */
export type ResolvedSiloOptions = ResolvedCommonOptions &
  (
    | { readonly networked: true; readonly membership: MembershipTable }
    | { readonly networked: false; readonly membership: undefined }
  );

/** The options every silo has, networked or not. */
export interface ResolvedCommonOptions {
  readonly clusterId: string;
  readonly grains: readonly AnyGrainClass[];
  readonly host: string;
  readonly port: number;
  /** Undefined: no gateway. */
  readonly gatewayPort: number | undefined;
  readonly storage: ReadonlyMap<string, StorageProvider>;
  readonly eventLogs: ReadonlyMap<string, EventLog>;
  readonly reminders: ReminderTable;
  readonly streams: ReadonlyMap<string, StreamProvider>;
  readonly membershipOptions: Readonly<Required<MembershipOptions>>;
  readonly transport: ResolvedTransportLimits;
  readonly minReminderPeriodMs: number;
  readonly reminderRefreshIntervalMs: number;
  readonly responseTimeoutMs: number;
  readonly collectionAgeMs: number;
  /** Undefined: derived from the grains' collection ages by the runtime. */
  readonly collectionQuantumMs: number | undefined;
  readonly deactivationTimeoutMs: number;
  readonly maxForwardCount: number;
  readonly callerStacks: boolean;
  readonly incomingFilters: readonly IncomingCallFilter[];
  readonly outgoingFilters: readonly OutgoingCallFilter[];
  readonly tracing: TracingOption;
  readonly loadReportIntervalMs: number;
  readonly maxPendingRequests: number;
  readonly systemCallTimeoutMs: number;
  readonly logger: Logger;
  /** Levels per subsystem: the option, with GRANARY_LOG_LEVEL's on top. */
  readonly logLevels: Readonly<Partial<Record<LogSubsystem, LogLevel>>>;
  /** Undefined: no HTTP endpoint. */
  readonly httpPort: number | undefined;
  readonly httpHost: string;
  readonly metrics: boolean;
  readonly clock: Clock;
  /** The options the user gave (with a value other than undefined). */
  readonly given: ReadonlySet<keyof SiloOptions>;
}

/** Timers above this would overflow setTimeout (it fires at once). */

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'function') return `function ${value.name || '(anonymous)'}`;
  if (Array.isArray(value)) return 'an array';
  if (value === null || typeof value !== 'object') return String(value);
  return 'an object';
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function hasMethods(value: unknown, methods: readonly string[]): boolean {
  return isRecord(value) && methods.every((m) => typeof value[m] === 'function');
}

function bad(name: string, what: string, value: unknown): ConfigurationError {
  return new ConfigurationError(`silo option ${name} must be ${what}, got ${show(value)}`);
}

function milliseconds(value: unknown, name: string): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || !(value > 0 && value <= MAX_TIMER_MS))
    throw bad(name, `a whole number of milliseconds from 1 to ${MAX_TIMER_MS}`, value);
}

function integer(value: unknown, name: string, min: number, max: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
    throw bad(name, `an integer from ${min} to ${max}`, value);
}

function port(value: unknown, name: string): void {
  integer(value, name, 0, 65_535);
}

function filterList(value: unknown, name: string): void {
  if (!Array.isArray(value)) throw bad(name, 'an array of filter functions (ctx) => Promise<void>', value);
  value.forEach((f, i) => {
    if (typeof f !== 'function') throw bad(`${name}[${i}]`, 'a filter function (ctx) => Promise<void>', f);
  });
}

const clusterIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The check of every silo option; its keys are the known option names. */
const checks: Readonly<Record<keyof SiloOptions, (value: unknown, name: string) => void>> = {
  clusterId(value, name) {
    if (typeof value !== 'string' || !clusterIdPattern.test(value))
      throw bad(name, 'letters, digits, ".", "_" and "-" (starting with a letter or digit, at most 128)', value);
  },
  grains(value, name) {
    if (!Array.isArray(value)) throw bad(name, 'an array of grain classes', value);
    value.forEach((cls: unknown, i) => {
      if (typeof cls !== 'function') throw bad(`${name}[${i}]`, 'a grain class (a class that extends Grain)', cls);
    });
  },
  host(value, name) {
    if (typeof value !== 'string' || value === '' || /\s/.test(value))
      throw bad(name, 'a host name or IP address', value);
  },
  port,
  gatewayPort: port,
  storage(value, name) {
    providers(
      name,
      value,
      'storage provider',
      ['read', 'write', 'clear', 'init', 'close'],
      'memoryStorage() or sqliteStorage({ path })',
    );
  },
  eventLogs(value, name) {
    providers(
      name,
      value,
      'event log',
      ['read', 'append', 'init', 'close'],
      'memoryEventLog() or sqliteEventLog({ path })',
    );
  },
  reminders(value, name) {
    if (!hasMethods(value, ['init', 'readRange', 'upsert', 'close']))
      throw new ConfigurationError(
        `silo option ${name} is not a reminder table (give e.g. memoryReminders() or sqliteReminders({ path })), got ${show(value)}`,
      );
  },
  streams(value, name) {
    providers(
      name,
      value,
      'stream provider',
      ['start'],
      "memoryStreams() or natsStreams({ servers }) from 'granary/nats'",
    );
  },
  minReminderPeriodMs: milliseconds,
  reminderRefreshIntervalMs: milliseconds,
  responseTimeoutMs: milliseconds,
  collectionAgeMs: milliseconds,
  collectionQuantumMs: milliseconds,
  deactivationTimeoutMs: milliseconds,
  // A call's hops travel in one byte of the request header.
  maxForwardCount: (value, name) => integer(value, name, 0, 255),
  callerStacks(value, name) {
    if (typeof value !== 'boolean') throw bad(name, 'true or false', value);
  },
  incomingFilters: filterList,
  outgoingFilters: filterList,
  tracing(value, name) {
    if (typeof value === 'boolean') return;
    if (!isRecord(value) || !hasMethods(value['tracerProvider'], ['getTracer']))
      throw bad(name, 'true, false or { tracerProvider } (an OpenTelemetry TracerProvider)', value);
  },
  membership(value, name) {
    if (!hasMethods(value, ['init', 'readAll', 'insert', 'update', 'updateIAmAlive', 'close']))
      throw new ConfigurationError(
        `silo option ${name} is not a membership table (give e.g. memoryMembership() or sqliteMembership({ path })), got ${show(value)}`,
      );
  },
  membershipOptions(value) {
    resolveMembershipOptions(value);
  },
  transport(value, name) {
    if (!isRecord(value)) throw bad(name, 'an object of transport options (see transportDefaults)', value);
    resolveTransportLimits(value);
  },
  loadReportIntervalMs: milliseconds,
  maxPendingRequests: (value, name) => integer(value, name, 1, Number.MAX_SAFE_INTEGER),
  systemCallTimeoutMs: milliseconds,
  logger(value, name) {
    if (!hasMethods(value, ['debug', 'info', 'warn', 'error', 'child']))
      throw bad(name, 'a logger with debug, info, warn, error and child (a pino logger fits)', value);
  },
  logLevels(value, name) {
    if (!isRecord(value)) throw bad(name, `an object of log levels by subsystem, e.g. { membership: 'debug' }`, value);
    for (const [key, level] of Object.entries(value)) {
      if (!(LOG_SUBSYSTEMS as readonly string[]).includes(key))
        throw unknownOption(`${name} subsystem`, key, LOG_SUBSYSTEMS);
      if (level !== undefined && !isLogLevel(level))
        throw bad(`${name}.${key}`, `one of ${LOG_LEVELS.join(', ')}`, level);
    }
  },
  httpPort: port,
  httpHost(value, name) {
    checks.host(value, name);
  },
  metrics(value, name) {
    if (typeof value !== 'boolean') throw bad(name, 'true or false', value);
  },
  clock(value, name) {
    if (!hasMethods(value, ['now', 'setTimeout', 'setInterval']))
      throw bad(name, 'a clock with now, setTimeout and setInterval (systemClock, or ManualClock in tests)', value);
  },
};

function providers(name: string, value: unknown, what: string, methods: readonly string[], example: string): void {
  // One provider given where a record of them belongs is a common slip.
  if (!isRecord(value) || hasMethods(value, methods))
    throw bad(name, `a record of named ${what}s, e.g. { default: ${example.split(' or ')[0]} }`, value);
  for (const [key, p] of Object.entries(value)) {
    if (!hasMethods(p, methods))
      throw new ConfigurationError(
        `${what} '${key}' (silo option ${name}.${key}) is not a ${what} (give e.g. ${example}), got ${show(p)}`,
      );
  }
}

/** Whether `name` is an option of this version's silo (tools that pass options through ask). */
export function isSiloOption(name: string): name is keyof SiloOptions {
  return Object.hasOwn(checks, name);
}

/**
 * Checks one silo option as `Silo.start` would (a ConfigurationError saying
 * `silo option <name> must be ...`), without the checks across options.
 */
export function checkSiloOption(name: keyof SiloOptions, value: unknown): void {
  checks[name](value, name);
}

/** Which membership options count what (the others are in ms). */
const membershipCounts: ReadonlySet<string> = new Set<keyof MembershipOptions>([
  'missedProbesLimit',
  'numProbedSilos',
  'numVotesForDeathDeclaration',
]);

/** Membership options with defaults filled in; a ConfigurationError names the bad one. */
export function resolveMembershipOptions(options: unknown = {}): Readonly<Required<MembershipOptions>> {
  if (!isRecord(options))
    throw bad('membershipOptions', 'an object of membership options (see membershipDefaults)', options);
  const known = Object.keys(membershipDefaults);
  const out: Required<MembershipOptions> = { ...membershipDefaults };
  for (const [key, value] of Object.entries(options)) {
    if (!Object.hasOwn(membershipDefaults, key)) throw unknownOption(`membership option`, key, known);
    if (value === undefined) continue;
    const count = membershipCounts.has(key);
    const [min, max] = count ? [1, 1000] : [1, MAX_TIMER_MS];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
      throw new ConfigurationError(
        `membership option ${key} must be an integer from ${min} to ${max}${count ? '' : ' (ms)'}, got ${show(value)}`,
      );
    out[key as keyof MembershipOptions] = value;
  }
  return Object.freeze(out);
}

/** Edit distance of two short names (insertions, deletions, substitutions). */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(
        (prev[j] ?? 0) + 1,
        (cur[j - 1] ?? 0) + 1,
        (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

/** The known name `name` was most likely meant to be, if one is close. */
export function closestName(name: string, known: readonly string[]): string | undefined {
  const lower = name.toLowerCase();
  let best: string | undefined;
  let bestScore = Infinity;
  for (const k of known) {
    const score = k.toLowerCase() === lower ? 0 : distance(lower, k.toLowerCase());
    if (score < bestScore) [best, bestScore] = [k, score];
  }
  return best !== undefined && bestScore <= Math.max(2, Math.floor(name.length / 3)) ? best : undefined;
}

function unknownOption(what: string, key: string, known: readonly string[]): ConfigurationError {
  const guess = closestName(key, known);
  return new ConfigurationError(
    `unknown ${what} '${key}'${guess !== undefined ? ` (did you mean '${guess}'?)` : ''}; known: ${known.join(', ')}`,
  );
}

/**
 * Fills in defaults and checks every option, once, at start. Throws a
 * ConfigurationError naming the option and the bad value, or the unknown
 * option and the known one it most likely meant.
 */
export function resolveSiloOptions(options: SiloOptions, fallbacks: SiloFallbacks): ResolvedSiloOptions {
  const raw: unknown = options;
  if (!isRecord(raw)) throw new ConfigurationError(`silo options must be an object, got ${show(raw)}`);
  const known = Object.keys(checks);
  const given = new Set<keyof SiloOptions>();
  for (const [key, value] of Object.entries(raw)) {
    if (!Object.hasOwn(checks, key)) throw unknownOption('silo option', key, known);
    if (value === undefined) continue;
    const name = key as keyof SiloOptions;
    checks[name](value, name);
    given.add(name);
  }
  const port = options.port ?? siloDefaults.port;
  if (options.gatewayPort !== undefined && options.gatewayPort === port && port !== 0)
    throw new ConfigurationError(
      `silo options gatewayPort and port must differ (both ${port}): clients and silos need endpoints of their own`,
    );
  // Any of these makes the silo listen and join a cluster.
  const networked = given.has('membership') || given.has('gatewayPort') || given.has('port');
  const host = options.host ?? siloDefaults.host;
  const httpHost = options.httpHost ?? host;
  const http = options.httpPort;
  if (http !== undefined && http !== 0 && httpHost === host) {
    const other = networked && http === port ? 'port' : http === options.gatewayPort ? 'gatewayPort' : undefined;
    if (other !== undefined)
      throw new ConfigurationError(
        `silo options httpPort and ${other} must differ (both ${http}): the HTTP endpoint needs a port of its own`,
      );
  }
  const common: ResolvedCommonOptions = {
    clusterId: options.clusterId ?? siloDefaults.clusterId,
    grains: Object.freeze([...(options.grains ?? [])]),
    host,
    port,
    gatewayPort: options.gatewayPort,
    storage: new Map(Object.entries(options.storage ?? { default: fallbacks.storage() })),
    eventLogs: new Map(Object.entries(options.eventLogs ?? { default: fallbacks.eventLog() })),
    reminders: options.reminders ?? fallbacks.reminders(),
    streams: new Map(Object.entries(options.streams ?? {})),
    membershipOptions: resolveMembershipOptions(options.membershipOptions),
    transport: resolveTransportLimits(options.transport),
    minReminderPeriodMs: options.minReminderPeriodMs ?? siloDefaults.minReminderPeriodMs,
    reminderRefreshIntervalMs: options.reminderRefreshIntervalMs ?? siloDefaults.reminderRefreshIntervalMs,
    responseTimeoutMs: options.responseTimeoutMs ?? siloDefaults.responseTimeoutMs,
    collectionAgeMs: options.collectionAgeMs ?? siloDefaults.collectionAgeMs,
    collectionQuantumMs: options.collectionQuantumMs,
    deactivationTimeoutMs: options.deactivationTimeoutMs ?? siloDefaults.deactivationTimeoutMs,
    maxForwardCount: options.maxForwardCount ?? siloDefaults.maxForwardCount,
    callerStacks: options.callerStacks ?? siloDefaults.callerStacks,
    incomingFilters: Object.freeze([...(options.incomingFilters ?? [])]),
    outgoingFilters: Object.freeze([...(options.outgoingFilters ?? [])]),
    tracing: options.tracing ?? true,
    loadReportIntervalMs: options.loadReportIntervalMs ?? siloDefaults.loadReportIntervalMs,
    maxPendingRequests: options.maxPendingRequests ?? siloDefaults.maxPendingRequests,
    systemCallTimeoutMs: options.systemCallTimeoutMs ?? siloDefaults.systemCallTimeoutMs,
    logger: options.logger ?? defaultLogger(),
    logLevels: Object.freeze({ ...options.logLevels, ...envLogLevels().subsystems }),
    httpPort: http,
    httpHost,
    metrics: options.metrics ?? http !== undefined,
    clock: options.clock ?? systemClock,
    given,
  };
  return Object.freeze(
    networked
      ? { ...common, networked, membership: options.membership ?? fallbacks.membership() }
      : { ...common, networked, membership: undefined },
  );
}

/** Names of fields whose values are secrets wherever they appear. */
const secretKey = /pass(word|wd)?$|secret|token|api[-_]?key|credential|authorization|private[-_]?key|^auth$/i;
/** Query parameters and key=value pairs of connection strings that hold secrets. */
const secretParam = /pass|secret|token|key|auth|credential/i;

/** `text` with the passwords and tokens of URLs and connection strings replaced by `***`. */
function redactString(text: string): string {
  // URLs anywhere in the text: user:password@ and secret query parameters.
  let out = text.replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s'"]+/gi, (url) => {
    try {
      const u = new URL(url);
      let changed = false;
      if (u.password !== '') {
        u.password = '***';
        changed = true;
      }
      for (const key of [...u.searchParams.keys()])
        if (secretParam.test(key)) {
          u.searchParams.set(key, '***');
          changed = true;
        }
      return changed ? u.toString() : url;
    } catch {
      return url.replace(/\/\/([^:/@\s]*):[^@/\s]*@/, '//$1:***@');
    }
  });
  // key=value connection strings (libpq, ADO): password=..., Password='...'.
  out = out.replace(
    /\b([a-z_]*(?:password|passwd|pwd|secret|token|api[-_]?key)[a-z_]*\s*=\s*)('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s;&]+)/gi,
    '$1***',
  );
  return out;
}

/**
 * A copy of `value` for logs and messages with its secrets replaced by `***`:
 * passwords in URLs and connection strings, secret query parameters, and the
 * values of fields named like `password`, `token`, `secret` or `apiKey`.
 */
export function redactSecrets<T>(value: T): T;
export function redactSecrets(value: unknown): unknown {
  const seen = new WeakSet<object>();
  const walk = (v: unknown, key: string | undefined): unknown => {
    if (key !== undefined && secretKey.test(key) && v !== undefined && v !== null && v !== '') return '***';
    if (typeof v === 'string') return redactString(v);
    if (v === null || typeof v !== 'object') return v;
    if (seen.has(v)) return '[circular]';
    seen.add(v);
    if (Array.isArray(v)) return v.map((x) => walk(x, undefined));
    if (v instanceof Map) return new Map([...v].map(([k, x]) => [k, walk(x, typeof k === 'string' ? k : undefined)]));
    if (v instanceof Set) return new Set([...v].map((x) => walk(x, undefined)));
    if (Object.getPrototypeOf(v) !== Object.prototype && Object.getPrototypeOf(v) !== null) return v;
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x, k)]));
  };
  return walk(value, undefined);
}

/** The effective options as the start log shows them: one flat record of plain values, secrets redacted. */
export interface SiloOptionsSummary {
  readonly clusterId: string;
  readonly host: string;
  readonly port: number;
  readonly gatewayPort: number | null;
  readonly networked: boolean;
  readonly grains: readonly string[];
  /** Provider kinds by name, e.g. `{ default: 'postgres' }`. */
  readonly storage: Readonly<Record<string, string>>;
  readonly eventLogs: Readonly<Record<string, string>>;
  readonly reminders: string;
  readonly streams: Readonly<Record<string, string>>;
  /** The membership table's kind, or `none` for a silo that runs alone. */
  readonly membership: string;
  readonly membershipOptions: Readonly<Record<string, number>>;
  readonly transport: Readonly<Record<string, number>>;
  readonly responseTimeoutMs: number;
  readonly collectionAgeMs: number;
  /** `auto`: derived from the grains' collection ages. */
  readonly collectionQuantumMs: number | 'auto';
  readonly deactivationTimeoutMs: number;
  readonly maxForwardCount: number;
  readonly callerStacks: boolean;
  /** How many filters of each kind. */
  readonly incomingFilters: number;
  readonly outgoingFilters: number;
  /** `auto` (the global provider, if any), `off` or `provider`. */
  readonly tracing: string;
  readonly minReminderPeriodMs: number;
  readonly reminderRefreshIntervalMs: number;
  readonly loadReportIntervalMs: number;
  readonly maxPendingRequests: number;
  readonly systemCallTimeoutMs: number;
  /** The HTTP endpoint's `host:port` as asked (port 0: a free one), or null for none. */
  readonly http: string | null;
  readonly metrics: boolean;
  readonly logLevels: Readonly<Record<string, string>>;
  readonly clock: string;
  /** The options the user set; the others are defaults. */
  readonly given: readonly string[];
}

/** The summary of `resolved` for the start log (log it once, as fields), secrets redacted. */
export function describeSiloOptions(resolved: ResolvedSiloOptions): SiloOptionsSummary {
  const kinds = (m: ReadonlyMap<string, { readonly kind: string }>): Record<string, string> =>
    Object.fromEntries([...m].map(([name, p]) => [name, p.kind]));
  return redactSecrets({
    clusterId: resolved.clusterId,
    host: resolved.host,
    port: resolved.port,
    gatewayPort: resolved.gatewayPort ?? null,
    networked: resolved.networked,
    grains: resolved.grains.map((g) => g.name),
    storage: kinds(resolved.storage),
    eventLogs: kinds(resolved.eventLogs),
    reminders: resolved.reminders.kind,
    streams: kinds(resolved.streams),
    membership: resolved.membership?.kind ?? 'none',
    membershipOptions: { ...resolved.membershipOptions },
    transport: { ...resolved.transport },
    responseTimeoutMs: resolved.responseTimeoutMs,
    collectionAgeMs: resolved.collectionAgeMs,
    collectionQuantumMs: resolved.collectionQuantumMs ?? 'auto',
    deactivationTimeoutMs: resolved.deactivationTimeoutMs,
    maxForwardCount: resolved.maxForwardCount,
    callerStacks: resolved.callerStacks,
    incomingFilters: resolved.incomingFilters.length,
    outgoingFilters: resolved.outgoingFilters.length,
    tracing: resolved.tracing === true ? 'auto' : resolved.tracing === false ? 'off' : 'provider',
    minReminderPeriodMs: resolved.minReminderPeriodMs,
    reminderRefreshIntervalMs: resolved.reminderRefreshIntervalMs,
    loadReportIntervalMs: resolved.loadReportIntervalMs,
    maxPendingRequests: resolved.maxPendingRequests,
    systemCallTimeoutMs: resolved.systemCallTimeoutMs,
    http: resolved.httpPort === undefined ? null : `${resolved.httpHost}:${resolved.httpPort}`,
    metrics: resolved.metrics,
    logLevels: { ...resolved.logLevels },
    clock: resolved.clock === systemClock ? 'system' : (resolved.clock.constructor?.name ?? 'custom'),
    given: [...resolved.given].sort(),
  });
}
