// The codec: a deep copy for calls inside one process, and the msgpack wire and
// storage format for the rest, with one set of rules so that code does not change
// meaning when a grain moves. Unsupported values fail with the path that holds them.

import { Packr, addExtension, RESERVE_START_SPACE } from 'msgpackr';
import { ConfigurationError, ErrorCodes, RemoteError, SerializationError } from '../errors.ts';
import { errorByName, errorEntryOf, typeByName, typeByPrototype, type ErrorEntry, type TypeEntry } from './registry.ts';
import { GRAIN_REF, type CodecContext, type RefIdentity } from './symbols.ts';

// Design notes.
// - One walk decides what is supported, for copy and for encode alike: the
//   prototype of each object picks its kind (plain, array, a built-in, a
//   registered type, an Error); anything else is refused.
// - Paths cost nothing on success: a failure is thrown as an internal Failure,
//   and each container it passes through on the way out adds its own step
//   (`[3]`, `.name`, `.get("k")`). Only the top level turns it into a string.
// - encode walks the value first, validating it and swapping the values msgpack
//   cannot say (Map, errors, registered types, references...) for a Tagged
//   wrapper; containers are cloned only on the path to a swapped value, so
//   plain data goes to msgpackr untouched. msgpackr extension 0x47 carries the
//   wrappers and is the only global msgpackr state this module adds.

/** Nesting deeper than this fails: cyclic values are not supported. */
const MAX_DEPTH = 1000;
/** First byte of every encoded value: the format version. */
const FORMAT = 0x01;
/** The msgpack extension type of Tagged wrappers. */
const EXT_TYPE = 0x47;

const getProto = Object.getPrototypeOf as (o: object) => object | null;
const objectProto = Object.prototype;
const arrayProto = Array.prototype;
const defineProperty = Object.defineProperty;

// ---- Kinds of built-in objects ----------------------------------------------

const K_DATE = 1;
const K_MAP = 2;
const K_SET = 3;
const K_TYPED = 4;
const K_BUFFER = 5;
const K_ARRAY_BUFFER = 6;
const K_DATA_VIEW = 7;
const K_REGEXP = 8;

const builtinKinds = new Map<object, number>([
  [Date.prototype, K_DATE],
  [Map.prototype, K_MAP],
  [Set.prototype, K_SET],
  [RegExp.prototype, K_REGEXP],
  [ArrayBuffer.prototype, K_ARRAY_BUFFER],
  [DataView.prototype, K_DATA_VIEW],
  [Buffer.prototype, K_BUFFER],
  ...[
    Int8Array,
    Uint8Array,
    Uint8ClampedArray,
    Int16Array,
    Uint16Array,
    Int32Array,
    Uint32Array,
    Float32Array,
    Float64Array,
    BigInt64Array,
    BigUint64Array,
  ].map((C): [object, number] => [C.prototype, K_TYPED]),
]);

type TypedArray =
  | Uint8Array
  | Int8Array
  | Uint8ClampedArray
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array;
type Dict = Record<string, unknown>;

// ---- Immutable values --------------------------------------------------------

const immutables = new WeakSet<object>();
let anyImmutable = false;

/**
 * Marks a value that copy may pass by reference, as Orleans's `Immutable<T>`:
 * the caller promises that nobody mutates it any more (this is not checked).
 * Returns the same value; primitives pass through. encode still encodes it.
 */
export function immutable<T>(value: T): T {
  if ((typeof value === 'object' && value !== null) || typeof value === 'function') {
    immutables.add(value);
    anyImmutable = true;
  }
  return value;
}

// ---- Failures and paths ------------------------------------------------------

/** A value that cannot cross; collects its path on the way out. Internal. */
class Failure {
  readonly reason: string;
  readonly tooDeep: boolean;
  readonly cause: unknown;
  /** Steps from the failing value outwards, e.g. `[1]`, `.handlers`. */
  readonly steps: string[] = [];
  /** The value each step leads to, in the same order (for finding cycles). */
  readonly values: unknown[] = [];
  constructor(reason: string, tooDeep = false, cause?: unknown) {
    this.reason = reason;
    this.tooDeep = tooDeep;
    this.cause = cause;
  }
}

