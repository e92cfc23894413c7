// What the NATS stream tests share: the server, cluster ids whose JetStream
// streams (items and queue leases) are deleted after the test file, and how
// many items a provider's queues still hold.

import { after } from 'node:test';
import { randomUUID } from 'node:crypto';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';

export const NATS = '127.0.0.1:4222';

const made: string[] = [];
// Registered when the test file imports this module: it runs once, after all its tests.
after(async () => {
  if (made.length === 0) return;
  const nc = await connect({ servers: NATS });
  const jsm = await jetstreamManager(nc);
  for (const name of made) await jsm.streams.delete(name).catch(() => undefined);
  await nc.close();
});

/**
 * A fresh cluster id; the JetStream streams natsStreams makes for it under
 * `provider` are deleted when the test file ends.
 */
export function natsClusterId(provider = 'events'): string {
  const id = `t${randomUUID().slice(0, 8)}`;
  // The items' stream, and the key-value bucket of the queues' leases.
  made.push(`granary_${id}_${provider}`, `KV_granary_${id}_${provider}_leases`);
  return id;
}

/** Items of provider `provider` in cluster `cluster` not yet acknowledged (handed out or waiting). */
export async function natsPending(cluster: string, provider = 'events'): Promise<number> {
  const nc = await connect({ servers: NATS });
  try {
    const jsm = await jetstreamManager(nc);
    let n = 0;
    for await (const ci of jsm.consumers.list(`granary_${cluster}_${provider}`))
      n += ci.num_ack_pending + ci.num_pending;
    return n;
  } finally {
    await nc.close();
  }
}
