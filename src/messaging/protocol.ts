// The wire protocol between silos and between clients and gateways, on top of
// the transport's frames. Grain calls have their own frame types (the hot
// path); everything else is a small system call with an operation name.
//
// REQUEST body:  u32 reqId | u8 flags | u32 timeoutMs | u8 hops
//                | u16 len + target id | u8 len + method | u16 count + (u16 len + grain id)* chain
//                | (flag Context) u32 len + codec(request context values)
//                | codec(args), decoded once the target is known, so references bind to it
// RESPONSE body: u32 reqId | u8 status | codec(value or error)
// Headers are plain binary, read and written in place: no codec on the hot path.

import type { ChainNode } from './call-chain.ts';
import {
  ConfigurationError,
  ErrorCodes,
  ForwardLimitError,
  GranaryError,
  OverloadedError,
  ProtocolError,
  SiloUnavailableError,
  isTransient,
} from '../errors.ts';
import {
  NOT_SMALL,
  decode,
  encode,
  readSmall,
  readSmallArray,
  smallArrayBytes,
  smallBytes,
  writeSmall,
  writeSmallArray,
} from '../serialization/codec.ts';
import type { CodecContext } from '../serialization/symbols.ts';

/** Frame types. 0xF0 and up belong to the transport's handshake. */
export const Frame = {
  Request: 1,
  Response: 2,
  Cancel: 3,
  /** A hint that a grain lives elsewhere: codec([targetId, address]). */
  Location: 4,
  /**
   * From a gateway to its clients: this silo is stopping; send new calls to
   * other gateways. Calls already sent are still answered. Empty body.
   */
  Leaving: 5,
  SystemCall: 10,
  SystemResult: 11,
} as const;

/** Request flags. */
export const RequestFlags = {
  OneWay: 1,
  /** The last argument is an AbortSignal; the callee gets its own. */
  Signal: 2,
  /** A request context follows the header (see RequestContext). */
  Context: 4,
} as const;

/**
 * Response statuses. Everything but `Ok` carries an error; the status says
 * what kind, so a caller can tell "try again" from "your bug" before (or
 * without) decoding it:
 * - `Error`: the grain's own code threw (an application error);
 * - `Transient`: the call could not run now (silo stopping or unavailable): retry;
 * - `Overloaded`: the callee shed load: retry later, back off;
 * - `ForwardLimit`: the call chased a moving activation too many times: retry;
 * - `Unrecoverable`: the call itself is wrong (unknown grain type or method,
 *   arguments that cannot be decoded, a protocol violation): do not retry.
 */
export const ResponseStatus = {
  Ok: 0,
  Error: 1,
  Transient: 2,
  Overloaded: 3,
  ForwardLimit: 4,
  Unrecoverable: 5,
} as const;
export type ResponseStatus = (typeof ResponseStatus)[keyof typeof ResponseStatus];

/** Codes of errors that mean the call itself is wrong: retrying cannot help. */
const unrecoverable = new Set<string>([
  ErrorCodes.UnknownGrainType,
  ErrorCodes.UnknownMethod,
  ErrorCodes.Protocol,
  ErrorCodes.Serialization,
  ErrorCodes.FrameTooLarge,
  ErrorCodes.Configuration,
]);

/** The status a response carrying `err` is sent with. */
export function rejectionStatus(err: unknown): ResponseStatus {
  if (!(err instanceof GranaryError)) return ResponseStatus.Error;
  const code = err.code;
  if (code === ErrorCodes.Overloaded) return ResponseStatus.Overloaded;
  if (code === ErrorCodes.ForwardLimit) return ResponseStatus.ForwardLimit;
  if (isTransient(err)) return ResponseStatus.Transient;
  if (unrecoverable.has(code)) return ResponseStatus.Unrecoverable;
  return ResponseStatus.Error;
}

/**
 * The error a caller sees for a response with a failure status: the decoded
 * error, unless the status says more than it does (a peer whose error did not
 * survive decoding as its class): then an error of the status's class, with
 * the decoded one as its cause.
 */
export function rejectionOf(status: number, value: unknown): unknown {
  if (status === ResponseStatus.Error || rejectionStatus(value) === status) return value;
  const message = value instanceof Error ? value.message : String(value);
  const options = { cause: value };
  switch (status) {
    case ResponseStatus.Transient:
      return new SiloUnavailableError(message, options);
    case ResponseStatus.Overloaded:
      return new OverloadedError(message, options);
    case ResponseStatus.ForwardLimit:
      return new ForwardLimitError(message, options);
    case ResponseStatus.Unrecoverable:
      return new ProtocolError(message, options);
    default:
      // A status this version does not know: an error all the same.
      return value;
  }
}