function describeThrown(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** Adds one step to a failure passing through a container. */
function step(e: unknown, stepText: string, value: unknown): Failure {
  const f = e instanceof Failure ? e : new Failure(`reading it threw ${describeThrown(e)}`, false, e);
  f.steps.push(stepText);
  f.values.push(value);
  return f;
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

function propStep(key: string): string {
  return IDENTIFIER.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
}

function keyText(key: unknown): string | undefined {
  switch (typeof key) {
    case 'string':
      return JSON.stringify(key);
    case 'bigint':
      return `${key}n`;
    case 'number':
    case 'boolean':
    case 'undefined':
      return String(key);
    default:
      return key === null ? 'null' : undefined;
  }
}

function mapValueStep(key: unknown, index: number): string {
  const text = keyText(key);
  return text === undefined ? `.values()[${index}]` : `.get(${text})`;
}

function isNativeFunction(f: unknown): f is { name: string } {
  return typeof f === 'function' && Function.prototype.toString.call(f).endsWith('{ [native code] }');
}

/** The failure for a value outside the supported set. */
function unsupported(v: unknown): Failure {
  if (typeof v === 'function') {
    return new Failure(`a function${v.name ? ` (${v.name})` : ''} cannot cross a grain boundary`);
  }
  if (typeof v === 'symbol') return new Failure(`a symbol (${String(v)}) cannot cross a grain boundary`);
  const tag = Object.prototype.toString.call(v).slice(8, -1);
  let ctor: unknown;
  try {
    ctor = (v as { constructor?: unknown }).constructor;
  } catch {
    ctor = undefined;
  }
  if (isNativeFunction(ctor)) {
    return new Failure(
      `a ${ctor.name || tag} cannot cross a grain boundary${tag === 'Promise' ? '; await it first' : ''}`,
    );
  }
  if (typeof ctor === 'function' && ctor.name !== '') {
    return new Failure(
      `an instance of class ${ctor.name} cannot cross a grain boundary: the class is not registered; call registerType(${ctor.name}) to let it through`,
    );
  }
  return new Failure(`an object of an unsupported kind (${tag}, no registered class) cannot cross a grain boundary`);
}

function tooDeep(): Failure {
  return new Failure('', true);
}

function abbreviate(path: string): string {
  return path.length <= 240 ? path : `${path.slice(0, 120)}…${path.slice(-100)}`;
}

/** Turns whatever a walk threw into the SerializationError users see. */
function toSerializationError(e: unknown, root: string, rootValue: unknown): SerializationError {
  const f = e instanceof Failure ? e : step(e, '', undefined);
  const steps = f.steps.slice().reverse();
  if (f.tooDeep) {
    const chain = [rootValue, ...f.values.slice().reverse()];
    const seen = new Map<unknown, number>();
    for (let j = 0; j < chain.length; j++) {
      const v = chain[j];
      if ((typeof v !== 'object' || v === null) && typeof v !== 'function') continue;
      const i = seen.get(v);
      if (i !== undefined) {
        const path = root + steps.slice(0, j).join('');
        const back = root + steps.slice(0, i).join('');
        return new SerializationError(
          `cannot serialize ${abbreviate(path)}: the value is cyclic (it refers back to ${abbreviate(back)}); cyclic values cannot cross a grain boundary`,
          path,
        );
      }
      seen.set(v, j);
    }
    const path = root + steps.join('');
    return new SerializationError(
      `cannot serialize ${abbreviate(path)}: the value is cyclic or nested more than ${MAX_DEPTH} levels deep`,
      path,
    );
  }
  const path = root + steps.join('');
  return new SerializationError(
    `cannot serialize ${abbreviate(path)}: ${f.reason}`,
    path,
    f.cause === undefined ? undefined : { cause: f.cause },
  );
}

// ---- Errors ------------------------------------------------------------------

/** What travels of an error. `props` are own enumerable properties, as flat key/value pairs. */
interface ErrorParts {
  name: string;
  message: string;
  stack: string | undefined;
  hasCause: boolean;
  cause: unknown;
  errors: unknown[] | undefined;
  props: unknown[];
}

function defineHidden(o: object, key: string, value: unknown): void {
  defineProperty(o, key, { value, writable: true, enumerable: false, configurable: true });
}

function defineData(o: object, key: string, value: unknown): void {
  defineProperty(o, key, { value, writable: true, enumerable: true, configurable: true });
}

/**
 * Sets flat key/value pairs, from `start`, as own enumerable data properties
 * (defined, not assigned, so that no setter or `__proto__` is triggered).
 */
function assignPairs(target: Dict, pairs: readonly unknown[], start: number): void {
  for (let i = start; i < pairs.length; i += 2) {
    const key = pairs[i];
    if (typeof key !== 'string')
      throw new SerializationError('cannot decode: corrupt data (a property name is not a string)');
    defineData(target, key, pairs[i + 1]);
  }
}

/**
 * Reads what travels of an error, each part copied (or prepared) by `walk`.
 * Errors are taken leniently: a property, cause or code that cannot cross is
 * left out rather than failing the call, so the error itself still arrives.
 */
function errorParts(e: Error, walk: (v: unknown, depth: number) => unknown, depth: number): ErrorParts {
  // An error reachable from its own properties (err.self = err, a cause
  // chain that loops) is left out where it closes, not 1000 levels down.
  if (errorsInProgress.includes(e)) throw new Failure('an error that contains itself cannot cross a grain boundary');
  errorsInProgress.push(e);
  try {
    return errorPartsOf(e, walk, depth);
  } finally {
    errorsInProgress.pop();
  }
}

/** The errors whose parts are being read, outermost first. */
const errorsInProgress: Error[] = [];

function errorPartsOf(e: Error, walk: (v: unknown, depth: number) => unknown, depth: number): ErrorParts {
  const lenient = (v: unknown): [boolean, unknown] => {
    try {
      return [true, walk(v, depth + 1)];
    } catch {
      return [false, undefined];
    }
  };
  const props: unknown[] = [];
  let hasCode = false;
  for (const key of Object.keys(e)) {
    const [ok, v] = lenient((e as unknown as Dict)[key]);
    if (!ok) continue;
    props.push(key, v);
    if (key === 'code') hasCode = true;
  }
  const code: unknown = (e as { code?: unknown }).code;
  if (!hasCode && code !== undefined) {
    const [ok, v] = lenient(code);
    if (ok) props.push('code', v);
  }
  let hasCause = false;
  let cause: unknown;
  if (Object.hasOwn(e, 'cause')) [hasCause, cause] = lenient(e.cause);
  let errors: unknown[] | undefined;
  const rawErrors = (e as { errors?: unknown }).errors;
  if (Array.isArray(rawErrors) && !Object.prototype.propertyIsEnumerable.call(e, 'errors')) {
    const [ok, v] = lenient(rawErrors);
    if (ok) errors = v as unknown[];
  }
  const name: unknown = e.name;
  const message: unknown = e.message;
  const stack: unknown = e.stack;
  return {
    name: typeof name === 'string' ? name : 'Error',
    message: typeof message === 'string' ? message : String(message),
    stack: typeof stack === 'string' ? stack : undefined,
    hasCause,
    cause,
    errors,
    props,
  };
}

/**
 * Rebuilds an error as an instance of the registered class, or as a
 * RemoteError carrying the original name, without calling a constructor
 * (Reflect.construct on Error gives a genuine error object of that class).
 */
function rebuildError(entry: ErrorEntry | undefined, p: ErrorParts): Error {
  // No stack is captured (the original one is set below); Reflect.set, as
  // stackTraceLimit is read-only under --frozen-intrinsics.
  const limit: unknown = Error.stackTraceLimit;
  Reflect.set(Error, 'stackTraceLimit', 0);
  let err: Error;
  try {
    err = Reflect.construct(Error, [], entry === undefined ? RemoteError : entry.Class) as Error;
  } finally {
    Reflect.set(Error, 'stackTraceLimit', limit);
  }
  if (p.message !== '') defineHidden(err, 'message', p.message);
  if (p.stack === undefined) delete (err as { stack?: string }).stack;
  else defineHidden(err, 'stack', p.stack);
  if (p.hasCause) defineHidden(err, 'cause', p.cause);
  if (p.errors !== undefined) defineHidden(err, 'errors', p.errors);
  const target = err as unknown as Dict;
  if (entry === undefined) {
    // The fields `new RemoteError(message, name, code)` would set.
    let code: unknown = ErrorCodes.RemoteError;
    for (let i = 0; i < p.props.length; i += 2)
      if (p.props[i] === 'code' && p.props[i + 1] !== undefined) code = p.props[i + 1];
    defineData(err, 'code', code);
    defineData(err, 'name', 'RemoteError');
    defineData(err, 'remoteName', p.name);
    for (let i = 0; i < p.props.length; i += 2) {
      const key = p.props[i];
      if (key !== 'name' && key !== 'code' && key !== 'remoteName' && typeof key === 'string')
        defineData(err, key, p.props[i + 1]);
    }
  } else {
    assignPairs(target, p.props, 0);
    if (err.name !== p.name) defineHidden(err, 'name', p.name);
  }
  return err;
}

// ---- copy --------------------------------------------------------------------

/** Copies any value; the heart of copy. */
function cp(v: unknown, ctx: CodecContext | undefined, depth: number): unknown {
  if (typeof v === 'object') return v === null ? null : cpObject(v, ctx, depth);
  if (typeof v === 'function') return cpFunction(v, ctx);
  if (typeof v === 'symbol') throw unsupported(v);
  return v;
}

function cpFunction(f: object, ctx: CodecContext | undefined): unknown {
  const ref = (f as { [GRAIN_REF]?: RefIdentity })[GRAIN_REF];
  if (ref === undefined) throw unsupported(f);
  return ctx === undefined ? f : ctx.reviveRef(ref);
}

function cpObject(o: object, ctx: CodecContext | undefined, depth: number): unknown {
  const proto = getProto(o);
  if (proto === objectProto) {
    const ref = (o as { [GRAIN_REF]?: RefIdentity })[GRAIN_REF];
    if (ref !== undefined) return ctx === undefined ? o : ctx.reviveRef(ref);
    if (anyImmutable && immutables.has(o)) return o;
    if (depth > MAX_DEPTH) throw tooDeep();
    return cpProps(o as Dict, {}, ctx, depth);
  }
  if (proto === arrayProto) {
    if (anyImmutable && immutables.has(o)) return o;
    if (depth > MAX_DEPTH) throw tooDeep();
    return cpArray(o as unknown[], ctx, depth);
  }
  return cpOther(o, proto, ctx, depth);
}

function cpProps(src: Dict, out: Dict, ctx: CodecContext | undefined, depth: number): Dict {
  let key = '';
  let v: unknown;
  try {
    for (key in src) {
      v = src[key];
      const c =
        (typeof v === 'object' && v !== null) || typeof v === 'function' || typeof v === 'symbol'
          ? cp(v, ctx, depth + 1)
          : v;
      if (key === '__proto__') defineData(out, key, c);
      else out[key] = c;
    }
  } catch (e) {
    throw step(e, propStep(key), v);
  }
  return out;
}

function cpArray(src: unknown[], ctx: CodecContext | undefined, depth: number): unknown[] {
  const out = src.slice();
  const n = out.length;
  let i = 0;
  let v: unknown;
  try {
    for (; i < n; i++) {
      v = out[i];
      if ((typeof v === 'object' && v !== null) || typeof v === 'function' || typeof v === 'symbol')
        out[i] = cp(v, ctx, depth + 1);
    }
  } catch (e) {
    throw step(e, `[${i}]`, v);
  }
  return out;
}

function cpOther(o: object, proto: object | null, ctx: CodecContext | undefined, depth: number): unknown {
  const ref = (o as { [GRAIN_REF]?: RefIdentity })[GRAIN_REF];
  if (ref !== undefined) return ctx === undefined ? o : ctx.reviveRef(ref);
  if (anyImmutable && immutables.has(o)) return o;
  if (depth > MAX_DEPTH) throw tooDeep();
  if (proto === null) return cpProps(o as Dict, Object.create(null) as Dict, ctx, depth);
  switch (builtinKinds.get(proto)) {
    case K_DATE:
      return new Date((o as Date).getTime());
    case K_MAP:
      return cpMap(o as Map<unknown, unknown>, ctx, depth);
    case K_SET:
      return cpSet(o as Set<unknown>, ctx, depth);
    case K_TYPED:
      return (o as TypedArray).slice();
    case K_BUFFER:
      return Buffer.from(o as Buffer);
    case K_ARRAY_BUFFER:
      return (o as ArrayBuffer).slice(0);
    case K_DATA_VIEW: {
      const dv = o as DataView;
      return new DataView(new Uint8Array(dv.buffer, dv.byteOffset, dv.byteLength).slice().buffer);
    }
    case K_REGEXP:
      return new RegExp((o as RegExp).source, (o as RegExp).flags);
  }
  const type = typeByPrototype(proto);
  if (type !== undefined) return cpRegistered(o, type, ctx, depth);
  if (o instanceof Error)
    return rebuildError(
      errorEntryOf(o),
      errorParts(o, (x, d) => cp(x, ctx, d), depth),
    );
  throw unsupported(o);
}

function cpMap(src: Map<unknown, unknown>, ctx: CodecContext | undefined, depth: number): Map<unknown, unknown> {
  const out = new Map<unknown, unknown>();
  let i = 0;
  let k: unknown;
  let v: unknown;
  let atKey = true;
  try {
    for ([k, v] of src) {
      atKey = true;
      const ck = cp(k, ctx, depth + 1);
      atKey = false;
      out.set(ck, cp(v, ctx, depth + 1));
      i++;
    }
  } catch (e) {
    throw atKey ? step(e, `.keys()[${i}]`, k) : step(e, mapValueStep(k, i), v);
  }
  return out;
}

function cpSet(src: Set<unknown>, ctx: CodecContext | undefined, depth: number): Set<unknown> {
  const out = new Set<unknown>();
  let i = 0;
  let v: unknown;
  try {
    for (v of src) {
      out.add(cp(v, ctx, depth + 1));
      i++;
    }
  } catch (e) {
    throw step(e, `.values()[${i}]`, v);
  }
  return out;
}

/** Calls user code (serialize, deserialize), blaming it by name if it throws. */
function callUser<R>(what: string, fn: () => R): R {
  try {
    return fn();
  } catch (e) {
    throw new Failure(`${what} threw ${describeThrown(e)}`, false, e);
  }
}

function cpRegistered(o: object, type: TypeEntry, ctx: CodecContext | undefined, depth: number): unknown {
  const { serialize, deserialize } = type;
  let data: Dict | unknown;
  if (serialize === undefined) {
    if (deserialize === undefined) return cpOwnProps(o as Dict, Object.create(type.prototype) as Dict, ctx, depth);
    data = cpOwnProps(o as Dict, {}, ctx, depth);
  } else {
    const raw = callUser(`${type.name}'s serialize()`, () => serialize(o));
    try {
      data = cp(raw, ctx, depth + 1);
    } catch (e) {
      throw step(e, '.serialize()', raw);
    }
  }
  if (deserialize !== undefined) return callUser(`${type.name}'s deserialize()`, () => deserialize(data));
  if (typeof data !== 'object' || data === null) {
    throw new Failure(
      `${type.name}'s serialize() returned ${data === null ? 'null' : typeof data}; without a deserialize it must return an object of properties`,
    );
  }
  return defineAll(Object.create(type.prototype) as Dict, data as Dict);
}

/** Copies own enumerable properties of `src` onto `out` as data properties. */
function defineAll(out: Dict, src: Dict): Dict {
  for (const key of Object.keys(src)) defineData(out, key, src[key]);
  return out;
}

/** Like cpProps, but for class instances: own properties only, defined rather than assigned. */
function cpOwnProps(src: Dict, out: Dict, ctx: CodecContext | undefined, depth: number): Dict {
  let key = '';
  let v: unknown;
  try {
    for (key of Object.keys(src)) {
      v = src[key];
      defineData(out, key, cp(v, ctx, depth + 1));
    }
  } catch (e) {
    throw step(e, propStep(key), v);
  }
  return out;
}

/**
 * A deep copy for calls inside one process, so that caller and callee never
 * share a mutable object. Primitives and `immutable()` values come back as
 * they are; grain references are revived through `ctx` when given. Anything
 * outside the supported set throws a SerializationError whose `path` starts
 * with `path` (default `value`), e.g. `args[1].handlers[0]`.
 */
export function copy<T>(value: T, ctx?: CodecContext, path = 'value'): T {
  if (typeof value !== 'object' && typeof value !== 'function' && typeof value !== 'symbol') return value;
  if (value === null) return value;
  try {
    return cp(value, ctx, 0) as T;
  } catch (e) {
    throw toSerializationError(e, path, value);
  }
}

/**
 * Copies call arguments in place (as `copy` does each one) and returns the
 * same array; nothing is allocated when every argument is a primitive.
 * Errors name `args[i]...`.
 */
export function copyArgs(args: unknown[], ctx?: CodecContext): unknown[] {
  const n = args.length;
  for (let i = 0; i < n; i++) {
    const v = args[i];
    if ((typeof v === 'object' && v !== null) || typeof v === 'function' || typeof v === 'symbol') {
      try {
        args[i] = cp(v, ctx, 0);
      } catch (e) {
        throw toSerializationError(step(e, `[${i}]`, v), 'args', args);
      }
    }
  }
  return args;
}

// ---- encode ------------------------------------------------------------------

const T_MAP = 1;
const T_SET = 2;
const T_ERROR = 3;
const T_TYPE = 4;
const T_REF = 5;
const T_OBJECT = 6;
const T_BUFFER = 7;

/**
 * A value msgpack cannot say on its own, as an array whose first item is a
 * T_* tag. Written as msgpack extension EXT_TYPE followed by that array.
 */
class Tagged {
  readonly parts: unknown[];
  constructor(parts: unknown[]) {
    this.parts = parts;
  }
}

/**
 * Validates a value for encoding and prepares it for msgpackr: returns the
 * value itself when msgpackr can take it as it is, else a clone along the path
 * to each Tagged wrapper.
 */
function pr(v: unknown, depth: number): unknown {
  if (typeof v === 'object') return v === null ? null : prObject(v, depth);
  if (typeof v === 'function') return prFunction(v);
  if (typeof v === 'symbol') throw unsupported(v);
  return v;
}

function refWire(ref: RefIdentity): Tagged {
  const { type, key } = ref;
  if (typeof type !== 'string' || typeof key !== 'string')
    throw new Failure('a grain reference whose id is not { type, key } strings cannot cross a grain boundary');
  return new Tagged([T_REF, type, key]);
}

function prFunction(f: object): unknown {
  const ref = (f as { [GRAIN_REF]?: RefIdentity })[GRAIN_REF];
  if (ref === undefined) throw unsupported(f);
  return refWire(ref);
}

function prObject(o: object, depth: number): unknown {
  const proto = getProto(o);
  if (proto === objectProto) {
    const ref = (o as { [GRAIN_REF]?: RefIdentity })[GRAIN_REF];
    if (ref !== undefined) return refWire(ref);
    if (depth > MAX_DEPTH) throw tooDeep();
    return prProps(o as Dict, depth);
  }
  if (proto === arrayProto) {
    if (depth > MAX_DEPTH) throw tooDeep();
    return prArray(o as unknown[], depth);
  }
  return prOther(o, proto, depth);
}

function prProps(src: Dict, depth: number): unknown {
  let out: Dict | undefined;
  let key = '';
  let v: unknown;
  let protoKey = false;
  try {
    for (key in src) {
      if (key === '__proto__') {
        protoKey = true;
        break;
      }
      v = src[key];
      if ((typeof v === 'object' && v !== null) || typeof v === 'function' || typeof v === 'symbol') {
        const r = pr(v, depth + 1);
        if (r !== v) (out ??= { ...src })[key] = r;
      }
    }
  } catch (e) {
    throw step(e, propStep(key), v);
  }
  // msgpackr renames a `__proto__` key on the way in; carry such objects as pairs.
  return protoKey ? objectWire(src, false, depth) : (out ?? src);
}

function objectWire(src: Dict, nullProto: boolean, depth: number): Tagged {
  const parts: unknown[] = [T_OBJECT, nullProto ? 1 : 0];
  let key = '';
  let v: unknown;
  try {
    for (key in src) {
      v = src[key];
      parts.push(key, pr(v, depth + 1));
    }
  } catch (e) {
    throw step(e, propStep(key), v);
  }
  return new Tagged(parts);
}

function prArray(src: unknown[], depth: number): unknown[] {
  let out: unknown[] | undefined;
  const n = src.length;
  let i = 0;
  let v: unknown;
  try {
    for (; i < n; i++) {
      v = src[i];
      if ((typeof v === 'object' && v !== null) || typeof v === 'function' || typeof v === 'symbol') {
        const r = pr(v, depth + 1);
        if (r !== v) (out ??= src.slice())[i] = r;
      }
    }
  } catch (e) {
    throw step(e, `[${i}]`, v);
  }
  return out ?? src;
}

function prOther(o: object, proto: object | null, depth: number): unknown {
  const ref = (o as { [GRAIN_REF]?: RefIdentity })[GRAIN_REF];
  if (ref !== undefined) return refWire(ref);
  if (depth > MAX_DEPTH) throw tooDeep();
  if (proto === null) return objectWire(o as Dict, true, depth);
  switch (builtinKinds.get(proto)) {
    // msgpackr says these itself (timestamp, typed-array and regexp extensions).
    case K_DATE:
    case K_TYPED:
    case K_ARRAY_BUFFER:
    case K_DATA_VIEW:
    case K_REGEXP:
      return o;
    case K_BUFFER: {
      const b = o as Buffer;
      return new Tagged([T_BUFFER, new Uint8Array(b.buffer, b.byteOffset, b.byteLength)]);
    }
    case K_MAP:
      return mapWire(o as Map<unknown, unknown>, depth);
    case K_SET:
      return setWire(o as Set<unknown>, depth);
  }
  const type = typeByPrototype(proto);
  if (type !== undefined) return typeWire(o, type, depth);
  if (o instanceof Error) {
    const p = errorParts(o, pr, depth);
    return new Tagged([
      T_ERROR,
      errorEntryOf(o)?.name ?? null,
      p.name,
      p.message,
      p.stack,
      p.hasCause ? 1 : 0,
      p.cause,
      p.errors,
      ...p.props,
    ]);
  }
  throw unsupported(o);
}

function mapWire(src: Map<unknown, unknown>, depth: number): Tagged {
  const parts: unknown[] = [T_MAP];
  let i = 0;
  let k: unknown;
  let v: unknown;
  let atKey = true;
  try {
    for ([k, v] of src) {
      atKey = true;
      const pk = pr(k, depth + 1);
      atKey = false;
      parts.push(pk, pr(v, depth + 1));
      i++;
    }
  } catch (e) {
    throw atKey ? step(e, `.keys()[${i}]`, k) : step(e, mapValueStep(k, i), v);
  }
  return new Tagged(parts);
}

function setWire(src: Set<unknown>, depth: number): Tagged {
  const parts: unknown[] = [T_SET];
  let i = 0;
  let v: unknown;
  try {
    for (v of src) {
      parts.push(pr(v, depth + 1));
      i++;
    }
  } catch (e) {
    throw step(e, `.values()[${i}]`, v);
  }
  return new Tagged(parts);
}

/** `[T_TYPE, name, 1, data]` with a serialize, else `[T_TYPE, name, 0, key, value, ...]`. */
function typeWire(o: object, type: TypeEntry, depth: number): Tagged {
  const { serialize } = type;
  if (serialize !== undefined) {
    const raw = callUser(`${type.name}'s serialize()`, () => serialize(o));
    try {
      return new Tagged([T_TYPE, type.name, 1, pr(raw, depth + 1)]);
    } catch (e) {
      throw step(e, '.serialize()', raw);
    }
  }
  const parts: unknown[] = [T_TYPE, type.name, 0];
  let key = '';
  let v: unknown;
  try {
    for (key of Object.keys(o)) {
      v = (o as Dict)[key];
      parts.push(key, pr(v, depth + 1));
    }
  } catch (e) {
    throw step(e, propStep(key), v);
  }
  return new Tagged(parts);
}

// ---- decode ------------------------------------------------------------------

/** Where references revive during the current decode (decode is synchronous). */
let decodeCtx: CodecContext | undefined;

function corrupt(what: string): SerializationError {
  return new SerializationError(`cannot decode: corrupt data (${what})`);
}

/** A reference decoded with no context: a frozen `{ type, key }` that still carries GRAIN_REF. */
function refMarker(type: string, key: string): object {
  return Object.freeze({ type, key, [GRAIN_REF]: Object.freeze({ type, key }) });
}

/** Calls user code while decoding, blaming it by name if it throws. */
function callUserDecoding<R>(what: string, fn: () => R): R {
  try {
    return fn();
  } catch (e) {
    if (e instanceof SerializationError) throw e;
    throw new SerializationError(`cannot decode: ${what} threw ${describeThrown(e)}`, '', { cause: e });
  }
}

function pairsToObject(parts: readonly unknown[], start: number, target: Dict): Dict {
  if ((parts.length - start) % 2 !== 0) throw corrupt('odd number of property items');
  assignPairs(target, parts, start);
  return target;
}

function reviveType(parts: readonly unknown[]): unknown {
  const name = parts[1];
  if (typeof name !== 'string') throw corrupt('type name is not a string');
  const type = typeByName(name);
  if (type === undefined) {
    throw new SerializationError(
      `cannot decode an instance of type "${name}": no class is registered under that name here; call registerType for it on this side too`,
    );
  }
  const { deserialize } = type;
  if (parts[2] === 1) {
    const data = parts[3];
    if (deserialize !== undefined) return callUserDecoding(`${name}'s deserialize()`, () => deserialize(data));
    if (typeof data !== 'object' || data === null) throw corrupt(`data of type "${name}" is not an object`);
    return defineAll(Object.create(type.prototype) as Dict, data as Dict);
  }
  if (parts[2] !== 0) throw corrupt('unknown type encoding');
  if (deserialize === undefined) return pairsToObject(parts, 3, Object.create(type.prototype) as Dict);
  const data = pairsToObject(parts, 3, {});
  return callUserDecoding(`${name}'s deserialize()`, () => deserialize(data));
}

function reviveError(parts: readonly unknown[]): Error {
  const [, cls, name, message, stack, hasCause, cause, errors] = parts;
  if (
    (cls !== null && typeof cls !== 'string') ||
    typeof name !== 'string' ||
    typeof message !== 'string' ||
    (stack !== undefined && typeof stack !== 'string') ||
    (errors !== undefined && !Array.isArray(errors)) ||
    (parts.length - 8) % 2 !== 0
  ) {
    throw corrupt('malformed error');
  }
  const props = parts.slice(8);
  const entry = cls === null ? undefined : errorByName(cls);
  return rebuildError(entry, {
    name,
    message,
    stack,
    hasCause: hasCause === 1,
    cause,
    errors: errors as unknown[] | undefined,
    props,
  });
}

/** Turns a decoded Tagged array back into its value. */
function revive(parts: unknown): unknown {
  if (!Array.isArray(parts)) throw corrupt('extension data is not an array');
  switch (parts[0]) {
    case T_MAP: {
      if (parts.length % 2 !== 1) throw corrupt('odd number of map items');
      const m = new Map<unknown, unknown>();
      for (let i = 1; i < parts.length; i += 2) m.set(parts[i], parts[i + 1]);
      return m;
    }
    case T_SET: {
      const s = new Set<unknown>();
      for (let i = 1; i < parts.length; i++) s.add(parts[i]);
      return s;
    }
    case T_REF: {
      const [, type, key] = parts;
      if (typeof type !== 'string' || typeof key !== 'string') throw corrupt('malformed grain reference');
      const ctx = decodeCtx;
      return ctx === undefined
        ? refMarker(type, key)
        : callUserDecoding('reviving a grain reference', () => ctx.reviveRef({ type, key }));
    }
    case T_OBJECT:
      return pairsToObject(parts, 2, parts[1] === 1 ? (Object.create(null) as Dict) : {});
    case T_BUFFER: {
      const u = parts[1];
      if (!(u instanceof Uint8Array)) throw corrupt('buffer data is not bytes');
      return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
    }
    case T_TYPE:
      return reviveType(parts);
    case T_ERROR:
      return reviveError(parts);
    default:
      throw corrupt('unknown tag');
  }
}

addExtension({ Class: Tagged, type: EXT_TYPE, write: (t: Tagged) => t.parts, read: revive });

const packr = new Packr({
  useRecords: false, // one-off messages: records cost more than they save
  moreTypes: true, // typed arrays, regexps and large bigints as extensions
  structuredClone: false, // no shared references or cycles
  mapsAsObjects: true,
  useToJSON: false,
  copyBuffers: true,
  int64AsType: 'bigint',
});
// msgpackr keeps a DataView on each source it reads (as a property it adds to
// it): decoding each frame as a view of its own would allocate one, and change
// the view's shape, per message. Frames are views into a socket chunk, so
// decode from one Buffer over the chunk's whole ArrayBuffer, made once per
// chunk, between start and end offsets (one options object, reused: msgpackr
// reads them before it reads anything, and a nested decode sets its own).
let lastBytes: Uint8Array | undefined;
let wholeOf: ArrayBufferLike | undefined;
let whole: Buffer = Buffer.alloc(0);
const window = { start: 0, end: 0 };

/** A Buffer over all of `bytes`' ArrayBuffer, shared by every view of it decoded in a row. */
function wholeBuffer(bytes: Uint8Array): Buffer {
  if (bytes === lastBytes) return whole; // the frames of one chunk, one after another
  lastBytes = bytes;
  const ab = bytes.buffer;
  if (ab !== wholeOf) {
    whole = Buffer.from(ab, 0, ab.byteLength);
    wholeOf = ab;
  }
  return whole;
}

/**
 * Encodes a value for the wire or for storage, by the same rules as `copy`
 * (unsupported values throw a SerializationError naming their path, which
 * starts with `path`, default `value`). The bytes may share their ArrayBuffer
 * with other encodings: copy them before transferring that buffer.
 */
export function encode(value: unknown, path = 'value'): Uint8Array {
  let prepared: unknown;
  try {
    prepared = pr(value, 0);
  } catch (e) {
    throw toSerializationError(e, path, value);
  }
  let bytes: Uint8Array;
  try {
    bytes = packr.pack(prepared, RESERVE_START_SPACE | 1);
  } catch (e) {
    throw new SerializationError(`cannot encode ${path}: ${describeThrown(e)}`, path, { cause: e });
  }
  bytes[0] = FORMAT;
  return bytes;
}

/**
 * Decodes what `encode` produced; grain references are revived through `ctx`
 * (without one they come back as frozen `{ type, key }` markers). Corrupt or
 * truncated bytes throw a SerializationError. `start` and `end` bound the encoded
 * value within `bytes` (a frame inside a socket chunk, say).
 */
export function decode(bytes: Uint8Array, ctx?: CodecContext, start = 0, end = bytes.length): unknown {
  if (!(bytes instanceof Uint8Array)) throw new SerializationError('cannot decode: expected a Uint8Array');
  if (!(start >= 0 && end <= bytes.length && start <= end))
    throw new ConfigurationError(`cannot decode bytes ${start} to ${end} of ${bytes.length}`);
  if (end - start < 2)
    throw new SerializationError(`cannot decode: ${end - start} bytes is too short to be an encoded value`);
  if (bytes[start] !== FORMAT)
    throw new SerializationError(
      `cannot decode: unknown format byte 0x${(bytes[start] ?? 0).toString(16)}; not data written by this codec`,
    );
  const saved = decodeCtx;
  decodeCtx = ctx;
  try {
    const source = wholeBuffer(bytes);
    window.start = bytes.byteOffset + start + 1;
    window.end = bytes.byteOffset + end;
    return packr.unpack(source, window);
  } catch (e) {
    if (e instanceof SerializationError) throw e;
    throw new SerializationError(`cannot decode: corrupt or truncated data (${describeThrown(e)})`, '', { cause: e });
  } finally {
    decodeCtx = saved;
  }
}

// ---- Small values written in place -------------------------------------------

// A call's arguments and its result are often a few numbers, short strings,
// booleans: the protocol writes those straight into a frame, byte for byte as
// encode() writes them (a test holds the two to it), with no walk, no msgpackr
// and no buffer of their own. Anything else goes through encode().

/** The most bytes `putSmall` writes for `v`, or -1 when `v` is not a small value. */
function smallValueBytes(v: unknown): number {
  switch (typeof v) {
    case 'number':
      return 9;
    case 'boolean':
      return 1;
    case 'undefined':
      return 3;
    case 'string': {
      const n = v.length;
      if (n > 255) return -1;
      for (let i = 0; i < n; i++) if (v.charCodeAt(i) >= 0x80) return -1;
      return 2 + n;
    }
    case 'object':
      return v === null ? 1 : -1;
    default:
      return -1;
  }
}

/**
 * The most bytes `writeSmall(v, ...)` writes, or -1 when `v` is not a small
 * value: a number, a boolean, null, undefined, or an ASCII string of up to 255
 * characters.
 */
export function smallBytes(v: unknown): number {
  const n = smallValueBytes(v);
  return n < 0 ? -1 : 1 + n;
}

/** The most bytes `writeSmallArray(a, ...)` writes, or -1 unless `a` holds at most 15 small values. */
export function smallArrayBytes(a: readonly unknown[]): number {
  const n = a.length;
  if (n > 15) return -1;
  let total = 2;
  for (let i = 0; i < n; i++) {
    const b = smallValueBytes(a[i]);
    if (b < 0) return -1;
    total += b;
  }
  return total;
}

/** Writes `encode(v)` at `at` for a small value (see smallBytes); returns the end. */
export function writeSmall(v: unknown, buf: Buffer, at: number): number {
  buf[at] = FORMAT;
  return putSmall(v, buf, at + 1);
}

/** Writes `encode(a)` at `at` for an array of small values (see smallArrayBytes); returns the end. */
export function writeSmallArray(a: readonly unknown[], buf: Buffer, at: number): number {
  const n = a.length;
  buf[at] = FORMAT;
  buf[at + 1] = 0x90 | n;
  let p = at + 2;
  for (let i = 0; i < n; i++) p = putSmall(a[i], buf, p);
  return p;
}

/** One small value as msgpackr packs it with this module's options. */
function putSmall(v: unknown, buf: Buffer, p: number): number {
  switch (typeof v) {
    case 'number':
      if (v >>> 0 === v) {
        if (v < 0x80) {
          buf[p] = v;
          return p + 1;
        }
        if (v < 0x100) {
          buf[p] = 0xcc;
          buf[p + 1] = v;
          return p + 2;
        }
        if (v < 0x10000) {
          buf[p] = 0xcd;
          buf[p + 1] = v >>> 8;
          buf[p + 2] = v & 0xff;
          return p + 3;
        }
        buf[p] = 0xce;
        buf[p + 1] = v >>> 24;
        buf[p + 2] = (v >>> 16) & 0xff;
        buf[p + 3] = (v >>> 8) & 0xff;
        buf[p + 4] = v & 0xff;
        return p + 5;
      }
      if (v >> 0 === v) {
        if (v >= -0x20) {
          buf[p] = 0x100 + v;
          return p + 1;
        }
        if (v >= -0x80) {
          buf[p] = 0xd0;
          buf[p + 1] = v + 0x100;
          return p + 2;
        }
        if (v >= -0x8000) {
          buf[p] = 0xd1;
          buf[p + 1] = (v >> 8) & 0xff;
          buf[p + 2] = v & 0xff;
          return p + 3;
        }
        buf[p] = 0xd2;
        buf[p + 1] = (v >>> 24) & 0xff;
        buf[p + 2] = (v >>> 16) & 0xff;
        buf[p + 3] = (v >>> 8) & 0xff;
        buf[p + 4] = v & 0xff;
        return p + 5;
      }
      buf[p] = 0xcb;
      buf.writeDoubleBE(v, p + 1);
      return p + 9;
    case 'boolean':
      buf[p] = v ? 0xc3 : 0xc2;
      return p + 1;
    case 'undefined':
      buf[p] = 0xd4;
      buf[p + 1] = 0;
      buf[p + 2] = 0;
      return p + 3;
    case 'string': {
      const n = v.length;
      if (n < 0x20) buf[p++] = 0xa0 | n;
      else {
        buf[p++] = 0xd9;
        buf[p++] = n;
      }
      for (let i = 0; i < n; i++) buf[p + i] = v.charCodeAt(i);
      return p + n;
    }
    default:
      // null (smallBytes let nothing else through)
      buf[p] = 0xc0;
      return p + 1;
  }
}

/** What `readSmall` gives for bytes it leaves to `decode`. */
export const NOT_SMALL: unique symbol = Symbol('not a small value');

/** Where the last `getSmall` ended. */
let smallEnd = 0;

/** One value as `putSmall` writes it, at `p` (before `end`); NOT_SMALL for anything else. Sets smallEnd. */
function getSmall(buf: Uint8Array, p: number, end: number): unknown {
  if (p >= end) return NOT_SMALL;
  const b = buf[p] as number;
  if (b < 0x80) {
    smallEnd = p + 1;
    return b;
  }
  if (b >= 0xe0) {
    smallEnd = p + 1;
    return b - 0x100;
  }
  if (b >= 0xa0 && b < 0xc0) return getAscii(buf, p + 1, b & 0x1f, end);
  switch (b) {
    case 0xc0:
      smallEnd = p + 1;
      return null;
    case 0xc2:
      smallEnd = p + 1;
      return false;
    case 0xc3:
      smallEnd = p + 1;
      return true;
    case 0xcc:
      if (p + 2 > end) return NOT_SMALL;
      smallEnd = p + 2;
      return buf[p + 1] as number;
    case 0xcd:
      if (p + 3 > end) return NOT_SMALL;
      smallEnd = p + 3;
      return ((buf[p + 1] as number) << 8) | (buf[p + 2] as number);
    case 0xce:
      if (p + 5 > end) return NOT_SMALL;
      smallEnd = p + 5;
      return (
        (((buf[p + 1] as number) << 24) |
          ((buf[p + 2] as number) << 16) |
          ((buf[p + 3] as number) << 8) |
          (buf[p + 4] as number)) >>>
        0
      );
    case 0xd0:
      if (p + 2 > end) return NOT_SMALL;
      smallEnd = p + 2;
      return ((buf[p + 1] as number) << 24) >> 24;
    case 0xd1:
      if (p + 3 > end) return NOT_SMALL;
      smallEnd = p + 3;
      return ((((buf[p + 1] as number) << 8) | (buf[p + 2] as number)) << 16) >> 16;
    case 0xd2:
      if (p + 5 > end) return NOT_SMALL;
      smallEnd = p + 5;
      return (
        ((buf[p + 1] as number) << 24) |
        ((buf[p + 2] as number) << 16) |
        ((buf[p + 3] as number) << 8) |
        (buf[p + 4] as number)
      );
    case 0xcb: {
      if (p + 9 > end) return NOT_SMALL;
      smallEnd = p + 9;
      for (let i = 0; i < 8; i++) f64bytes[7 - i] = buf[p + 1 + i] as number;
      return f64[0];
    }
    case 0xd4:
      if (p + 3 > end || buf[p + 1] !== 0 || buf[p + 2] !== 0) return NOT_SMALL;
      smallEnd = p + 3;
      return undefined;
    case 0xd9:
      if (p + 2 > end) return NOT_SMALL;
      return getAscii(buf, p + 2, buf[p + 1] as number, end);
    default:
      return NOT_SMALL;
  }
}

const f64 = new Float64Array(1);
/** f64's bytes, little-endian first (a check below refuses other machines). */
const f64bytes = new Uint8Array(f64.buffer);
const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** `n` bytes of ASCII at `p` as a string; NOT_SMALL if they overrun `end` or are not ASCII. */
function getAscii(buf: Uint8Array, p: number, n: number, end: number): unknown {
  if (p + n > end) return NOT_SMALL;
  let s = '';
  for (let i = 0; i < n; i++) {
    const c = buf[p + i] as number;
    if (c >= 0x80) return NOT_SMALL;
    s += String.fromCharCode(c);
  }
  smallEnd = p + n;
  return s;
}

/**
 * The value `decode(buf, ctx, start, end)` gives, when the bytes are a small
 * value as `writeSmall` writes it (references need no context, as there are
 * none); NOT_SMALL otherwise, for `decode` to read (and to judge).
 */
export function readSmall(buf: Uint8Array, start: number, end: number): unknown {
  if (!littleEndian || end - start < 2 || buf[start] !== FORMAT) return NOT_SMALL;
  const v = getSmall(buf, start + 1, end);
  return v !== NOT_SMALL && smallEnd === end ? v : NOT_SMALL;
}

/** Like readSmall for an array of up to 15 small values; undefined for anything else. */
export function readSmallArray(buf: Uint8Array, start: number, end: number): unknown[] | undefined {
  if (!littleEndian || end - start < 2 || buf[start] !== FORMAT) return undefined;
  const h = buf[start + 1] as number;
  if ((h & 0xf0) !== 0x90) return undefined;
  const n = h & 0x0f;
  const out: unknown[] = [];
  let p = start + 2;
  for (let i = 0; i < n; i++) {
    const v = getSmall(buf, p, end);
    if (v === NOT_SMALL) return undefined;
    out.push(v);
    p = smallEnd;
  }
  return p === end ? out : undefined;
}
