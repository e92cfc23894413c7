// The payload formats of storage providers: the silo's codec (the default,
// which carries everything a grain call can) or JSON text that other tools can
// read. JSON has no Map, Set, Date, BigInt, undefined, typed array or class
// instance: a state holding one fails its write with a SerializationError
// naming the path of the value, rather than being stored as something that
// reads back different.

import { ConfigurationError, SerializationError } from '../errors.ts';
import { GRAIN_REF } from '../serialization/symbols.ts';
import type { StateSerializer } from './provider.ts';

/** How a provider stores state: `codec` (the silo's serializer) or `json` (JSON text, UTF-8). */
export type StateFormat = 'codec' | 'json';

/**
 * The `format_version` stored with each record, per format. A record read
 * with a provider configured for the other format fails as unreadable
 * instead of being decoded as garbage.
 */
export const FORMAT_VERSIONS: Readonly<Record<StateFormat, number>> = { codec: 1, json: 2 };

/** Turns state into a record's payload and back, in one format. */
export interface PayloadFormat {
  readonly format: StateFormat;
  /** The `format_version` of records in this format. */
  readonly version: number;
  /**
   * The payload of `state`. `what` names the record in messages, e.g.
   * `grain counter/alice state 'count' in postgres storage 'default'`.
   * A value the format cannot hold throws a SerializationError.
   */
  encode(state: unknown, what: string): Uint8Array;
  /** The state in a payload; throws on bytes that are not a payload of this format. */
  decode(payload: Uint8Array): unknown;
}

/** The payload format of `format`, encoding with `serializer` for `codec`. */
export function payloadFormat(format: StateFormat, serializer: StateSerializer): PayloadFormat {
  if (format === 'json') {
    return {
      format,
      version: FORMAT_VERSIONS.json,
      encode: (state, what) => Buffer.from(toJsonText(state, what), 'utf8'),
      decode: (payload) => JSON.parse(utf8.decode(payload)) as unknown,
    };
  }
  return {
    format,
    version: FORMAT_VERSIONS.codec,
    encode: (state) => serializer.encode(state),
    decode: (payload) => serializer.decode(payload),
  };
}

/** Validates a `format` option of `fn` (e.g. `postgresStorage`); undefined gives `codec`. */
export function formatOption(fn: string, value: unknown): StateFormat {
  if (value === undefined) return 'codec';
  if (value === 'codec' || value === 'json') return value;
  throw new ConfigurationError(
    `${fn}: option format must be 'codec' (the silo's serializer, the default) or 'json' (JSON text), got ${JSON.stringify(value) ?? String(value)}`,
  );
}

/**
 * Why a record whose `format_version` is `found` cannot be read by a provider
 * of format `expected`, for a corrupt-record message: says which format the
 * record is in and, if it is a known one, how to read it.
 */
