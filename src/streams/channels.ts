// Broadcast channels (Orleans' BroadcastChannel): fire-and-forget fan-out of
// an item to the grains implicitly subscribed to the channel's namespace, the
// one whose key is the channel's key. No provider, no record, no retry: for
// notifications a grain can afford to miss (a config change, a cache
// invalidation); use a stream when every item matters.

import type { Logger } from '../observability/logger.ts';
import { checkedId, type BroadcastChannel, type ChannelId } from './types.ts';

/** What the channels need from the silo. */
export interface ChannelHost {
  readonly address: string;
  readonly logger: Logger;
  /** Hands `item` to grain `type/key` (CHANNEL_METHOD), wherever it lives. */
  deliverToGrain(type: string, key: string, args: unknown[]): Promise<unknown>;
}

/** The broadcast channels of one silo. */
export class BroadcastChannels {
  readonly #host: ChannelHost;
  /** Grain types listening, by namespace. */
  readonly #implicit: ReadonlyMap<string, readonly string[]>;

  constructor(host: ChannelHost, implicit: ReadonlyMap<string, readonly string[]>) {
    this.#host = host;
    this.#implicit = implicit;
  }

  /** A handle to channel `key` of `namespace`. */
  channel<T>(namespace: string, key: string): BroadcastChannel<T> {
    const { namespace: ns, key: k } = checkedId('broadcast', namespace, key);
    const id: ChannelId = { namespace: ns, key: k };
    return { id, publish: (item: T) => this.publish(id, item) };
  }

  /** Sends `item` to the listening grains; resolves once sent. */
  publish(id: ChannelId, item: unknown): Promise<void> {
    for (const type of this.#implicit.get(id.namespace) ?? []) {
      this.#host
        .deliverToGrain(type, id.key, [item, id])
        .catch((err: unknown) =>
          this.#host.logger.warn(
            { err, channel: `${id.namespace}/${id.key}`, grain: `${type}/${id.key}` },
            'a broadcast channel item was not handled (channels do not retry)',
          ),
        );
    }
    return Promise.resolve();
  }
}
