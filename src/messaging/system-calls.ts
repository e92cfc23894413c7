// The control-plane calls between silos (directory, membership gossip and
// probes, load reports, reminder notices, the dashboard's snapshots), and those
// a client may make (`cluster.status` and the dashboard's, for operators'
// tools), in one table: each name with the
// shape of its arguments and of its result. Caller and handler take their
// types from it, and data off the wire is checked against it, so a malformed
// call fails with a ProtocolError naming the call and the field.

import { MAX_TIMER_MS } from '../clock.ts';
import { ProtocolError } from '../errors.ts';
import { decode } from '../serialization/codec.ts';

/** A check of one value received from another silo; `T` is the type it proves. */
export interface Shape<T> {
  /** What the value must be, for messages: `a string`, `an array of [grain, address, activation]`. */
  readonly expected: string;
  /** Why `value` (found at `path`) does not fit, or undefined when it does. */
  mismatch(value: unknown, path: string): string | undefined;
  /** Never set: carries `T` for the types derived from the table. */
  readonly type?: T;
}

/** Whether `value` fits `shape`. */
export function fits<T>(shape: Shape<T>, value: unknown): value is T {
  return shape.mismatch(value, '') === undefined;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  return typeof value;
}

function leaf<T>(expected: string, ok: (v: unknown) => boolean): Shape<T> {
  return {
    expected,
    mismatch: (v, path) => (ok(v) ? undefined : `${path} must be ${expected}, got ${describe(v)}`),
  };
}

/** Shapes to build the table from. */
export const shapes = {
  string: leaf<string>('a string', (v) => typeof v === 'string'),
  /** An integer from 0 to 2^53 - 1 (counts, activation numbers). */
  count: leaf<number>('a non-negative integer', (v) => Number.isSafeInteger(v) && (v as number) >= 0),
  /** A whole number of milliseconds above 0. */
  positiveMs: leaf<number>(
    'a positive integer (ms)',
    (v) => Number.isSafeInteger(v) && (v as number) > 0 && (v as number) <= MAX_TIMER_MS,
  ),
  /** A finite number (rates, latencies, weighted counts). */
  number: leaf<number>('a finite number', (v) => typeof v === 'number' && Number.isFinite(v)),
  boolean: leaf<boolean>('a boolean', (v) => typeof v === 'boolean'),
  true: leaf<true>('true', (v) => v === true),
  null: leaf<null>('null', (v) => v === null),
  /** `inner` or null. */
  nullable<T>(inner: Shape<T>): Shape<T | null> {
    return {
      expected: `${inner.expected} or null`,
      mismatch: (v, path) => (v === null ? undefined : inner.mismatch(v, path)),
    };
  },
  /** An array whose every element fits `item`. */
  array<T>(item: Shape<T>): Shape<T[]> {
    return {
      expected: `an array of ${item.expected}`,
      mismatch(v, path) {
        if (!Array.isArray(v)) return `${path} must be an array of ${item.expected}, got ${describe(v)}`;
        for (let i = 0; i < v.length; i++) {
          const m = item.mismatch(v[i], `${path}[${i}]`);
          if (m !== undefined) return m;
        }
        return undefined;
      },
    };
  },
  /** A fixed-length array whose elements are named (the names appear in messages). */
  tuple<const F extends readonly Field[]>(...fields: F): Shape<FieldTypes<F>> {
    const expected = `[${fields.map(([n]) => n).join(', ')}]`;
    return {
      expected,
      mismatch(v, path) {
        if (!Array.isArray(v) || v.length !== fields.length)
          return `${path} must be ${expected} (${fields.length} elements), got ${describe(v)}`;
        for (let i = 0; i < fields.length; i++) {
          const [name, shape] = fields[i] as Field;
          const m = shape.mismatch(v[i], `${path}[${i}] (${name})`);
          if (m !== undefined) return m;
        }
        return undefined;
      },
    };
  },
  /** A plain object with these fields (and no others checked); used where names read better than positions. */
  object<const O extends Readonly<Record<string, Shape<unknown>>>>(fields: O): Shape<ObjectType<O>> {
    const names = Object.keys(fields);
    const expected = `an object of ${names.join(', ')}`;
    return {
      expected,
      mismatch(v, path) {
        if (v === null || typeof v !== 'object' || Array.isArray(v))
          return `${path} must be ${expected}, got ${describe(v)}`;
        for (const name of names) {
          const m = (fields[name] as Shape<unknown>).mismatch((v as Record<string, unknown>)[name], `${path}.${name}`);
          if (m !== undefined) return m;
        }
        return undefined;
      },
    };
  },
} as const;