/** The decoded header of a request. */
export interface RequestHeader {
  readonly reqId: number;
  readonly flags: number;
  readonly targetId: string;
  readonly method: string;
  readonly timeoutMs: number;
  readonly chain: string[] | null;
  readonly hops: number;
  /** Where the encoded request context starts and ends (flag Context); both 0 without one. */
  readonly contextOffset: number;
  readonly contextEnd: number;
  /** Where the encoded arguments start and end in the buffer the header was read from. */
  readonly argsOffset: number;
  readonly argsEnd: number;
}

/**
 * The UTF-8 bytes of a grain id for request headers, with their u16 length in
 * front: a reference that keeps them writes its target with a copy instead of
 * an encoding per call. Throws a ConfigurationError when the id is too long.
 */
export function targetBytes(targetId: string): Buffer {
  const body = Buffer.from(targetId, 'utf8');
  if (body.length >= 65536)
    throw new ConfigurationError(`'${targetId.slice(0, 40)}...' is too long for a request header`);
  const out = Buffer.allocUnsafe(2 + body.length);
  out.writeUInt16BE(body.length, 0);
  body.copy(out, 2);
  return out;
}

/** Method names with their u8 length in front; a handful per grain type, so kept (bounded all the same). */
const methodNames = new Map<string, Buffer>();
const METHOD_NAMES_MAX = 4096;

function methodBytes(method: string): Buffer {
  let b = methodNames.get(method);
  if (b === undefined) {
    const body = Buffer.from(method, 'utf8');
    if (body.length >= 256)
      throw new ConfigurationError(`method name '${method.slice(0, 40)}...' is too long for a request header`);
    b = Buffer.allocUnsafe(1 + body.length);
    b[0] = body.length;
    body.copy(b, 1);
    if (methodNames.size >= METHOD_NAMES_MAX) methodNames.clear();
    methodNames.set(method, b);
  }
  return b;
}

/**
 * A frame header that writes itself into a connection's outgoing batch: the
 * shape the transport's `sendHead` takes (its FrameHead), declared here so the
 * protocol does not depend on the transport.
 */
export interface HeadWriter {
  /** At least the number of bytes `writeTo` writes. */
  readonly maxBytes: number;
  /** Writes the header into `buf` from `at`; returns the offset where it ended. Throws to refuse the frame. */
  writeTo(buf: Buffer, at: number): number;
}

/**
 * A request's header, written straight into a connection's outgoing batch
 * (`conn.sendHead(Frame.Request, requestHeadOf(...), args)`): one object,
 * refilled per request, valid until the next `requestHeadOf`.
 */
class RequestHead implements HeadWriter {
  reqId = 0;
  flags = 0;
  targetId = '';
  target: Uint8Array | undefined = undefined;
  method: Buffer = Buffer.alloc(1);
  timeoutMs = 0;
  chain: readonly string[] | ChainNode | null | undefined = null;
  hops = 0;
  context: Uint8Array | undefined = undefined;
  /** Arguments written in place after the header (small values only), or undefined when the frame's body has them. */
  args: readonly unknown[] | undefined = undefined;
  maxBytes = 0;

