// Grain type metadata: the decorators, their plain `static grainOptions`
// equivalent, and the per-class type info the runtime dispatches on.

import { ConfigurationError } from '../errors.ts';

/** A placement strategy: a built-in name or a custom strategy object. */
export type PlacementStrategy = 'random' | 'preferLocal' | 'hash' | 'activationCount' | CustomPlacement;

/** A custom placement strategy: picks one of the candidate silo addresses. */
export interface CustomPlacement {
  readonly name: string;
  place(grain: { type: string; key: string }, silos: readonly string[], local: string): string;
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
export function callChainReentrancy(cls: abstract new (...args: never[]) => unknown, _ctx: ClassDecoratorContext): void {
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
  readonly cls: new () => object;
  readonly reentrant: boolean;
  readonly callChainReentrancy: boolean;
  /** Maximum local activations for a stateless worker; 0 when the type is not one. */
  readonly maxLocalWorkers: number;
  readonly placement: PlacementStrategy;
  readonly collectionAgeMs: number | undefined;
  readonly methods: ReadonlyMap<string, MethodInfo>;
  /** True when the class overrides `onActivate`. */
  readonly hasOnActivate: boolean;
  readonly hasOnDeactivate: boolean;
}

/** Members of `Grain` that are lifecycle hooks, not callable methods. */
const RESERVED = new Set(['constructor', 'onActivate', 'onDeactivate', 'receiveReminder', 'onStreamItem']);

const typeInfos = new WeakMap<object, GrainTypeInfo>();

/**
 * The type info of a grain class. `base` is `Grain.prototype`: methods are
 * collected from the class's prototype chain up to it.
 */
export function grainTypeInfo(cls: new () => object, base: object, cpus: number): GrainTypeInfo {
  const cached = typeInfos.get(cls);
  if (cached !== undefined) return cached;
  if (typeof cls !== 'function' || !(cls.prototype instanceof (base.constructor as new () => object))) {
    throw new ConfigurationError(`${String((cls as { name?: unknown })?.name ?? cls)} is not a grain class: a grain class extends Grain`);
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
  for (let p: object | null = cls.prototype; p !== null && p !== base; p = Object.getPrototypeOf(p)) protos.push(p);
  for (const p of protos.reverse()) {
    for (const name of Object.getOwnPropertyNames(p)) {
      if (RESERVED.has(name) || name in base) continue;
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
      if (!methods.has(name)) throw new ConfigurationError(`grainOptions.methods of ${cls.name} names '${name}', which is not a method of the class`);
    }
  }

  const name = opts.name ?? cls.name;
  if (typeof name !== 'string' || name === '') throw new ConfigurationError(`grain class ${cls.name} needs a non-empty type name`);
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
  const proto = cls.prototype as Record<string, unknown>;
  const baseProto = base as Record<string, unknown>;
  const info: GrainTypeInfo = {
    name,
    cls,
    reentrant: opts.reentrant === true,
    callChainReentrancy: opts.callChainReentrancy === true,
    maxLocalWorkers,
    placement: opts.placement ?? 'activationCount',
    collectionAgeMs: opts.collectionAgeMs,
    methods,
    hasOnActivate: proto['onActivate'] !== baseProto['onActivate'],
    hasOnDeactivate: proto['onDeactivate'] !== baseProto['onDeactivate'],
  };
  typeInfos.set(cls, info);
  return info;
}
