// `granary call <type>/<key> <method> [args...]`: one grain call through a
// gateway. Arguments are JSON where they parse as JSON, else text; the result
// is printed as JSON on stdout, a failure as `[CODE]: message` on stderr.

import { ConfigurationError } from '../errors.ts';
import { refCore } from '../grain/ref.ts';
import { connectClient, needCluster } from './connect.ts';
import { describeFailure, Exit } from './exit.ts';
import { useLogLevel } from './logging.ts';
import { parseArgv, resolveOptions } from './options.ts';
import { allFileKeys, callOptions } from './tables.ts';

/** A command-line argument as a call argument: its JSON value if it is JSON (`5`, `true`, `"5"`, `{"a":1}`), else the text. */
export function callArgument(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** A call's result as JSON text: undefined as null, and values JSON lacks (bigint, Map, Set, bytes) in a plain form. */
export function resultJson(value: unknown): string {
  const text = JSON.stringify(value, (_key, v: unknown) => {
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof Map) return [...v].every(([k]) => typeof k === 'string') ? Object.fromEntries(v) : [...v];
    if (v instanceof Set) return [...v];
    if (v instanceof Uint8Array) return Buffer.from(v).toString('base64');
    return v;
  });
  return text ?? 'null';
}

/** Runs `granary call` (`command` names it in messages: `granary client call` too); resolves with the exit code. */
export async function runCall(argv: readonly string[], command = 'granary call'): Promise<number> {
  const args = parseArgv(callOptions, argv, command);
  const [target, method, ...rest] = args.positionals;
  const slash = target?.indexOf('/') ?? -1;
  if (target === undefined || slash <= 0)
    throw new ConfigurationError(
      `${command} takes <type>/<key> first, e.g. counter/alice, got ${target === undefined ? 'nothing' : `'${target}'`}; see ${command} --help`,
    );
  if (method === undefined || method === '')
    throw new ConfigurationError(`${command} takes a method name after ${target}; see ${command} --help`);
  const r = resolveOptions(callOptions, args, process.env, { fileKeys: allFileKeys });
  const v = r.values;
  needCluster(v, command);
  const { logger, warning } = useLogLevel(v.logLevel, 'warn', r.sources.logLevel);
  if (warning !== undefined) logger.warn({}, warning);
  const timeoutMs = v.timeoutMs ?? 30_000;
  const client = await connectClient(v, timeoutMs, logger, r.sources.membership ?? 'membership');
  try {
    const ref = client.ref(target.slice(0, slash), target.slice(slash + 1));
    // Through the invoker, by name: a method called `then` or `toString` is a grain's too.
    const result = await client.invoke(
      refCore(ref) as NonNullable<ReturnType<typeof refCore>>,
      method,
      rest.map(callArgument),
    );
    process.stdout.write(`${resultJson(result)}\n`);
    return Exit.Ok;
  } catch (e) {
    process.stderr.write(`${describeFailure(e)}\n`);
    return Exit.Failed;
  } finally {
    await client.close();
  }
}
