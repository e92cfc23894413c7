import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterClient, Grain, grain, Silo, SiloStoppedError, silentLogger } from 'granary';
import { memoryMembership, MemoryMembershipStore } from '../../src/providers/memory/membership.ts';
import type { MembershipTable, SiloEntry, TableVersion } from '../../src/membership/table.ts';

@grain('lateCall')
class LateCall extends Grain {
  async ping(): Promise<string> {
    return 'ran';
  }
}

/** A membership table whose leave (the update to Dead) waits until the test opens the gate. */
function gatedLeave(inner: MembershipTable): { table: MembershipTable; leaving: Promise<void>; open(): void } {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let reached!: () => void;
  const leaving = new Promise<void>((r) => (reached = r));
  const table: MembershipTable = {
    get kind() {
      return inner.kind;
    },
    init: (ctx) => inner.init(ctx),
    readAll: () => inner.readAll(),
    insert: (entry, next) => inner.insert(entry, next),
    async update(entry: SiloEntry, etag: string, next: TableVersion): Promise<boolean> {
      if (entry.status === 'Dead') {
        reached();
        await gate;
      }
      return inner.update(entry, etag, next);
    },
    updateIAmAlive: (address, generation, at) => inner.updateIAmAlive(address, generation, at),
    cleanupDefunct: (before) => inner.cleanupDefunct(before),
    deleteCluster: () => inner.deleteCluster(),
    close: () => inner.close(),
  };
  return { table, leaving, open };
}

describe('a gateway late in a graceful stop', () => {
  const open: Array<{ stop(): Promise<void> } | { close(): Promise<void> }> = [];
  after(async () => {
    for (const x of open) await ('stop' in x ? x.stop() : x.close()).catch(() => undefined);
  });

  it('answers a client call that arrives after the drain with SiloStoppedError, without running it', async () => {
    const store = new MemoryMembershipStore();
    const gated = gatedLeave(memoryMembership({ store }));
    const silo = await Silo.start({
      clusterId: 'late',
      grains: [LateCall],
      port: 0,
      gatewayPort: 0,
      membership: gated.table,
      logger: silentLogger(),
    });
    const client = await ClusterClient.connect({
      clusterId: 'late',
      gateways: [silo.cluster?.gatewayAddress as string],
      responseTimeoutMs: 3000,
      logger: silentLogger(),
    });
    open.push(client);
    assert.equal(await client.getGrain(LateCall, 'a').ping(), 'ran');
    const stopped = silo.stop();
    // The silo drained and is leaving the table: its gateway is the client's only one, so the client still uses it.
    await gated.leaving;
    try {
      await assert.rejects(client.getGrain(LateCall, 'b').ping(), (e: unknown) => {
        assert.ok(e instanceof SiloStoppedError, `a SiloStoppedError, got ${String(e)}`);
        assert.match(e.message, /through another gateway/);
        return true;
      });
    } finally {
      gated.open();
      await stopped;
    }
  });
});
