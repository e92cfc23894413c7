import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Grain, grain, memoryStorage, type StorageProvider } from 'granary';
import { TestCluster, waitFor } from 'granary/testing';
import { Connector } from '../../src/transport/connector.ts';
import { Frame, encodeSystemCall } from '../../src/messaging/protocol.ts';

@grain('closeThing')
class Thing extends Grain {
  readonly box = this.persistentState('box', { initial: () => ({ n: 0 }) });
  async get(): Promise<number> {
    return this.box.state.n;
  }
}

describe('a system call whose connection closes while it runs', () => {
  it('drops its answer quietly: no unhandled rejection, and the silo goes on serving', async () => {
    // A storage provider whose reads of one record wait for the test, so the
    // dashboard's grain lookup is still running when its caller goes away.
    const inner = memoryStorage();
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    let reading = false;
    let armed = false;
    const gated: StorageProvider = {
      kind: inner.kind,
      init: (ctx) => inner.init(ctx),
      read: async (address) => {
        if (armed && address.grainKey === 'held') {
          reading = true;
          await gate;
        }
        return inner.read(address);
      },
      write: (address, state, etag) => inner.write(address, state, etag),
      clear: (address, etag) => inner.clear(address, etag),
      close: () => inner.close(),
    };
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    const c = await TestCluster.start({
      silos: 1,
      grains: [Thing],
      siloOptions: { dashboard: true, storage: { default: gated } },
    });
    try {
      const silo = c.silos[0];
      assert.ok(silo !== undefined);
      // Active, so the dashboard knows the grain's states; its next read of them waits.
      assert.equal(await c.client.getGrain(Thing, 'held').get(), 0);
      armed = true;
      const raw = new Connector({
        hello: { clusterId: c.clusterId, address: 'raw-client', generation: 1, role: 'client' },
        handler: { onFrame: () => true },
      });
      const conn = await raw.get(silo.cluster?.gatewayAddress as string);
      let closed = false;
      conn.once('close', () => (closed = true));
      conn.send(Frame.SystemCall, encodeSystemCall(1, 'dashboard.grain', ['closeThing', 'held']));
      conn.flush();
      await waitFor('the lookup to reach storage', () => reading);
      await raw.close();
      await waitFor('the connection to close', () => closed);
      // Give the gateway's side of the connection time to see the close too.
      await waitFor('the gateway to see no client', async () => (await c.client.clusterStatus()) !== undefined);
      release();
      // The answer would have gone out now; let its turn and the next ones run.
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      assert.deepEqual(unhandled, []);
      assert.equal(await c.client.getGrain(Thing, 'other').get(), 0);
    } finally {
      release();
      await c.stop();
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
