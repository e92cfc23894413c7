// The options of every `granary` command, in one place: each line gives a
// config file key, and with it a flag and a GRANARY_* variable (see
// options.ts). --help, the docs' lists and the checks of unknown keys and
// variables all read these tables.

import { siloDefaults, type SiloOptions } from '../hosting/options.ts';
import { checkSiloOption, isSiloOption } from '../hosting/options.ts';
import { ConfigurationError } from '../errors.ts';
import { DASHBOARD_PORT } from '../observability/dashboard/serve.ts';
import { logLevel } from './logging.ts';
import {
  boolean,
  envOf,
  fileKeyOf,
  integer,
  jsonObject,
  list,
  milliseconds,
  mustBe,
  port,
  word,
  type OptionSpec,
  type OptionTable,
  type Parse,
} from './options.ts';
import { namedSpecs, providerSpec, specSyntax, type ProviderSpec, type Store } from './providers.ts';

/**
 * `parse`, then the silo's own check of option `key` (when this version's
 * silo has it), its message naming the flag, variable or file key.
 */
function siloChecked<T>(key: string, parse: Parse<T>): Parse<T> {
  return (value, where) => {
    const v = parse(value, where);
    if (!isSiloOption(key)) return v;
    try {
      checkSiloOption(key, v);
    } catch (e) {
      if (!(e instanceof ConfigurationError)) throw e;
      const own = `silo option ${key} `;
      throw new ConfigurationError(
        e.message.startsWith(own) ? `${where} ${e.message.slice(own.length)}` : `${where}: ${e.message}`,
      );
    }
    return v;
  };
}

const membershipStores: readonly Store[] = ['sqlite', 'postgres', 'redis'];

/** `--dashboard`: true, false, or the dashboard's options as a JSON object. */
const dashboardSetting: Parse<boolean | Record<string, unknown>> = (value, where) => {
  if (typeof value === 'boolean') return value;
  if (typeof value === 'string' && !value.trim().startsWith('{')) return boolean(value, where);
  return jsonObject('dashboard options')(value, where);
};

/** The JSON config file; its keys are the other options' keys. */
const config = {
  arg: 'FILE',
  file: false,
  help: 'A JSON file of options, by the keys listed here, e.g. {"clusterId": "prod", "grains": ["./dist/grains.js"]}. Variables override it, flags override both. Paths in it are relative to the working directory.',
  parse: word('a file path'),
} satisfies OptionSpec<string>;

const clusterId = {
  arg: 'ID',
  default: siloDefaults.clusterId,
  silo: true,
  help: 'The cluster: letters, digits, ".", "_" and "-". Silos and clients of one cluster give the same.',
  parse: siloChecked('clusterId', word('a cluster id')),
} satisfies OptionSpec<string>;

const logLevelOption = (dflt: string) =>
  ({
    arg: 'LEVEL',
    default: dflt,
    help: 'Log level (trace, debug, info, warn, error, fatal, silent) of the JSON log on stderr; per subsystem as info,membership=debug.',
    parse: logLevel,
  }) satisfies OptionSpec<string>;

