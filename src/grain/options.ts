// Grain type metadata: the decorators, their plain `static grainOptions`
// equivalent, and the per-class type info the runtime dispatches on.

import type { IncomingCallContext, IncomingCallFilter } from '../messaging/filters.ts';
import { ConfigurationError } from '../errors.ts';
import { CHANNEL_METHOD, STREAM_METHOD } from '../streams/types.ts';
import { deliverChannelItem, deliverStreamItems } from './stream-consumer.ts';

/** A placement strategy: a built-in name or a custom strategy object. */
export type PlacementStrategy = 'random' | 'preferLocal' | 'hash' | 'activationCount' | CustomPlacement;

/**
 * A custom placement strategy: picks one of the candidate silo addresses.
 * `context` is the request context of the call that activates the grain (see
 * RequestContext), e.g. a region or tenant that decides where it should live.
 */
export interface CustomPlacement {
  readonly name: string;
  place(
    grain: { type: string; key: string },
    silos: readonly string[],
    local: string,
    context: Readonly<Record<string, unknown>>,
  ): string;
}

/** Options of one grain method. */
export interface MethodOptions {
  /** May interleave with other read-only calls, never with a write. */
  readOnly?: boolean;
  /** May interleave with any call. */
  alwaysInterleave?: boolean;
  /** The caller does not wait: its promise resolves once the call is sent. */
  oneWay?: boolean;
}

/** Options of a grain type: the `static grainOptions` object, or what the decorators set. */
export interface GrainOptions {
  /** The type name; default: the class name. */
  name?: string;
  /** Calls may interleave at every `await`. Default false. */
  reentrant?: boolean;
  /** A call whose chain comes back to this grain is let in instead of failing with DeadlockError. Default false. */
  callChainReentrancy?: boolean;
  /** Where new activations go (clusters). Default `activationCount`. */
  placement?: PlacementStrategy;
  /** Several local activations, never registered; `maxLocal` defaults to the number of CPUs. */
  statelessWorker?: boolean | { maxLocal?: number };
  /** Idle time after which an activation is deactivated, in ms. Default: the silo's `collectionAgeMs`. */
  collectionAgeMs?: number;
  /** Per-method options by method name. */
  methods?: Record<string, MethodOptions>;
  /** Event log options of a `JournaledGrain`. */
  journal?: JournalOptions;
  /**
   * Stream namespaces the grain is implicitly subscribed to: every item of a
   * stream in one of them activates the grain whose key is the stream's key
   * and reaches its `onStreamItem(item, token, stream)`.
   */
  implicitSubscriptions?: readonly string[];
  /**
   * Broadcast channel namespaces the grain listens to: every item published to
   * a channel in one of them reaches `onChannelItem(item, channel)` of the
   * grain whose key is the channel's key (fire and forget, nothing stored).
   */
  implicitChannelSubscriptions?: readonly string[];
}

/** Options of a `JournaledGrain` class: `@journal({...})`, or `journal` in `static grainOptions`. */
export interface JournalOptions {
  /** The silo's event log (its `eventLogs` option) the grain's events go to. Default `default`. */
  log?: string;
  /**
   * Save a snapshot of the state each time the confirmed version passes a
   * multiple of this many events, so that activation replays only the events
   * after the latest snapshot. Default 0: no snapshots, activation replays the
   * whole log.
   */
  snapshotEvery?: number;
}

/** Journal options with their defaults applied. */
export interface ResolvedJournalOptions {
  readonly log: string;
  readonly snapshotEvery: number;
}

/**
 * Set on the prototype of a base class that sits between Grain and user
 * classes (JournaledGrain): names its members, which are never callable
 * through a reference, not even when a subclass overrides them (hooks such as
 * `apply`). Framework use only.
 */
export const BASE_CLASS: unique symbol = Symbol('granary.baseClass') as never;

