// RequestContext: key/value pairs that flow with a call to the grain it
// reaches and on to the calls that grain makes, never back with the response
// (Orleans' RequestContext). On the caller's side they live in an
// AsyncLocalStorage, created on first use, so a process that never sets one
// pays nothing: the call path reads one boolean.

import { AsyncLocalStorage } from 'node:async_hooks';
import { ConfigurationError } from '../errors.ts';
import { copy } from '../serialization/codec.ts';

/** The values of one request context. Immutable: a change makes a new one. */
export class ContextValues {
  readonly values: Readonly<Record<string, unknown>>;
  /** True when every value is a primitive: the context can be shared with a local callee as it is. */
  readonly plain: boolean;
  /**
   * What tracing read from these values (the span context their traceparent
   * names; null for none), kept here so a context is parsed once, however
   * many calls and turns read it; undefined until read. A context with other
   * values is a new object, so this never goes stale.
   */
  trace: unknown;
  constructor(values: Readonly<Record<string, unknown>>, plain: boolean, trace?: unknown) {
    this.values = values;
    this.plain = plain;
    this.trace = trace;
  }
}

/** The store of a frame with no values. */
const noValues = new ContextValues(Object.freeze({}), true);
const EMPTY = noValues.values;

/** Keys are short strings; the whole context travels with every call. */
const MAX_KEY_LENGTH = 256;

let storage: AsyncLocalStorage<ContextValues | undefined> | undefined;

/**
 * True once a request context was set or received in this process: from then
 * on every call reads the current one and every turn runs in its own. Before
 * that, calls skip both.
 */
export let contextInUse = false;

/**
 * Turns the request context on for the process (tracing does it at start: it
 * sets the trace context on every call).
 */
export function enableRequestContext(): void {
  enable();
}

/**
 * Until the request context is in use, turns and filter chains run without a
 * frame of their own (that is what makes them free). The first `set` in the
 * process, made synchronously in one of them, went into the frame of whatever
 * ran it: the caller calls this right after, to take it back out. Calls the
 * turn or filter made meanwhile already carry the value, and the turn's own
 * asynchronous continuations keep it.
 */
export function leaveFirstUse(): void {
  storage?.enterWith(undefined);
}

function enable(): AsyncLocalStorage<ContextValues | undefined> {
  storage ??= new AsyncLocalStorage<ContextValues | undefined>();
  contextInUse = true;
  return storage;
}

/** The request context in effect here, if any. */
export function currentContext(): ContextValues | undefined {
  if (storage === undefined) return undefined;
  const s = storage.getStore();
  return s === undefined || s.values === EMPTY ? undefined : s;
}

function applyFn(fn: (...args: unknown[]) => unknown, self: unknown, args: unknown[]): unknown {
  return fn.apply(self, args);
}

/**
 * Runs `fn.apply(self, args)` with `ctx` as the request context (none for
 * undefined), in a frame of its own: a `RequestContext.set` inside changes
 * nothing outside. (AsyncLocalStorage.run opens no frame when the store is
 * the one already in effect, so that case gets a new object.)
 */
export function runInContext(
  ctx: ContextValues | undefined,
  fn: (...args: unknown[]) => unknown,
  self: unknown,
  args: unknown[],
): unknown {
  const s = enable();
  let store = ctx ?? noValues;
  if (store === s.getStore()) store = new ContextValues(store.values, store.plain, store.trace);
  return s.run(store, applyFn, fn, self, args);
}

/** A context as it arrived over the wire (a plain object of values); undefined for an empty one. */
export function contextFromWire(values: unknown): ContextValues | undefined {
  if (values === null || typeof values !== 'object' || Array.isArray(values)) return undefined;
  enable();
  const v = values as Record<string, unknown>;
  let plain = true;
  let n = 0;
  for (const k in v) {
    n++;
    const x = v[k];
    if (x !== null && typeof x === 'object') plain = false;
  }
  return n === 0 ? undefined : new ContextValues(Object.freeze(v), plain);
}

/** The context a local callee gets: the same one when its values are primitives, else a deep copy. */
export function contextForLocalCall(ctx: ContextValues): ContextValues {
  return ctx.plain
    ? ctx
    : new ContextValues(Object.freeze(copy({ ...ctx.values }, undefined, 'request context')), false, ctx.trace);
}

