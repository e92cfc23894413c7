// What users see of streams: a stream's identity, an item's sequence token, a
// handle to publish and subscribe, and a subscription. Plain data where it
// crosses the wire (ids, tokens), so grains and clients pass them around.
// Imports only the errors: grain/ and client/ name these types.

import { ConfigurationError } from '../errors.ts';

/** A stream: the provider it lives on, its namespace, and its key within the namespace. */
export interface StreamId {
  readonly provider: string;
  readonly namespace: string;
  readonly key: string;
}

/**
 * Where an item stands in its stream, as the provider numbers it: `sequence`
 * grows with every publish (a batch's items share it and differ in `index`).
 * Tokens of one stream from one producer compare in publish order; a
 * persistent provider's tokens are its broker's sequence numbers, and a
 * subscriber can rewind to one (`subscribe(handler, { from })`).
 */
export interface StreamToken {
  readonly sequence: number;
  readonly index: number;
}

/** Compares two tokens of one stream: negative, zero or positive, as `a` comes before, with or after `b`. */
export function compareTokens(a: StreamToken, b: StreamToken): number {
  return a.sequence - b.sequence || a.index - b.index;
}

/** Receives one item of a stream; a throw (or rejection) is retried per the provider's policy. */
export type StreamHandler<T> = (item: T, token: StreamToken, stream: StreamId) => unknown;

/** Options of `subscribe`. */
export interface SubscribeOptions {
  /** Deliver from this token on (rewind), where the provider keeps history. */
  readonly from?: StreamToken;
}

/** One subscription to a stream. */
export interface StreamSubscription<T = unknown> {
  /** Unique, stable across the subscriber's activations. */
  readonly id: string;
  readonly stream: StreamId;
  /** Ends the subscription: no item is delivered to it after this resolves. */
  unsubscribe(): Promise<void>;
  /**
   * Binds `handler` to this subscription in this activation (Orleans'
   * `ResumeAsync`). Not needed when the subscription was made with one of the
   * grain's own methods, or when the grain implements `onStreamItem`.
   */
  resume(handler: StreamHandler<T>): StreamSubscription<T>;
}

/** A handle to a stream; getting one is local and costs nothing. */
export interface Stream<T = unknown> {
  readonly id: StreamId;
  /** Resolves once the provider has accepted the item (a persistent one: the broker acknowledged it). */
  publish(item: T): Promise<void>;
  /** Publishes items in order, as one batch. */
  publishBatch(items: readonly T[]): Promise<void>;
  /**
   * Subscribes `handler`. In a grain, the subscription outlives the
   * activation: pass one of the grain's methods (`this.onMove`) and later
   * items reach that method in whichever activation the grain then has.
   */
  subscribe(handler: StreamHandler<T>, options?: SubscribeOptions): Promise<StreamSubscription<T>>;
  /** The subscriptions of this grain or client to this stream. */
  getSubscriptions(): Promise<StreamSubscription<T>[]>;
}

/** A stream id as one string, `provider/namespace/key` with `/` and `%` escaped in each part. */
export function streamKey(id: StreamId): string {
  return `${escape(id.provider)}/${escape(id.namespace)}/${escape(id.key)}`;
}

/** The stream id of `streamKey(id)`; undefined when `key` is not one. */
export function parseStreamKey(key: string): StreamId | undefined {
  const parts = key.split('/');
  if (parts.length !== 3) return undefined;
  const [provider, namespace, k] = parts.map(unescape) as [string, string, string];
  return { provider, namespace, key: k };
}

function escape(s: string): string {
  // Per publish: most names need no escaping, so skip the two replaces then.
  if (!s.includes('%') && !s.includes('/')) return s;
  return s.replace(/%/g, '%25').replace(/\//g, '%2F');
}

function unescape(s: string): string {
  return s.replace(/%2F/g, '/').replace(/%25/g, '%');
}

/** Where stream deliveries go on the grain: the runtime calls it, a reference never can. */
export const STREAM_METHOD = '$stream';

/** Where broadcast channel items go on the grain. */
export const CHANNEL_METHOD = '$channel';

/** A broadcast channel: a namespace and a key (see `@implicitChannelSubscription`). */
export interface ChannelId {
  readonly namespace: string;
  readonly key: string;
}

/** A handle to a broadcast channel: fire and forget, nothing stored, no order between publishers. */
export interface BroadcastChannel<T = unknown> {
  readonly id: ChannelId;
  /**
   * Sends `item` to every grain implicitly subscribed to the channel's
   * namespace (the one with the channel's key); resolves once it is sent, not
   * when they have handled it. A grain that fails is logged, never retried.
   */
  publish(item: T): Promise<void>;
}

/** A stream id from user input, checked. */
export function checkedId(provider: unknown, namespace: unknown, key: unknown): StreamId {
  for (const [name, v] of [
    ['provider', provider],
    ['namespace', namespace],
  ] as const) {
    if (typeof v !== 'string' || v === '')
      throw new ConfigurationError(`a stream's ${name} must be a non-empty string, got ${JSON.stringify(v)}`);
  }
  if (typeof key !== 'string') throw new ConfigurationError(`a stream's key must be a string, got ${typeof key}`);
  return { provider: provider as string, namespace: namespace as string, key };
}