/** What a base class declares under BASE_CLASS. */
export interface BaseClassInfo {
  readonly name: string;
  readonly members: readonly string[];
  /** Its grains keep an event log (JournaledGrain). */
  readonly journaled: boolean;
}

const classOptions = new WeakMap<object, GrainOptions>();
const METHOD_FLAGS: unique symbol = Symbol('granary.methodFlags') as never;

type Flagged = { [METHOD_FLAGS]?: MethodOptions };

function classOpts(cls: object): GrainOptions {
  let o = classOptions.get(cls);
  if (o === undefined) classOptions.set(cls, (o = {}));
  return o;
}

function flag(fn: unknown, set: MethodOptions): void {
  const f = fn as Flagged;
  f[METHOD_FLAGS] = { ...f[METHOD_FLAGS], ...set };
}

/** `@grain('name')`: the grain type's name. */
export function grain(name: string) {
  return (cls: abstract new (...args: never[]) => unknown, _ctx: ClassDecoratorContext): void => {
    classOpts(cls).name = name;
  };
}

/** `@reentrant`: calls may interleave at every `await`. */
export function reentrant(cls: abstract new (...args: never[]) => unknown, _ctx: ClassDecoratorContext): void {
  classOpts(cls).reentrant = true;
}

/** `@callChainReentrancy`: a call chain that comes back to this grain is let in. */
export function callChainReentrancy(
  cls: abstract new (...args: never[]) => unknown,
  _ctx: ClassDecoratorContext,
): void {
  classOpts(cls).callChainReentrancy = true;
}

/** `@statelessWorker({ maxLocal })`: several local activations, never registered. */
export function statelessWorker(options: { maxLocal?: number } = {}) {
  return (cls: abstract new (...args: never[]) => unknown, _ctx: ClassDecoratorContext): void => {
    classOpts(cls).statelessWorker = options;
  };
}

/** `@placement(strategy)`: where new activations of this type go. */
export function placement(strategy: PlacementStrategy) {
  return (cls: abstract new (...args: never[]) => unknown, _ctx: ClassDecoratorContext): void => {
    classOpts(cls).placement = strategy;
  };
}

/** `@collectionAge(ms)`: idle time after which activations of this type are deactivated. */
export function collectionAge(ms: number) {
  return (cls: abstract new (...args: never[]) => unknown, _ctx: ClassDecoratorContext): void => {
    classOpts(cls).collectionAgeMs = ms;
  };
}

/** `@journal({ log, snapshotEvery })`: event log options of a JournaledGrain class. */
export function journal(options: JournalOptions) {
  return (cls: abstract new (...args: never[]) => unknown, _ctx: ClassDecoratorContext): void => {
    classOpts(cls).journal = options;
  };
}

/**
 * `@implicitSubscription(namespace)`: every item of every stream in
 * `namespace` activates the grain with the stream's key and reaches its
 * `onStreamItem(item, token, stream)`; nothing to subscribe, no pub-sub record.
 */
export function implicitSubscription(namespace: string) {
  return (cls: abstract new (...args: never[]) => unknown, _ctx: ClassDecoratorContext): void => {
    const o = classOpts(cls);
    o.implicitSubscriptions = [...(o.implicitSubscriptions ?? []), namespace];
  };
}

/**
 * `@implicitChannelSubscription(namespace)`: every item broadcast on a channel
 * in `namespace` reaches `onChannelItem(item, channel)` of the grain with the
 * channel's key, activating it if needed.
 */
export function implicitChannelSubscription(namespace: string) {
  return (cls: abstract new (...args: never[]) => unknown, _ctx: ClassDecoratorContext): void => {
    const o = classOpts(cls);
    o.implicitChannelSubscriptions = [...(o.implicitChannelSubscriptions ?? []), namespace];
  };
}

/** `@readOnly`: may interleave with other read-only calls, never with a write. */
export function readOnly(fn: (...args: never[]) => unknown, _ctx: ClassMethodDecoratorContext): void {
  flag(fn, { readOnly: true });
}

