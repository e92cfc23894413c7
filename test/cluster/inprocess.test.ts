import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { Silo, Grain, grain, placement, silentLogger } from 'granary';
import type { MembershipOptions } from '../../src/membership/service.ts';
import { memoryMembership, MemoryMembershipStore } from '../../src/providers/memory/membership.ts';
import type { MembershipTable, SiloEntry, TableVersion } from '../../src/membership/table.ts';
import { eventually } from '../helpers.ts';

/** Where each activation of each grain was made: grain -> silo addresses. */
const activations = new Map<string, string[]>();

@grain('where')
class Where extends Grain {
  override async onActivate(): Promise<void> {
    const list = activations.get(this.key) ?? [];
    list.push(this.silo.address);
    activations.set(this.key, list);
  }
  async address(): Promise<string> {
    return this.silo.address;
  }
  async viaOther(key: string): Promise<string> {
    return this.getGrain(Where, key).address();
  }
}

/** Holds its silo's stop up for a while. */
@grain('slowToLeave')
@placement('preferLocal')
class SlowToLeave extends Grain {
  override async onDeactivate(): Promise<void> {
    await new Promise((r) => setTimeout(r, 1500));
  }
  async address(): Promise<string> {
    return this.silo.address;
  }
}

/** Placed on the silo that joined last (the newest address in the view). */
@grain('newest')
@placement({ name: 'newest', place: (_g, silos) => silos[silos.length - 1] as string })
class Newest extends Grain {
  async address(): Promise<string> {
    return this.silo.address;
  }
}

const fast: MembershipOptions = {
  iAmAliveIntervalMs: 100,
  tableRefreshIntervalMs: 50,
  probeIntervalMs: 50,
  probeTimeoutMs: 100,
  missedProbesLimit: 2,
  joinTimeoutMs: 2000,
};

async function cluster(n: number): Promise<{ silos: Silo[]; store: MemoryMembershipStore; start(): Promise<Silo> }> {
  const store = new MemoryMembershipStore();
  const start = (): Promise<Silo> =>
    Silo.start({
      clusterId: 'inproc',
      grains: [Where, SlowToLeave],
      port: 0,
      membership: memoryMembership({ store }),
      membershipOptions: fast,
      loadReportIntervalMs: 50,
      logger: silentLogger(),
    });
  const silos: Silo[] = [];
  for (let i = 0; i < n; i++) silos.push(await start());
  await eventually('every silo sees every silo', () => silos.every((s) => s.cluster?.view.active.size === n));
  return { silos, store, start };
}