  writeTo(buf: Buffer, at: number): number {
    const r = this.reqId;
    buf[at] = r >>> 24;
    buf[at + 1] = (r >>> 16) & 0xff;
    buf[at + 2] = (r >>> 8) & 0xff;
    buf[at + 3] = r & 0xff;
    buf[at + 4] = this.flags;
    const t = this.timeoutMs;
    buf[at + 5] = t >>> 24;
    buf[at + 6] = (t >>> 16) & 0xff;
    buf[at + 7] = (t >>> 8) & 0xff;
    buf[at + 8] = t & 0xff;
    buf[at + 9] = this.hops;
    let p = at + 10;
    const target = this.target;
    if (target !== undefined) {
      const n = target.length;
      for (let i = 0; i < n; i++) buf[p + i] = target[i] as number;
      p += n;
    } else p = putStr(buf, this.targetId, p);
    const m = this.method;
    for (let i = 0; i < m.length; i++) buf[p + i] = m[i] as number;
    p += m.length;
    const countAt = p;
    p += 2;
    let n = 0;
    const chain = this.chain;
    if (chain == null) {
      // no chain
    } else if (Array.isArray(chain)) {
      n = chain.length;
      for (let i = 0; i < n; i++) p = putStr(buf, chain[i] as string, p);
    } else {
      for (let c: ChainNode | undefined = chain as ChainNode; c !== undefined; c = c.parent) {
        const b = c.bytes;
        if (b !== undefined) {
          for (let i = 0; i < b.length; i++) buf[p + i] = b[i] as number;
          p += b.length;
        } else p = putStr(buf, c.id, p);
        n++;
      }
    }
    if (n > 0xffff) throw new ConfigurationError(`a call chain of ${n} grains is too long for a request header`);
    buf[countAt] = n >>> 8;
    buf[countAt + 1] = n & 0xff;
    const ctx = this.context;
    if (ctx !== undefined) {
      const len = ctx.length;
      buf[p] = len >>> 24;
      buf[p + 1] = (len >>> 16) & 0xff;
      buf[p + 2] = (len >>> 8) & 0xff;
      buf[p + 3] = len & 0xff;
      buf.set(ctx, p + 4);
      p += 4 + len;
    }
    const args = this.args;
    if (args !== undefined) p = writeSmallArray(args, buf, p);
    return p;
  }
}

/** Writes `s` as u16 length + UTF-8 at `at` (room for 3 bytes per UTF-16 unit is made by the caller); returns the end. */
function putStr(buf: Buffer, s: string, at: number): number {
  const n = buf.write(s, at + 2, 'utf8');
  if (n >= 65536) throw new ConfigurationError(`'${s.slice(0, 40)}...' is too long for a request header`);
  buf[at] = n >>> 8;
  buf[at + 1] = n & 0xff;
  return at + 2 + n;
}

const requestHeadScratch = new RequestHead();

/**
 * The header of a request, to hand to `sendHead` at once. `target`, when
 * given, is `targetBytes(targetId)`, kept by the caller; `context`, the
 * encoded request context (`contextBytes`), given with flag Context. `args`,
 * when given, are written after the header as `requestArgs(args)` would encode
 * them (send the frame with an empty body then): only for arguments that
 * `smallArgs` takes. Throws a ConfigurationError for a method name too long
 * for the header.
 */
export function requestHeadOf(
  reqId: number,
  flags: number,
  targetId: string,
  target: Uint8Array | undefined,
  method: string,
  timeoutMs: number,
  chain: readonly string[] | ChainNode | null | undefined,
  hops: number,
  context?: Uint8Array,
  args?: readonly unknown[],
): HeadWriter {
  const h = requestHeadScratch;
  h.reqId = reqId >>> 0;
  h.flags = flags & 0xff;
  h.targetId = targetId;
  h.target = target;
  const m = methodBytes(method);
  h.method = m;
  h.timeoutMs = Math.min(0xffffffff, Math.max(0, Math.round(timeoutMs)));
  h.chain = chain;
  h.hops = Math.min(255, hops);
  h.context = context;
  h.args = args;
  let max = 12 + (target !== undefined ? target.length : 2 + 3 * targetId.length) + m.length;
  if (context !== undefined) max += 4 + context.length;
  if (args !== undefined) max += smallArrayBytes(args);
  if (chain != null) {
    if (Array.isArray(chain)) for (let i = 0; i < chain.length; i++) max += 2 + 3 * (chain[i] as string).length;
    else
      for (let c: ChainNode | undefined = chain as ChainNode; c !== undefined; c = c.parent) max += 2 + 3 * c.id.length;
  }
  h.maxBytes = max;
  return h;
}

/** A request's header as a Buffer of its own (tests, tools). */
export function requestHead(
  reqId: number,
  flags: number,
  targetId: string,
  method: string,
  timeoutMs: number,
  chain: readonly string[] | null,
  hops: number,
  context?: Uint8Array,
): Buffer {
  const h = requestHeadOf(reqId, flags, targetId, undefined, method, timeoutMs, chain, hops, context);
  const buf = Buffer.allocUnsafe(h.maxBytes);
  return buf.subarray(0, h.writeTo(buf, 0));
}

/**
 * Whether `requestHeadOf` can write `args` in place: up to 15 numbers,
 * booleans, nulls, undefineds and short ASCII strings.
 */
export function smallArgs(args: readonly unknown[]): boolean {
  return smallArrayBytes(args) >= 0;
}