/** The type an object shape proves. */
export type ObjectType<O extends Readonly<Record<string, Shape<unknown>>>> = {
  -readonly [K in keyof O]: O[K] extends Shape<infer T> ? T : never;
};

/** A named element of a tuple or of a call's arguments: `['grain', shapes.string]`. */
export type Field = readonly [name: string, shape: Shape<unknown>];

/** The element types of named fields, as a mutable tuple. */
export type FieldTypes<F extends readonly Field[]> = {
  -readonly [I in keyof F]: F[I] extends readonly [string, Shape<infer T>] ? T : never;
};

/** One system call: its named arguments and the shape of its result. */
export interface SystemCallSpec<A extends unknown[], R> {
  /** The argument names, in order, for messages. */
  readonly argNames: readonly string[];
  readonly args: Shape<A>;
  readonly result: Shape<R>;
}

function call<const F extends readonly Field[], R>(fields: F, result: Shape<R>): SystemCallSpec<FieldTypes<F>, R> {
  return { argNames: fields.map(([n]) => n), args: argsShape(fields), result };
}

function argsShape<const F extends readonly Field[]>(fields: F): Shape<FieldTypes<F>> {
  const expected = `(${fields.map(([n]) => n).join(', ')})`;
  return {
    expected,
    mismatch(v, path) {
      if (!Array.isArray(v) || v.length !== fields.length)
        return `${path} must be ${fields.length} argument${fields.length === 1 ? '' : 's'} ${expected}, got ${describe(v)}`;
      for (let i = 0; i < fields.length; i++) {
        const [name, shape] = fields[i] as Field;
        const m = shape.mismatch(v[i], `argument ${name}`);
        if (m !== undefined) return m;
      }
      return undefined;
    },
  };
}

/** A directory entry on the wire: [grain id, silo address, activation number]. */
const wireEntry = shapes.tuple(['grain', shapes.string], ['address', shapes.string], ['activation', shapes.count]);
/** Where an activation lives, as the directory answers: [silo address, activation number]. */
const wireLocation = shapes.tuple(['address', shapes.string], ['activation', shapes.count]);
/** A membership row on the wire, as `cluster.status` answers (times in epoch ms, whole). */
const wireMember = shapes.tuple(
  ['address', shapes.string],
  ['generation', shapes.count],
  ['status', shapes.string],
  ['gateway', shapes.nullable(shapes.string)],
  ['hostName', shapes.string],
  ['startedAt', shapes.count],
  ['iAmAliveAt', shapes.count],
  ['suspicions', shapes.array(shapes.tuple(['by', shapes.string], ['at', shapes.count]))],
);

// ---- The dashboard's shapes (see observability/dashboard/) -------------------

const str = shapes.string;
const num = shapes.number;
const count = shapes.count;
const bool = shapes.boolean;

/** One grain type on one silo: counters since the silo started, and what the type allows. */
const wireTypeStats = shapes.object({
  type: str,
  /** Calls settled (failed ones included). */
  calls: count,
  failures: count,
  /** Failures by error code. */
  codes: shapes.array(shapes.tuple(['code', str], ['count', count])),
  /** Latency observations per bucket (not cumulative; the bounds are the silo's `bounds`), weighted by their sampling. */
  latency: shapes.array(num),
  /** Activations in memory now. */
  activations: count,
  /** The method called most, and whether it is read-only (advice for a queueing grain). */
  topMethod: shapes.nullable(shapes.tuple(['name', str], ['calls', count], ['readOnly', bool])),
  reentrant: bool,
  statelessWorker: bool,
  /** The persistent states activations of the type declared here: [state, storage provider]. */
  states: shapes.array(shapes.tuple(['state', str], ['provider', str])),
});

