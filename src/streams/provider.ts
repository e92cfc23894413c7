// The stream provider interface: how items get from `publish` to the silos
// that deliver them. The delivery itself (finding the subscribers, one ordered
// pipeline per subscriber, retries, dead letters) is the stream service's and
// the same for every provider.

import { ConfigurationError } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';
import type { StreamId, StreamToken } from './types.ts';

/** How a provider's items are delivered and retried. */
export interface DeliveryOptions {
  /** Attempts after the first before an item is given up on (a dead letter). Default 3. */
  readonly retries?: number;
  /** Wait before each retry, in ms; doubles with each attempt. Default 100. */
  readonly retryDelayMs?: number;
  /** Items waiting for one subscriber before `publish` fails with OverloadedError. Default 10,000. */
  readonly maxQueuedItems?: number;
  /** Items handed to a subscriber in one delivery (one turn). Default 256. */
  readonly maxBatch?: number;
  /** The storage provider (a silo `storage` name) keeping pub-sub records. Default `default`. */
  readonly pubSubStorage?: string;
  /**
   * Subscriptions per stored pub-sub record (page), and per answer when a
   * producing silo reads them. Default 250: a subscribe writes one page, and
   * 100,000 subscribers are 400 records.
   */
  readonly pubSubPageSize?: number;
  /**
   * Namespaces whose streams have implicit subscribers only: their items never
   * look for explicit subscriptions (no rendezvous is read), so a million such
   * streams cost no pub-sub record and no rendezvous activation. An explicit
   * subscribe to one of them is refused. Default none.
   */
  readonly implicitOnlyNamespaces?: readonly string[];
  /** Called with each dead letter (an item given up on), besides the log line and the diagnostics channel. */
  readonly onDeadLetter?: (letter: DeadLetter) => void;
}

/** An item given up on after its retries. */
export interface DeadLetter {
  readonly stream: StreamId;
  /** The subscription, or `implicit:<grain type>` for an implicit subscription. */
  readonly subscription: string;
  /** `type/key` of the grain, or `client:<id>`. */
  readonly consumer: string;
  readonly item: unknown;
  readonly token: StreamToken;
  readonly error: unknown;
  readonly attempts: number;
}

export type ResolvedDeliveryOptions = Required<Omit<DeliveryOptions, 'onDeadLetter' | 'implicitOnlyNamespaces'>> &
  Pick<DeliveryOptions, 'onDeadLetter'> & { readonly implicitOnly: ReadonlySet<string> };

export const deliveryDefaults: Required<Omit<DeliveryOptions, 'onDeadLetter' | 'implicitOnlyNamespaces'>> =
  Object.freeze({
    retries: 3,
    retryDelayMs: 100,
    maxQueuedItems: 10_000,
    maxBatch: 256,
    pubSubStorage: 'default',
    pubSubPageSize: 250,
  });

/** Checks delivery options of provider function `fn`, filling in the defaults. */
export function resolveDeliveryOptions(fn: string, o: DeliveryOptions | undefined): ResolvedDeliveryOptions {
  const { implicitOnlyNamespaces, ...rest } = o ?? {};
  const r = { ...deliveryDefaults, ...rest };
  const whole = (name: keyof typeof deliveryDefaults, min: number, max: number): void => {
    const v = r[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
      throw new ConfigurationError(
        `${fn}: option ${name} must be a whole number from ${min} to ${max}, got ${String(v)}`,
      );
  };
  whole('retries', 0, 1000);
  whole('retryDelayMs', 0, 3_600_000);
  whole('maxQueuedItems', 1, 100_000_000);
  whole('maxBatch', 1, 100_000);
  whole('pubSubPageSize', 1, 10_000);
  if (typeof r.pubSubStorage !== 'string' || r.pubSubStorage === '')
    throw new ConfigurationError(
      `${fn}: option pubSubStorage must name a storage provider, got ${String(r.pubSubStorage)}`,
    );
  if (r.onDeadLetter !== undefined && typeof r.onDeadLetter !== 'function')
    throw new ConfigurationError(`${fn}: option onDeadLetter must be a function`);
  const ns = implicitOnlyNamespaces ?? [];
  if (!Array.isArray(ns) || ns.some((n) => typeof n !== 'string' || n === ''))
    throw new ConfigurationError(
      `${fn}: option implicitOnlyNamespaces must be a list of namespace names, got ${JSON.stringify(implicitOnlyNamespaces)}`,
    );
  return { ...r, implicitOnly: new Set(ns) };
}

/** What a provider is given when it starts in a silo. */
export interface StreamProviderContext {
  /** The name the provider is configured under. */
  readonly name: string;
  readonly clusterId: string;
  readonly logger: Logger;
  /** The address of the silo it runs in. */
  readonly silo: string;
  /**
   * Hands items with their tokens to the silo's delivery. With `until`
   * `accepted` (the default) it resolves once each subscriber's pipeline has
   * them, in order after any earlier items, and fails with OverloadedError
   * when a pipeline is full; with `delivered` it resolves once every
   * subscriber's turn for them has ended (or they were given up on as dead
   * letters), and waits rather than fail when pipelines are full (a broker's
   * unacknowledged window bounds them).
   */
  deliver(
    stream: StreamId,
    items: readonly unknown[],
    tokens: readonly StreamToken[],
    until?: 'accepted' | 'delivered',
  ): Promise<void>;
  /**
   * Replays the history of `stream` from `from` into subscription
   * `subscription` (rewind), up to sequence `before` (not included), where the
   * provider met the subscription's replay marker; later items go to it live.
   * Resolves once the replayed items were delivered.
   */
  replay(stream: StreamId, subscription: string, from: StreamToken, before: number): Promise<void>;
  /** Whether this silo should now be the one that pulls queue `queue` (balanced on the cluster's ring). */
  owns(queue: string): boolean;
  /** Calls `listener` whenever the answers of `owns` may have changed (the membership changed). */
  onOwnershipChange(listener: () => void): void;
  /** The silo's codec, which keeps grain references working in items. */
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}

/**
 * A stream provider, as the silo's `streams` option takes it: a description
 * that starts once in each silo (one object may serve every silo of a test
 * cluster in one process).
 */
export interface StreamProvider {
  /** Short kind for messages and logs: `memory`, `nats`. */
  readonly kind: string;
  /** Whether the provider keeps history a subscriber can rewind into (`subscribe(h, { from })`). */
  readonly rewind: boolean;
  /** Delivery and retry policy. */
  readonly delivery: ResolvedDeliveryOptions;
  /** Starts the provider in one silo. */
  start(ctx: StreamProviderContext): Promise<StreamProviderSilo> | StreamProviderSilo;
}

/** A stream provider running in one silo. */
export interface StreamProviderSilo {
  /** Accepts items of `stream`, in order; resolves once they are accepted (a broker: acknowledged). */
  publish(stream: StreamId, items: readonly unknown[]): Promise<void>;
  /**
   * A provider with history (`rewind`): puts a replay marker for
   * `subscription` in the stream's order, so that whichever silo delivers
   * the stream calls `replay` on its context when it meets it.
   */
  requestReplay?(stream: StreamId, subscription: string, from: StreamToken): Promise<void>;
  /** A provider with history: the items of `stream` from `from` up to sequence `before` (not included), in order. */
  history?(
    stream: StreamId,
    from: StreamToken,
    before: number,
  ): AsyncIterable<{ items: unknown[]; tokens: StreamToken[] }>;
  close(): Promise<void> | void;
}
