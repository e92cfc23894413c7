// NATS JetStream streams against the real server on 127.0.0.1:4222: delivery
// and order, acknowledgement only after delivery, redelivery after a silo
// crash, typed errors while NATS is down and recovery without a silo restart
// (against a NATS server the test runs itself), and bad options.

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import {
  ConfigurationError,
  Grain,
  Silo,
  StreamError,
  grain,
  implicitSubscription,
  silentLogger,
  type StreamId,
  type StreamToken,
} from 'granary';
import { natsStreams } from 'granary/nats';
import { eventually, freePort } from '../helpers.ts';
import { NATS, natsClusterId, natsPending } from './nats-support.ts';
import { Consumer, PROVIDER, Producer, received, resetLogs, tokensSeen } from './grains.ts';

/** Items an implicit consumer of `orders` saw, with their tokens and how often each came. */
const orders: Array<{ key: string; item: unknown; token: StreamToken }> = [];
/** While set, the handler of this item waits on it (a delivery still running). */
const gate: { item: unknown; release?: () => void; started: boolean } = { item: undefined, started: false };

@grain('orderBook')
@implicitSubscription('orders')
class OrderBook extends Grain {
  async onStreamItem(item: unknown, token: StreamToken, stream: StreamId): Promise<void> {
    if (item === gate.item) {
      gate.started = true;
      await new Promise<void>((r) => (gate.release = r));
    }
    orders.push({ key: stream.key, item, token });
  }
}

const clusterId = (): string => natsClusterId(PROVIDER);
const pending = (cluster: string): Promise<number> => natsPending(cluster, PROVIDER);

describe('nats streams', () => {
  it('delivers to explicit and implicit subscribers in order, and acknowledges once delivered', async () => {
    resetLogs();
    orders.length = 0;
    const id = clusterId();
    const silo = await Silo.start({
      clusterId: id,
      grains: [Producer, Consumer, OrderBook],
      logger: silentLogger(),
      streams: { [PROVIDER]: natsStreams({ servers: NATS, queues: 4 }) },
    });
    try {
      await silo.getGrain(Consumer, 'n1').join('chat', 'room');
      const p = silo.getGrain(Producer, 'p');
      for (let i = 0; i < 30; i++) await p.send('chat', 'room', i);
      await p.sendBatch('orders', 'book-1', ['a', 'b', 'c']);
      await eventually('30 chat items', () => received.get('n1')?.length === 30);
      await eventually('3 orders', () => orders.length === 3);
      assert.deepEqual(
        received.get('n1'),
        Array.from({ length: 30 }, (_, i) => i),
      );
      assert.deepEqual(
        orders.map((o) => o.item),
        ['a', 'b', 'c'],
      );
      const seq = orders[0]!.token.sequence;
      assert.ok(seq > 0, 'tokens carry the JetStream sequence');
      assert.deepEqual(
        orders.map((o) => [o.token.sequence, o.token.index]),
        [
          [seq, 0],
          [seq, 1],
          [seq, 2],
        ],
      );
      await eventually('every item acknowledged', async () => (await pending(id)) === 0);
    } finally {
      await silo.stop();
    }
  });

  it('hands an item a crashed silo had not finished to the next silo, and only that item', async () => {
    orders.length = 0;
    const id = clusterId();
    const options = {
      clusterId: id,
      grains: [OrderBook],
      logger: silentLogger(),
      streams: { [PROVIDER]: natsStreams({ servers: NATS, queues: 2, ackWaitMs: 1000 }) },
    };
    gate.item = 'held';
    gate.started = false;
    const first = await Silo.start(options);
    const s = first.getStream(PROVIDER, 'orders', 'book-2');
    await s.publish('done-before');
    await eventually('the first item delivered', () => orders.length === 1);
    await s.publish('held');
    await eventually('the held item is being delivered', () => gate.started);
    await first.abort();
    gate.item = undefined;
    gate.release?.();
    orders.length = 0;
    const second = await Silo.start(options);
    try {
      await eventually('the held item came again', () => orders.some((o) => o.item === 'held'), 10_000);
      assert.deepEqual(
        orders.map((o) => o.item),
        ['held'],
        'only the unacknowledged item is handed out again',
      );
      await eventually('acknowledged by the second silo', async () => (await pending(id)) === 0);
    } finally {
      await second.stop();
    }
  });

  it('does not acknowledge what a silo had not delivered when it stops gracefully: the next silo delivers it', async () => {
    orders.length = 0;
    const id = clusterId();
    const options = {
      clusterId: id,
      grains: [OrderBook],
      logger: silentLogger(),
      deactivationTimeoutMs: 100,
      streams: { [PROVIDER]: natsStreams({ servers: NATS, queues: 2, ackWaitMs: 1000 }) },
    };
    gate.item = 'in delivery at stop';
    gate.started = false;
    const first = await Silo.start(options);
    await first.getStream(PROVIDER, 'orders', 'book-4').publish('in delivery at stop');
    await eventually('the item is being delivered', () => gate.started);
    await first.stop();
    gate.item = undefined;
    gate.release?.();
    orders.length = 0;
    const second = await Silo.start(options);
    try {
      await eventually(
        'the next silo delivered it',
        () => orders.some((o) => o.item === 'in delivery at stop'),
        10_000,
      );
      await eventually('acknowledged by the second silo', async () => (await pending(id)) === 0);
    } finally {
      await second.stop();
    }
  });

  it('rewinds a new subscription to a token: the history from it first, then the live items, in order', async () => {
    resetLogs();
    const id = clusterId();
    const silo = await Silo.start({
      clusterId: id,
      grains: [Producer, Consumer],
      logger: silentLogger(),
      streams: { [PROVIDER]: natsStreams({ servers: NATS, queues: 2 }) },
    });
    try {
      await silo.getGrain(Consumer, 'early').join('chat', 'history');
      const p = silo.getGrain(Producer, 'p');
      await p.send('chat', 'history', 'a');
      await p.sendBatch('chat', 'history', ['b', 'c']);
      await p.send('chat', 'history', 'd');
      await eventually('the early subscriber has four', () => received.get('early')?.length === 4);
      const fromB = tokensSeen.get('early')![1]!;
      await silo.getGrain(Consumer, 'late').joinFrom('chat', 'history', fromB);
      await p.send('chat', 'history', 'e');
      await eventually('the late subscriber has four', () => received.get('late')?.length === 4);
      assert.deepEqual(received.get('late'), ['b', 'c', 'd', 'e']);
      await p.send('chat', 'history', 'f');
      await eventually('and the next live one', () => received.get('late')?.length === 5);
      assert.deepEqual(received.get('late'), ['b', 'c', 'd', 'e', 'f']);
      assert.deepEqual(received.get('early'), ['a', 'b', 'c', 'd', 'e', 'f']);
    } finally {
      await silo.stop();
    }
  });

  it('refuses bad options, naming them', () => {
    assert.throws(
      () => natsStreams({ servers: [] }),
      (e: unknown) => e instanceof ConfigurationError && /servers/.test(e.message),
    );
    assert.throws(
      () => natsStreams({ servers: NATS, queues: 0 }),
      (e: unknown) => e instanceof ConfigurationError && /queues must be a whole number from 1/.test(e.message),
    );
    assert.throws(
      () => natsStreams({ servers: NATS, prefix: 'a.b' }),
      (e: unknown) => e instanceof ConfigurationError && /prefix/.test(e.message),
    );
  });

  it('fails the silo start with a StreamError naming the server when NATS cannot be reached', async () => {
    const port = await freePort();
    await assert.rejects(
      Silo.start({
        grains: [OrderBook],
        logger: silentLogger(),
        streams: { [PROVIDER]: natsStreams({ servers: `127.0.0.1:${port}`, connectTimeoutMs: 500 }) },
      }),
      (e: unknown) => e instanceof StreamError && e.message.includes(`127.0.0.1:${port}`),
    );
  });
});

