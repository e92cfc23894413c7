// memoryStreams(): in-cluster streams with no broker. An item goes from the
// producer's silo straight to its subscribers' silos; nothing is stored, so
// nothing survives the producer's silo, and there is no history to rewind.

import { ConfigurationError } from '../errors.ts';
import {
  resolveDeliveryOptions,
  type DeliveryOptions,
  type ResolvedDeliveryOptions,
  type StreamProvider,
  type StreamProviderContext,
} from './provider.ts';
import type { StreamId, StreamToken } from './types.ts';

export type MemoryStreamsOptions = DeliveryOptions;

class MemoryStreams implements StreamProvider {
  readonly kind = 'memory';
  readonly rewind = false;
  readonly delivery: ResolvedDeliveryOptions;
  #ctx: StreamProviderContext | undefined;
  /** The last sequence number given out: one counter for all streams, so no state per stream. */
  #sequence = 0;

  constructor(options: MemoryStreamsOptions | undefined) {
    this.delivery = resolveDeliveryOptions('memoryStreams', options);
  }

  init(ctx: StreamProviderContext): void {
    if (this.#ctx !== undefined)
      throw new ConfigurationError(
        `memoryStreams: this provider is already in use by silo ${this.#ctx.silo} as '${this.#ctx.name}'; give each silo its own memoryStreams()`,
      );
    this.#ctx = ctx;
  }

  publish(stream: StreamId, items: readonly unknown[]): Promise<void> {
    const ctx = this.#ctx;
    if (ctx === undefined) return Promise.reject(new ConfigurationError('memoryStreams: not initialised by a silo'));
    // Tokens order one producer silo's items of a stream; a batch shares its sequence number.
    const sequence = ++this.#sequence;
    const tokens: StreamToken[] = new Array(items.length);
    for (let i = 0; i < items.length; i++) tokens[i] = { sequence, index: i };
    return ctx.deliver(stream, items, tokens);
  }

  close(): void {
    this.#ctx = undefined;
  }
}

/** In-memory streams: in the cluster, not durable, no rewind. One per silo. */
export function memoryStreams(options?: MemoryStreamsOptions): StreamProvider {
  return new MemoryStreams(options);
}