describe('a cluster of silos in one process, over loopback TCP', () => {
  const open: Silo[] = [];
  after(async () => {
    await Promise.all(open.map((s) => s.stop().catch(() => undefined)));
  });

  it('spreads grains over the silos and reaches every grain from every silo', async () => {
    const { silos } = await cluster(3);
    open.push(...silos);
    const [a, b, c] = silos as [Silo, Silo, Silo];
    const where = new Map<string, number>();
    for (let i = 0; i < 300; i++) {
      const addr = await a.getGrain(Where, `spread-${i}`).address();
      where.set(addr, (where.get(addr) ?? 0) + 1);
    }
    assert.equal(where.size, 3, `all grains on ${[...where.keys()].join(', ')}`);
    for (const [addr, count] of where) assert.ok(count >= 60, `${addr} hosts only ${count} of 300`);
    // The same grain from another silo is the same activation.
    for (let i = 0; i < 30; i++) {
      const fromB = await b.getGrain(Where, `spread-${i}`).address();
      const fromC = await c.getGrain(Where, `spread-${i}`).address();
      assert.equal(fromB, fromC);
      assert.equal(activations.get(`spread-${i}`)?.length, 1);
    }
    // Grain to grain across silos.
    assert.ok(typeof (await b.getGrain(Where, 'spread-1').viaOther('spread-2')) === 'string');
  });

  it('makes exactly one activation when every silo calls a cold grain at once', async () => {
    const { silos } = await cluster(3);
    open.push(...silos);
    const calls: Promise<string>[] = [];
    for (let i = 0; i < 300; i++) for (const s of silos) calls.push(s.getGrain(Where, `race-${i % 10}`).address());
    const results = await Promise.all(calls);
    for (let g = 0; g < 10; g++) {
      assert.equal(
        activations.get(`race-${g}`)?.length,
        1,
        `race-${g} activated on ${activations.get(`race-${g}`)?.join(', ')}`,
      );
      const seen = new Set(results.filter((_, i) => Math.floor(i / 3) % 10 === g));
      assert.equal(seen.size, 1);
    }
  });

  it('moves grains off a silo that stops gracefully, and off one that dies', async () => {
    const { silos } = await cluster(3);
    open.push(...silos);
    const [a, b, c] = silos as [Silo, Silo, Silo];
    const keys = Array.from({ length: 60 }, (_, i) => `move-${i}`);
    // References kept across the moves (they keep their route) and fresh ones must agree.
    const kept = keys.map((k) => a.getGrain(Where, k));
    const before = await Promise.all(kept.map((r) => r.address()));
    const bAddr = b.info.address;
    assert.ok(before.includes(bAddr));
    await b.stop();
    const after1 = await Promise.all(keys.map((k) => a.getGrain(Where, k).address()));
    assert.ok(!after1.includes(bAddr), 'a grain still answered from the stopped silo');
    assert.deepEqual(
      await Promise.all(kept.map((r) => r.address())),
      after1,
      'kept references follow their grains off the stopped silo',
    );
    // Abrupt: close c's sockets without a goodbye; a declares it dead and takes its grains.
    const cAddr = c.info.address;
    await c.cluster?.close();
    await eventually('c declared dead', () => !a.cluster?.view.active.has(cAddr), 5000);
    const after2 = await Promise.all(keys.map((k) => a.getGrain(Where, k).address()));
    assert.ok(after2.every((x) => x === a.info.address));
    assert.deepEqual(
      await Promise.all(kept.map((r) => r.address())),
      after2,
      'kept references follow their grains off the dead silo',
    );
  });

  it('does not bounce calls between a stopping silo and the others when its directory entries linger', async () => {
    const { silos } = await cluster(3);
    open.push(...silos);
    const [a, b, c] = silos as [Silo, Silo, Silo];
    // An entry naming c for a grain c does not have, as when c's unregister message was lost.
    const grainId = 'where/lingering';
    const ownerAddress = a.cluster?.directory.ownerOf(grainId);
    const owner = silos.find((s) => s.info.address === ownerAddress);
    assert.ok(owner !== undefined);
    owner.cluster?.directory.registerLocal(grainId, { address: c.info.address, activation: 999_999 }, false);
    assert.equal(await c.getGrain(SlowToLeave, 'x').address(), c.info.address);
    const stopping = c.stop(); // ShuttingDown for 1.5 s while that grain deactivates
    await eventually('a sees c leaving', () => a.cluster?.view.leaving.has(c.info.address) === true, 5000);
    const where = await a.getGrain(Where, 'lingering').address();
    assert.ok(where === a.info.address || where === b.info.address, `answered from ${where}`);
    await stopping;
    assert.equal(
      await b.getGrain(Where, 'lingering').address(),
      where,
      'one activation, found from the other silo too',
    );
  });

  it('registers in the directory a grain activated on a silo while it joins, under its real address', async () => {
    const store = new MemoryMembershipStore();
    const clusterId = 'joining';
    const opts = {
      clusterId,
      grains: [Where, SlowToLeave, Newest],
      port: 0,
      membershipOptions: fast,
      loadReportIntervalMs: 50,
      logger: silentLogger(),
    };
    const a = await Silo.start({ ...opts, membership: memoryMembership({ store }) });
    open.push(a);
    // The newcomer's table: once its row says Active (the others may place grains on it from
    // now on), hold the join until a grain placed on it from a has been activated there.
    const real = memoryMembership({ store });
    let activatedThere: Promise<string> | undefined;
    const joiningTable: MembershipTable = {
      kind: real.kind,
      init: (ctx) => real.init(ctx),
      readAll: () => real.readAll(),
      insert: (entry, next) => real.insert(entry, next),
      updateIAmAlive: (address, generation, at) => real.updateIAmAlive(address, generation, at),
      cleanupDefunct: (before) => real.cleanupDefunct(before),
      deleteCluster: () => real.deleteCluster(),
      close: () => real.close(),
      update: async (entry: SiloEntry, etag: string, next: TableVersion): Promise<boolean> => {
        const ok = await real.update(entry, etag, next);
        if (ok && entry.status === 'Active' && entry.address !== a.info.address && activatedThere === undefined) {
          await eventually('a sees the newcomer', () => a.cluster?.view.active.has(entry.address) === true, 5000);
          activatedThere = a.getGrain(Newest, 'mid-join').address();
          await activatedThere;
        }
        return ok;
      },
    };
    const b = await Silo.start({ ...opts, membership: joiningTable });
    open.push(b);
    assert.ok(activatedThere !== undefined, 'the grain was called during the join');
    assert.equal(await activatedThere, b.info.address, 'made on the joining silo, under its real address');
    const owner = [a, b].find((s) => s.info.address === a.cluster?.directory.ownerOf('newest/mid-join'));
    assert.ok(owner !== undefined);
    assert.equal(
      owner.cluster?.directory.lookupLocal('newest/mid-join')?.[0],
      b.info.address,
      'the activation is in the directory',
    );
  });

  it('answers a grain of a crashed silo from another one before the crash is detected, instead of bouncing the call', async () => {
    const { silos } = await cluster(3);
    open.push(...silos);
    const [a, b, c] = silos as [Silo, Silo, Silo];
    // Grains living on c, known to a and b.
    const keys: string[] = [];
    for (let i = 0; keys.length < 8 && i < 400; i++) {
      const k = `crash-${i}`;
      if ((await a.getGrain(Where, k).address()) === c.info.address) keys.push(k);
    }
    assert.ok(keys.length >= 4, 'grains placed on c');
    await c.cluster?.close(); // a crash: sockets close, nothing written to the table
    const results = await Promise.allSettled(
      keys.flatMap((k) => [a.getGrain(Where, k).address(), b.getGrain(Where, k).address()]),
    );
    const failed = results.filter((r) => r.status === 'rejected').map((r) => (r.reason as { code?: string }).code);
    assert.deepEqual(
      failed.filter((code) => code === 'GRANARY_FORWARD_LIMIT'),
      [],
      `calls bounced: ${failed.join(', ')}`,
    );
    for (const k of keys) {
      const [fromA, fromB] = await Promise.all([a.getGrain(Where, k).address(), b.getGrain(Where, k).address()]);
      assert.equal(fromA, fromB, `${k}: one activation`);
      assert.notEqual(fromA, c.info.address);
    }
  });
});
