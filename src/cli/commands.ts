// The `granary` commands, one entry each: a new command (a dashboard, say)
// is one more entry here with its options table in tables.ts.

import { readFileSync } from 'node:fs';
import { ConfigurationError } from '../errors.ts';
import { runCall } from './call.ts';
import { runDashboard } from './dashboard.ts';
import { commandHelp, mainHelp, type Command } from './command.ts';
import { Exit } from './exit.ts';
import { guessName } from './options.ts';
import { runSilo } from './silo.ts';
import { runStatus } from './status.ts';
import { callOptions, dashboardOptions, siloOptions, statusOptions } from './tables.ts';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const silo: Command = {
  name: 'silo',
  summary: 'run a silo hosting the grain classes some modules export',
  usage: ['granary silo --grains MODULE [options]'],
  description:
    'Starts a silo hosting every grain class the --grains modules export, and serves until a signal. With --port, --gateway-port or --membership it listens and joins that cluster; with none of them it runs alone. Storage, reminders and event logs default to one SQLite file, .granary/state.db.\n' +
    'The first SIGTERM or SIGINT stops the silo gracefully (it leaves the cluster, its grains deactivate, its calls finish); a second one during that stop ends the process at once. The effective options are logged once at start, secrets redacted, with where each came from.',
  options: siloOptions,
  exits: [
    [Exit.Ok, 'stopped gracefully after SIGTERM or SIGINT'],
    [
      Exit.Failed,
      'could not start (a port in use, a store unreachable), or the graceful stop failed or overran --stop-timeout-ms',
    ],
    [Exit.Usage, 'bad usage or configuration: nothing started'],
    [Exit.DeclaredDead, 'the cluster declared this silo dead (it stopped at once)'],
    [Exit.SecondSigint, 'a second SIGINT during the graceful stop: stopped at once'],
    [Exit.SecondSigterm, 'a second SIGTERM during the graceful stop: stopped at once'],
  ],
  run: runSilo,
};

const callExits: Command['exits'] = [
  [Exit.Ok, 'the call returned; its result is on stdout as JSON (null for none)'],
  [Exit.Failed, 'the call failed, or no gateway answered: [CODE]: message on stderr'],
  [Exit.Usage, 'bad usage or configuration'],
];

const callUsage = (path: string): string[] => [
  `${path} <type>/<key> <method> [args...] (--gateway HOST:PORT | --membership SPEC) [options]`,
];

const callDescription =
  'Calls one grain method by name through a gateway, e.g. granary call counter/alice increment 5. Each argument is JSON if it parses as JSON (5, true, null, {"a":1}, "\\"5\\"" for the text 5), else text. The result is printed on stdout as JSON. Put -- before arguments that start with --.';

const call: Command = {
  name: 'call',
  summary: 'call a grain method through a gateway and print the result as JSON',
  usage: callUsage('granary call'),
  description: callDescription,
  options: callOptions,
  exits: callExits,
  run: (argv) => runCall(argv, 'granary call'),
};

const client: Command = {
  name: 'client',
  summary: 'client commands: granary client call (the same as granary call)',
  usage: ['granary client <command> ...'],
  description: 'Commands that act as a client of a running cluster.',
  subcommands: [
    { ...call, usage: callUsage('granary client call'), run: (argv) => runCall(argv, 'granary client call') },
  ],
  run: async (argv) => {
    throw new ConfigurationError(
      argv[0] === undefined
        ? 'granary client needs a command: call; see granary client --help'
        : `unknown command 'granary client ${argv[0]}' (known: call); see granary client --help`,
    );
  },
};

const status: Command = {
  name: 'status',
  summary: "print the membership table and each silo's load; exit code 4 if unhealthy",
  usage: ['granary status (--membership SPEC | --gateway HOST:PORT) [--cluster-id ID] [--json] [options]'],
  description:
    "Prints every silo in the membership table (address, status, host, gateway, start time, last I-am-alive) and its activation count as placement sees it (the load reports the silos send each other, as a gateway's silo last heard them). With --membership it reads the table itself and asks an active silo's gateway for the load; with only --gateway that gateway answers both.\n" +
    'A silo is suspected while a death vote against it is recent; a dead one was declared dead (voted out) or left (stopped). Rows of dead silos stay in the table, so only deaths within --dead-within-ms count against the exit code.',
  options: statusOptions,
  exits: [
    [Exit.Ok, 'every live silo is active and unsuspected, and none was declared dead within --dead-within-ms'],
    [Exit.Failed, 'the table or the gateway could not be read'],
    [Exit.Usage, 'bad usage or configuration'],
    [Exit.Unhealthy, 'a silo is suspected or was declared dead lately, or no silo is active'],
  ],
  run: runStatus,
};

