// The wire protocol between silos and between clients and gateways, on top of
// the transport's frames. Grain calls have their own frame types (the hot
// path); everything else is a small system call with an operation name.
//
// REQUEST body:  u32 reqId | u8 flags | u32 headerLength | header | args
//   header = codec([targetId, method, timeoutMs, chain ids (innermost first) | null, hops])
//   args   = codec(args), decoded once the target is known, so references bind to it
// RESPONSE body: u32 reqId | u8 status | codec(value or error)

import { decode, encode } from '../serialization/codec.ts';
import type { CodecContext } from '../serialization/symbols.ts';

/** Frame types. 0xF0 and up belong to the transport's handshake. */
export const Frame = {
  Request: 1,
  Response: 2,
  Cancel: 3,
  /** A hint that a grain lives elsewhere: codec([targetId, address]). */
  Location: 4,
  SystemCall: 10,
  SystemResult: 11,
} as const;

/** Request flags. */
export const RequestFlags = {
  OneWay: 1,
  /** The last argument is an AbortSignal; the callee gets its own. */
  Signal: 2,
} as const;

/** Response statuses. */
export const ResponseStatus = {
  Ok: 0,
  Error: 1,
} as const;

/** The decoded header of a request. */
export interface RequestHeader {
  readonly reqId: number;
  readonly flags: number;
  readonly targetId: string;
  readonly method: string;
  readonly timeoutMs: number;
  readonly chain: string[] | null;
  readonly hops: number;
  /** Where the encoded arguments start in the body. */
  readonly argsOffset: number;
}

/** Encodes a request; `args` must already exclude any AbortSignal. Throws SerializationError for bad args. */
export function encodeRequest(reqId: number, flags: number, targetId: string, method: string, timeoutMs: number, chain: string[] | null, hops: number, args: unknown[]): Buffer {
  const header = encode([targetId, method, timeoutMs, chain, hops]);
  const body = encode(args, 'args');
  const out = Buffer.allocUnsafe(9 + header.length + body.length);
  out.writeUInt32BE(reqId >>> 0, 0);
  out[4] = flags;
  out.writeUInt32BE(header.length, 5);
  out.set(header, 9);
  out.set(body, 9 + header.length);
  return out;
}

/** Decodes a request's header; throws SerializationError when malformed. */
export function decodeRequestHeader(body: Buffer): RequestHeader {
  if (body.length < 9) throw new RangeError(`request frame of ${body.length} bytes is too short`);
  const reqId = body.readUInt32BE(0);
  const flags = body[4] as number;
  const hlen = body.readUInt32BE(5);
  if (9 + hlen > body.length) throw new RangeError(`request header length ${hlen} overruns a ${body.length}-byte frame`);
  const h = decode(body.subarray(9, 9 + hlen));
  if (!Array.isArray(h) || typeof h[0] !== 'string' || typeof h[1] !== 'string' || typeof h[2] !== 'number') {
    throw new RangeError('malformed request header');
  }
  const chain = Array.isArray(h[3]) ? (h[3] as string[]) : null;
  return { reqId, flags, targetId: h[0], method: h[1], timeoutMs: h[2], chain, hops: typeof h[4] === 'number' ? h[4] : 0, argsOffset: 9 + hlen };
}

/** Decodes a request's arguments, binding references to `ctx`. */
export function decodeRequestArgs(body: Buffer, header: RequestHeader, ctx: CodecContext): unknown[] {
  const args = decode(body.subarray(header.argsOffset), ctx);
  if (!Array.isArray(args)) throw new RangeError('request arguments are not an array');
  return args;
}

/** Encodes a response; throws SerializationError if the value cannot be encoded. */
export function encodeResponse(reqId: number, status: number, value: unknown): Buffer {
  const v = encode(value, status === ResponseStatus.Ok ? 'result' : 'error');
  const out = Buffer.allocUnsafe(5 + v.length);
  out.writeUInt32BE(reqId >>> 0, 0);
  out[4] = status;
  out.set(v, 5);
  return out;
}

/** The request id and status of a response, before its value is decoded. */
export function responseHead(body: Buffer): { reqId: number; status: number } {
  if (body.length < 5) throw new RangeError(`response frame of ${body.length} bytes is too short`);
  return { reqId: body.readUInt32BE(0), status: body[4] as number };
}

/** Decodes a response's value, binding references to `ctx`. */
export function responseValue(body: Buffer, ctx: CodecContext | undefined): unknown {
  return decode(body.subarray(5), ctx);
}

/** A system call: codec([seq, op, args]). */
export function encodeSystemCall(seq: number, op: string, args: unknown[]): Uint8Array {
  return encode([seq, op, args]);
}

/** A system result: codec([seq, ok, value]). */
export function encodeSystemResult(seq: number, ok: boolean, value: unknown): Uint8Array {
  return encode([seq, ok, value]);
}