/** Options of `granary silo`. */
export const siloOptions = {
  config,
  grains: {
    arg: 'MODULE',
    repeatable: true,
    help: 'A module whose exported grain classes the silo hosts (a path; repeat the flag, or give a list, for several). Required.',
    parse: list(word('a module path')),
  },
  clusterId,
  host: {
    arg: 'HOST',
    default: siloDefaults.host,
    silo: true,
    help: 'Host (name or IP address) the silo listens on and other silos and clients reach it at.',
    parse: siloChecked('host', word('a host name or IP address')),
  },
  port: {
    arg: 'N',
    default: `${siloDefaults.port} once in a cluster`,
    silo: true,
    help: 'Port of the silo-to-silo endpoint, 0 for a free one. With --port, --gateway-port or --membership the silo listens and joins a cluster; with none it runs alone, with no sockets.',
    parse: siloChecked('port', port),
  },
  gatewayPort: {
    arg: 'N',
    silo: true,
    help: 'Port for clients (granary call, granary status, ClusterClient), 0 for a free one. Default: no gateway.',
    parse: siloChecked('gatewayPort', port),
  },
  httpPort: {
    arg: 'N',
    silo: true,
    help: "Port of the silo's HTTP endpoint (health, metrics), 0 for a free one. Default: none.",
    parse: siloChecked('httpPort', port),
  },
  httpHost: {
    arg: 'HOST',
    silo: true,
    help: 'Host the HTTP endpoint listens on. Default: as --host.',
    parse: siloChecked('httpHost', word('a host name or IP address')),
  },
  metrics: {
    arg: 'true|false',
    silo: true,
    help: 'Count calls, activations, messages and storage operations for /metrics. Default: true with --http-port, else false.',
    parse: siloChecked('metrics', boolean),
  },
  dashboard: {
    arg: 'true|false|JSON',
    silo: true,
    help: 'The live dashboard at /dashboard on the HTTP endpoint: true, false, or dashboard options as a JSON object, e.g. {"hotGrainCallsPerSecond": 500} (keys: see dashboardDefaults). On without --http-port, the silo serves no page but answers a granary dashboard through its gateway. Default: on with --http-port when the endpoint listens on loopback or --dashboard-token is set.',
    parse: siloChecked('dashboard', dashboardSetting),
  },
  membership: {
    arg: 'SPEC',
    help: `The membership table the silos of the cluster share: ${specSyntax(membershipStores)}. Default: none (alone, or a cluster of one with --port).`,
    parse: providerSpec(membershipStores),
  },
  storage: {
    arg: 'SPEC',
    default: 'sqlite:.granary/state.db',
    help: `Grain state: ${specSyntax(['memory', 'sqlite', 'postgres', 'redis'])}; several as name=SPEC,name=SPEC (the unnamed one is "default"; in the file also {"name": "SPEC"}).`,
    parse: namedSpecs(['memory', 'sqlite', 'postgres', 'redis']),
  },
  eventLogs: {
    arg: 'SPEC',
    default: 'the store of --storage (memory for redis)',
    help: `Event logs of journaled grains: ${specSyntax(['memory', 'sqlite', 'postgres'])}; several as name=SPEC,name=SPEC.`,
    parse: namedSpecs(['memory', 'sqlite', 'postgres']),
  },
  reminders: {
    arg: 'SPEC',
    default: 'the store of --storage',
    help: `The reminder table: ${specSyntax(['memory', 'sqlite', 'postgres', 'redis'])}.`,
    parse: providerSpec(['memory', 'sqlite', 'postgres', 'redis']),
  },
  streams: {
    arg: 'SPEC',
    help: `Stream providers: ${specSyntax(['memory', 'nats'])}, named as grains name them (name=SPEC,name=SPEC; the unnamed one is "default"). Default: none.`,
    parse: namedSpecs(['memory', 'nats']),
  },
  responseTimeoutMs: {
    arg: 'MS',
    default: String(siloDefaults.responseTimeoutMs),
    silo: true,
    help: 'Deadline of a call.',
    parse: siloChecked('responseTimeoutMs', milliseconds),
  },
  collectionAgeMs: {
    arg: 'MS',
    default: String(siloDefaults.collectionAgeMs),
    silo: true,
    help: 'Idle time after which an activation is deactivated.',
    parse: siloChecked('collectionAgeMs', milliseconds),
  },
  collectionQuantumMs: {
    arg: 'MS',
    default: 'a quarter of the smallest collection age, at most 60000',
    silo: true,
    help: 'How often idle activations are looked for.',
    parse: siloChecked('collectionQuantumMs', milliseconds),
  },
  deactivationTimeoutMs: {
    arg: 'MS',
    default: String(siloDefaults.deactivationTimeoutMs),
    silo: true,
    help: "How long a stop waits for an activation's turns and onDeactivate.",
    parse: siloChecked('deactivationTimeoutMs', milliseconds),
  },
  minReminderPeriodMs: {
    arg: 'MS',
    default: String(siloDefaults.minReminderPeriodMs),
    silo: true,
    help: 'Shortest period a reminder may have.',
    parse: siloChecked('minReminderPeriodMs', milliseconds),
  },
  reminderRefreshIntervalMs: {
    arg: 'MS',
    default: String(siloDefaults.reminderRefreshIntervalMs),
    silo: true,
    help: "How often the silo re-reads its ring ranges' reminders.",
    parse: siloChecked('reminderRefreshIntervalMs', milliseconds),
  },
  maxForwardCount: {
    arg: 'N',
    default: String(siloDefaults.maxForwardCount),
    silo: true,
    help: 'How many times a call may be forwarded to a new activation, 0 to 255.',
    parse: siloChecked('maxForwardCount', integer(0, 255)),
  },
  loadReportIntervalMs: {
    arg: 'MS',
    default: String(siloDefaults.loadReportIntervalMs),
    silo: true,
    help: 'How often the silo tells the others its activation count (placement).',
    parse: siloChecked('loadReportIntervalMs', milliseconds),
  },
  maxPendingRequests: {
    arg: 'N',
    default: String(siloDefaults.maxPendingRequests),
    silo: true,
    help: 'Calls that may wait on other silos at once; past it calls fail with GRANARY_OVERLOADED.',
    parse: siloChecked('maxPendingRequests', integer(1, Number.MAX_SAFE_INTEGER)),
  },
  systemCallTimeoutMs: {
    arg: 'MS',
    default: String(siloDefaults.systemCallTimeoutMs),
    silo: true,
    help: 'Deadline of control-plane calls between silos (directory, probes).',
    parse: siloChecked('systemCallTimeoutMs', milliseconds),
  },
  callerStacks: {
    default: String(siloDefaults.callerStacks),
    silo: true,
    help: "Add the caller's frames to the stacks of errors calls return (debugging; costs speed). A switch; the variable and file key take true or false.",
    parse: siloChecked('callerStacks', boolean),
  },
  tracing: {
    arg: 'true|false',
    default: 'true',
    silo: true,
    help: 'OpenTelemetry spans for grain calls, activations and storage: true uses the tracer provider an OpenTelemetry SDK registered before the silo started (load one with NODE_OPTIONS=--import ./tracing.js) and costs nothing without one; false turns tracing off.',
    parse: siloChecked('tracing', boolean),
  },
  membershipOptions: {
    arg: 'JSON',
    silo: true,
    help: 'Failure-detection timing as a JSON object, e.g. {"probeTimeoutMs": 2000} (keys: see membershipDefaults).',
    parse: siloChecked('membershipOptions', jsonObject('membership options')),
  },
  transport: {
    arg: 'JSON',
    silo: true,
    help: 'Transport limits as a JSON object, e.g. {"maxFrameBytes": 33554432} (keys: see transportDefaults).',
    parse: siloChecked('transport', jsonObject('transport options')),
  },
  logLevel: logLevelOption('info'),
  dashboardToken: {
    arg: 'TOKEN',
    silo: true,
    secret: true,
    help: "Bearer token the silo's HTTP endpoint asks of dashboard requests (at least 16 characters; required for a dashboard beyond loopback); never logged.",
    parse: siloChecked('dashboardToken', word('a token without spaces', true)),
  },
  stopTimeoutMs: {
    arg: 'MS',
    help: 'Exit with code 1 if a graceful stop has not finished within this time. Default: wait for it.',
    parse: milliseconds,
  },
} satisfies OptionTable;

