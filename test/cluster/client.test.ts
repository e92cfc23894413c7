import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  Grain,
  grain,
  placement,
  ClusterClient,
  type CustomPlacement,
  type Silo,
  SiloUnavailableError,
  FrameTooLargeError,
  UnknownGrainTypeError,
  CancelledError,
  silentLogger,
} from 'granary';
import { TestCluster, waitFor } from 'granary/testing';
import diagnostics_channel from 'node:diagnostics_channel';
import { listen } from '../../src/transport/listener.ts';
import type { Connection } from '../../src/transport/connection.ts';
import { Connector } from '../../src/transport/connector.ts';
import { Frame, encodeSystemCall } from '../../src/messaging/protocol.ts';
import { decodeSystemResult } from '../../src/messaging/system-calls.ts';

/** The client side of each client's gateway connection, from the transport's public open event. */
const clientConnections = new Map<string, Connection>();
diagnostics_channel.subscribe('granary:transport:open', (event) => {
  const { connection, side } = event as { connection: Connection; side: string };
  if (side === 'connect' && connection.hello.role === 'client')
    clientConnections.set(connection.hello.address, connection);
  if (side === 'accept') acceptedBy.set(`${connection.hello.address}<-${connection.peer?.address ?? ''}`, connection);
});
/** Accepted connections by `listener<-peer` address. */
const acceptedBy = new Map<string, Connection>();
function transportOf(client: ClusterClient): Connection | undefined {
  return clientConnections.get(client.id);
}

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
      await assert.rejects(
        c.client.getGrain(Echo, 'err').fail(),
        (e: unknown) => e instanceof RangeError && /no such thing/.test(e.message),
      );
      await assert.rejects(c.client.getGrain<{ x(): Promise<void> }>('nope', 'k').x(), UnknownGrainTypeError);
      const byName = c.client.getGrain<Echo>('clientEcho', 'counted');
      assert.equal(await byName.count(), 1);
      assert.equal(await c.client.getGrain(Echo, 'counted').count(), 2);
      const ac = new AbortController();
      const p = c.client.getGrain(Echo, 'abort').waitAbort(ac.signal);
      setTimeout(() => ac.abort(), 20); // aborts while the call is pending, whichever hop it has reached
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
      await waitFor(
        'the others declare silo 0 dead',
        () => c.live().every((s) => !s.cluster?.view.active.has(dead)),
        5000,
      );
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
    await assert.rejects(
      ClusterClient.connect({
        clusterId: 'x',
        gateways: ['127.0.0.1:1'],
        connectTimeoutMs: 300,
        logger: silentLogger(),
      }),
      SiloUnavailableError,
    );
    const c = await TestCluster.start({ silos: 1, grains: [Echo] });
    try {
      const gw = c.silos[0]?.cluster?.gatewayAddress as string;
      await assert.rejects(
        ClusterClient.connect({ clusterId: 'other', gateways: [gw], connectTimeoutMs: 300, logger: silentLogger() }),
        (e: unknown) => e instanceof SiloUnavailableError && /cluster/.test(e.message),
      );
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
      const client = await ClusterClient.connect({
        clusterId: c.clusterId,
        membership: memoryMembership({ store }),
        logger: silentLogger(),
      });
      try {
        assert.equal(client.gateways.length, 2);
        assert.equal(await client.getGrain(Echo, 'found').echo('yes'), 'yes');
      } finally {
        await client.close();
      }
      // A silo that joins later becomes one of the client's gateways, and takes calls.
      const later = await ClusterClient.connect({
        clusterId: c.clusterId,
        membership: memoryMembership({ store }),
        gatewayRefreshIntervalMs: 50,
        logger: silentLogger(),
      });
      try {
        const added = await c.startSilo();
        const addedGateway = added.cluster?.gatewayAddress as string;
        await waitFor(
          'the client connects to the new gateway',
          () => acceptedBy.has(`${addedGateway}<-${later.id}`),
          5000,
        );
        const served = new Set<string>();
        for (let i = 0; i < 60; i++) served.add(await later.getGrain(Echo, `spread-${i}`).where());
        assert.ok(served.has(added.info.address), 'the new silo serves grains too');
      } finally {
        await later.close();
      }
    } finally {
      await c.stop();
    }
  });

  it("tells a client the cluster's membership and load as one gateway sees them, and no other system call", async () => {
    const c = await TestCluster.start({ silos: 2, grains: [Echo], siloOptions: { loadReportIntervalMs: 50 } });
    try {
      for (let i = 0; i < 10; i++) await c.client.getGrain(Echo, `load-${i}`).count();
      const addresses = c.silos.map((s) => s.info.address).sort();
      await waitFor('the gateway to hold a load report of 10 activations in all', async () => {
        const status = await c.client.clusterStatus();
        return [...status.activations.values()].reduce((a, b) => a + b, 0) === 10 && status.activations.size === 2;
      });
      const status = await c.client.clusterStatus();
      assert.ok(addresses.includes(status.silo), `answered by ${status.silo}`);
      assert.deepEqual(status.members.map((m) => m.address).sort(), addresses);
      for (const m of status.members) {
        assert.equal(m.status, 'Active');
        assert.equal(m.gatewayAddress, c.silos.find((s) => s.info.address === m.address)?.cluster?.gatewayAddress);
        assert.ok(m.iAmAliveAt >= m.startedAt, `${m.address}: I-am-alive ${m.iAmAliveAt}, started ${m.startedAt}`);
      }
      assert.equal(
        status.activations.get(status.silo),
        c.silos.find((s) => s.info.address === status.silo)?.activationCount,
      );

      // Any other system call from a client is refused: the gateway's control plane is the silos'.
      const results: Array<ReturnType<typeof decodeSystemResult>> = [];
      const raw = new Connector({
        hello: { clusterId: c.clusterId, address: 'raw-client', generation: 1, role: 'client' },
        handler: {
          onFrame: (type, buf, start, end) => {
            if (type === Frame.SystemResult) results.push(decodeSystemResult(buf.subarray(start, end)));
            return true;
          },
        },
      });
      try {
        const conn = await raw.get(c.silos[0]?.cluster?.gatewayAddress as string);
        conn.send(Frame.SystemCall, encodeSystemCall(1, 'dir.handoff', [[['clientEcho/x', 'nowhere:1', 1]]]));
        await waitFor('the answer to a system call a client may not make', () => results.length === 1);
        assert.equal(results[0]?.ok, false);
        assert.match(String((results[0]?.value as Error).message), /system call dir\.handoff is not open to clients/);
      } finally {
        await raw.close();
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
      const results = await Promise.allSettled(
        Array.from({ length: 60 }, (_, i) => a.getGrain(Slow, `s${i}`).nap(100)),
      );
      const overloaded = results.filter(
        (r) => r.status === 'rejected' && (r.reason as { code?: string }).code === 'GRANARY_OVERLOADED',
      );
      const ok = results.filter((r) => r.status === 'fulfilled');
      assert.ok(overloaded.length > 0, 'no call was refused');
      assert.ok(ok.length >= 5, 'the limit refused too much');
      assert.equal(overloaded.length + ok.length, 60, 'a call failed some other way');
    } finally {
      await c.stop();
    }
  });

  it('refuses calls with GRANARY_OVERLOADED while its gateway does not read, instead of queueing without bound', async () => {
    // A gateway that shakes hands and then never reads again.
    const gateway = await listen({
      port: 0,
      hello: { clusterId: 'stalled', generation: 1, role: 'silo' },
      handler: { onFrame: () => true },
      onConnection: (c) => c.pause(),
    });
    const limit = 1024 * 1024;
    const client = await ClusterClient.connect({
      clusterId: 'stalled',
      gateways: [gateway.address],
      responseTimeoutMs: 1000,
      transport: { maxQueuedBytes: limit },
      logger: silentLogger(),
    });
    try {
      const big = 'x'.repeat(64 * 1024);
      let peak = 0;
      const calls: Promise<unknown>[] = [];
      for (let i = 0; i < 600; i++) {
        calls.push(client.getGrain<Echo>('clientEcho', `k${i}`).echo(big));
        const conn = transportOf(client);
        if (conn !== undefined) peak = Math.max(peak, conn.bufferedBytes);
      }
      const results = await Promise.allSettled(calls);
      const codes = results.map((r) => (r.status === 'rejected' ? (r.reason as { code?: string }).code : 'fulfilled'));
      const overloaded = codes.filter((c) => c === 'GRANARY_OVERLOADED').length;
      assert.ok(overloaded > 0, 'no call was refused');
      assert.equal(
        codes.filter((c) => c !== 'GRANARY_OVERLOADED' && c !== 'GRANARY_TIMEOUT').length,
        0,
        `calls ended otherwise: ${[...new Set(codes)].join(', ')}`,
      );
      assert.ok(peak < limit + 2 * big.length, `the client queued ${peak} bytes past a limit of ${limit}`);
    } finally {
      await client.close();
      await gateway.close();
    }
  });

  it('refuses calls to another silo with GRANARY_OVERLOADED while that silo does not read', async () => {
    const elsewhere: CustomPlacement = {
      name: 'elsewhere',
      place: (_g, silos, local) => silos.find((x) => x !== local) ?? local,
    };
    @grain('stalledTarget')
    @placement(elsewhere)
    class Target extends Grain {
      async take(s: string): Promise<number> {
        return s.length;
      }
    }
    const limit = 1024 * 1024;
    const c = await TestCluster.start({
      silos: 2,
      grains: [Target],
      siloOptions: { transport: { maxQueuedBytes: limit }, responseTimeoutMs: 1000, logger: silentLogger() },
    });
    let fromA: Connection | undefined;
    try {
      const [a, b] = c.silos as [Silo, Silo];
      assert.equal(await a.getGrain(Target, 'warm').take('x'), 1, 'a call crosses before the stall');
      // b stops reading what a sends it.
      fromA = acceptedBy.get(`${b.info.address}<-${a.info.address}`);
      assert.ok(fromA !== undefined, 'b accepted a connection from a');
      fromA.pause();
      const big = 'x'.repeat(64 * 1024);
      const results = await Promise.allSettled(
        Array.from({ length: 600 }, (_, i) => a.getGrain(Target, `t${i}`).take(big)),
      );
      const codes = results.map((r) => (r.status === 'rejected' ? (r.reason as { code?: string }).code : 'fulfilled'));
      assert.ok(codes.includes('GRANARY_OVERLOADED'), 'no call was refused');
      // b reads nothing from a, its probes included: a may declare it dead meanwhile.
      const typed = new Set(['GRANARY_OVERLOADED', 'GRANARY_TIMEOUT', 'GRANARY_SILO_UNAVAILABLE']);
      assert.equal(
        codes.filter((x) => x === undefined || !typed.has(x)).length,
        0,
        `calls ended otherwise: ${[...new Set(codes)].join(', ')}`,
      );
      fromA.resume();
      assert.equal(await a.getGrain(Target, 'after').take('xy'), 2, 'calls are served again');
    } finally {
      fromA?.resume();
      await c.stop();
    }
  });
});

@grain('bigResult')
class BigResult extends Grain {
  n = 0;
  async big(bytes: number): Promise<string> {
    this.n++;
    return 'x'.repeat(bytes);
  }
  async count(): Promise<number> {
    return this.n;
  }
}

describe('a result larger than the silo may send', () => {
  it('fails the call with FrameTooLargeError and the grain goes on taking calls', async () => {
    const c = await TestCluster.start({
      silos: 1,
      grains: [BigResult],
      siloOptions: { transport: { maxFrameBytes: 64 * 1024 } },
    });
    try {
      const g = c.client.getGrain(BigResult, 'b');
      await assert.rejects(g.big(200 * 1024), (e: unknown) => e instanceof FrameTooLargeError);
      assert.equal(await g.count(), 1, 'the grain must still take calls after the failed response');
      assert.equal((await g.big(1024)).length, 1024);
    } finally {
      await c.stop();
    }
  });
});
