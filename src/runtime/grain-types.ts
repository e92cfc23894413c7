// The grain types a silo hosts: registered from the `grains` option, found by
// type name (calls from the wire, reminders) or by class (references).

import { ConfigurationError, UnknownGrainTypeError, UnknownMethodError } from '../errors.ts';
import { Grain, type GrainClass } from '../grain/grain.ts';
import { grainTypeInfo, type GrainTypeInfo } from '../grain/options.ts';
import type { IncomingCallFilter } from '../messaging/filters.ts';

/** The registry of one silo's grain types. */
export class GrainTypes {
  readonly #byName = new Map<string, GrainTypeInfo>();
  readonly #byClass = new Map<object, GrainTypeInfo>();
  readonly #cpus: number;
  readonly #incoming: readonly IncomingCallFilter[];
  readonly #filters = new Map<GrainTypeInfo, readonly IncomingCallFilter[] | undefined>();

  constructor(cpus: number, incomingFilters: readonly IncomingCallFilter[] = []) {
    this.#cpus = cpus;
    this.#incoming = incomingFilters;
  }

  /**
   * The incoming filters around calls to `type`: the silo's, then the class's
   * own `onIncomingCall`; undefined when there are none (the common case).
   */
  incomingFilters(type: GrainTypeInfo): readonly IncomingCallFilter[] | undefined {
    if (this.#filters.has(type)) return this.#filters.get(type);
    const own = type.incomingFilter;
    const all = own === undefined ? this.#incoming : [...this.#incoming, own];
    const out = all.length === 0 ? undefined : Object.freeze(all.slice());
    this.#filters.set(type, out);
    return out;
  }

  /** Registers a grain class; its type name must be unique. */
  register(cls: GrainClass): GrainTypeInfo {
    const info = grainTypeInfo(cls as new () => object, Grain.prototype, this.#cpus);
    const prev = this.#byName.get(info.name);
    if (prev !== undefined && prev.cls !== info.cls) {
      throw new ConfigurationError(
        `two grain classes use the type name '${info.name}' (${prev.cls.name} and ${info.cls.name}): give one another name with @grain('...')`,
      );
    }
    this.#byName.set(info.name, info);
    this.#byClass.set(cls, info);
    return info;
  }

  /** The type of a name, if registered. */
  get(name: string): GrainTypeInfo | undefined {
    return this.#byName.get(name);
  }

  /** The type of a class; a clear error if the class is not registered. */
  ofClass(cls: GrainClass): GrainTypeInfo {
    const info = this.#byClass.get(cls);
    if (info === undefined) {
      throw new UnknownGrainTypeError(
        `grain class ${String((cls as { name?: unknown })?.name)} is not registered with this silo: add it to the silo's 'grains' option`,
      );
    }
    return info;
  }

  /** Registered types by name. */
  get all(): ReadonlyMap<string, GrainTypeInfo> {
    return this.#byName;
  }

  /** The error for a call to a type this silo does not host. */
  unknownType(typeName: string, calling: string, silo: string): UnknownGrainTypeError {
    return new UnknownGrainTypeError(
      `unknown grain type '${typeName}' (calling ${calling}); silo ${silo} hosts: ${[...this.#byName.keys()].join(', ') || 'none'}`,
    );
  }
}

/** The error for a call to a method a type does not have. */
export function unknownMethod(type: GrainTypeInfo, method: string, calling: string): UnknownMethodError {
  return new UnknownMethodError(
    `grain type '${type.name}' has no method '${method}' (calling ${calling}); its methods: ${[...type.methods.keys()].join(', ') || 'none'}`,
  );
}
