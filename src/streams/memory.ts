// memoryStreams(): in-cluster streams with no broker. An item goes from the
// producer's silo straight to its subscribers' silos; nothing is stored, so
// nothing survives the producer's silo, and there is no history to rewind.

import {
  resolveDeliveryOptions,
  type DeliveryOptions,
  type ResolvedDeliveryOptions,
  type StreamProvider,
  type StreamProviderContext,
  type StreamProviderSilo,
} from './provider.ts';
import type { StreamId, StreamToken } from './types.ts';

export type MemoryStreamsOptions = DeliveryOptions;

class MemoryStreamsSilo implements StreamProviderSilo {
  readonly #ctx: StreamProviderContext;
  /** The last sequence number given out: one counter for all streams, so no state per stream. */
  #sequence = 0;

  constructor(ctx: StreamProviderContext) {
    this.#ctx = ctx;
  }

  publish(stream: StreamId, items: readonly unknown[]): Promise<void> {
    // Tokens order one producer silo's items of a stream; a batch shares its sequence number.
    const sequence = ++this.#sequence;
    const tokens: StreamToken[] = new Array(items.length);
    for (let i = 0; i < items.length; i++) tokens[i] = { sequence, index: i };
    return this.#ctx.deliver(stream, items, tokens);
  }

  close(): void {}
}

class MemoryStreams implements StreamProvider {
  readonly kind = 'memory';
  readonly rewind = false;
  readonly delivery: ResolvedDeliveryOptions;

  constructor(options: MemoryStreamsOptions | undefined) {
    this.delivery = resolveDeliveryOptions('memoryStreams', options);
  }

  start(ctx: StreamProviderContext): StreamProviderSilo {
    return new MemoryStreamsSilo(ctx);
  }
}

/** In-memory streams: in the cluster, not durable, no rewind. */
export function memoryStreams(options?: MemoryStreamsOptions): StreamProvider {
  return new MemoryStreams(options);
}