/** What one silo answers `dashboard.silo` with: its own counters, read now. */
const wireSiloStats = shapes.object({
  silo: str,
  /** Epoch ms on the answering silo. */
  at: num,
  /** Whether the silo counts calls (metrics or the dashboard on); without, only activations are known. */
  counting: bool,
  /** Whether it samples hot grains (the dashboard on). */
  sampling: bool,
  activations: count,
  /** Calls in flight on the silo. */
  pending: count,
  /** Calls waiting in mailboxes, all activations together. */
  queued: count,
  /** Upper bounds of the latency buckets, in seconds. */
  bounds: shapes.array(num),
  types: shapes.array(wireTypeStats),
  /**
   * The hottest grains by sampled calls: [grain, calls/s estimate, overestimate at most, its part of
   * its type's sampled calls on the silo (0 to 1)].
   */
  hot: shapes.array(shapes.tuple(['grain', str], ['rate', num], ['error', num], ['share', num])),
  /** The longest mailboxes: [grain, calls waiting, the method of the first, whether it is read-only]. */
  mailboxes: shapes.array(shapes.tuple(['grain', str], ['queued', count], ['method', str], ['readOnly', bool])),
});

/** A membership event the answering silo saw: [epoch ms, silo, what, detail]. */
const wireEvent = shapes.tuple(['at', num], ['silo', str], ['what', str], ['detail', str]);

/** Where a grain's activation runs, and how it is doing there. */
const wireLocal = shapes.object({
  silo: str,
  /** Lifecycle state: Activating, Valid, Deactivating... */
  state: str,
  queued: count,
  running: count,
  /** Calls/s from the silo's hot-grain sampler; null when the grain is not among the hot ones. */
  rate: shapes.nullable(num),
  /** The persistent states the grain's type declared on that silo: [state, storage provider]. */
  states: shapes.array(shapes.tuple(['state', str], ['provider', str])),
});

/** A grain's persistent state as stored. */
const wireState = shapes.object({
  state: str,
  provider: str,
  /** null: no record (the grain runs on its initial state). */
  etag: shapes.nullable(str),
  /** The stored value as JSON text for display (values JSON lacks are shown tagged); null without a record. */
  json: shapes.nullable(str),
  /** Whether the value is plain JSON, so an edit as JSON text writes back what was read. */
  editable: bool,
  /** Why it could not be read. */
  error: shapes.nullable(str),
});

/** What the dashboard knows of one grain. */
const wireGrain = shapes.object({
  grain: str,
  /** Whether the answering silo hosts the type (else the search can only say where the directory points). */
  known: bool,
  /** The directory's entry: [silo, activation number]; null when the grain is not active. */
  location: shapes.nullable(shapes.tuple(['silo', str], ['activation', count])),
  local: shapes.nullable(wireLocal),
  states: shapes.array(wireState),
  reminders: shapes.array(shapes.object({ name: str, startAt: num, periodMs: num, lastTickAt: shapes.nullable(num) })),
  /** Why the reminders could not be read. */
  remindersError: shapes.nullable(str),
});

/**
 * Every system call: name → argument and result shapes. The only place a
 * system call is declared; `SystemCallArgs` and `SystemCallResult` come from it.
 */