/** Encodes a request's arguments; throws SerializationError naming `args[i]...` for bad ones. */
export function requestArgs(args: unknown[]): Uint8Array {
  return encode(args, 'args');
}

/** Encodes a whole request into one new buffer (tests, tools). */
export function encodeRequest(
  reqId: number,
  flags: number,
  targetId: string,
  method: string,
  timeoutMs: number,
  chain: string[] | null,
  hops: number,
  args: unknown[],
): Buffer {
  const body = requestArgs(args);
  const head = requestHead(reqId, flags, targetId, method, timeoutMs, chain, hops);
  return Buffer.concat([head, body]);
}

/** Method names as read off the wire, by a hash of their bytes: a few per grain type, read per request. */
const METHOD_SLOTS = 256;
const methodKeys: (Buffer | undefined)[] = new Array<Buffer | undefined>(METHOD_SLOTS).fill(undefined);
const methodStrs: string[] = new Array<string>(METHOD_SLOTS).fill('');

function readMethod(buf: Buffer, start: number, end: number): string {
  const n = end - start;
  let h = n;
  for (let i = start; i < end; i++) h = Math.imul(h ^ (buf[i] as number), 0x01000193);
  const slot = (h >>> 24) & (METHOD_SLOTS - 1);
  const key = methodKeys[slot];
  if (key !== undefined && key.length === n) {
    let i = 0;
    while (i < n && key[i] === buf[start + i]) i++;
    if (i === n) return methodStrs[slot] as string;
  }
  const str = buf.toString('utf8', start, end);
  methodKeys[slot] = Buffer.from(buf.subarray(start, end));
  methodStrs[slot] = str;
  return str;
}

/**
 * Grain ids as read off the wire, by a hash of their bytes: the same bytes give
 * the same string object, so a silo reading the ids of the grains it serves
 * decodes each once, and its lookups by id hash and compare a string they have
 * seen before. Two ways per set: a set keeps the last two ids that hashed there.
 */
const ID_SETS = 8192;
/** Longer ids are decoded each time. */
const ID_MAX_BYTES = 48;
const idBytes = new Uint8Array(2 * ID_SETS * ID_MAX_BYTES);
/** The byte length of the id in each slot (set * 2 + way); 0 for an empty slot. */
const idLengths = new Uint8Array(2 * ID_SETS);
const idStrs: string[] = new Array<string>(2 * ID_SETS).fill('');
/** Per set, the way to replace next: the one not hit last. */
const idVictims = new Uint8Array(ID_SETS);

/** Whether slot `slot` holds the id `buf[start, start + n)`. */
function idIn(slot: number, buf: Buffer, start: number, n: number): boolean {
  if (idLengths[slot] !== n) return false;
  const at = slot * ID_MAX_BYTES;
  let j = 0;
  while (j < n && idBytes[at + j] === buf[start + j]) j++;
  return j === n;
}

/** The UTF-8 string of `buf[start, end)`, the same string object as the last time these bytes were read (usually). */
export function readId(buf: Buffer, start: number, end: number): string {
  const n = end - start;
  if (n === 0 || n > ID_MAX_BYTES) return buf.toString('utf8', start, end);
  let h = 0x811c9dc5 ^ n;
  let i = start;
  for (; i + 4 <= end; i += 4)
    h = Math.imul(
      h ^
        ((buf[i] as number) |
          ((buf[i + 1] as number) << 8) |
          ((buf[i + 2] as number) << 16) |
          ((buf[i + 3] as number) << 24)),
      0x01000193,
    );
  for (; i < end; i++) h = Math.imul(h ^ (buf[i] as number), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x45d9f3b);
  const set = (h ^ (h >>> 16)) & (ID_SETS - 1);
  const way0 = set * 2;
  if (idIn(way0, buf, start, n)) {
    idVictims[set] = 1;
    return idStrs[way0] as string;
  }
  if (idIn(way0 + 1, buf, start, n)) {
    idVictims[set] = 0;
    return idStrs[way0 + 1] as string;
  }
  const slot = way0 + (idVictims[set] as number);
  idVictims[set] = slot === way0 ? 1 : 0;
  const str = buf.toString('utf8', start, end);
  const at = slot * ID_MAX_BYTES;
  for (let j = 0; j < n; j++) idBytes[at + j] = buf[start + j] as number;
  idLengths[slot] = n;
  idStrs[slot] = str;
  return str;
}