/** `@alwaysInterleave`: may interleave with any call. */
export function alwaysInterleave(fn: (...args: never[]) => unknown, _ctx: ClassMethodDecoratorContext): void {
  flag(fn, { alwaysInterleave: true });
}

/** `@oneWay`: the caller's promise resolves once the call is sent; the result and errors are not returned. */
export function oneWay(fn: (...args: never[]) => unknown, _ctx: ClassMethodDecoratorContext): void {
  flag(fn, { oneWay: true });
}

/** Runtime info of one callable grain method. */
export interface MethodInfo {
  readonly name: string;
  readonly fn: (...args: unknown[]) => unknown;
  readonly readOnly: boolean;
  readonly alwaysInterleave: boolean;
  readonly oneWay: boolean;
}

/** Runtime info of a grain type, computed once per class. */
export interface GrainTypeInfo {
  readonly name: string;
  /** `name/`: a grain id string is this and the key (one string per type, not one per id). */
  readonly idPrefix: string;
  readonly cls: new () => object;
  readonly reentrant: boolean;
  readonly callChainReentrancy: boolean;
  /** Maximum local activations for a stateless worker; 0 when the type is not one. */
  readonly maxLocalWorkers: number;
  readonly placement: PlacementStrategy;
  readonly collectionAgeMs: number | undefined;
  readonly methods: ReadonlyMap<string, MethodInfo>;
  /**
   * The class's `receiveReminder(name, tick)`, which only the reminder service
   * calls (it is not one of `methods`: clients cannot call it); undefined when
   * the class has none.
   */
  readonly reminder: MethodInfo | undefined;
  /** Where the runtime delivers stream items (STREAM_METHOD; never callable through a reference). */
  readonly stream: MethodInfo;
  /** The stream namespaces the type is implicitly subscribed to. */
  readonly implicitSubscriptions: readonly string[];
  /** Where the runtime delivers broadcast channel items (CHANNEL_METHOD). */
  readonly channel: MethodInfo;
  /** The broadcast channel namespaces the type listens to. */
  readonly implicitChannelSubscriptions: readonly string[];
  /** The class's own incoming call filter, its `onIncomingCall(ctx)` method; undefined when it has none. */
  readonly incomingFilter: IncomingCallFilter | undefined;
  /** True when the class overrides `onActivate`. */
  readonly hasOnActivate: boolean;
  readonly hasOnDeactivate: boolean;
  /** Event log options of a journaled grain type; undefined for the others. */
  readonly journal: ResolvedJournalOptions | undefined;
}

/**
 * Methods the runtime calls on a grain itself (lifecycle hooks, reminder ticks,
 * stream items): never callable through a reference. `GrainRef<T>` leaves them
 * out too, so calling one through a reference does not compile.
 */
export const RESERVED_METHODS = [
  'constructor',
  'onActivate',
  'onDeactivate',
  'receiveReminder',
  'onStreamItem',
  'onChannelItem',
  'onIncomingCall',
] as const;

/** A name in `RESERVED_METHODS`. */
export type ReservedMethod = (typeof RESERVED_METHODS)[number];

const RESERVED: ReadonlySet<string> = new Set(RESERVED_METHODS);

const typeInfos = new WeakMap<object, GrainTypeInfo>();

/**
 * The type info of a grain class. `base` is `Grain.prototype`: methods are
 * collected from the class's prototype chain up to it.
 */
