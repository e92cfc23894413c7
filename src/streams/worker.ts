// The grain clients publish and broadcast through: a stateless worker on the
// gateway silo the client called, so a client's items leave from that silo as
// a grain's would. Reentrant: a publish starts as soon as it arrives, in arrival order,
// and the provider orders items from the moment publish is called.

import { Grain } from '../grain/grain.ts';
import { checkedId } from './types.ts';
import type { ChannelId, StreamId } from './types.ts';

/** The grain type clients publish through. */
export const STREAM_WORKER_TYPE = 'granary.streams';

export class StreamWorker extends Grain {
  static readonly grainOptions = { name: STREAM_WORKER_TYPE, statelessWorker: { maxLocal: 1 }, reentrant: true };

  /** Broadcasts `item` on `channel` from this silo. */
  async broadcast(channel: ChannelId, item: unknown): Promise<void> {
    await this.getChannel(channel?.namespace, channel?.key).publish(item);
  }

  /** Publishes `items` to `stream` from this silo. */
  async publish(stream: StreamId, items: unknown[]): Promise<void> {
    const id = checkedId(stream?.provider, stream?.namespace, stream?.key);
    await this.getStream(id.provider, id.namespace, id.key).publishBatch(items);
  }
}
