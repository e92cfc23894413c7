// GrainRef<T>: a typed reference built from the grain class with no code
// generation. With the class at hand, a per-type reference class carries one
// method per grain method; any other name is a call by name (see below).

import { inspect } from 'node:util';
import { MAX_TIMER_MS } from '../clock.ts';
import { ConfigurationError } from '../errors.ts';
import { GRAIN_REF, type RefIdentity } from '../serialization/symbols.ts';
import type { GrainId } from './identity.ts';
import type { CallOptions, GrainRefBase } from './grain.ts';
import type { GrainTypeInfo, MethodInfo } from './options.ts';
import type { CallerContext } from '../messaging/call-chain.ts';

// The reference types live beside Grain, which they are computed from; they are re-exported here.
export type { CallOptions, GrainRef, GrainRefBase, ObserverRef } from './grain.ts';

/** Sends calls. Implemented by the silo runtime and by clients. */
export interface Invoker {
  invoke(core: RefCore, method: MethodInfo | string, args: unknown[]): Promise<unknown>;
  /** The reference to use when a reference arrives in `caller`'s hands. */
  ref(type: string, key: string, caller: CallerContext | undefined): GrainRefBase<unknown>;
}

/** The state behind a reference. Internal. */
export class RefCore {
  readonly id: GrainId;
  /** `type/key`, the key of the runtime's tables. */
  readonly idStr: string;
  readonly type: GrainTypeInfo | undefined;
  readonly invoker: Invoker;
  readonly caller: CallerContext | undefined;
  readonly options: CallOptions | undefined;
  /** The invoker's cache of where the grain was last found. */
  target: unknown;
  constructor(
    id: GrainId,
    idStr: string,
    type: GrainTypeInfo | undefined,
    invoker: Invoker,
    caller: CallerContext | undefined,
    options: CallOptions | undefined,
  ) {
    this.id = id;
    this.idStr = idStr;
    this.type = type;
    this.invoker = invoker;
    this.caller = caller;
    this.options = options;
    this.target = undefined;
  }
}

/** Property under which a reference keeps its core. */
export const CORE: unique symbol = Symbol('granary.refCore') as never;

/** The base of every reference object. */
export class GrainReference {
  readonly [CORE]: RefCore;
  constructor(core: RefCore) {
    this[CORE] = core;
  }
  get id(): GrainId {
    return this[CORE].id;
  }
  get [GRAIN_REF](): RefIdentity {
    return this[CORE].id;
  }
  withOptions(options: CallOptions): GrainRefBase<unknown> {
    const t = options.timeoutMs;
    if (t !== undefined && !(typeof t === 'number' && t > 0 && t <= MAX_TIMER_MS)) {
      throw new ConfigurationError(
        `timeoutMs must be a positive number of milliseconds up to ${MAX_TIMER_MS}, got ${String(t)}`,
      );
    }
    const c = this[CORE];
    const merged = { ...c.options, ...options };
    return makeRef(new RefCore(c.id, c.idStr, c.type, c.invoker, c.caller, merged));
  }
  toString(): string {
    return `GrainRef(${this[CORE].idStr})`;
  }
  toJSON(): { type: string; key: string } {
    const id = this[CORE].id;
    return { type: id.type, key: id.key };
  }
  [inspect.custom](): string {
    return this.toString();
  }
}

type RefClass = new (core: RefCore) => GrainReference;
const refClasses = new WeakMap<GrainTypeInfo, RefClass>();

function methodFn(m: MethodInfo): (this: GrainReference, ...args: unknown[]) => Promise<unknown> {
  return function (this: GrainReference, ...args: unknown[]): Promise<unknown> {
    const c = this[CORE];
    return c.invoker.invoke(c, m, args);
  };
}

function refClass(type: GrainTypeInfo): RefClass {
  let cls = refClasses.get(type);
  if (cls === undefined) {
    cls = class extends GrainReference {};
    Object.defineProperty(cls, 'name', { value: `GrainRef<${type.name}>` });
    for (const m of type.methods.values()) {
      Object.defineProperty(cls.prototype, m.name, {
        value: methodFn(m),
        writable: false,
        enumerable: false,
        configurable: false,
      });
    }
    refClasses.set(type, cls);
  }
  return cls;
}

const byName = new Map<string, (this: GrainReference, ...args: unknown[]) => Promise<unknown>>();

/**
 * The end of every reference's prototype chain: a name that no class defines
 * becomes a call by name, so a reference from a type name alone works, and an
 * unknown method fails at the call with UnknownMethodError instead of a
 * TypeError. Names a class defines never reach it, so typed calls pay nothing.
 */
const byNameFallback = new Proxy(Object.create(Object.prototype) as object, {
  get(target, prop, receiver) {
    if (typeof prop === 'symbol' || prop in target) return Reflect.get(target, prop, receiver);
    // Never a thenable: a reference can be returned from an async function.
    if (prop === 'then') return undefined;
    let fn = byName.get(prop);
    if (fn === undefined) {
      fn = function (this: GrainReference, ...args: unknown[]): Promise<unknown> {
        const c = this[CORE];
        return c.invoker.invoke(c, prop, args);
      };
      byName.set(prop, fn);
    }
    return fn;
  },
});
Object.setPrototypeOf(GrainReference.prototype, byNameFallback);

/** Builds the reference object for a core: a typed reference class when the type is known, a Proxy otherwise. */
export function makeRef(core: RefCore): GrainRefBase<unknown> {
  if (core.type !== undefined) return new (refClass(core.type))(core) as unknown as GrainRefBase<unknown>;
  return new GrainReference(core) as unknown as GrainRefBase<unknown>;
}

/** The core of a reference, or undefined if `value` is not one. */
export function refCore(value: unknown): RefCore | undefined {
  if (typeof value === 'object' && value !== null && CORE in value) return (value as GrainReference)[CORE];
  return undefined;
}
