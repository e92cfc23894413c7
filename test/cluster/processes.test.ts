// Silos as real child processes on loopback, sharing SQLite membership and
// storage files: spread, single activation under a race, crash (SIGKILL),
// graceful stop (SIGTERM) and freeze (SIGSTOP/SIGCONT), all under load.

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterClient, GranaryError, silentLogger } from 'granary';
import { SiloProcess, waitFor, type SiloProcessOptions } from 'granary/testing';
import type { PCounter, PDriver } from './process-grains.ts';

const grains = join(import.meta.dirname, 'process-grains.ts');
const fast = {
  iAmAliveIntervalMs: 200,
  tableRefreshIntervalMs: 100,
  probeIntervalMs: 150,
  probeTimeoutMs: 300,
  missedProbesLimit: 3,
  joinTimeoutMs: 5000,
};

interface Cluster {
  opts: SiloProcessOptions;
  silos: SiloProcess[];
  client: ClusterClient;
}

const running: SiloProcess[] = [];
const clients: ClusterClient[] = [];
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(running.map((p) => p.kill().catch(() => undefined)));
});

async function startCluster(n: number, extra: Partial<SiloProcessOptions> = {}): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), 'granary-proc-'));
  const opts: SiloProcessOptions = {
    grains,
    clusterId: `proc-${Math.random().toString(36).slice(2, 8)}`,
    membership: { kind: 'sqlite', path: join(dir, 'cluster.db') },
    storage: { kind: 'sqlite', path: join(dir, 'state.db') },
    membershipOptions: fast,
    siloOptions: { responseTimeoutMs: 5000, loadReportIntervalMs: 100 },
    ...extra,
  };
  const silos: SiloProcess[] = [];
  for (let i = 0; i < n; i++) {
    const p = await SiloProcess.start(opts);
    running.push(p);
    silos.push(p);
  }
  const client = await ClusterClient.connect({
    clusterId: opts.clusterId,
    gateways: silos.map((s) => s.gatewayAddress as string),
    responseTimeoutMs: 5000,
    logger: silentLogger(),
  });
  clients.push(client);
  // Wait until placement sees every silo: a grain lands on each.
  await waitFor(
    'every silo hosts grains',
    async () => {
      const where = new Set<string>();
      for (let i = 0; i < 30; i++) where.add((await client.getGrain<PCounter>('pcounter', `warm-${i}`).where()).silo);
      return where.size === n;
    },
    15_000,
  );
  return { opts, silos, client };
}

/** Calls `fn` in a loop until stopped; records outcomes. */
function load(fn: (i: number) => Promise<unknown>): {
  /** Calls that succeeded so far. */
  done(): number;
  stop(): Promise<{ ok: number; errors: unknown[] }>;
} {
  let stopped = false;
  let ok = 0;
  const errors: unknown[] = [];
  const loops = Array.from({ length: 8 }, async (_, w) => {
    for (let i = w; !stopped; i += 8) {
      try {
        await fn(i);
        ok++;
      } catch (e) {
        errors.push(e);
        await new Promise((r) => setTimeout(r, 10)); // paces retries after a failure, as a client would
      }
    }
  });
  return {
    done: () => ok,
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return { ok, errors };
    },
  };
}

