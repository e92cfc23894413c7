// The options of the `granary` commands. Each is declared once, under its
// config file key; its flag (kebab case) and its environment variable
// (GRANARY_ and upper snake case) are derived from the key, so the three
// cannot drift. Values come from the config file, then the environment, then
// flags (the later wins), each checked with a message naming where it came from.

import { readFileSync } from 'node:fs';
import { MAX_TIMER_MS } from '../clock.ts';
import { ConfigurationError } from '../errors.ts';
import { closestName, redactSecrets } from '../hosting/options.ts';

/** Checks and converts one value: text from a flag or the environment, any JSON value from the file. */
export type Parse<T> = (value: unknown, where: string) => T;

/** One option of a command. */
export interface OptionSpec<T = unknown> {
  /** What it does, for --help (a sentence or two). */
  readonly help: string;
  /** The value's placeholder in --help (`N`, `MS`, `SPEC`); none for a switch (`--json`). */
  readonly arg?: string;
  /** The default as --help shows it; none when unset means something (no gateway, no streams). */
  readonly default?: string;
  /** The flag when it is not the key in kebab case (`gateway` for `gateways`). */
  readonly flag?: string;
  /** The environment variable when it is not GRANARY_ + the key in snake case; false for none. */
  readonly env?: string | false;
  /** False: not a config file key (`--config` itself, `--json`). */
  readonly file?: false;
  /** The flag may repeat; the variable and the file key take a comma-separated list (the file also an array). */
  readonly repeatable?: boolean;
  /** Never shown: in messages and logs the value is `***`. */
  readonly secret?: boolean;
  /** `granary silo`: passed to `Silo.start` under its key. */
  readonly silo?: true;
  readonly parse: Parse<T>;
}

/** A command's options by config file key. */
export type OptionTable = Readonly<Record<string, OptionSpec>>;

/** The values of a table's options that were given (or have a default the command applies). */
export type OptionValues<T extends OptionTable> = {
  -readonly [K in keyof T]?: T[K] extends OptionSpec<infer V> ? V : never;
};

/** `clusterId` → `cluster-id`. */
function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** The flag of an option, without the dashes. */
export function flagOf(key: string, spec: OptionSpec): string {
  return spec.flag ?? kebab(key);
}

/** The environment variable of an option, if it has one. */
export function envOf(key: string, spec: OptionSpec): string | undefined {
  if (spec.env === false) return undefined;
  return spec.env ?? `GRANARY_${kebab(key).replaceAll('-', '_').toUpperCase()}`;
}

/** The config file key of an option, if it has one. */
export function fileKeyOf(key: string, spec: OptionSpec): string | undefined {
  return spec.file === false ? undefined : key;
}

// ---- Values in messages ---------------------------------------------------------

/**
 * A value as a message shows it: text in quotes, secrets in URLs and
 * connection strings redacted, and so is `user:password@` in text that is
 * not quite a URL (a mistyped one is what such a message is about).
 */
export function show(value: unknown, secret = false): string {
  if (secret) return '***';
  if (typeof value === 'string') return `'${redactSecrets(value).replace(/([^\s:@/]+):[^\s@/]+@/g, '$1:***@')}'`;
  if (value === undefined) return 'nothing';
  return JSON.stringify(redactSecrets(value)) ?? String(value);
}

/** `<where> must be <what>, got <value>`. */
export function mustBe(where: string, what: string, value: unknown, secret = false): ConfigurationError {
  return new ConfigurationError(`${where} must be ${what}, got ${show(value, secret)}`);
}

/** The known name `name` most likely meant: a close one, else the only one it begins. */
export function guessName(name: string, known: readonly string[]): string | undefined {
  const close = closestName(name, known);
  if (close !== undefined || name.length < 3) return close;
  const longer = known.filter((k) => k.toLowerCase().startsWith(name.toLowerCase()));
  return longer.length === 1 ? longer[0] : undefined;
}

// ---- Parsers ----------------------------------------------------------------------

/** A whole number from `min` to `max`, given as a number or as its decimal text. */
export function integer(min: number, max: number, what = `an integer from ${min} to ${max}`): Parse<number> {
  return (value, where) => {
    const n =
      typeof value === 'number'
        ? value
        : typeof value === 'string' && /^\s*-?\d+\s*$/.test(value)
          ? Number(value)
          : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) throw mustBe(where, what, value);
    return n;
  };
}