export const systemCalls = Object.freeze({
  /** Are you there? (direct probe of the failure detector). */
  ping: call([], shapes.true),
  /** Re-read the membership table now (gossip: a status changed). */
  refresh: call([], shapes.null),
  /** Probe `target` for me (indirect probe); true if it answered within `timeoutMs`. */
  probe: call(
    [
      ['target', shapes.string],
      ['timeoutMs', shapes.positiveMs],
    ],
    shapes.boolean,
  ),
  /** My activation count, for placement (load report). */
  load: call([['activations', shapes.count]], shapes.null),
  /** A reminder of `grainId` was added or removed; the owner of its range re-reads it. */
  'reminder.changed': call(
    [
      ['grainId', shapes.string],
      ['name', shapes.string],
    ],
    shapes.null,
  ),
  /** Register an activation with the owner of its entry: the entry that won, or null if the callee does not own it. */
  'dir.register': call(
    [
      ['grain', shapes.string],
      ['address', shapes.string],
      ['activation', shapes.count],
    ],
    shapes.nullable(wireLocation),
  ),
  /** Register many activations (after a view change), no owner check: the entry that won for each. */
  'dir.registerMany': call([['entries', shapes.array(wireEntry)]], shapes.array(wireLocation)),
  /** Remove an entry if it is still this activation's. */
  'dir.unregister': call(
    [
      ['grain', shapes.string],
      ['address', shapes.string],
      ['activation', shapes.count],
    ],
    shapes.null,
  ),
  /** Where the owner says a grain lives, or null. */
  'dir.lookup': call([['grain', shapes.string]], shapes.nullable(wireLocation)),
  /** Take these entries over (a leaving silo or an old owner hands its partition on). */
  'dir.handoff': call([['entries', shapes.array(wireEntry)]], shapes.null),
  /**
   * The caller, stopping, hands its whole partition over: take these entries (those the
   * callee owns without the caller, maybe none) and route past the caller from now on.
   */
  'dir.handoffAll': call([['entries', shapes.array(wireEntry)]], shapes.null),
  /**
   * The cluster as the callee sees it, for operators' tools (a client asks a
   * gateway): the membership table read now, and activation counts by silo
   * (the callee's own now, the others' as last reported to it).
   */
  'cluster.status': call(
    [],
    shapes.tuple(
      ['silo', shapes.string],
      ['members', shapes.array(wireMember)],
      ['loads', shapes.array(shapes.tuple(['address', shapes.string], ['activations', shapes.count]))],
    ),
  ),
  /** This silo's own counters, for a dashboard (a silo asks each active one once a second while a page is open). */
  'dashboard.silo': call([], wireSiloStats),
  /**
   * The cluster as a dashboard shows it, gathered by the callee: the
   * membership table, every live silo's `dashboard.silo` (or why it did not
   * answer), and the membership events the callee saw.
   */
  'dashboard.cluster': call(
    [],
    shapes.object({
      silo: str,
      at: num,
      members: shapes.array(wireMember),
      silos: shapes.array(
        shapes.object({ address: str, stats: shapes.nullable(wireSiloStats), error: shapes.nullable(str) }),
      ),
      events: shapes.array(wireEvent),
    }),
  ),
  /** A grain's location, activation, stored states and reminders (the dashboard's search and inspector). */
  'dashboard.grain': call(
    [
      ['type', str],
      ['key', str],
    ],
    wireGrain,
  ),
  /**
   * Writes a grain's state as JSON text through its storage provider, under
   * the ETag the editor read (a stale one fails with InconsistentStateError),
   * then deactivates the grain's activation so its next call reads the new state.
   */
  'dashboard.writeState': call(
    [
      ['type', str],
      ['key', str],
      ['state', str],
      ['etag', shapes.nullable(str)],
      ['json', str],
    ],
    shapes.object({ etag: str, deactivated: bool }),
  ),
  /** The callee's activation of a grain, if it has one (the dashboard asks the silo the directory names). */
  'dashboard.local': call([['grain', str]], shapes.nullable(wireLocal)),
  /** Deactivate the callee's activation of a grain, if it has one; true if it had. */
  'dashboard.deactivate': call([['grain', str]], bool),
});

/** The system calls a client may make (through a gateway); the others are between silos only. */
export const clientSystemCalls: ReadonlySet<SystemCallName> = new Set<SystemCallName>([
  'cluster.status',
  'dashboard.cluster',
  'dashboard.grain',
  'dashboard.writeState',
]);