describe('silos as child processes', { timeout: 240_000 }, () => {
  it('spreads 1,000 grains over three silos, each holding at least 20%', async () => {
    const c = await startCluster(3);
    const counts = new Map<string, number>();
    const batch = 100;
    for (let i = 0; i < 1000; i += batch) {
      const res = await Promise.all(
        Array.from({ length: batch }, (_, j) => c.client.getGrain<PCounter>('pcounter', `spread-${i + j}`).where()),
      );
      for (const r of res) counts.set(r.silo, (counts.get(r.silo) ?? 0) + 1);
    }
    assert.equal(counts.size, 3);
    for (const [silo, n] of counts) assert.ok(n >= 200, `${silo} holds ${n} of 1000`);
    await Promise.all(c.silos.map((s) => s.stop()));
  });

  it('makes one activation per grain when three silos and a client race 1,000 first calls on 10 cold grains', async () => {
    const c = await startCluster(3);
    // One client per gateway: its PDriver (a stateless worker) runs on that gateway's silo.
    const perSilo = await Promise.all(
      c.silos.map((s) =>
        ClusterClient.connect({
          clusterId: c.opts.clusterId,
          gateways: [s.gatewayAddress as string],
          logger: silentLogger(),
        }),
      ),
    );
    clients.push(...perSilo);
    const drivers = perSilo.map((cl) => cl.getGrain<PDriver>('pdriver', 'd'));
    const driverSilos = await Promise.all(drivers.map((d) => d.host()));
    assert.equal(new Set(driverSilos).size, 3, 'each driver runs on its own silo');
    const keys = Array.from({ length: 250 }, (_, i) => `cold-${i % 10}`);
    const [fromSilos, fromClient] = await Promise.all([
      Promise.all(drivers.map((d) => d.whereAll(keys))),
      Promise.all(keys.map((k) => c.client.getGrain<PCounter>('pcounter', k).where())),
    ]);
    const all = [...fromSilos.flat(), ...fromClient];
    assert.equal(all.length, 1000);
    for (let g = 0; g < 10; g++) {
      const seen = new Set(all.filter((_, i) => keys[i % 250] === `cold-${g}`).map((r) => r.activation));
      assert.equal(seen.size, 1, `cold-${g} had ${seen.size} activations`);
    }
    await Promise.all(c.silos.map((s) => s.stop()));
  });

  it('survives SIGKILL of a silo under load: declared dead, every grain answers within 15 s with its last acknowledged state', async () => {
    const c = await startCluster(3);
    const acked = new Map<string, number>();
    for (let i = 0; i < 30; i++) acked.set(`k-${i}`, await c.client.getGrain<PCounter>('pcounter', `k-${i}`).add(1));
    const where = await Promise.all([...acked.keys()].map((k) => c.client.getGrain<PCounter>('pcounter', k).where()));
    const victim = c.silos.find((s) => where.some((w) => w.silo === s.address)) as SiloProcess;
    const traffic = load(async (i) => {
      const k = `k-${i % 30}`;
      const started = Date.now();
      try {
        acked.set(k, await c.client.getGrain<PCounter>('pcounter', k).add(1));
      } finally {
        assert.ok(Date.now() - started < 5000 + 1500, `a call took ${Date.now() - started} ms, past its deadline`);
      }
    });
    await waitFor('the load is under way', () => traffic.done() >= 50, 10_000);
    const killedAt = Date.now();
    await victim.kill();
    // Every grain answers again within 15 s.
    await waitFor(
      'every grain answers after the kill',
      async () => {
        const res = await Promise.allSettled(
          [...acked.keys()].map((k) => c.client.getGrain<PCounter>('pcounter', k).get()),
        );
        return res.every((r) => r.status === 'fulfilled');
      },
      15_000,
    );
    assert.ok(Date.now() - killedAt < 15_000);
    const { errors } = await traffic.stop();
    for (const e of errors) assert.ok(e instanceof GranaryError, `an untyped error under a crash: ${String(e)}`);
    for (const [k, v] of acked) {
      const now = await c.client.getGrain<PCounter>('pcounter', k).get();
      assert.ok(now >= v, `${k} lost acknowledged writes: ${now} < ${v}`);
    }
    await Promise.all(c.silos.filter((s) => s !== victim).map((s) => s.stop()));
  });

  it('stops a silo gracefully under load: no call fails (accepted calls finish or are forwarded), state is kept', async () => {
    const c = await startCluster(3);
    const acked = new Map<string, number>();
    for (let i = 0; i < 30; i++) acked.set(`g-${i}`, await c.client.getGrain<PCounter>('pcounter', `g-${i}`).add(1));
    const traffic = load(async (i) => {
      const k = `g-${i % 30}`;
      acked.set(k, await c.client.getGrain<PCounter>('pcounter', k).add(1));
    });
    await waitFor('the load is under way', () => traffic.done() >= 50, 10_000);
    const leaving = c.silos[1] as SiloProcess;
    const code = await leaving.stop();
    assert.equal(code, 0);
    const atStop = traffic.done();
    await waitFor('calls go on succeeding after the stop', () => traffic.done() >= atStop + 50, 10_000);
    const { ok, errors } = await traffic.stop();
    assert.ok(ok > 0);
    // A graceful stop promises that calls accepted before it finish or are forwarded: none fails.
    assert.deepEqual(
      errors.map((e) => (e instanceof GranaryError ? `${e.code}: ${e.message}` : `untyped: ${String(e)}`)),
      [],
      'calls failed during a graceful stop',
    );
    // After the stop, every call succeeds, from the remaining silos, with the last acknowledged state.
    for (const [k, v] of acked) {
      const g = c.client.getGrain<PCounter>('pcounter', k);
      assert.ok((await g.get()) >= v);
      assert.notEqual((await g.where()).silo, leaving.address);
    }
    await Promise.all(c.silos.filter((s) => s !== leaving).map((s) => s.stop()));
  });

  it('a frozen silo (SIGSTOP) past the death timeout learns it is dead on SIGCONT, stops, and writes no stale state', async () => {
    const c = await startCluster(3);
    for (let i = 0; i < 30; i++) await c.client.getGrain<PCounter>('pcounter', `z-${i}`).add(1);
    const where = await Promise.all(
      Array.from({ length: 30 }, (_, i) => c.client.getGrain<PCounter>('pcounter', `z-${i}`).where()),
    );
    const frozen = c.silos.find((s) => where.some((w) => w.silo === s.address)) as SiloProcess;
    const onFrozen = where
      .map((w, i) => [w, `z-${i}`] as const)
      .filter(([w]) => w.silo === frozen.address)
      .map(([, k]) => k);
    // A slow write is in flight on the frozen silo when it freezes: it must not land after the grain moved.
    const inFlight = c.client
      .getGrain<PCounter>('pcounter', onFrozen[0] as string)
      .slowAdd(1000, 200)
      .catch((e: unknown) => e);
    // Lets the slow write reach the other process on purpose: nothing there can be watched from here.
    await new Promise((r) => setTimeout(r, 50));
    frozen.pause();
    const others = c.silos.filter((s) => s !== frozen);
    const watcher = await ClusterClient.connect({
      clusterId: c.opts.clusterId,
      gateways: others.map((s) => s.gatewayAddress as string),
      responseTimeoutMs: 5000,
      logger: silentLogger(),
    });
    clients.push(watcher);
    // The others take the grains over (and write to them) while it is frozen.
    await waitFor(
      "the frozen silo's grains answer from the others",
      async () => {
        const res = await Promise.allSettled(onFrozen.map((k) => watcher.getGrain<PCounter>('pcounter', k).add(1)));
        return res.every((r) => r.status === 'fulfilled');
      },
      15_000,
    );
    const before = await Promise.all(onFrozen.map((k) => watcher.getGrain<PCounter>('pcounter', k).get()));
    frozen.resume();
    const { code } = await Promise.race([
      frozen.exited,
      new Promise<{ code: number }>((_, rej) =>
        setTimeout(() => rej(new Error('the frozen silo did not stop after SIGCONT')), 10_000),
      ),
    ]);
    assert.equal(code, 3, 'it exits saying it was declared dead');
    await inFlight;
    const afterwards = await Promise.all(onFrozen.map((k) => watcher.getGrain<PCounter>('pcounter', k).get()));
    assert.deepEqual(afterwards, before, 'a stale activation of the frozen silo wrote state');
    await Promise.all(others.map((s) => s.stop()));
  });
});