const dashboard: Command = {
  name: 'dashboard',
  summary: 'serve the live dashboard of a cluster from this process',
  usage: ['granary dashboard (--gateway HOST:PORT | --membership SPEC) [--port N] [--host HOST] [options]'],
  description:
    "Serves the cluster's live dashboard at http://HOST:PORT/dashboard (default http://127.0.0.1:8081/dashboard), reading the cluster through a gateway: the silos need the dashboard on (a silo with --http-port on loopback has it; one without an HTTP port needs --dashboard true). With --membership it finds the gateways in the table, and moves to another when one goes. Beyond loopback the page is served only with --dashboard-token (or GRANARY_DASHBOARD_TOKEN). Prints the page's address, then serves until SIGTERM or SIGINT.",
  options: dashboardOptions,
  exits: [
    [Exit.Ok, 'stopped by SIGTERM or SIGINT'],
    [Exit.Failed, 'no gateway answered, or the port could not be listened on'],
    [Exit.Usage, 'bad usage or configuration (a host beyond loopback with no token, say): nothing served'],
  ],
  run: runDashboard,
};

const versionCommand: Command = {
  name: 'version',
  aliases: ['--version'],
  summary: "print granary's version",
  usage: ['granary version'],
  description: 'Prints the version of the granary package.',
  run: async () => {
    process.stdout.write(`${version()}\n`);
    return Exit.Ok;
  },
};

const help: Command = {
  name: 'help',
  aliases: ['--help', '-h'],
  summary: 'print help: granary help <command> [<subcommand>]',
  usage: ['granary help [<command> [<subcommand>]]'],
  description: 'Prints the help of a command (the same as granary <command> --help), or the list of commands.',
  run: async (argv) => {
    if (argv.length === 0) {
      process.stdout.write(`${mainHelp(commands)}\n`);
      return Exit.Ok;
    }
    const { command, path, rest } = find(argv);
    if (rest.length > 0 && command.subcommands !== undefined)
      throw unknownCommand(`${path} ${rest[0] as string}`, command.subcommands);
    process.stdout.write(`${commandHelp(command, path)}\n`);
    return Exit.Ok;
  },
};

/** Every command, in the order `granary help` lists them. */
export const commands: readonly Command[] = [silo, call, status, dashboard, client, versionCommand, help];

function unknownCommand(path: string, among: readonly Command[]): ConfigurationError {
  const name = path.split(' ').at(-1) as string;
  const guess = guessName(
    name,
    among.map((c) => c.name),
  );
  return new ConfigurationError(
    `unknown command '${path}'${guess !== undefined ? ` (did you mean '${guess}'?)` : ''}; see granary help`,
  );
}

/** The command `argv` names (descending into subcommands), its path, and the arguments after its name. */
export function find(argv: readonly string[]): { command: Command; path: string; rest: readonly string[] } {
  const [name, ...rest] = argv;
  const top = commands.find((c) => c.name === name || c.aliases?.includes(name ?? '') === true);
  if (top === undefined) throw unknownCommand(name ?? '', commands);
  let command = top;
  let path = `granary ${top.name}`;
  let args = rest;
  for (;;) {
    const sub = command.subcommands?.find((c) => c.name === args[0]);
    if (sub === undefined) return { command, path, rest: args };
    command = sub;
    path = `${path} ${sub.name}`;
    args = args.slice(1);
  }
}

/** Whether `argv` asks for help (`--help` or `-h` before any `--`). */
export function wantsHelp(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).some((a) => a === '--help' || a === '-h');
}

/** Runs the command `argv` names; resolves with the exit code. */
export async function runCommand(argv: readonly string[]): Promise<number> {
  if (argv.length === 0) return help.run([]);
  const { command, path, rest } = find(argv);
  if (command !== help && wantsHelp(rest)) {
    process.stdout.write(`${commandHelp(command, path)}\n`);
    return Exit.Ok;
  }
  return command.run(rest);
}