/**
 * Sets `entries` (primitive values) in the current context at once, with
 * `trace` kept as what tracing read from them: tracing's own setter, so the
 * span context it writes as a traceparent is never parsed back in this process.
 */
export function setTraceContext(entries: Readonly<Record<string, string>>, trace: unknown): void {
  const s = enable();
  const base = s.getStore();
  const values = base === undefined || base.values === EMPTY ? entries : { ...base.values, ...entries };
  s.enterWith(new ContextValues(Object.freeze(values), base === undefined || base.plain, trace));
}

function checkKey(key: unknown): asserts key is string {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH)
    throw new ConfigurationError(
      `a RequestContext key is a non-empty string of at most ${MAX_KEY_LENGTH} characters, got ${typeof key === 'string' ? `'${key.slice(0, 40)}' (${key.length} characters)` : typeof key}`,
    );
}

function withValue(base: ContextValues | undefined, key: string, value: unknown): ContextValues {
  const next: Record<string, unknown> = { ...base?.values };
  let plain = base === undefined || base.plain;
  if (value !== null && typeof value === 'object') {
    // The context owns its values: a later change to the caller's object does not reach the callee.
    next[key] = copy(value, undefined, `RequestContext '${key}'`);
    plain = false;
  } else {
    if (typeof value === 'function' || typeof value === 'symbol')
      throw new ConfigurationError(`RequestContext '${key}' cannot hold a ${typeof value}: it travels with calls`);
    next[key] = value;
  }
  return new ContextValues(Object.freeze(next), plain);
}

/**
 * Key/value pairs that travel with calls: set them before a call (on a client,
 * or in a grain) and the grain called reads them, as do the grains it calls in
 * turn. Values are anything a grain call can carry as an argument; they are
 * copied when set. A change made by a callee never reaches its caller.
 *
 * Inside a grain turn, `set` changes the context of the rest of that turn and
 * the calls it makes. Outside one, prefer `run(values, fn)`: `set` there
 * changes the context of the current asynchronous flow from that point on, as
 * Node's `AsyncLocalStorage.enterWith` does.
 */
export const RequestContext = {
  /** The value of `key`, or undefined. */
  get(key: string): unknown {
    if (storage === undefined) return undefined;
    return storage.getStore()?.values[key];
  },

  /** Sets `key` for the calls made from here on (see above). */
  set(key: string, value: unknown): void {
    checkKey(key);
    if (value === undefined) {
      RequestContext.remove(key);
      return;
    }
    const s = enable();
    s.enterWith(withValue(s.getStore(), key, value));
  },

  /** Removes `key`. */
  remove(key: string): void {
    if (storage === undefined) return;
    const cur = storage.getStore();
    if (cur === undefined || !(key in cur.values)) return;
    const next: Record<string, unknown> = { ...cur.values };
    delete next[key];
    storage.enterWith(Object.keys(next).length === 0 ? undefined : new ContextValues(Object.freeze(next), cur.plain));
  },

  /** Removes every key. */
  clear(): void {
    if (storage !== undefined && storage.getStore() !== undefined) storage.enterWith(undefined);
  },

  /** Every key and value, as a frozen object (empty when there is none). */
  entries(): Readonly<Record<string, unknown>> {
    return storage?.getStore()?.values ?? EMPTY;
  },

  /** Runs `fn` with `values` added to the current context; the context outside `fn` is unchanged. */
  run<R>(values: Readonly<Record<string, unknown>>, fn: () => R): R {
    if (values === null || typeof values !== 'object')
      throw new ConfigurationError('RequestContext.run takes an object of values and a function');
    const s = enable();
    let ctx = s.getStore();
    for (const k of Object.keys(values)) {
      checkKey(k);
      const v = values[k];
      if (v !== undefined) ctx = withValue(ctx, k, v);
    }
    // A frame of its own even when nothing was added, so a set() inside stays inside.
    if (ctx === undefined) ctx = noValues;
    if (ctx === s.getStore()) ctx = new ContextValues(ctx.values, ctx.plain, ctx.trace);
    return s.run(ctx, fn);
  },
} as const;
