import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Grain, grain, ClusterClient, SiloUnavailableError, UnknownGrainTypeError, CancelledError, silentLogger } from 'granary';
import { TestCluster, waitFor } from 'granary/testing';

@grain('clientEcho')
class Echo extends Grain {
  n = 0;
  async echo<T>(v: T): Promise<T> {
    return v;
  }
  async where(): Promise<string> {
    return this.silo.address;
  }
  async count(): Promise<number> {
    return ++this.n;
  }
  async fail(): Promise<never> {
    throw new RangeError('no such thing');
  }
  async waitAbort(signal: AbortSignal): Promise<boolean> {
    await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
    return signal.aborted;
  }
}

describe('ClusterClient through gateways', () => {
  it('calls grains spread over the silos, with values, errors and unknown types handled like local calls', async () => {
    const c = await TestCluster.start({ silos: 3, grains: [Echo] });
    try {
      const where = new Set<string>();
      for (let i = 0; i < 60; i++) where.add(await c.client.getGrain(Echo, `e${i}`).where());
      assert.equal(where.size, 3);
      const v = { m: new Map([[1, new Set(['a'])]]), d: new Date(3), b: 10n };
      assert.deepEqual(await c.client.getGrain(Echo, 'vals').echo(v), v);
      await assert.rejects(c.client.getGrain(Echo, 'err').fail(), (e: unknown) => e instanceof RangeError && /no such thing/.test(e.message));
      await assert.rejects(c.client.getGrain<{ x(): Promise<void> }>('nope', 'k').x(), UnknownGrainTypeError);
      const byName = c.client.getGrain<Echo>('clientEcho', 'counted');
      assert.equal(await byName.count(), 1);
      assert.equal(await c.client.getGrain(Echo, 'counted').count(), 2);
      const ac = new AbortController();
      const p = c.client.getGrain(Echo, 'abort').waitAbort(ac.signal);
      setTimeout(() => ac.abort(), 20);
      await assert.rejects(p, CancelledError);
    } finally {
      await c.stop();
    }
  });

  it('moves to another gateway when one dies, and fails in-flight calls on it with a typed error', async () => {
    const c = await TestCluster.start({ silos: 3, grains: [Echo] });
    try {
      for (let i = 0; i < 30; i++) await c.client.getGrain(Echo, `f${i}`).count();
      await c.killSilo(0);
      const dead = c.silos[0]?.info.address as string;
      await waitFor('the others declare silo 0 dead', () => c.live().every((s) => !s.cluster?.view.active.has(dead)), 5000);
      // Every grain answers again, through the remaining gateways.
      for (let i = 0; i < 30; i++) {
        const r = await c.client.getGrain(Echo, `f${i}`).where();
        assert.notEqual(r, dead);
      }
    } finally {
      await c.stop();
    }
  });

  it('refuses to connect to a cluster it cannot reach, or with the wrong cluster id', async () => {
    await assert.rejects(ClusterClient.connect({ clusterId: 'x', gateways: ['127.0.0.1:1'], connectTimeoutMs: 300, logger: silentLogger() }), SiloUnavailableError);
    const c = await TestCluster.start({ silos: 1, grains: [Echo] });
    try {
      const gw = c.silos[0]?.cluster?.gatewayAddress as string;
      await assert.rejects(ClusterClient.connect({ clusterId: 'other', gateways: [gw], connectTimeoutMs: 300, logger: silentLogger() }), (e: unknown) => e instanceof SiloUnavailableError && /cluster/.test(e.message));
    } finally {
      await c.stop();
    }
  });
});

describe('cluster limits and discovery', () => {
  it('finds gateways through the membership table', async () => {
    const { memoryMembership, MemoryMembershipStore } = await import('granary');
    const store = new MemoryMembershipStore();
    const c = await TestCluster.start({ silos: 2, grains: [Echo], membership: () => memoryMembership({ store }) });
    try {
      const client = await ClusterClient.connect({ clusterId: c.clusterId, membership: memoryMembership({ store }), logger: silentLogger() });
      try {
        assert.equal(client.gateways.length, 2);
        assert.equal(await client.getGrain(Echo, 'found').echo('yes'), 'yes');
      } finally {
        await client.close();
      }
    } finally {
      await c.stop();
    }
  });

  it('refuses calls to other silos past maxPendingRequests with GRANARY_OVERLOADED, and serves the rest', async () => {
    @grain('slowEcho')
    class Slow extends Grain {
      async nap(ms: number): Promise<string> {
        await new Promise((r) => setTimeout(r, ms));
        return this.silo.address;
      }
    }
    const c = await TestCluster.start({ silos: 2, grains: [Slow], siloOptions: { maxPendingRequests: 5 } });
    try {
      const a = c.silos[0];
      assert.ok(a !== undefined);
      const results = await Promise.allSettled(Array.from({ length: 60 }, (_, i) => a.getGrain(Slow, `s${i}`).nap(100)));
      const overloaded = results.filter((r) => r.status === 'rejected' && (r.reason as { code?: string }).code === 'GRANARY_OVERLOADED');
      const ok = results.filter((r) => r.status === 'fulfilled');
      assert.ok(overloaded.length > 0, 'no call was refused');
      assert.ok(ok.length >= 5, 'the limit refused too much');
      assert.equal(overloaded.length + ok.length, 60, 'a call failed some other way');
    } finally {
      await c.stop();
    }
  });
});
