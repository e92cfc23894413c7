// Bad days on NATS streams: a silo that pulls queues dies under load (killed:
// no goodbye), and a subscriber that is slow. Against the real NATS server.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { Grain, Silo, grain, implicitSubscription, silentLogger, type StreamId } from 'granary';
import { natsStreams } from 'granary/nats';
import { TestCluster } from 'granary/testing';
import { eventually } from '../helpers.ts';
import { NATS, natsClusterId } from './nats-support.ts';

const clusterId = (): string => natsClusterId();

/** How often each item was delivered, by `stream key:item`. */
const deliveries = new Map<string, number>();

@grain('loadRecorder')
@implicitSubscription('load')
class Recorder extends Grain {
  async onStreamItem(item: number, _token: unknown, stream: StreamId): Promise<void> {
    const k = `${stream.key}:${item}`;
    deliveries.set(k, (deliveries.get(k) ?? 0) + 1);
  }
}

/** Items the slow subscriber holds, and the ones it let through. */
const slow = { release: undefined as undefined | (() => void), held: 0, fast: [] as number[], open: false };

@grain('slowOrFast')
@implicitSubscription('mixed')
class SlowOrFast extends Grain {
  async onStreamItem(item: number, _token: unknown, stream: StreamId): Promise<void> {
    if (stream.key === 'slow' && !slow.open) {
      slow.held++;
      await new Promise<void>((r) => {
        const prev = slow.release;
        slow.release = () => {
          prev?.();
          r();
        };
      });
      return;
    }
    if (stream.key === 'fast') slow.fast.push(item);
  }
}

/** Lets the held item go (a function, so the compiler does not narrow `slow.release` away). */
function releaseSlow(): void {
  const r = slow.release;
  slow.release = undefined;
  r?.();
}

describe('nats streams on bad days', () => {
  it('delivers every acknowledged publish at least once after a silo pulling queues is killed under load', async (t) => {
    deliveries.clear();
    const c = await TestCluster.start({
      silos: 2,
      clusterId: clusterId(),
      grains: [Recorder],
      siloOptions: { streams: { events: natsStreams({ servers: NATS, queues: 4, ackWaitMs: 1000 }) } },
    });
    try {
      const acked: string[] = [];
      let failed = 0;
      const publishRound = async (from: number, to: number): Promise<void> => {
        await Promise.all(
          Array.from({ length: 20 }, async (_, s) => {
            const stream = c.client.getStream<number>('events', 'load', `s${s}`);
            for (let i = from; i < to; i++) {
              try {
                await stream.publish(i);
                acked.push(`s${s}:${i}`);
              } catch {
                failed++; // not acknowledged: no promise was made for it
              }
            }
          }),
        );
      };
      await publishRound(0, 10);
      const killed = publishRound(10, 25);
      await c.killSilo(1);
      await killed;
      await publishRound(25, 35);
      await eventually(
        'every acknowledged publish delivered',
        () => acked.every((k) => (deliveries.get(k) ?? 0) > 0),
        30_000,
      );
      const duplicates = [...deliveries.values()].reduce((n, v) => n + (v - 1), 0);
      t.diagnostic(
        `acknowledged ${acked.length}, not acknowledged ${failed}, delivered ${deliveries.size} distinct, duplicates ${duplicates}`,
      );
      assert.ok(acked.length >= 20 * 25, 'publishes through the surviving gateway are acknowledged');
    } finally {
      await c.stop();
    }
  });

  it('holds no more than the window of a queue while one subscriber is stuck, and lets its other streams through once it moves', async () => {
    slow.release = undefined;
    slow.held = 0;
    slow.fast = [];
    slow.open = false;
    const id = clusterId();
    const silo = await Silo.start({
      clusterId: id,
      grains: [SlowOrFast],
      logger: silentLogger(),
      deactivationTimeoutMs: 100,
      // One queue: the slow stream and the fast one share it.
      streams: { events: natsStreams({ servers: NATS, queues: 1, maxAckPending: 50 }) },
    });
    try {
      const slowStream = silo.getStream<number>('events', 'mixed', 'slow');
      for (let i = 0; i < 200; i++) await slowStream.publish(i);
      const fast = silo.getStream<number>('events', 'mixed', 'fast');
      for (let i = 0; i < 20; i++) await fast.publish(i);
      await eventually('the slow subscriber holds its first item', () => slow.held === 1);
      // The broker hands the silo at most the window: the slow stream's 200 cannot all be here.
      const nc = await connect({ servers: NATS });
      try {
        const jsm = await jetstreamManager(nc);
        const ci = await jsm.consumers.info(`granary_${id}_events`, 'q0');
        assert.ok(ci.num_ack_pending <= 50, `at most the window is out (${ci.num_ack_pending})`);
        assert.ok(ci.num_pending > 0, 'the rest waits in the broker, not in the silo');
      } finally {
        await nc.close();
      }
      assert.deepEqual(slow.fast, [], 'the stuck stream holds the whole window (one queue shares it)');
      slow.open = true;
      releaseSlow();
      await eventually('the fast stream went through once the window moved', () => slow.fast.length === 20, 20_000);
      assert.deepEqual(
        slow.fast,
        Array.from({ length: 20 }, (_, i) => i),
      );
    } finally {
      slow.open = true;
      releaseSlow();
      await silo.stop();
    }
  });
});