describe('nats streams when NATS itself restarts', () => {
  let server: ChildProcess | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'granary-nats-'));
  after(() => {
    server?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  async function startNats(port: number): Promise<ChildProcess> {
    const p = spawn('/usr/sbin/nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir], {
      stdio: 'ignore',
    });
    await eventually(
      'the test NATS server listens',
      async () => {
        try {
          const nc = await connect({ servers: `127.0.0.1:${port}`, timeout: 200 });
          await nc.close();
          return true;
        } catch {
          return false;
        }
      },
      10_000,
    );
    return p;
  }

  it('fails publishes with StreamError while it is down, and delivers again once it is back, with no silo restart', async () => {
    orders.length = 0;
    const port = await freePort();
    server = await startNats(port);
    const silo = await Silo.start({
      grains: [OrderBook],
      logger: silentLogger(),
      streams: { [PROVIDER]: natsStreams({ servers: `127.0.0.1:${port}`, publishTimeoutMs: 500 }) },
    });
    try {
      const s = silo.getStream(PROVIDER, 'orders', 'book-3');
      await s.publish('before');
      await eventually('delivered before the restart', () => orders.length === 1);
      server.kill('SIGKILL');
      await new Promise((r) => server!.once('exit', r));
      await assert.rejects(s.publish('while down'), StreamError);
      server = await startNats(port);
      await eventually(
        'a publish is accepted again',
        async () => {
          try {
            await s.publish('after');
            return true;
          } catch {
            return false;
          }
        },
        15_000,
      );
      await eventually('delivered after the restart', () => orders.some((o) => o.item === 'after'), 15_000);
      assert.equal(orders[0]!.item, 'before');
    } finally {
      await silo.stop();
    }
  });
});