// Options passed to Silo.start as they are must be silo options of that type.
type SiloPassed = {
  [K in keyof typeof siloOptions]: (typeof siloOptions)[K] extends { silo: true } ? K : never;
}[keyof typeof siloOptions];
type ValueOf<S> = S extends OptionSpec<infer V> ? V : never;
type Misfits = {
  [K in SiloPassed]: K extends keyof SiloOptions
    ? ValueOf<(typeof siloOptions)[K]> extends NonNullable<SiloOptions[K]>
      ? never
      : K
    : K;
}[SiloPassed];
const siloOptionsFit: [Misfits] extends [never] ? true : { notSiloOptionsOfThatType: Misfits } = true;
void siloOptionsFit;

/** The membership table a client reads gateways (and `status` the silos) from. */
const clientMembership = {
  arg: 'SPEC',
  help: `Find the gateways in this membership table: ${specSyntax(membershipStores)} (as the silos' --membership).`,
  parse: providerSpec(membershipStores),
} satisfies OptionSpec<ProviderSpec>;

const gateways = {
  arg: 'HOST:PORT',
  flag: 'gateway',
  repeatable: true,
  help: "A silo's gateway to connect to; repeat the flag, or give a comma-separated list, for several. Give gateways or --membership.",
  parse: list(word('a gateway address host:port')),
} satisfies OptionSpec<string[]>;