/**
 * A request header to read into (`readRequestHeader`): a silo reads each
 * request into one such object, reused, instead of a new object per request.
 */
export class RequestHeaderSlot implements RequestHeader {
  reqId = 0;
  flags = 0;
  targetId = '';
  method = '';
  timeoutMs = 0;
  chain: string[] | null = null;
  hops = 0;
  contextOffset = 0;
  contextEnd = 0;
  argsOffset = 0;
  argsEnd = 0;
  /** The chain's array, reused from one request to the next when `reuseChain`. */
  readonly #chain: string[] = [];
  readonly #reuseChain: boolean;
  /** `reuseChain`: `chain` is one array refilled per request (read it before the next one). */
  constructor(reuseChain = false) {
    this.#reuseChain = reuseChain;
  }
  /** An array for a chain of `n` ids, to fill. */
  chainArray(n: number): string[] {
    if (!this.#reuseChain) return new Array<string>(n);
    const chain = this.#chain;
    if (chain.length !== n) chain.length = n;
    return chain;
  }
}

/**
 * Reads the request header in `buf[start, end)` into `into` and returns it:
 * valid until the next read into the same object. Throws ProtocolError when
 * malformed.
 */
export function readRequestHeader(buf: Buffer, start: number, end: number, into: RequestHeaderSlot): RequestHeader {
  const len = end - start;
  if (len < 15) throw new ProtocolError(`request frame of ${len} bytes is too short`);
  const reqId =
    (((buf[start] as number) << 24) |
      ((buf[start + 1] as number) << 16) |
      ((buf[start + 2] as number) << 8) |
      (buf[start + 3] as number)) >>>
    0;
  const flags = buf[start + 4] as number;
  const timeoutMs =
    (((buf[start + 5] as number) << 24) |
      ((buf[start + 6] as number) << 16) |
      ((buf[start + 7] as number) << 8) |
      (buf[start + 8] as number)) >>>
    0;
  const hops = buf[start + 9] as number;
  const tlen = ((buf[start + 10] as number) << 8) | (buf[start + 11] as number);
  let at = start + 12 + tlen;
  if (at + 1 > end) throw new ProtocolError('request header overruns its frame (target)');
  const targetId = readId(buf, start + 12, at);
  const mlen = buf[at] as number;
  if (at + 1 + mlen + 2 > end) throw new ProtocolError('request header overruns its frame (method)');
  const method = readMethod(buf, at + 1, at + 1 + mlen);
  at += 1 + mlen;
  const n = ((buf[at] as number) << 8) | (buf[at + 1] as number);
  at += 2;
  let chain: string[] | null = null;
  if (n > 0) {
    chain = into.chainArray(n);
    for (let i = 0; i < n; i++) {
      if (at + 2 > end) throw new ProtocolError('request header overruns its frame (chain)');
      const l = ((buf[at] as number) << 8) | (buf[at + 1] as number);
      if (at + 2 + l > end) throw new ProtocolError('request header overruns its frame (chain)');
      chain[i] = readId(buf, at + 2, at + 2 + l);
      at += 2 + l;
    }
  }
  let contextOffset = 0;
  let contextEnd = 0;
  if ((flags & RequestFlags.Context) !== 0) {
    if (at + 4 > end) throw new ProtocolError('request header overruns its frame (context)');
    const l = buf.readUInt32BE(at);
    if (at + 4 + l > end) throw new ProtocolError('request header overruns its frame (context)');
    contextOffset = at + 4;
    contextEnd = contextOffset + l;
    at = contextEnd;
  }
  if (at >= end) throw new ProtocolError('request frame has no arguments');
  into.reqId = reqId;
  into.flags = flags;
  into.targetId = targetId;
  into.method = method;
  into.timeoutMs = timeoutMs;
  into.chain = chain;
  into.hops = hops;
  into.contextOffset = contextOffset;
  into.contextEnd = contextEnd;
  into.argsOffset = at;
  into.argsEnd = end;
  return into;
}

/** Decodes the request header in `buf[start, end)` into an object of its own; throws ProtocolError when malformed. */
export function decodeRequestHeader(buf: Buffer, start = 0, end = buf.length): RequestHeader {
  return readRequestHeader(buf, start, end, new RequestHeaderSlot());
}

/** Decodes a request's arguments from the buffer its header was read from, binding references to `ctx`. */
export function decodeRequestArgs(buf: Buffer, header: RequestHeader, ctx: CodecContext): unknown[] {
  // Small values (numbers, short strings...) are read here; the rest, and anything malformed, by the codec.
  const small = readSmallArray(buf, header.argsOffset, header.argsEnd);
  if (small !== undefined) return small;
  const args = decode(buf, ctx, header.argsOffset, header.argsEnd);
  if (!Array.isArray(args)) throw new ProtocolError('request arguments are not an array');
  return args;
}

/** Encodes a request context's values for a request header; throws SerializationError naming the bad value. */
export function contextBytes(values: Readonly<Record<string, unknown>>): Uint8Array {
  return encode(values, 'request context');
}

/** Decodes the request context of a request (flag Context) from the buffer its header was read from. */
export function decodeRequestContext(buf: Buffer, header: RequestHeader, ctx: CodecContext): unknown {
  return decode(buf, ctx, header.contextOffset, header.contextEnd);
}

const respHead = Buffer.allocUnsafe(5);

/** A response's 5-byte head, in scratch space valid until the next call. */
export function responseHeadBytes(reqId: number, status: number): Buffer {
  respHead.writeUInt32BE(reqId >>> 0, 0);
  respHead[4] = status;
  return respHead;
}

/** A response whose value is written in place after its 5-byte head (see responseHeadOf). */
class ResponseHead implements HeadWriter {
  reqId = 0;
  status = 0;
  value: unknown = undefined;
  maxBytes = 0;