type Table = typeof systemCalls;

/** The name of a system call. */
export type SystemCallName = keyof Table;
/** The arguments of system call `N`, as a tuple. */
export type SystemCallArgs<N extends SystemCallName> = Table[N] extends SystemCallSpec<infer A, unknown> ? A : never;
/** The result of system call `N`. */
export type SystemCallResult<N extends SystemCallName> =
  Table[N] extends SystemCallSpec<unknown[], infer R> ? R : never;

/** The table seen through the derived types, so that a generic name indexes it without casts. */
const specs: { readonly [N in SystemCallName]: SystemCallSpec<SystemCallArgs<N>, SystemCallResult<N>> } = systemCalls;

/** What `cluster.status` answers: [answering silo, membership rows, [address, activations] per silo]. */
export type WireClusterStatus = SystemCallResult<'cluster.status'>;

/** One silo's counters, as `dashboard.silo` answers. */
export type WireSiloStats = SystemCallResult<'dashboard.silo'>;
/** The cluster as `dashboard.cluster` answers. */
export type WireDashboardCluster = SystemCallResult<'dashboard.cluster'>;
/** A grain as `dashboard.grain` answers. */
export type WireDashboardGrain = SystemCallResult<'dashboard.grain'>;
/** A grain's activation as `dashboard.local` answers. */
export type WireDashboardLocal = NonNullable<SystemCallResult<'dashboard.local'>>;
/** What `dashboard.writeState` answers. */
export type WireStateWritten = SystemCallResult<'dashboard.writeState'>;
/** The dashboard's system calls: a silo answers them with handlers the silo gives its cluster layer. */
export type DashboardCallName =
  | 'dashboard.silo'
  | 'dashboard.cluster'
  | 'dashboard.grain'
  | 'dashboard.writeState'
  | 'dashboard.local'
  | 'dashboard.deactivate';

/** A wire entry of the directory: [grain id, silo address, activation number]. */
export type WireDirectoryEntry = SystemCallArgs<'dir.handoff'>[0][number];

/**
 * Serves system call `N`. `caller` is the address of the calling silo as its
 * connection names it, undefined for a call a silo makes to itself.
 */
export type SystemCallHandler<N extends SystemCallName> = (
  args: SystemCallArgs<N>,
  caller: string | undefined,
) => Promise<SystemCallResult<N>> | SystemCallResult<N>;

/** One handler per system call: the receiving end. */
export type SystemCallHandlers = { readonly [N in SystemCallName]: SystemCallHandler<N> };

/** Makes system call `name` on the silo at `address`: the calling end. */
export type SystemCaller = <N extends SystemCallName>(
  address: string,
  name: N,
  args: SystemCallArgs<N>,
  timeoutMs?: number,
) => Promise<SystemCallResult<N>>;

/** A system call as the transport makes it, untyped (names and values as they go on the wire). */
export type RawSystemCall = (address: string, name: string, args: unknown[], timeoutMs?: number) => Promise<unknown>;

/** Whether `name` is a known system call. */
export function isSystemCallName(name: unknown): name is SystemCallName {
  return typeof name === 'string' && Object.hasOwn(systemCalls, name);
}

/** `args` as the arguments of `name`; a ProtocolError naming the call and the field if they do not fit. */
export function checkSystemCallArgs<N extends SystemCallName>(name: N, args: unknown): SystemCallArgs<N> {
  const shape = specs[name].args;
  if (fits(shape, args)) return args;
  throw new ProtocolError(`malformed system call ${name}: ${shape.mismatch(args, 'its arguments') ?? 'bad arguments'}`);
}

/** `value` as the result of `name`; a ProtocolError naming the call and the field if it does not fit. */
export function checkSystemCallResult<N extends SystemCallName>(name: N, value: unknown): SystemCallResult<N> {
  const shape = specs[name].result;
  if (fits(shape, value)) return value;
  throw new ProtocolError(
    `malformed result of system call ${name}: ${shape.mismatch(value, 'the result') ?? 'bad result'}`,
  );
}

