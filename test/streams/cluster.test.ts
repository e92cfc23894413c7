// Memory streams across silos, with clients: producer and consumer as grain
// or client in every combination, many subscribers to one stream, a client
// that goes away without unsubscribing, and a client's subscriptions ending
// when it closes.

import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import diagnostics_channel from 'node:diagnostics_channel';
import { ClusterClient, GranaryError, memoryStreams, type StreamToken } from 'granary';
import { TestCluster } from 'granary/testing';
import type { Connection } from '../../src/transport/connection.ts';
import { eventually } from '../helpers.ts';
import { Consumer, ImplicitConsumer, PROVIDER, Producer, received, resetLogs } from './grains.ts';

/** Client-side connections by client id, from the transport's open event. */
const clientConnections = new Map<string, Connection>();
diagnostics_channel.subscribe('granary:transport:open', (event) => {
  const { connection, side } = event as { connection: Connection; side: string };
  if (side === 'connect' && connection.hello.role === 'client')
    clientConnections.set(connection.hello.address, connection);
});

function gateways(c: TestCluster): string[] {
  return c.silos.map((s) => s.cluster?.gatewayAddress).filter((g): g is string => typeof g === 'string');
}

type PubSub = { list(filter: null): Promise<Array<{ id: string; consumer: { kind: string } }>> };