/** Options of `granary call`. */
export const callOptions = {
  config,
  clusterId,
  gateways,
  membership: clientMembership,
  timeoutMs: {
    arg: 'MS',
    flag: 'timeout',
    default: '30000',
    help: 'Deadline of the call, and of finding a gateway.',
    parse: milliseconds,
  },
  logLevel: logLevelOption('warn'),
} satisfies OptionTable;

/** Options of `granary status`. */
export const statusOptions = {
  config,
  clusterId,
  gateways,
  membership: {
    ...clientMembership,
    help: `The membership table to read: ${specSyntax(membershipStores)} (as the silos' --membership). Without it, a gateway answers with the table it reads.`,
  },
  timeoutMs: {
    arg: 'MS',
    flag: 'timeout',
    default: '10000',
    help: 'How long to wait for the table and for a gateway.',
    parse: milliseconds,
  },
  deadWithinMs: {
    arg: 'MS',
    default: '600000',
    help: 'A silo declared dead this recently makes the exit code 4 (older deaths are history, shown but not counted).',
    parse: milliseconds,
  },
  json: {
    env: false,
    file: false,
    help: 'Print the status as JSON (one object) instead of a table.',
    parse: boolean,
  },
  logLevel: logLevelOption('warn'),
} satisfies OptionTable;

/** Options of `granary dashboard`. */
export const dashboardOptions = {
  config,
  clusterId,
  gateways,
  membership: clientMembership,
  host: {
    arg: 'HOST',
    default: '127.0.0.1',
    env: 'GRANARY_DASHBOARD_HOST',
    file: false,
    help: 'Host the page listens on; beyond loopback it needs --dashboard-token.',
    parse: word('a host name or IP address'),
  },
  port: {
    arg: 'N',
    default: String(DASHBOARD_PORT),
    env: 'GRANARY_DASHBOARD_PORT',
    file: false,
    help: 'Port the page listens on, 0 for a free one.',
    parse: port,
  },
  dashboardToken: {
    arg: 'TOKEN',
    secret: true,
    help: 'Bearer token the page and its API ask for (at least 16 characters); required beyond loopback; never logged.',
    parse: word('a token without spaces', true),
  },
  dashboard: {
    arg: 'JSON',
    help: 'Dashboard options as a JSON object, e.g. {"hotGrainCallsPerSecond": 500} (keys: see dashboardDefaults).',
    parse: jsonObject('dashboard options'),
  },
  title: {
    arg: 'TEXT',
    default: 'the cluster id',
    env: false,
    file: false,
    help: "The page's title.",
    parse: (value, where) => {
      if (typeof value !== 'string' || value.trim() === '') throw mustBe(where, 'a title', value);
      return value;
    },
  },
  timeoutMs: {
    arg: 'MS',
    flag: 'timeout',
    default: '10000',
    help: 'How long to wait for a gateway at start.',
    parse: milliseconds,
  },
  logLevel: logLevelOption('warn'),
} satisfies OptionTable;

/** Every command's options, for the checks of config file keys and GRANARY_* variables. */
const allTables: readonly OptionTable[] = [siloOptions, callOptions, statusOptions, dashboardOptions];

/** Every config file key some command takes. */
export const allFileKeys: readonly string[] = [
  ...new Set(allTables.flatMap((t) => Object.entries(t).flatMap(([k, s]) => fileKeyOf(k, s) ?? []))),
].sort();

/** Every GRANARY_* variable some command reads. */
export const allEnv: readonly string[] = [
  ...new Set(allTables.flatMap((t) => Object.entries(t).flatMap(([k, s]) => envOf(k, s) ?? []))),
].sort();
