import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  ClusterClient,
  ConfigurationError,
  Grain,
  grain,
  placement,
  reentrant,
  RequestContext,
  Silo,
  silentLogger,
} from 'granary';
import { memoryMembership, MemoryMembershipStore } from '../../src/providers/memory/membership.ts';
import { eventually } from '../helpers.ts';

@grain('ctx')
class Ctx extends Grain {
  async read(key: string): Promise<unknown> {
    return RequestContext.get(key);
  }
  async readAll(): Promise<Record<string, unknown>> {
    return { ...RequestContext.entries() };
  }
  /** Reads `key` in grain `next` (and so on down the chain). */
  async readVia(next: string, key: string): Promise<unknown> {
    return this.getGrain(Ctx, next).read(key);
  }
  /** Sets a key, then calls on after an await: the rest of the turn and its calls carry it. */
  async setThenCall(next: string): Promise<unknown> {
    await Promise.resolve();
    RequestContext.set('set-by', this.key);
    await new Promise((r) => setImmediate(r));
    return this.getGrain(Ctx, next).read('set-by');
  }
  async setOnly(): Promise<void> {
    RequestContext.set('callee-only', 'x');
  }
  /** Calls `setOnly` on another grain, then looks at its own context. */
  async callSetterThenRead(next: string): Promise<unknown> {
    await this.getGrain(Ctx, next).setOnly();
    return RequestContext.get('callee-only');
  }
  async mutate(key: string): Promise<unknown> {
    const v = RequestContext.get(key) as { n: number };
    v.n++;
    return v.n;
  }
  async where(): Promise<string> {
    return this.silo.address;
  }
}

/** Interleaves calls, each reading its own context after awaits. */
@grain('ctxReentrant')
@reentrant
class CtxReentrant extends Grain {
  async slowRead(key: string, ticks: number): Promise<unknown> {
    for (let i = 0; i < ticks; i++) await new Promise((r) => setImmediate(r));
    return RequestContext.get(key);
  }
}

/** Placed on the silo whose address the request context names. */
@grain('ctxPlaced')
@placement({
  name: 'byContext',
  place: (_g, silos, local, context) => {
    const want = context['silo'];
    return typeof want === 'string' && silos.includes(want) ? want : local;
  },
})
class CtxPlaced extends Grain {
  async where(): Promise<string> {
    return this.silo.address;
  }
}

describe('RequestContext', () => {
  const silos: Silo[] = [];
  const clients: ClusterClient[] = [];
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(silos.map((s) => s.stop()));
  });

  it('flows with a call to the grain and on to the grains it calls, in one silo', async () => {
    const silo = await Silo.start({ grains: [Ctx, CtxReentrant], logger: silentLogger() });
    silos.push(silo);
    const a = silo.getGrain(Ctx, 'a');
    assert.equal(await a.read('user'), undefined);
    await RequestContext.run({ user: 'alice', tenant: 7 }, async () => {
      assert.equal(await a.read('user'), 'alice');
      assert.deepEqual(await a.readAll(), { user: 'alice', tenant: 7 });
      assert.equal(await a.readVia('b', 'tenant'), 7);
    });
    assert.equal(RequestContext.get('user'), undefined, 'run() leaves the outside unchanged');
    assert.equal(await a.read('user'), undefined);
  });

  it('a set() in a turn reaches the calls made later in that turn, never the caller', async () => {
    const silo = await Silo.start({ grains: [Ctx], logger: silentLogger() });
    silos.push(silo);
    assert.equal(await silo.getGrain(Ctx, 'setter').setThenCall('reader'), 'setter');
    assert.equal(RequestContext.get('set-by'), undefined);
    assert.equal(await silo.getGrain(Ctx, 'caller').callSetterThenRead('callee'), undefined);
    // And a later call with no context of its own does not see the earlier turn's value.
    assert.equal(await silo.getGrain(Ctx, 'reader').read('set-by'), undefined);
  });

  it('interleaved turns of a reentrant grain each keep their own context across awaits', async () => {
    const silo = await Silo.start({ grains: [CtxReentrant], logger: silentLogger() });
    silos.push(silo);
    const g = silo.getGrain(CtxReentrant, 'r');
    const calls = Array.from({ length: 20 }, (_, i) => RequestContext.run({ n: i }, () => g.slowRead('n', 20 - i)));
    assert.deepEqual(
      await Promise.all(calls),
      Array.from({ length: 20 }, (_, i) => i),
    );
  });

  it('values are copied: neither side sees the other’s changes to an object value', async () => {
    const silo = await Silo.start({ grains: [Ctx], logger: silentLogger() });
    silos.push(silo);
    const obj = { n: 1 };
    await RequestContext.run({ counter: obj }, async () => {
      obj.n = 100; // after set: the context holds its own copy
      assert.equal(await silo.getGrain(Ctx, 'm').mutate('counter'), 2);
      assert.equal(await silo.getGrain(Ctx, 'm').mutate('counter'), 2, 'the callee’s change did not reach the caller');
      assert.deepEqual(RequestContext.get('counter'), { n: 1 });
    });
  });

  it('travels over the wire: client -> gateway -> another silo, and reaches placement', async () => {
    const store = new MemoryMembershipStore();
    const start = (): Promise<Silo> =>
      Silo.start({
        clusterId: 'ctx',
        grains: [Ctx, CtxPlaced],
        port: 0,
        gatewayPort: 0,
        membership: memoryMembership({ store }),
        membershipOptions: { iAmAliveIntervalMs: 100, tableRefreshIntervalMs: 50, probeIntervalMs: 50 },
        logger: silentLogger(),
      });
    const a = await start();
    const b = await start();
    silos.push(a, b);
    await eventually('both silos see each other', () => a.cluster?.view.active.size === 2);
    const client = await ClusterClient.connect({
      clusterId: 'ctx',
      gateways: [a.cluster?.gatewayAddress as string],
      logger: silentLogger(),
    });
    clients.push(client);
    const bAddr = b.info.address;
    // Placement reads the context of the call that activates the grain, on the gateway.
    for (let i = 0; i < 5; i++) {
      assert.equal(await RequestContext.run({ silo: bAddr }, () => client.getGrain(CtxPlaced, `p${i}`).where()), bAddr);
    }
    // A grain on b, reached through gateway a, and onward from there.
    let key = '';
    for (let i = 0; key === '' && i < 200; i++)
      if ((await client.getGrain(Ctx, `w${i}`).where()) === bAddr) key = `w${i}`;
    assert.notEqual(key, '', 'some grain was placed on b');
    await RequestContext.run({ trace: 'abc', nested: { list: [1, 2] } }, async () => {
      assert.deepEqual(await client.getGrain(Ctx, key).readAll(), { trace: 'abc', nested: { list: [1, 2] } });
      assert.deepEqual(await client.getGrain(Ctx, key).readVia('w-next', 'nested'), { list: [1, 2] });
    });
    assert.deepEqual(await client.getGrain(Ctx, key).readAll(), {}, 'a call with no context carries none');
  });

  it('refuses bad keys and values by name', () => {
    assert.throws(() => RequestContext.set('', 1), ConfigurationError);
    assert.throws(() => RequestContext.set('x'.repeat(300), 1), /at most 256 characters/);
    assert.throws(
      () => RequestContext.set('fn', () => 1),
      (e: unknown) => e instanceof ConfigurationError && /'fn' cannot hold a function/.test(e.message),
    );
    assert.throws(() => RequestContext.run({ bad: Symbol('s') }, () => 1), /cannot hold a symbol/);
  });
});
