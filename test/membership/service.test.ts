import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MembershipService, type Prober } from '../../src/membership/service.ts';
import { memoryMembership, MemoryMembershipStore } from '../../src/providers/memory/membership.ts';
import type { MembershipTable } from '../../src/membership/table.ts';
import { MembershipError, silentLogger } from 'granary';
import { eventually } from '../helpers.ts';

const fast = {
  iAmAliveIntervalMs: 50,
  tableRefreshIntervalMs: 30,
  probeIntervalMs: 30,
  probeTimeoutMs: 30,
  missedProbesLimit: 2,
  joinTimeoutMs: 500,
};

/** A network where some addresses are unreachable. */
class FakeNet implements Prober {
  readonly down = new Set<string>();
  async probe(address: string): Promise<boolean> {
    return !this.down.has(address);
  }
  async probeIndirect(_via: string, target: string): Promise<boolean> {
    return !this.down.has(target);
  }
}

async function table(store: MemoryMembershipStore, clusterId = 'c'): Promise<MembershipTable> {
  const t = memoryMembership({ store });
  await t.init({ clusterId, logger: silentLogger() });
  return t;
}

describe('membership service', () => {
  it('joins silos into one view, declares a silo that stops answering dead, and that silo stops itself', async () => {
    const store = new MemoryMembershipStore();
    const net = new FakeNet();
    const dead: string[] = [];
    const svcs: MembershipService[] = [];
    for (let i = 1; i <= 3; i++) {
      const s = new MembershipService(
        await table(store),
        { address: `127.0.0.1:${i}`, generation: 1, gatewayAddress: null },
        net,
        silentLogger(),
        fast,
        () => dead.push(`127.0.0.1:${i}`),
      );
      await s.join();
      svcs.push(s);
    }
    await Promise.all(svcs.map((s) => s.refresh()));
    for (const s of svcs)
      assert.deepEqual([...s.view.active.keys()].sort(), ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3']);
    net.down.add('127.0.0.1:3');
    await eventually(
      "silo 3 declared dead in the others' views",
      () => svcs.slice(0, 2).every((s) => !s.view.active.has('127.0.0.1:3') && s.view.dead.has('127.0.0.1:3')),
      5000,
    );
    // Silo 3 itself (it can still read the table) learns it was declared dead and stops.
    await eventually('silo 3 stops itself', () => dead.includes('127.0.0.1:3'), 5000);
    for (const s of svcs) s.stop();
  });

  it('needs a vote from another silo before declaring dead, so one silo alone cannot kill another in a larger cluster', async () => {
    const store = new MemoryMembershipStore();
    const net = new FakeNet();
    const svcs: MembershipService[] = [];
    for (let i = 1; i <= 3; i++) {
      const s = new MembershipService(
        await table(store),
        { address: `127.0.0.1:${i}`, generation: 1, gatewayAddress: null },
        net,
        silentLogger(),
        { ...fast, numProbedSilos: 1 },
        () => {},
      );
      await s.join();
      svcs.push(s);
    }
    // Every silo watches one successor: only one silo probes any given silo, so one vote is all a silo gets.
    net.down.add('127.0.0.1:2');
    await eventually('a vote against silo 2', async () => {
      const snap = await (await table(store)).readAll();
      const row = snap.entries.find((e) => e.entry.address === '127.0.0.1:2');
      return (row?.entry.suspicions.length ?? 0) >= 1;
    });
    const snap = await (await table(store)).readAll();
    assert.equal(snap.entries.find((e) => e.entry.address === '127.0.0.1:2')?.entry.status, 'Active');
    for (const s of svcs) s.stop();
  });

  it('refuses to join when an active silo with a fresh heartbeat cannot be reached', async () => {
    const store = new MemoryMembershipStore();
    const net = new FakeNet();
    // A heartbeat every second: fresh for three, however loaded the machine is.
    const steady = { ...fast, iAmAliveIntervalMs: 1000 };
    const a = new MembershipService(
      await table(store),
      { address: '127.0.0.1:1', generation: 1, gatewayAddress: null },
      net,
      silentLogger(),
      steady,
      () => {},
    );
    await a.join();
    net.down.add('127.0.0.1:1');
    const b = new MembershipService(
      await table(store),
      { address: '127.0.0.1:2', generation: 1, gatewayAddress: null },
      net,
      silentLogger(),
      steady,
      () => {},
    );
    await assert.rejects(b.join(), (e: unknown) => e instanceof MembershipError && /127\.0\.0\.1:1/.test(e.message));
    a.stop();
  });

  it('declares nobody dead while the table is unreachable, and keeps the last view', async () => {
    const store = new MemoryMembershipStore();
    const net = new FakeNet();
    let broken = false;
    const wrap = async (): Promise<MembershipTable> => {
      const t = await table(store);
      const fail = () => Promise.reject(new MembershipError('store down'));
      return {
        kind: 'flaky',
        init: (c) => t.init(c),
        readAll: () => (broken ? fail() : t.readAll()),
        insert: (e, v) => (broken ? fail() : t.insert(e, v)),
        update: (e, et, v) => (broken ? fail() : t.update(e, et, v)),
        updateIAmAlive: (a, g, at) => (broken ? fail() : t.updateIAmAlive(a, g, at)),
        cleanupDefunct: (b) => t.cleanupDefunct(b),
        deleteCluster: () => t.deleteCluster(),
        close: () => t.close(),
      };
    };
    const svcs: MembershipService[] = [];
    for (let i = 1; i <= 2; i++) {
      const s = new MembershipService(
        await wrap(),
        { address: `127.0.0.1:${i}`, generation: 1, gatewayAddress: null },
        net,
        silentLogger(),
        fast,
        () => {},
      );
      await s.join();
      svcs.push(s);
    }
    await Promise.all(svcs.map((s) => s.refresh()));
    broken = true;
    net.down.add('127.0.0.1:2');
    await eventually('silo 1 notices the table is unreachable', () => !(svcs[0] as MembershipService).tableReachable);
    await new Promise((r) => setTimeout(r, 300));
    assert.ok((svcs[0] as MembershipService).view.active.has('127.0.0.1:2'), 'the view kept silo 2');
    broken = false;
    await eventually(
      'silo 2 declared dead once the table is back',
      () => !(svcs[0] as MembershipService).view.active.has('127.0.0.1:2'),
      5000,
    );
    for (const s of svcs) s.stop();
  });
});