describe('three silo processes on server-backed membership', { timeout: 120_000 }, () => {
  const stores: Array<[string, () => SiloProcessOptions['membership']]> = [
    [
      'PostgreSQL',
      () => ({
        kind: 'postgres',
        connectionString: 'postgres://postgres@127.0.0.1:5432/test',
        tablePrefix: `gt_${Math.random().toString(36).slice(2, 8)}_`,
      }),
    ],
    [
      'Redis',
      () => ({
        kind: 'redis',
        url: 'redis://127.0.0.1:6379',
        keyPrefix: `gt:${Math.random().toString(36).slice(2, 8)}:`,
      }),
    ],
  ];
  for (const [name, spec] of stores) {
    it(`forms a cluster on ${name}, spreads grains, and recovers from a crash`, async () => {
      const c = await startCluster(3, { membership: spec() });
      const res = await Promise.all(
        Array.from({ length: 300 }, (_, i) => c.client.getGrain<PCounter>('pcounter', `m-${i}`).add(1)),
      );
      assert.ok(res.every((v) => v === 1));
      const where = await Promise.all(
        Array.from({ length: 300 }, (_, i) => c.client.getGrain<PCounter>('pcounter', `m-${i}`).where()),
      );
      assert.equal(new Set(where.map((w) => w.silo)).size, 3);
      const victim = c.silos[2] as SiloProcess;
      await victim.kill();
      await waitFor(
        'every grain answers after the kill',
        async () => {
          const r = await Promise.allSettled(
            Array.from({ length: 300 }, (_, i) => c.client.getGrain<PCounter>('pcounter', `m-${i}`).get()),
          );
          return r.every((x) => x.status === 'fulfilled' && x.value === 1);
        },
        15_000,
      );
      await Promise.all(c.silos.slice(0, 2).map((s) => s.stop()));
    });
  }
});
