// The membership service of one silo, driven by a ManualClock: joining,
// missed probes, votes and their expiry, a stale I-am-alive, a join that
// cannot reach an active silo, and a table that goes away, without waiting.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MembershipService, type MembershipServiceOptions, type Prober } from '../../src/membership/service.ts';
import { memoryMembership, MemoryMembershipStore } from '../../src/providers/memory/membership.ts';
import type { MembershipTable, SiloEntry } from '../../src/membership/table.ts';
import { MembershipError, silentLogger } from 'granary';
import { ManualClock } from 'granary/testing';

const fast = {
  iAmAliveIntervalMs: 50,
  tableRefreshIntervalMs: 30,
  probeIntervalMs: 30,
  probeTimeoutMs: 30,
  missedProbesLimit: 2,
  joinTimeoutMs: 500,
};

/** A network where some addresses are unreachable; counts the direct probes of each address. */
class FakeNet implements Prober {
  readonly down = new Set<string>();
  readonly probes = new Map<string, number>();
  async probe(address: string): Promise<boolean> {
    this.probes.set(address, (this.probes.get(address) ?? 0) + 1);
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

/** The row of `address` as the table holds it now. */
async function row(store: MemoryMembershipStore, address: string): Promise<SiloEntry | undefined> {
  const snap = await (await table(store)).readAll();
  return snap.entries.find((e) => e.entry.address === address)?.entry;
}

/** Starts `n` services on one table and one clock, each joined. */
async function cluster(
  n: number,
  store: MemoryMembershipStore,
  net: FakeNet,
  options: MembershipServiceOptions,
  dead: string[] = [],
): Promise<MembershipService[]> {
  const svcs: MembershipService[] = [];
  for (let i = 1; i <= n; i++) {
    const s = new MembershipService(
      await table(store),
      { address: `127.0.0.1:${i}`, generation: 1, gatewayAddress: null },
      net,
      silentLogger(),
      options,
      () => dead.push(`127.0.0.1:${i}`),
    );
    await s.join();
    svcs.push(s);
  }
  await Promise.all(svcs.map((s) => s.refresh()));
  return svcs;
}

describe('membership service', () => {
  it('joins silos into one view, declares a silo that stops answering dead, and that silo stops itself', async () => {
    const clock = new ManualClock();
    const store = new MemoryMembershipStore();
    const net = new FakeNet();
    const dead: string[] = [];
    const svcs = await cluster(3, store, net, { ...fast, clock }, dead);
    for (const s of svcs)
      assert.deepEqual([...s.view.active.keys()].sort(), ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3']);
    net.down.add('127.0.0.1:3');
    await clock.advanceUntil(
      () => svcs.slice(0, 2).every((s) => !s.view.active.has('127.0.0.1:3') && s.view.dead.has('127.0.0.1:3')),
      { what: "silo 3 declared dead in the others' views", maxMs: 5000 },
    );
    // Silo 3 itself (it can still read the table) learns it was declared dead and stops.
    await clock.advanceUntil(() => dead.includes('127.0.0.1:3'), { what: 'silo 3 stops itself', maxMs: 5000 });
    for (const s of svcs) s.stop();
    assert.equal(clock.pendingTimers, 0, 'stopped services leave no timer behind');
  });

  it("keeps a stopping silo on the directory's ring, probes it, and declares it dead if it stops answering", async () => {
    const clock = new ManualClock();
    const store = new MemoryMembershipStore();
    const net = new FakeNet();
    const svcs = await cluster(3, store, net, { ...fast, clock });
    const [s1, s2, s3] = svcs as [MembershipService, MembershipService, MembershipService];
    const all = ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3'];
    await s3.shuttingDown();
    await Promise.all([s1.refresh(), s2.refresh()]);
    for (const s of [s1, s2]) {
      assert.deepEqual([...s.view.active.keys()].sort(), all.slice(0, 2), 'a stopping silo is not active');
      assert.deepEqual(s.view.ring.members, all.slice(0, 2));
      assert.deepEqual(s.view.directoryRing.members, all, "but keeps its part of the directory's ring");
      assert.ok(s.view.leaving.has('127.0.0.1:3'));
    }
    assert.deepEqual(s3.view.directoryRing.members, all, 'its own view too');
    // It crashes while it stops: the others probe it, and declare it dead.
    const version = s1.view.version;
    net.down.add('127.0.0.1:3');
    await clock.advanceUntil(() => [s1, s2].every((s) => s.view.dead.has('127.0.0.1:3')), {
      what: 'the stopping silo declared dead',
      maxMs: 5000,
    });
    assert.ok((net.probes.get('127.0.0.1:3') ?? 0) > 0, 'it was probed');
    for (const s of [s1, s2]) {
      assert.deepEqual(s.view.directoryRing.members, all.slice(0, 2), "and it leaves the directory's ring");
      assert.ok(!s.view.leaving.has('127.0.0.1:3'));
    }
    assert.ok(s1.view.version > version, 'in a new view, though the active set did not change');
    assert.equal((await row(store, '127.0.0.1:3'))?.status, 'Dead');
    for (const s of svcs) s.stop();
  });

  it('deletes the rows of silos dead for longer than defunctSiloExpirationMs, and keeps the newer ones', async () => {
    const clock = new ManualClock();
    const store = new MemoryMembershipStore();
    const net = new FakeNet();
    const options = { ...fast, clock, defunctSiloExpirationMs: 2000, defunctSiloCleanupPeriodMs: 100 };
    const svcs = await cluster(3, store, net, options);
    net.down.add('127.0.0.1:3');
    await clock.advanceUntil(async () => (await row(store, '127.0.0.1:3'))?.status === 'Dead', {
      what: 'silo 3 declared dead',
      maxMs: 5000,
    });
    const diedAt = (await row(store, '127.0.0.1:3'))?.iAmAliveAt as number;
    // Several cleanup rounds within the expiry: the row stays, for operators to read.
    await clock.advanceUntil(() => clock.now() >= diedAt + 1500, { what: 'most of the expiry', maxMs: 5000 });
    assert.equal((await row(store, '127.0.0.1:3'))?.status, 'Dead');
    await clock.advanceUntil(async () => (await row(store, '127.0.0.1:3')) === undefined, {
      what: "silo 3's row deleted once it is older than the expiry",
      maxMs: 5000,
    });
    assert.equal((await row(store, '127.0.0.1:1'))?.status, 'Active', 'live rows are never deleted');
    for (const s of svcs) s.stop();
  });

  it('votes against a silo only after missedProbesLimit probe rounds in a row, and declares it dead at numVotesForDeathDeclaration votes', async () => {
    const clock = new ManualClock();
    const store = new MemoryMembershipStore();
    const net = new FakeNet();
    const options = { ...fast, missedProbesLimit: 3, numProbedSilos: 2, numVotesForDeathDeclaration: 2, clock };
    const svcs = await cluster(3, store, net, options);
    net.down.add('127.0.0.1:3');
    for (let round = 1; round <= 2; round++) {
      await clock.advanceAsync(fast.probeIntervalMs);
      const r = await row(store, '127.0.0.1:3');
      assert.deepEqual(r?.suspicions, [], `no vote after ${round} missed probe rounds`);
      assert.equal(r?.status, 'Active');
    }
    await clock.advanceAsync(fast.probeIntervalMs);
    const r = await row(store, '127.0.0.1:3');
    assert.equal(r?.status, 'Dead', 'declared dead in the round that missed the third probe');
    assert.deepEqual(r?.suspicions.map((v) => v.by).sort(), ['127.0.0.1:1@1', '127.0.0.1:2@1']);
    assert.ok(
      r?.suspicions.every((v) => v.at === clock.now()),
      'votes carry the time they were cast',
    );
    await clock.advanceAsync(fast.tableRefreshIntervalMs);
    for (const s of svcs.slice(0, 2)) assert.ok(s.view.dead.has('127.0.0.1:3') && !s.view.active.has('127.0.0.1:3'));
    for (const s of svcs) s.stop();
  });

  it('counts a vote only until deathVoteExpirationMs has passed', async () => {
    const expiry = 10_000;
    /** Silo 3 goes down with an earlier vote against it cast `age` ms ago; what becomes of it. */
    const outcome = async (age: number): Promise<SiloEntry | undefined> => {
      const clock = new ManualClock();
      const store = new MemoryMembershipStore();
      const net = new FakeNet();
      const options = { ...fast, missedProbesLimit: 1, numProbedSilos: 1, deathVoteExpirationMs: expiry, clock };
      const svcs = await cluster(3, store, net, options);
      const t = await table(store);
      const snap = await t.readAll();
      const old = snap.entries.find((e) => e.entry.address === '127.0.0.1:3');
      assert.ok(old !== undefined);
      const earlier = { by: '127.0.0.1:9@1', at: clock.now() - age };
      const written = await t.update({ ...old.entry, suspicions: [earlier] }, old.etag, {
        version: snap.version.version + 1,
        etag: snap.version.etag,
      });
      assert.ok(written);
      net.down.add('127.0.0.1:3');
      // One silo watches silo 3 (numProbedSilos 1): its vote is the only new one.
      await clock.advanceUntil(
        async () => (await row(store, '127.0.0.1:3'))?.suspicions.some((v) => v.by !== earlier.by) === true,
        { what: 'a vote against silo 3', maxMs: 5000 },
      );
      await clock.advanceAsync(fast.probeIntervalMs * 10); // ten more rounds of the same single voter
      for (const s of svcs) s.stop();
      return row(store, '127.0.0.1:3');
    };
    const fresh = await outcome(expiry - 1000);
    assert.equal(fresh?.status, 'Dead', 'a vote cast within deathVoteExpirationMs counts');
    const expired = await outcome(expiry + 1);
    assert.equal(expired?.status, 'Active', 'a vote older than deathVoteExpirationMs does not count');
    assert.deepEqual(
      expired?.suspicions.filter((v) => v.by === '127.0.0.1:9@1'),
      [],
      'the expired vote was dropped from the row',
    );
    assert.equal(expired?.suspicions.length, 1);
  });

  it('needs a vote from another silo before declaring dead, so one silo alone cannot kill another in a larger cluster', async () => {
    const clock = new ManualClock();
    const store = new MemoryMembershipStore();
    const net = new FakeNet();
    const svcs = await cluster(3, store, net, { ...fast, numProbedSilos: 1, clock });
    // Every silo watches one successor: only one silo probes any given silo, so one vote is all a silo gets.
    net.down.add('127.0.0.1:2');
    await clock.advanceUntil(async () => ((await row(store, '127.0.0.1:2'))?.suspicions.length ?? 0) >= 1, {
      what: 'a vote against silo 2',
      maxMs: 5000,
    });
    await clock.advanceAsync(fast.probeIntervalMs * 10); // ten more rounds: the one voter votes again and again
    const r = await row(store, '127.0.0.1:2');
    assert.equal(r?.status, 'Active');
    assert.equal(r?.suspicions.length, 1, 'a silo voting again replaces its own vote');
    for (const s of svcs) s.stop();
  });

  it('votes dead, while joining, an active silo it cannot reach whose I-am-alive is older than three intervals', async () => {
    const clock = new ManualClock();
    const store = new MemoryMembershipStore();
    const net = new FakeNet();
    const [a] = await cluster(1, store, net, { ...fast, clock });
    a?.stop(); // crashed: it writes no I-am-alive and its row still says Active
    net.down.add('127.0.0.1:1');
    clock.jump(fast.iAmAliveIntervalMs * 3 + 1);
    const b = new MembershipService(
      await table(store),
      { address: '127.0.0.1:2', generation: 1, gatewayAddress: null },
      net,
      silentLogger(),
      { ...fast, clock },
      () => {},
    );
    await b.join();
    assert.equal((await row(store, '127.0.0.1:1'))?.status, 'Dead');
    assert.deepEqual([...b.view.active.keys()], ['127.0.0.1:2']);
    b.stop();
  });

  it('refuses to join when an active silo with a fresh heartbeat cannot be reached, after joinTimeoutMs', async () => {
    const clock = new ManualClock();
    const store = new MemoryMembershipStore();
    const net = new FakeNet();
    const [a] = await cluster(1, store, net, { ...fast, clock });
    net.down.add('127.0.0.1:1'); // still running, writing its I-am-alive, but unreachable from the joining silo
    const b = new MembershipService(
      await table(store),
      { address: '127.0.0.1:2', generation: 1, gatewayAddress: null },
      net,
      silentLogger(),
      { ...fast, clock },
      () => {},
    );
    const start = clock.now();
    let settled = false;
    const joining = b.join().finally(() => (settled = true));
    const rejected = assert.rejects(
      joining,
      (e: unknown) => e instanceof MembershipError && /127\.0\.0\.1:1/.test(e.message),
    );
    await clock.advanceUntil(() => settled, { what: 'the join gives up', maxMs: 5000 });
    await rejected;
    assert.ok(clock.now() - start >= fast.joinTimeoutMs, 'it kept trying for joinTimeoutMs');
    assert.equal((await row(store, '127.0.0.1:1'))?.status, 'Active', 'the unreachable silo was not voted dead');
    assert.equal((await row(store, '127.0.0.1:2'))?.status, 'Dead', 'the silo that gave up marked itself dead');
    a?.stop();
  });

  it('declares nobody dead while the table is unreachable, and keeps the last view', async () => {
    const clock = new ManualClock();
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
        { ...fast, clock },
        () => {},
      );
      await s.join();
      svcs.push(s);
    }
    await Promise.all(svcs.map((s) => s.refresh()));
    const [one] = svcs;
    assert.ok(one !== undefined);
    broken = true;
    net.down.add('127.0.0.1:2');
    await clock.advanceUntil(() => !one.tableReachable, {
      what: 'silo 1 notices the table is unreachable',
      maxMs: 5000,
    });
    await clock.advanceAsync(fast.probeIntervalMs * 10); // ten probe rounds that all miss silo 2
    assert.ok(one.view.active.has('127.0.0.1:2'), 'the view kept silo 2');
    broken = false;
    await clock.advanceUntil(() => !one.view.active.has('127.0.0.1:2'), {
      what: 'silo 2 declared dead once the table is back',
      maxMs: 5000,
    });
    for (const s of svcs) s.stop();
  });
});