/** A TCP port, 0 to pick a free one. */
export const port: Parse<number> = integer(0, 65_535, 'a port number 0-65535');

/** A whole number of milliseconds above 0. */
export const milliseconds: Parse<number> = integer(
  1,
  MAX_TIMER_MS,
  `a whole number of milliseconds from 1 to ${MAX_TIMER_MS}`,
);

/** true or false (also `1`, `0`, `yes`, `no` as text). */
export const boolean: Parse<boolean> = (value, where) => {
  if (typeof value === 'boolean') return value;
  if (typeof value === 'string') {
    const t = value.trim().toLowerCase();
    if (t === 'true' || t === '1' || t === 'yes') return true;
    if (t === 'false' || t === '0' || t === 'no') return false;
  }
  throw mustBe(where, 'true or false', value);
};

/** Non-empty text with no spaces (names, hosts, tokens). */
export function word(what: string, secret = false): Parse<string> {
  return (value, where) => {
    if (typeof value !== 'string' || value === '' || /\s/.test(value)) throw mustBe(where, what, value, secret);
    return value;
  };
}

/** A JSON object: the value itself in the file, its JSON text in a flag or the environment. */
export function jsonObject(what: string): Parse<Record<string, unknown>> {
  return (value, where) => {
    let v = value;
    if (typeof value === 'string') {
      try {
        v = JSON.parse(value);
      } catch (e) {
        throw new ConfigurationError(
          `${where} must be ${what} as JSON, e.g. '{"probeTimeoutMs": 2000}': ${(e as Error).message}`,
        );
      }
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw mustBe(where, `${what} (a JSON object)`, value);
    return v as Record<string, unknown>;
  };
}

/** A list of items, each checked by `item` (`where[i]` in messages). */
export function list<T>(item: Parse<T>): Parse<T[]> {
  return (value, where) => {
    const items = typeof value === 'string' ? splitList(value) : value;
    if (!Array.isArray(items) || items.length === 0) throw mustBe(where, 'a non-empty list', value);
    return items.map((v: unknown, i) => item(v, items.length === 1 ? where : `${where}[${i}]`));
  };
}

/** Items of a comma-separated list, trimmed, empty ones dropped. */
export function splitList(text: string): string[] {
  return text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

// ---- The command line -------------------------------------------------------------

/** A command line split into its options (raw text, by option key) and its positional arguments. */
export interface ParsedArgs {
  /** Flag values by option key, in order; a switch given as `--json` is `['true']`. */
  readonly flags: ReadonlyMap<string, readonly string[]>;
  readonly positionals: readonly string[];
  /** `--help` or `-h` was given. */
  readonly help: boolean;
}

/**
 * Splits `argv` by the flags of `table`. `--flag value` and `--flag=value`;
 * a switch takes no value unless written `--json=false`. `--` ends the flags;
 * anything not starting with `--` (`-5` too) is a positional argument.
 */
export function parseArgv(table: OptionTable, argv: readonly string[], command: string): ParsedArgs {
  const byFlag = new Map<string, string>();
  for (const [key, spec] of Object.entries(table)) byFlag.set(flagOf(key, spec), key);
  const flags = new Map<string, string[]>();
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a === '--help' || a === '-h') {
      help = true;
      continue;
    }
    if (!a.startsWith('--')) {
      positionals.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    const key = byFlag.get(name);
    if (key === undefined) {
      const guess = guessName(name, [...byFlag.keys()]);
      throw new ConfigurationError(
        `unknown flag --${name} for ${command}${guess !== undefined ? ` (did you mean --${guess}?)` : ''}; see ${command} --help`,
      );
    }
    const spec = table[key] as OptionSpec;
    let value: string;
    if (eq >= 0) value = a.slice(eq + 1);
    else if (spec.arg === undefined) value = 'true';
    else {
      const next = argv[i + 1];
      if (next === undefined)
        throw new ConfigurationError(`--${name} needs a value (${spec.arg}); see ${command} --help`);
      value = next;
      i++;
    }
    const values = flags.get(key) ?? [];
    // A repeated flag adds to the list if it is a list, else the last one wins.
    flags.set(key, spec.repeatable === true ? [...values, value] : [value]);
  }
  return { flags, positionals, help };
}

// ---- Resolution ---------------------------------------------------------------------

/** The options of one command, resolved from the file, the environment and the flags. */
export interface Resolution<T extends OptionTable> {
  readonly values: OptionValues<T>;
  /** Where each given value came from: `--port`, `GRANARY_PORT`, `silo.json`. */
  readonly sources: { readonly [K in keyof T]?: string };
  /** The config file read, if any. */
  readonly configFile: string | undefined;
  /** Things worth a line in the log (unknown GRANARY_* variables). */
  readonly warnings: readonly string[];
}

/** What `resolveOptions` checks names against. */
export interface Known {
  /** Every command's config file keys: a key another command takes is ignored, any other refused. */
  readonly fileKeys: readonly string[];
  /** Every GRANARY_* variable some part of Granary reads; set: warn about the others. */
  readonly env?: readonly string[];
}

/**
 * Resolves `table` from the config file (`config` in the table: `--config`
 * or `GRANARY_CONFIG`), the environment and the flags of `args`. Throws a
 * ConfigurationError naming the source of the first bad value, or an unknown
 * config file key and the known one it most likely meant.
 */
export function resolveOptions<T extends OptionTable>(
  table: T,
  args: ParsedArgs,
  env: NodeJS.ProcessEnv,
  known: Known,
): Resolution<T> {
  const values: Record<string, unknown> = {};
  const sources: Record<string, string> = {};
  const warnings: string[] = [];
  const set = (key: string, raw: unknown, where: string): void => {
    const spec = table[key] as OptionSpec;
    values[key] = spec.parse(spec.repeatable === true && typeof raw === 'string' ? splitList(raw) : raw, where);
    sources[key] = where;
  };
  const envValue = (name: string | undefined): string | undefined => {
    const v = name === undefined ? undefined : env[name];
    // An empty variable is an unset one (`GRANARY_PORT=` in a unit file or a compose file).
    return v === undefined || v === '' ? undefined : v;
  };

  let configFile: string | undefined;
  const configSpec = table['config'];
  if (configSpec !== undefined) {
    const flag = args.flags.get('config');
    const name = envOf('config', configSpec);
    configFile = flag !== undefined ? flag.at(-1) : envValue(name);
    if (configFile !== undefined) {
      const where = flag !== undefined ? `--${flagOf('config', configSpec)}` : (name as string);
      for (const [key, raw] of Object.entries(readConfigFile(configFile, where))) {
        const spec = table[key];
        if (spec !== undefined && fileKeyOf(key, spec) !== undefined) set(key, raw, `${configFile}: ${key}`);
        else if (!known.fileKeys.includes(key)) {
          const guess = guessName(key, known.fileKeys);
          throw new ConfigurationError(
            `unknown key '${key}' in config file ${configFile}${guess !== undefined ? ` (did you mean '${guess}'?)` : ''}; known keys: ${known.fileKeys.join(', ')}`,
          );
        }
      }
      sources['config'] = where;
      values['config'] = configFile;
    }
  }

  for (const [key, spec] of Object.entries(table)) {
    if (key === 'config') continue;
    const name = envOf(key, spec);
    const fromEnv = envValue(name);
    if (fromEnv !== undefined) set(key, fromEnv, name as string);
    const fromFlags = args.flags.get(key);
    if (fromFlags !== undefined)
      set(key, spec.repeatable === true ? fromFlags : fromFlags.at(-1), `--${flagOf(key, spec)}`);
  }

  if (known.env !== undefined) {
    for (const name of Object.keys(env)) {
      if (!name.startsWith('GRANARY_') || known.env.includes(name) || ignoredEnv.test(name)) continue;
      const guess = guessName(name, known.env);
      warnings.push(
        `environment variable ${name} is not a Granary setting${guess !== undefined ? ` (did you mean ${guess}?)` : ''}; ignored`,
      );
    }
  }
  return { values: values as OptionValues<T>, sources: sources as Resolution<T>['sources'], configFile, warnings };
}

/** GRANARY_* variables of Granary's own tests and tools, which a silo never reads. */
const ignoredEnv = /^GRANARY_(TEST_|SILO_PROCESS$|CHAOS_|TICK_LOG$)/;

function readConfigFile(path: string, where: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigurationError(`cannot read config file ${path} (${where}): ${(e as Error).message}`);
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new ConfigurationError(`config file ${path} is not JSON: ${(e as Error).message}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data))
    throw new ConfigurationError(`config file ${path} must hold a JSON object of options, e.g. {"port": 11111}`);
  return data as Record<string, unknown>;
}
