// A grain's side of stream delivery: the runtime calls STREAM_METHOD on the
// grain (a turn like any call) with a batch of items, and this picks the
// handler: one bound in this activation (subscribe or resume), else the grain
// method the subscription names, else `onStreamItem`. A subscription made with
// one of the grain's methods therefore survives deactivation with no code in
// onActivate (Orleans needs ResumeAsync for that).

import { ConfigurationError } from '../errors.ts';
import type { ChannelId, StreamHandler, StreamId, StreamToken } from '../streams/types.ts';

/** Handlers bound in an activation, by grain instance, then subscription id. */
const bound = new WeakMap<object, Map<string, StreamHandler<unknown>>>();

/** Binds `handler` to subscription `id` for this grain instance (its activation). */
export function bindStreamHandler(grain: object, id: string, handler: StreamHandler<unknown>): void {
  let m = bound.get(grain);
  if (m === undefined) bound.set(grain, (m = new Map()));
  m.set(id, handler);
}

/** Subscriptions this grain instance ended: batches of them still on their way are dropped. */
const ended = new WeakMap<object, Set<string>>();

/** Forgets the handler of subscription `id` in this grain instance. */
export function unbindStreamHandler(grain: object, id: string): void {
  bound.get(grain)?.delete(id);
}

/** Subscription `id` was ended by this grain: nothing of it reaches a handler any more. */
export function endStreamSubscription(grain: object, id: string): void {
  unbindStreamHandler(grain, id);
  let s = ended.get(grain);
  if (s === undefined) ended.set(grain, (s = new Set()));
  s.add(id);
}

/**
 * The name of the grain method `handler` is (looked up on the grain's
 * prototype chain), or undefined for any other function (an arrow, a bound
 * function): then only `onStreamItem` can receive items after a reactivation.
 */
export function handlerMethodName(grain: object, handler: unknown): string | undefined {
  for (let p = Object.getPrototypeOf(grain) as object | null; p !== null && p !== Object.prototype;) {
    for (const name of Object.getOwnPropertyNames(p)) {
      if (name === 'constructor') continue;
      const d = Object.getOwnPropertyDescriptor(p, name);
      if (d?.value === handler) return name;
    }
    p = Object.getPrototypeOf(p) as object | null;
  }
  return undefined;
}

/** What one delivery reports back: how many items the handler took, and the error that stopped it. */
export interface StreamDeliveryResult {
  readonly delivered: number;
  readonly error?: unknown;
}

/**
 * The grain-side body of STREAM_METHOD: `this` is the grain. Items are handed
 * over one at a time, each awaited, in order; the first that throws stops the
 * batch, and the result says how far it got, so a retry resumes there instead
 * of handing the earlier items over again.
 */
export async function deliverStreamItems(
  this: object,
  subscription: string | null,
  method: string | null,
  stream: StreamId,
  items: unknown[],
  tokens: StreamToken[],
): Promise<StreamDeliveryResult> {
  // Already on its way when the grain unsubscribed: taken, handed to nobody.
  if (subscription !== null && ended.get(this)?.has(subscription) === true) return { delivered: items.length };
  const handler = pickHandler(this, subscription, method, stream);
  for (let i = 0; i < items.length; i++) {
    try {
      await handler.call(this, items[i], tokens[i] as StreamToken, stream);
    } catch (error) {
      return { delivered: i, error };
    }
  }
  return { delivered: items.length };
}

/** The grain-side body of CHANNEL_METHOD: hands a broadcast item to `onChannelItem`. */
export function deliverChannelItem(this: object, item: unknown, channel: ChannelId): unknown {
  const g = this as { onChannelItem?: (item: unknown, channel: ChannelId) => unknown };
  if (typeof g.onChannelItem !== 'function')
    throw new ConfigurationError(`${this.constructor.name} has no onChannelItem(item, channel) method`);
  return g.onChannelItem(item, channel);
}

function pickHandler(
  grain: object,
  subscription: string | null,
  method: string | null,
  stream: StreamId,
): StreamHandler<unknown> {
  if (subscription !== null) {
    const h = bound.get(grain)?.get(subscription);
    if (h !== undefined) return h;
  }
  const g = grain as Record<string, unknown>;
  if (method !== null && typeof g[method] === 'function') return g[method] as StreamHandler<unknown>;
  if (typeof g['onStreamItem'] === 'function') return g['onStreamItem'] as StreamHandler<unknown>;
  const what =
    subscription === null ? `implicit subscription to namespace '${stream.namespace}'` : `subscription ${subscription}`;
  throw new ConfigurationError(
    `${grain.constructor.name} has no handler for ${what} of stream ${stream.provider}/${stream.namespace}/${stream.key}: ` +
      (method !== null
        ? `it has no method '${method}' any more`
        : `subscribe with one of its methods, call resume(handler) in onActivate, or implement onStreamItem`),
  );
}
