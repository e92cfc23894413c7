// The process-wide registry of user classes and error classes that may cross
// grain boundaries. The codec looks a class up by prototype when it writes a
// value, and by registered name when it reads one.

import { ConfigurationError, builtinErrorClasses } from '../errors.ts';

/** Any class, including abstract ones and ones with private constructors. */
type AnyClass<T = unknown> = abstract new (...args: never[]) => T;

/** Options of `registerType`. */
export interface RegisterTypeOptions<T> {
  /** The name the type travels under; the same on every silo and client. Default: `Class.name`. */
  name?: string;
  /** Turns an instance into data the codec supports. Default: its own enumerable properties. */
  serialize?: (value: T) => unknown;
  /** Rebuilds an instance from that data. Default: `Object.create(Class.prototype)` plus the properties, no constructor call. */
  deserialize?: (data: unknown) => T;
}

/** Options of `registerError`. */
export interface RegisterErrorOptions {
  /** The name the class travels under; the same on every silo and client. Default: `Class.name`. */
  name?: string;
}

/** A registered type, as the codec sees it. Internal. */
export interface TypeEntry {
  readonly name: string;
  readonly prototype: object;
  readonly serialize: ((value: any) => unknown) | undefined;
  readonly deserialize: ((data: unknown) => unknown) | undefined;
}

/** A registered error class, as the codec sees it. Internal. */
export interface ErrorEntry {
  readonly name: string;
  readonly Class: AnyClass<Error>;
  readonly prototype: Error;
}

const typesByProto = new Map<object, TypeEntry>();
const typesByName = new Map<string, TypeEntry & { readonly Class: AnyClass }>();
const errorsByProto = new Map<object, ErrorEntry>();
const errorsByName = new Map<string, ErrorEntry>();

// Prototypes whose instances hold internal slots that copying own properties
// would lose: a subclass of one needs its own serialize and deserialize.
const slotted: ReadonlyArray<[string, object]> = [
  ['Map', Map.prototype],
  ['Set', Set.prototype],
  ['Date', Date.prototype],
  ['RegExp', RegExp.prototype],
  ['ArrayBuffer', ArrayBuffer.prototype],
  ['a typed array', Object.getPrototypeOf(Uint8Array.prototype) as object],
  ['DataView', DataView.prototype],
  ['Promise', Promise.prototype],
  ['WeakMap', WeakMap.prototype],
  ['WeakSet', WeakSet.prototype],
  ['Array', Array.prototype],
];

function className(Class: unknown, what: string): string {
  if (typeof Class !== 'function' || typeof Class.prototype !== 'object' || Class.prototype === null) {
    throw new ConfigurationError(
      `${what} expects a class, got ${typeof Class === 'function' ? 'a function without a prototype' : typeof Class}`,
    );
  }
  return Class.name;
}

function checkName(name: unknown, what: string, Class: { name: string }): string {
  if (typeof name !== 'string' || name === '') {
    throw new ConfigurationError(
      `${what}(${Class.name || 'anonymous class'}) needs a name: the class has none, so pass { name: '...' }`,
    );
  }
  return name;
}

/**
 * Lets instances of a user class cross grain boundaries. By default their own
 * enumerable properties travel (each one copied by the same rules), and the
 * value is rebuilt with `Object.create(Class.prototype)`, without calling the
 * constructor (so `#private` fields are not carried: give such a class a
 * serialize and deserialize). Registering the same class again is a no-op;
 * two classes under one name is a ConfigurationError.
 */
