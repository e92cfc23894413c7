// Broadcast channels: fire-and-forget fan-out to the grains implicitly
// subscribed to a namespace, from silo code, grains and clients, with no
// stream provider configured at all.

import { describe, it, after, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConfigurationError,
  Grain,
  Silo,
  grain,
  implicitChannelSubscription,
  silentLogger,
  type ChannelId,
} from 'granary';
import { TestCluster } from 'granary/testing';
import { eventually } from '../helpers.ts';

const heard: Array<{ grain: string; item: unknown; channel: ChannelId }> = [];

@grain('configListener')
@implicitChannelSubscription('config')
class ConfigListener extends Grain {
  async onChannelItem(item: unknown, channel: ChannelId): Promise<void> {
    heard.push({ grain: `configListener/${this.key}`, item, channel });
  }
}

@grain('auditListener')
@implicitChannelSubscription('config')
class AuditListener extends Grain {
  async onChannelItem(item: unknown, channel: ChannelId): Promise<void> {
    if (item === 'bad') throw new RangeError('audit refuses bad items');
    heard.push({ grain: `auditListener/${this.key}`, item, channel });
  }
}

@grain('channelSender')
class Sender extends Grain {
  async tell(key: string, item: unknown): Promise<void> {
    await this.getChannel('config', key).publish(item);
  }
}

describe('broadcast channels', () => {
  let silo: Silo;
  before(async () => {
    silo = await Silo.start({ grains: [ConfigListener, AuditListener, Sender], logger: silentLogger() });
  });
  after(() => silo.stop());

  it('reaches every grain type listening on the namespace, the one with the channel key, from silo code and grains', async () => {
    heard.length = 0;
    await silo.getChannel('config', 'eu-1').publish({ limit: 5 });
    await silo.getGrain(Sender, 's').tell('eu-2', 'from a grain');
    await eventually('four deliveries', () => heard.length === 4);
    const got = heard.map((h) => `${h.grain}:${JSON.stringify(h.item)}`).sort();
    assert.deepEqual(got, [
      'auditListener/eu-1:{"limit":5}',
      'auditListener/eu-2:"from a grain"',
      'configListener/eu-1:{"limit":5}',
      'configListener/eu-2:"from a grain"',
    ]);
    assert.deepEqual(heard.find((h) => h.grain === 'configListener/eu-1')?.channel, {
      namespace: 'config',
      key: 'eu-1',
    });
  });

  it('does not wait for the listeners, and one that throws does not keep the item from the others', async () => {
    heard.length = 0;
    await silo.getChannel('config', 'eu-3').publish('bad');
    await eventually('the listener that takes it got it', () => heard.length === 1);
    assert.equal(heard[0]?.grain, 'configListener/eu-3');
  });

  it('sends nothing on a namespace no grain listens to', async () => {
    heard.length = 0;
    await silo.getChannel('nobody', 'x').publish(1);
    await silo.getChannel('config', 'eu-4').publish(2);
    await eventually('the later item arrived', () => heard.length === 2);
    assert.ok(heard.every((h) => h.item === 2));
  });

  it('refuses a listening grain class with no onChannelItem', () => {
    @grain('deafListener')
    @implicitChannelSubscription('config')
    class Deaf extends Grain {}
    return assert.rejects(
      Silo.start({ grains: [Deaf], logger: silentLogger() }),
      (e: unknown) => e instanceof ConfigurationError && /onChannelItem/.test(e.message),
    );
  });
});

describe('broadcast channels from a client', () => {
  it('reach the listening grains on any silo', async () => {
    const c = await TestCluster.start({ silos: 2, grains: [ConfigListener, AuditListener, Sender] });
    try {
      heard.length = 0;
      for (let i = 0; i < 6; i++) await c.client.getChannel('config', `k${i}`).publish(i);
      await eventually('twelve deliveries', () => heard.length === 12);
    } finally {
      await c.stop();
    }
  });
});