export function formatMismatch(found: unknown, expected: StateFormat): string {
  const known = (Object.keys(FORMAT_VERSIONS) as StateFormat[]).find((f) => FORMAT_VERSIONS[f] === found);
  const mine = `this provider is configured with format '${expected}' (format version ${FORMAT_VERSIONS[expected]})`;
  if (known === undefined) return `its format version is ${String(found)}, which this Granary does not know; ${mine}`;
  return `it was written in format '${known}' (format version ${String(found)}), but ${mine}; read it with format: '${known}'`;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Nesting deeper than this fails, as in the codec: cyclic values are not supported. */
const MAX_DEPTH = 1000;

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** A value JSON cannot hold; collects its path on the way out of the walk. */
class Unfit {
  readonly reason: string;
  readonly steps: string[] = [];
  constructor(reason: string) {
    this.reason = reason;
  }
}

/**
 * The JSON text of `state`, which reads back (with JSON.parse) as a value
 * deep-equal to `state`, or a SerializationError naming the path (from
 * `state`) of the first value for which that would not hold. The one
 * normalisation is -0, stored as 0 (JSON has no -0; the two are ===).
 */
export function toJsonText(state: unknown, what: string): string {
  try {
    check(state, 0);
  } catch (e) {
    if (!(e instanceof Unfit)) throw e;
    const path = `state${e.steps.reverse().join('')}`;
    throw new SerializationError(`cannot write ${what} as JSON: ${path} is ${e.reason}`, path);
  }
  return JSON.stringify(state);
}

function check(v: unknown, depth: number): void {
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return;
    case 'number':
      if (!Number.isFinite(v)) throw new Unfit(`${v}, which JSON cannot hold (it would read back as null)`);
      return;
    case 'bigint':
      throw new Unfit(`a BigInt (${v}n), which JSON cannot hold; store it as a string, or use format 'codec'`);
    case 'undefined':
      throw new Unfit(
        `undefined, which JSON cannot hold (a property set to undefined would read back missing); delete the property or use null`,
      );
    case 'symbol':
      throw new Unfit(`a symbol (${String(v)}), which JSON cannot hold`);
    case 'function':
      if ((v as { [GRAIN_REF]?: unknown })[GRAIN_REF] !== undefined) throw grainRef();
      throw new Unfit(`a function${v.name === '' ? '' : ` (${v.name})`}, which JSON cannot hold`);
    case 'object':
      if (v === null) return;
      if (depth >= MAX_DEPTH)
        throw new Unfit(`cyclic or nested more than ${MAX_DEPTH} levels deep, which JSON cannot hold`);
      checkObject(v, depth);
  }
}

function checkObject(o: object, depth: number): void {
  const proto: unknown = Object.getPrototypeOf(o);
  if (proto === Array.prototype) {
    const array = o as unknown[];
    for (let i = 0; i < array.length; i++) {
      try {
        if (!(i in array)) throw new Unfit('a hole in an array, which JSON would read back as null');
        check(array[i], depth + 1);
      } catch (e) {
        if (e instanceof Unfit) e.steps.push(`[${i}]`);
        throw e;
      }
    }
    return;
  }
  if (proto === Object.prototype) {
    if ((o as { [GRAIN_REF]?: unknown })[GRAIN_REF] !== undefined) throw grainRef();
    if (Object.getOwnPropertySymbols(o).length > 0)
      throw new Unfit('an object with symbol-keyed properties, which JSON would drop');
    for (const key in o) {
      try {
        check((o as Record<string, unknown>)[key], depth + 1);
      } catch (e) {
        if (e instanceof Unfit) e.steps.push(IDENTIFIER.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`);
        throw e;
      }
    }
    return;
  }
  throw new Unfit(describeObject(o, proto));
}

function grainRef(): Unfit {
  return new Unfit(`a grain reference, which JSON cannot hold; store the grain's key instead, or use format 'codec'`);
}

/** What an object other than a plain object or array is, and what to store instead. */
function describeObject(o: object, proto: unknown): string {
  if (proto === null)
    return 'an object with a null prototype, which JSON would read back as a plain object; create it with {} instead';
  const codec = `, or use format 'codec'`;
  if (o instanceof Map)
    return `a Map, which JSON cannot hold; store a plain object or an array of [key, value] pairs${codec}`;
  if (o instanceof Set) return `a Set, which JSON cannot hold; store an array${codec}`;
  if (o instanceof Date)
    return `a Date, which JSON cannot hold (it would read back as a string); store date.getTime() or date.toISOString()${codec}`;
  if (ArrayBuffer.isView(o) || o instanceof ArrayBuffer) {
    return `binary data (${o.constructor.name}), which JSON cannot hold; store an array of numbers or a base64 string${codec}`;
  }
  let name = '';
  try {
    const ctor = (o as { constructor?: unknown }).constructor;
    if (typeof ctor === 'function') name = ctor.name;
  } catch {
    // a throwing getter: no name to give
  }
  return `${name === '' ? 'an object of a class' : `an instance of ${name}`}, which JSON would read back as a plain object without its class; store a plain object${codec}`;
}