/**
 * Runs a system call that came off the wire: checks the name and the
 * arguments, then calls its handler. An unknown name or arguments that do not
 * fit reject with a ProtocolError that names the call and the field.
 */
export async function dispatchSystemCall(
  handlers: SystemCallHandlers,
  name: unknown,
  args: unknown,
  caller: string | undefined,
): Promise<unknown> {
  if (!isSystemCallName(name))
    throw new ProtocolError(
      `unknown system call ${typeof name === 'string' ? `'${name}'` : describe(name)}; known: ${Object.keys(systemCalls).join(', ')}`,
    );
  return run(handlers, name, args, caller);
}

function run<N extends SystemCallName>(
  handlers: SystemCallHandlers,
  name: N,
  args: unknown,
  caller: string | undefined,
): Promise<SystemCallResult<N>> | SystemCallResult<N> {
  const handler: SystemCallHandler<N> = handlers[name];
  return handler(checkSystemCallArgs(name, args), caller);
}

/**
 * A typed caller over an untyped one: every result is checked against the
 * table before the caller sees it (a ProtocolError if it does not fit).
 */
export function checkedSystemCaller(raw: RawSystemCall): SystemCaller {
  return async (address, name, args, timeoutMs) =>
    checkSystemCallResult(name, await raw(address, name, args, timeoutMs));
}

/** A system call frame, decoded: codec([seq, name, args]). */
export interface SystemCallFrame {
  readonly seq: number;
  /** Checked by `dispatchSystemCall`, so an unknown name can still be answered. */
  readonly name: unknown;
  readonly args: unknown;
}

/** A system result frame, decoded: codec([seq, ok, value]). */
export interface SystemResultFrame {
  readonly seq: number;
  readonly ok: boolean;
  /** The result (checked against the call's table entry by the caller) or the error. */
  readonly value: unknown;
}

function isSeq(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;
}

/** Decodes the body of a SystemCall frame; a ProtocolError if it is not [seq, name, args]. */
export function decodeSystemCall(body: Uint8Array): SystemCallFrame {
  const v = decodeBody(body, 'system call');
  if (!Array.isArray(v) || v.length !== 3 || !isSeq(v[0]))
    throw new ProtocolError(`malformed system call frame: expected [seq, name, args], got ${describe(v)}`);
  return { seq: v[0], name: v[1], args: v[2] };
}

/** Decodes the body of a SystemResult frame; a ProtocolError if it is not [seq, ok, value]. */
export function decodeSystemResult(body: Uint8Array): SystemResultFrame {
  const v = decodeBody(body, 'system result');
  if (!Array.isArray(v) || v.length !== 3 || !isSeq(v[0]) || typeof v[1] !== 'boolean')
    throw new ProtocolError(`malformed system result frame: expected [seq, ok, value], got ${describe(v)}`);
  return { seq: v[0], ok: v[1], value: v[2] };
}

function decodeBody(body: Uint8Array, what: string): unknown {
  try {
    return decode(body);
  } catch (e) {
    throw new ProtocolError(`undecodable ${what} frame: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

/** A system call waiting for its result. */
export interface WaitingSystemCall {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  readonly timer: NodeJS.Timeout;
}

/**
 * Settles the system call a SystemResult frame answers, if it still waits; a
 * malformed frame is dropped with a warning (silos and clients alike).
 */
export function settleSystemResult(
  body: Uint8Array,
  waiting: Map<number, WaitingSystemCall>,
  logger: { warn(fields: object, message?: string): void },
): void {
  let r: SystemResultFrame;
  try {
    r = decodeSystemResult(body);
  } catch (e) {
    logger.warn({ err: e }, 'dropped a malformed system result frame');
    return;
  }
  const p = waiting.get(r.seq);
  if (p === undefined) return;
  waiting.delete(r.seq);
  clearTimeout(p.timer);
  if (r.ok) p.resolve(r.value);
  else p.reject(r.value);
}
