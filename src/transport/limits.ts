// Limits and timings of the transport, in one place: documented defaults and a
// validator that names the option to change. Every connection, listener and
// connector resolves its options through here once, at start.

import { MAX_TIMER_MS } from '../clock.ts';
import { ConfigurationError } from '../errors.ts';

/** Transport options; every field is optional and falls back to `transportDefaults`. */
export interface TransportLimits {
  /** Largest frame accepted or sent, type byte and body included, in bytes. Default 16 MiB. */
  maxFrameBytes?: number;
  /** How long a new connection may take to exchange HELLOs before it is dropped, in ms. Default 5000. */
  handshakeTimeoutMs?: number;
  /** How long a TCP connect may take before the attempt fails, in ms. Default 3000. */
  connectTimeoutMs?: number;
  /** First reconnect delay after a failure, in ms; doubles per failure, with ±25% jitter. Default 50. */
  backoffMinMs?: number;
  /** Cap of the reconnect delay, in ms. Default 5000. */
  backoffMaxMs?: number;
  /**
   * Bytes queued in the socket above which a connection reports back-pressure
   * (`writable === false`, a 'blocked' event) until the socket drains. Default 1 MiB.
   */
  writeHighWaterMark?: number;
  /**
   * Bytes waiting to be written (the batch and the socket's queue) at which a
   * connection counts as backlogged: new requests to that peer are refused
   * with GRANARY_OVERLOADED instead of queueing without bound behind a peer
   * that does not read. Responses are never refused. Default 64 MiB.
   */
  maxQueuedBytes?: number;
  /**
   * A batch is written as soon as it holds this many bytes, instead of at the
   * end of the tick: the peer starts on the first calls while this side is
   * still making the rest, so both processes work at once. Default 16 KiB.
   */
  flushBytes?: number;
  /** How long a gracefully closing connection waits for the peer to hang up before it is destroyed, in ms. Default 2000. */
  closeTimeoutMs?: number;
}

/** `TransportLimits` with every field set. */
export type ResolvedTransportLimits = Readonly<Required<TransportLimits>>;

/** The defaults of every transport option. */
export const transportDefaults: ResolvedTransportLimits = Object.freeze({
  maxFrameBytes: 16 * 1024 * 1024,
  handshakeTimeoutMs: 5000,
  connectTimeoutMs: 3000,
  backoffMinMs: 50,
  backoffMaxMs: 5000,
  writeHighWaterMark: 1024 * 1024,
  maxQueuedBytes: 64 * 1024 * 1024,
  flushBytes: 16384,
  closeTimeoutMs: 2000,
});

/** The largest length a frame's u32 prefix can state. */
const MAX_U32 = 0xffffffff;
/** Timers above this would overflow setTimeout. */

const ranges: Record<keyof TransportLimits, readonly [min: number, max: number, unit: string]> = {
  maxFrameBytes: [1, MAX_U32, 'bytes'],
  handshakeTimeoutMs: [1, MAX_TIMER_MS, 'ms'],
  connectTimeoutMs: [1, MAX_TIMER_MS, 'ms'],
  backoffMinMs: [1, MAX_TIMER_MS, 'ms'],
  backoffMaxMs: [1, MAX_TIMER_MS, 'ms'],
  writeHighWaterMark: [1, Number.MAX_SAFE_INTEGER, 'bytes'],
  flushBytes: [1, Number.MAX_SAFE_INTEGER, 'bytes'],
  maxQueuedBytes: [1, Number.MAX_SAFE_INTEGER, 'bytes'],
  closeTimeoutMs: [0, MAX_TIMER_MS, 'ms'],
};

/** Fills in defaults and validates; throws a `ConfigurationError` naming the bad option. */
export function resolveTransportLimits(limits: TransportLimits = {}): ResolvedTransportLimits {
  const out: Required<TransportLimits> = { ...transportDefaults };
  for (const key of Object.keys(ranges) as (keyof TransportLimits)[]) {
    const value: unknown = limits[key];
    if (value === undefined) continue;
    const [min, max, unit] = ranges[key];
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw new ConfigurationError(
        `transport option ${key} must be an integer from ${min} to ${max} (${unit}), got ${String(value)}`,
      );
    }
    out[key] = value;
  }
  for (const key of Object.keys(limits)) {
    if (!(key in ranges))
      throw new ConfigurationError(`unknown transport option ${key}; known: ${Object.keys(ranges).join(', ')}`);
  }
  if (out.backoffMinMs > out.backoffMaxMs) {
    throw new ConfigurationError(
      `transport option backoffMinMs (${out.backoffMinMs}) must not exceed backoffMaxMs (${out.backoffMaxMs})`,
    );
  }
  return Object.freeze(out);
}