export function grainTypeInfo(cls: new () => object, base: object, cpus: number): GrainTypeInfo {
  const cached = typeInfos.get(cls);
  if (cached !== undefined) return cached;
  if (typeof cls !== 'function' || !(cls.prototype instanceof (base.constructor as new () => object))) {
    throw new ConfigurationError(
      `${String((cls as { name?: unknown })?.name ?? cls)} is not a grain class: a grain class extends Grain`,
    );
  }
  const statics = (cls as { grainOptions?: GrainOptions }).grainOptions ?? {};
  // Decorators of the class and of its ancestors; the nearest wins.
  const chain: GrainOptions[] = [];
  for (let c: object | null = cls; c !== null && c !== base.constructor; c = Object.getPrototypeOf(c)) {
    const o = classOptions.get(c);
    if (o !== undefined) chain.unshift(o);
  }
  const opts: GrainOptions = Object.assign({}, ...chain, statics);
  if (chain.length > 0 && chain[chain.length - 1]?.name === undefined && statics.name === undefined) {
    // A subclass without its own @grain name takes its class name, not its parent's.
    opts.name = cls.name;
  }

  const methods = new Map<string, MethodInfo>();
  const protos: object[] = [];
  let baseClass: BaseClassInfo | undefined;
  for (let p: object | null = cls.prototype; p !== null && p !== base; p = Object.getPrototypeOf(p)) {
    protos.push(p);
    if (Object.hasOwn(p, BASE_CLASS)) baseClass ??= (p as { [BASE_CLASS]: BaseClassInfo })[BASE_CLASS];
  }
  const baseMembers: ReadonlySet<string> = new Set(baseClass?.members);
  for (const p of protos.reverse()) {
    for (const name of Object.getOwnPropertyNames(p)) {
      if (RESERVED.has(name) || name in base || baseMembers.has(name)) continue;
      const d = Object.getOwnPropertyDescriptor(p, name);
      if (d === undefined || typeof d.value !== 'function') continue;
      const fn = d.value as ((...args: unknown[]) => unknown) & Flagged;
      const flags: MethodOptions = { ...fn[METHOD_FLAGS], ...opts.methods?.[name] };
      methods.set(name, {
        name,
        fn,
        readOnly: flags.readOnly === true,
        alwaysInterleave: flags.alwaysInterleave === true,
        oneWay: flags.oneWay === true,
      });
    }
  }
  if (opts.methods !== undefined) {
    for (const name of Object.keys(opts.methods)) {
      if (!methods.has(name))
        throw new ConfigurationError(
          `grainOptions.methods of ${cls.name} names '${name}', which is not a method of the class`,
        );
    }
  }

  const name = opts.name ?? cls.name;
  if (typeof name !== 'string' || name === '')
    throw new ConfigurationError(`grain class ${cls.name} needs a non-empty type name`);
  let maxLocalWorkers = 0;
  if (opts.statelessWorker !== undefined && opts.statelessWorker !== false) {
    const m = opts.statelessWorker === true ? undefined : opts.statelessWorker.maxLocal;
    maxLocalWorkers = m ?? cpus;
    if (!Number.isInteger(maxLocalWorkers) || maxLocalWorkers < 1) {
      throw new ConfigurationError(`statelessWorker.maxLocal of ${name} must be a positive integer, got ${String(m)}`);
    }
  }
  if (opts.collectionAgeMs !== undefined && !(opts.collectionAgeMs > 0)) {
    throw new ConfigurationError(`collectionAgeMs of grain ${name} must be a positive number of milliseconds`);
  }
  const journalOptions = resolveJournal(name, opts.journal, baseClass, maxLocalWorkers);
  const proto = cls.prototype as Record<string, unknown>;
  const baseProto = base as Record<string, unknown>;
  const info: GrainTypeInfo = {
    name,
    idPrefix: `${name}/`,
    cls,
    reentrant: opts.reentrant === true,
    callChainReentrancy: opts.callChainReentrancy === true,
    maxLocalWorkers,
    placement: opts.placement ?? 'activationCount',
    collectionAgeMs: opts.collectionAgeMs,
    methods,
    reminder:
      typeof proto['receiveReminder'] === 'function'
        ? {
            name: 'receiveReminder',
            fn: proto['receiveReminder'] as (...args: unknown[]) => unknown,
            readOnly: false,
            alwaysInterleave: false,
            oneWay: false,
          }
        : undefined,
    stream: streamMethod,
    implicitSubscriptions: checkNamespaces(
      name,
      opts.implicitSubscriptions,
      typeof proto['onStreamItem'] === 'function',
    ),
    channel: channelMethod,
    implicitChannelSubscriptions: checkNamespaces(
      name,
      opts.implicitChannelSubscriptions,
      typeof proto['onChannelItem'] === 'function',
      'implicitChannelSubscriptions',
      'onChannelItem(item, channel)',
    ),
    incomingFilter: typeof proto['onIncomingCall'] === 'function' ? ownIncomingFilter : undefined,
    hasOnActivate: proto['onActivate'] !== baseProto['onActivate'],
    hasOnDeactivate: proto['onDeactivate'] !== baseProto['onDeactivate'],
    journal: journalOptions,
  };
  typeInfos.set(cls, info);
  return info;
}