export function registerType<T extends object>(Class: AnyClass<T>, options: RegisterTypeOptions<T> = {}): void {
  const inferred = className(Class, 'registerType');
  const name = checkName(options.name ?? inferred, 'registerType', Class);
  const prototype = Class.prototype as object;
  const existing = typesByName.get(name);
  if (existing !== undefined) {
    if (existing.Class === Class) return;
    throw new ConfigurationError(
      `registerType: the name "${name}" is already taken by another class; give one of them a distinct { name }`,
    );
  }
  const other = typesByProto.get(prototype);
  if (other !== undefined) {
    throw new ConfigurationError(
      `registerType: class ${inferred} is already registered under the name "${other.name}"; register it once, under one name`,
    );
  }
  if (prototype instanceof Error || prototype === Error.prototype) {
    throw new ConfigurationError(
      `registerType: ${inferred} is an Error class; register it with registerError(${inferred}) instead`,
    );
  }
  if (prototype === Object.prototype || prototype === Function.prototype) {
    throw new ConfigurationError(`registerType: ${inferred} is built in and cannot be registered`);
  }
  if (options.serialize === undefined || options.deserialize === undefined) {
    for (const [label, p] of slotted) {
      if (prototype === p || Object.prototype.isPrototypeOf.call(p, prototype)) {
        throw new ConfigurationError(
          `registerType: ${inferred} extends ${label}, whose contents are not own properties; pass both serialize and deserialize`,
        );
      }
    }
  }
  const entry = { name, Class, prototype, serialize: options.serialize, deserialize: options.deserialize };
  typesByName.set(name, entry);
  typesByProto.set(prototype, entry);
}

/**
 * Lets errors of this class arrive as instances of it on the other side of a
 * call (matched by the registered name); errors of unregistered classes arrive
 * as `RemoteError` carrying their original name. Granary's own errors and the
 * JavaScript built-in ones are registered from the start.
 */
export function registerError(Class: AnyClass<Error>, options: RegisterErrorOptions = {}): void {
  const inferred = className(Class, 'registerError');
  const name = checkName(options.name ?? inferred, 'registerError', Class);
  const prototype = Class.prototype as Error;
  if (!(prototype instanceof Error) && prototype !== Error.prototype) {
    throw new ConfigurationError(
      `registerError: ${inferred} does not extend Error; register plain classes with registerType(${inferred})`,
    );
  }
  const existing = errorsByName.get(name);
  if (existing !== undefined) {
    if (existing.Class === Class) return;
    throw new ConfigurationError(
      `registerError: the name "${name}" is already taken by another error class; give one of them a distinct { name }`,
    );
  }
  const other = errorsByProto.get(prototype);
  if (other !== undefined) {
    throw new ConfigurationError(
      `registerError: class ${inferred} is already registered under the name "${other.name}"; register it once, under one name`,
    );
  }
  const entry: ErrorEntry = { name, Class, prototype };
  errorsByName.set(name, entry);
  errorsByProto.set(prototype, entry);
}

/** The registered type whose prototype this is. Internal, for the codec. */
export function typeByPrototype(prototype: object): TypeEntry | undefined {
  return typesByProto.get(prototype);
}

/** The type registered under this name. Internal, for the codec. */
export function typeByName(name: string): TypeEntry | undefined {
  return typesByName.get(name);
}

/**
 * The registered class an error travels as: its own class if registered, else
 * a registered ancestor whose name the error still carries (as Node's internal
 * `TypeError` subclasses do); undefined means it arrives as a RemoteError.
 * Internal, for the codec.
 */
export function errorEntryOf(error: Error): ErrorEntry | undefined {
  const exact = errorsByProto.get(Object.getPrototypeOf(error) as object);
  if (exact !== undefined) return exact;
  const name: unknown = error.name;
  if (typeof name !== 'string') return undefined;
  const byName = errorsByName.get(name);
  return byName !== undefined && error instanceof byName.Class ? byName : undefined;
}

/** The error class registered under this name. Internal, for the codec. */
export function errorByName(name: string): ErrorEntry | undefined {
  return errorsByName.get(name);
}

for (const Class of [
  ...builtinErrorClasses,
  Error,
  TypeError,
  RangeError,
  SyntaxError,
  ReferenceError,
  EvalError,
  URIError,
  AggregateError,
]) {
  registerError(Class);
}