  writeTo(buf: Buffer, at: number): number {
    const r = this.reqId;
    buf[at] = r >>> 24;
    buf[at + 1] = (r >>> 16) & 0xff;
    buf[at + 2] = (r >>> 8) & 0xff;
    buf[at + 3] = r & 0xff;
    buf[at + 4] = this.status;
    return writeSmall(this.value, buf, at + 5);
  }
}

const responseHeadScratch = new ResponseHead();

/**
 * A whole response, written in place by `sendHead` (with an empty body), for
 * a value `responseBody` would encode as a small value (a number, a boolean,
 * null, undefined, a short ASCII string); undefined for any other value. Valid
 * until the next call.
 */
export function responseHeadOf(reqId: number, status: number, value: unknown): HeadWriter | undefined {
  const n = smallBytes(value);
  if (n < 0) return undefined;
  const h = responseHeadScratch;
  h.reqId = reqId >>> 0;
  h.status = status;
  h.value = value;
  h.maxBytes = 5 + n;
  return h;
}

/** Encodes a response's value; throws SerializationError if it cannot be encoded. */
export function responseBody(status: number, value: unknown): Uint8Array {
  return encode(value, status === ResponseStatus.Ok ? 'result' : 'error');
}

/** Encodes a whole response into one new buffer (tests, tools). */
export function encodeResponse(reqId: number, status: number, value: unknown): Buffer {
  const v = responseBody(status, value);
  return Buffer.concat([responseHeadBytes(reqId, status), v]);
}

/** The request id of the response in `buf[start, end)`. */
export function responseId(buf: Buffer, start = 0, end = buf.length): number {
  if (end - start < 5) throw new ProtocolError(`response frame of ${end - start} bytes is too short`);
  return (
    (((buf[start] as number) << 24) |
      ((buf[start + 1] as number) << 16) |
      ((buf[start + 2] as number) << 8) |
      (buf[start + 3] as number)) >>>
    0
  );
}

/** The status of the response at `start` (after responseId checked its length). */
export function responseStatus(buf: Buffer, start = 0): number {
  return buf[start + 4] as number;
}

/** The request id and status of a response, before its value is decoded. */
export function responseHead(buf: Buffer, start = 0, end = buf.length): { reqId: number; status: number } {
  return { reqId: responseId(buf, start, end), status: responseStatus(buf, start) };
}

/** Decodes the value of the response in `buf[start, end)`, binding references to `ctx`. */
export function responseValue(buf: Buffer, ctx: CodecContext | undefined, start = 0, end = buf.length): unknown {
  const small = readSmall(buf, start + 5, end);
  return small !== NOT_SMALL ? small : decode(buf, ctx, start + 5, end);
}

/** A system call: codec([seq, op, args]). */
export function encodeSystemCall(seq: number, op: string, args: unknown[]): Uint8Array {
  return encode([seq, op, args]);
}

/** A system result: codec([seq, ok, value]). */
export function encodeSystemResult(seq: number, ok: boolean, value: unknown): Uint8Array {
  return encode([seq, ok, value]);
}