/** A grain class's own filter: its `onIncomingCall(ctx)`, the innermost of the filters. */
function ownIncomingFilter(ctx: IncomingCallContext): Promise<void> | void {
  return (ctx.grain as { onIncomingCall(ctx: IncomingCallContext): Promise<void> | void }).onIncomingCall(ctx);
}

/** A method the runtime calls on every grain (a turn like any call; never through a reference). */
function systemMethod(name: string, fn: (this: object, ...args: never[]) => unknown): MethodInfo {
  return { name, fn: fn as (...args: unknown[]) => unknown, readOnly: false, alwaysInterleave: false, oneWay: false };
}

const streamMethod = systemMethod(STREAM_METHOD, deliverStreamItems);

const channelMethod = systemMethod(CHANNEL_METHOD, deliverChannelItem);

/** The implicit subscriptions of grain type `name`, checked. */
function checkNamespaces(
  name: string,
  namespaces: unknown,
  hasHandler: boolean,
  option = 'implicitSubscriptions',
  handler = 'onStreamItem(item, token, stream)',
): readonly string[] {
  if (namespaces === undefined) return [];
  if (!Array.isArray(namespaces) || namespaces.some((n) => typeof n !== 'string' || n === '')) {
    throw new ConfigurationError(
      `${option} of grain ${name} must be a list of non-empty namespace names, got ${JSON.stringify(namespaces)}`,
    );
  }
  if (namespaces.length > 0 && !hasHandler) {
    throw new ConfigurationError(
      `grain ${name} is implicitly subscribed to ${namespaces.map((n) => `'${n as string}'`).join(', ')} but has no ${handler} method to receive the items`,
    );
  }
  return [...new Set(namespaces as string[])];
}

/** The journal options of grain type `name`, checked; undefined when it is not journaled. */
function resolveJournal(
  name: string,
  o: JournalOptions | undefined,
  baseClass: BaseClassInfo | undefined,
  maxLocalWorkers: number,
): ResolvedJournalOptions | undefined {
  if (baseClass?.journaled !== true) {
    if (o !== undefined)
      throw new ConfigurationError(
        `grain ${name} has journal options, which only a class that extends JournaledGrain takes`,
      );
    return undefined;
  }
  if (maxLocalWorkers > 0) {
    throw new ConfigurationError(
      `grain ${name} is a JournaledGrain and a stateless worker: its activations would write one event log at once; drop statelessWorker`,
    );
  }
  const log = o?.log ?? 'default';
  if (typeof log !== 'string' || log === '')
    throw new ConfigurationError(
      `journal option log of grain ${name} must name an event log of the silo, got ${JSON.stringify(log)}`,
    );
  const snapshotEvery = o?.snapshotEvery ?? 0;
  if (!Number.isSafeInteger(snapshotEvery) || snapshotEvery < 0) {
    throw new ConfigurationError(
      `journal option snapshotEvery of grain ${name} must be a whole number of events (0: no snapshots), got ${String(snapshotEvery)}`,
    );
  }
  return { log, snapshotEvery };
}