describe('memory streams in a cluster', () => {
  let c: TestCluster;
  before(async () => {
    c = await TestCluster.start({
      silos: 2,
      grains: [Producer, Consumer, ImplicitConsumer],
      siloOptions: { streams: { [PROVIDER]: memoryStreams({ retries: 1, retryDelayMs: 1 }) } },
    });
  });
  after(() => c.stop());
  beforeEach(() => resetLogs());

  it('delivers from grains on every silo to grains on every silo, in order per producer', async () => {
    const consumers = Array.from({ length: 8 }, (_, i) => c.client.getGrain(Consumer, `multi-${i}`));
    for (const g of consumers) await g.join('scores', 'match1');
    const producers = Array.from({ length: 4 }, (_, i) => c.client.getGrain(Producer, `prod-${i}`));
    await Promise.all(
      producers.map(async (p, n) => {
        for (let i = 0; i < 25; i++) await p.send('scores', 'match1', `${n}:${i}`);
      }),
    );
    for (let i = 0; i < 8; i++)
      await eventually(`consumer ${i} has 100 items`, () => received.get(`multi-${i}`)?.length === 100);
    for (let i = 0; i < 8; i++) {
      const items = received.get(`multi-${i}`) as string[];
      for (let n = 0; n < 4; n++) {
        const mine = items.filter((x) => x.startsWith(`${n}:`));
        assert.deepEqual(
          mine,
          Array.from({ length: 25 }, (_, k) => `${n}:${k}`),
          `producer ${n}'s items in order at consumer ${i}`,
        );
      }
    }
  });

  it('lets a client publish to grains, explicit and implicit', async () => {
    await c.client.getGrain(Consumer, 'from-client').join('alerts', 'site-3');
    const s = c.client.getStream<string>(PROVIDER, 'alerts', 'site-3');
    await s.publish('one');
    await s.publishBatch(['two', 'three']);
    await c.client.getStream<number>(PROVIDER, 'telemetry', 'dev-9').publishBatch([1, 2]);
    await eventually('explicit consumer got 3', () => received.get('from-client')?.length === 3);
    await eventually('implicit consumer got 2', () => received.get('implicit:dev-9')?.length === 2);
    assert.deepEqual(received.get('from-client'), ['one', 'two', 'three']);
    assert.deepEqual(received.get('implicit:dev-9'), [1, 2]);
  });

  it("keeps a client's publishes to one stream in order, though its calls spread over the gateways", async () => {
    const s = c.client.getStream<number>(PROVIDER, 'telemetry', 'ordered');
    await Promise.all(Array.from({ length: 60 }, (_, i) => s.publish(i)));
    await eventually('all 60 delivered', () => received.get('implicit:ordered')?.length === 60);
    assert.deepEqual(
      received.get('implicit:ordered'),
      Array.from({ length: 60 }, (_, i) => i),
    );
  });

  it('delivers to a client subscriber, from a grain and from another client, until it unsubscribes', async () => {
    const got: Array<[unknown, StreamToken]> = [];
    const other = await ClusterClient.connect({ clusterId: c.clusterId, gateways: gateways(c) });
    try {
      const sub = await other
        .getStream<string>(PROVIDER, 'chat', 'lobby')
        .subscribe((item, token) => void got.push([item, token]));
      assert.deepEqual(
        (await other.getStream(PROVIDER, 'chat', 'lobby').getSubscriptions()).map((s) => s.id),
        [sub.id],
      );
      await c.client.getGrain(Producer, 'p').send('chat', 'lobby', 'from a grain');
      await c.client.getStream(PROVIDER, 'chat', 'lobby').publish('from a client');
      await eventually('the client got both', () => got.length === 2);
      assert.deepEqual(
        got.map(([i]) => i),
        ['from a grain', 'from a client'],
      );
      await sub.unsubscribe();
      assert.deepEqual(await other.getStream(PROVIDER, 'chat', 'lobby').getSubscriptions(), []);
    } finally {
      await other.close();
    }
  });

  it("ends a client's subscriptions when it closes", async () => {
    const other = await ClusterClient.connect({ clusterId: c.clusterId, gateways: gateways(c) });
    await other.getStream(PROVIDER, 'chat', 'closing').subscribe(() => {});
    const pubsub = c.client.getGrain<PubSub>('granary.pubsub', `${PROVIDER}/chat/closing`);
    assert.equal((await pubsub.list(null)).length, 1);
    await other.close();
    assert.deepEqual(await pubsub.list(null), []);
  });

  it('ends the subscription of a client that went away without a word, and keeps delivering to the others', async () => {
    const gone = await ClusterClient.connect({ clusterId: c.clusterId, gateways: gateways(c).slice(0, 1) });
    const got: unknown[] = [];
    await gone.getStream(PROVIDER, 'chat', 'vanish').subscribe((item) => void got.push(item));
    await c.client.getGrain(Consumer, 'stays').join('chat', 'vanish');
    const pubsub = c.client.getGrain<PubSub>('granary.pubsub', `${PROVIDER}/chat/vanish`);
    assert.equal((await pubsub.list(null)).length, 2);
    // The client's process is gone: its connection drops and nothing reconnects it.
    const conn = clientConnections.get(gone.id);
    assert.ok(conn !== undefined);
    conn.destroy('test: the client vanished');
    await c.client.getGrain(Producer, 'p').send('chat', 'vanish', 'x');
    await eventually('the gone client is no longer subscribed', async () => (await pubsub.list(null)).length === 1);
    const left = await pubsub.list(null);
    assert.equal(left[0]?.consumer.kind, 'grain');
    await eventually('the grain subscriber got the item', () => received.get('stays')?.length === 1);
    assert.deepEqual(got, []);
    await gone.close();
  });

  it('a client that goes away while publishing: what was accepted is delivered, the rest fails at the client with a typed error', async () => {
    const gone = await ClusterClient.connect({ clusterId: c.clusterId, gateways: gateways(c).slice(0, 1) });
    const s = gone.getStream<number>(PROVIDER, 'telemetry', 'vanishing-producer');
    const outcomes = Array.from({ length: 200 }, (_, i) => s.publish(i).then(() => i));
    await outcomes[0];
    // The producer's process ends: its connections close with calls in flight.
    const closing = gone.close();
    const settled = await Promise.allSettled(outcomes);
    await closing;
    const accepted = settled
      .filter((r) => r.status === 'fulfilled')
      .map((r) => (r as PromiseFulfilledResult<number>).value);
    for (const r of settled)
      if (r.status === 'rejected')
        assert.ok(r.reason instanceof GranaryError, `a typed error, got ${String(r.reason)}`);
    await eventually('every accepted item delivered', () =>
      accepted.every((i) => (received.get('implicit:vanishing-producer') ?? []).includes(i)),
    );
    // The silos go on: another producer's items still arrive.
    await c.client.getStream<number>(PROVIDER, 'telemetry', 'vanishing-producer').publish(-1);
    await eventually('a later item from another client', () =>
      (received.get('implicit:vanishing-producer') ?? []).includes(-1),
    );
    await gone.close();
  });
});
