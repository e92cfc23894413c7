import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { Grain, grain, placement, silentLogger, type Silo } from 'granary';
import { TestCluster } from 'granary/testing';
import { scrape, value } from './scrape.ts';

/** Placed on a silo other than the caller's, so every call crosses the wire. */
@grain('obs.remote')
@placement({ name: 'elsewhere', place: (_g, silos, local) => silos.find((s) => s !== local) ?? local })
class Remote extends Grain {
  async echo(s: string): Promise<string> {
    return s;
  }
}

describe('the metrics of a cluster of two silos', () => {
  let cluster: TestCluster | undefined;
  after(async () => {
    await cluster?.stop();
  });

  it('count messages and bytes per peer silo, clients together, and the membership', async () => {
    cluster = await TestCluster.start({
      silos: 2,
      grains: [Remote],
      siloOptions: { httpPort: 0, logger: silentLogger() },
    });
    const [a, b] = cluster.silos as [Silo, Silo];
    for (let i = 0; i < 20; i++)
      assert.equal(await a.getGrain(Remote, `r-${i}`).echo('x'.repeat(100)), 'x'.repeat(100));
    for (let i = 0; i < 5; i++) await cluster.client.getGrain(Remote, `c-${i}`).echo('y');

    const fromA = await scrape(a);
    const peerB = { peer: b.info.address };
    for (const name of [
      'granary_messaging_sent_messages_total',
      'granary_messaging_received_messages_total',
      'granary_messaging_sent_bytes_total',
      'granary_messaging_received_bytes_total',
    ]) {
      const v = value(fromA, name, peerB) ?? 0;
      assert.ok(v > 0, `${name}{peer="${b.info.address}"} on ${a.info.address} is ${v}`);
    }
    // At least the 20 requests went from a to b, each 100 bytes of argument and more.
    assert.ok((value(fromA, 'granary_messaging_sent_messages_total', peerB) ?? 0) >= 20);
    assert.ok((value(fromA, 'granary_messaging_sent_bytes_total', peerB) ?? 0) >= 20 * 100);
    // b ran a's 20 calls (and maybe some of the client's).
    const fromB = await scrape(b);
    assert.ok((value(fromB, 'granary_app_requests_total', { type: 'obs.remote', method: 'echo' }) ?? 0) >= 20);
    assert.ok((value(fromB, 'granary_messaging_received_messages_total', { peer: a.info.address }) ?? 0) >= 20);

    // The client's calls reached some gateway, counted under peer="client", never the client's own id.
    const clientFrames =
      (value(fromA, 'granary_messaging_received_messages_total', { peer: 'client' }) ?? 0) +
      (value(fromB, 'granary_messaging_received_messages_total', { peer: 'client' }) ?? 0);
    assert.ok(clientFrames >= 5, `gateways received ${clientFrames} frames from clients`);
    assert.ok(!fromA.includes(cluster.client.id) && !fromB.includes(cluster.client.id), 'a client id in the metrics');

    for (const text of [fromA, fromB]) {
      assert.equal(value(text, 'granary_membership_active_silos'), 2);
      assert.ok((value(text, 'granary_membership_changes_total') ?? 0) >= 1);
      assert.equal(value(text, 'granary_membership_table_reachable'), 1);
    }
    const entries =
      (value(fromA, 'granary_directory_partition_size') ?? 0) + (value(fromB, 'granary_directory_partition_size') ?? 0);
    assert.equal(entries, 25, 'every activation has one directory entry, on one of the two silos');
  });
});
