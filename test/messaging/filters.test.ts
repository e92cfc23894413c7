import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  ClusterClient,
  ConfigurationError,
  Grain,
  GranaryError,
  grain,
  RequestContext,
  registerError,
  Silo,
  silentLogger,
  UnknownMethodError,
  type IncomingCallContext,
  type IncomingCallFilter,
  type OutgoingCallFilter,
} from 'granary';
import { memoryMembership, MemoryMembershipStore } from '../../src/providers/memory/membership.ts';
import { eventually } from '../helpers.ts';

/** What the filters saw, in order. */
const seen: string[] = [];

class Forbidden extends GranaryError {
  constructor(message: string) {
    super(message, 'APP_FORBIDDEN');
  }
}
registerError(Forbidden);

@grain('filtered')
class Filtered extends Grain {
  async echo(x: unknown): Promise<unknown> {
    seen.push(`echo(${JSON.stringify(x)})`);
    return x;
  }
  async secret(): Promise<string> {
    seen.push('secret ran');
    return 'the secret';
  }
  async fail(): Promise<never> {
    throw new Error('database exploded at row 7');
  }
  async callOther(key: string, x: unknown): Promise<unknown> {
    return this.getGrain(Filtered, key).echo(x);
  }
  async where(): Promise<string> {
    return this.silo.address;
  }
}

/** A grain with its own filter, which runs inside the silo's. */
@grain('guarded')
class Guarded extends Grain {
  calls = 0;
  async onIncomingCall(ctx: IncomingCallContext): Promise<void> {
    seen.push(`guarded filter ${ctx.method} on ${ctx.grainId.key}, grain is ${ctx.grain === this ? 'this' : 'other'}`);
    if (ctx.method === 'count' && this.calls >= 2) {
      ctx.result = -1; // short-circuit with a result
      return;
    }
    await ctx.invoke();
  }
  async count(): Promise<number> {
    return ++this.calls;
  }
}

const logging: IncomingCallFilter = async (ctx) => {
  seen.push(`in ${ctx.grainId.type}/${ctx.grainId.key}.${ctx.method}(${JSON.stringify(ctx.args)})`);
  await ctx.invoke();
  seen.push(`out ${ctx.method} -> ${JSON.stringify(ctx.result)}`);
};

const authorize: IncomingCallFilter = async (ctx) => {
  if (ctx.method === 'secret' && RequestContext.get('role') !== 'admin')
    throw new Forbidden(`${ctx.method} needs role admin, the caller has ${String(RequestContext.get('role'))}`);
  await ctx.invoke();
};

const translate: IncomingCallFilter = async (ctx) => {
  try {
    await ctx.invoke();
  } catch {
    // Internal details stay inside; the caller gets a code it can match.
    throw new GranaryError(`${ctx.method} failed`, 'APP_INTERNAL');
  }
};

const doubler: IncomingCallFilter = async (ctx) => {
  if (ctx.method === 'echo' && typeof ctx.args[0] === 'number') ctx.args[0] = (ctx.args[0] as number) * 2;
  await ctx.invoke();
};

describe('grain call filters', () => {
  const silos: Silo[] = [];
  const clients: ClusterClient[] = [];
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(silos.map((s) => s.stop()));
  });

  it('run incoming filters outermost first, then the class’s own, around the method, with args and result in reach', async () => {
    const silo = await Silo.start({
      grains: [Filtered, Guarded],
      incomingFilters: [logging, doubler],
      logger: silentLogger(),
    });
    silos.push(silo);
    seen.length = 0;
    assert.equal(await silo.getGrain(Filtered, 'a').echo(21), 42);
    assert.deepEqual(seen, ['in filtered/a.echo([21])', 'echo(42)', 'out echo -> 42']);

    seen.length = 0;
    const g = silo.getGrain(Guarded, 'g');
    assert.equal(await g.count(), 1);
    assert.equal(await g.count(), 2);
    assert.equal(await g.count(), -1, 'the grain’s own filter short-circuits with a result');
    assert.deepEqual(seen.slice(0, 3), [
      'in guarded/g.count([])',
      'guarded filter count on g, grain is this',
      'out count -> 1',
    ]);
    // onIncomingCall is the runtime's, never a method a reference can call.
    await assert.rejects(
      (silo.getGrain('guarded', 'g') as unknown as { onIncomingCall(): Promise<void> }).onIncomingCall(),
      UnknownMethodError,
    );
  });

  it('an incoming filter refuses a call (authorization) and translates errors, over the wire from a client', async () => {
    const silo = await Silo.start({
      grains: [Filtered],
      gatewayPort: 0,
      port: 0,
      incomingFilters: [authorize, translate],
      logger: silentLogger(),
    });
    silos.push(silo);
    const client = await ClusterClient.connect({
      clusterId: 'dev',
      gateways: [silo.cluster?.gatewayAddress as string],
      logger: silentLogger(),
    });
    clients.push(client);
    const g = client.getGrain(Filtered, 'auth');
    seen.length = 0;
    await assert.rejects(g.secret(), (e: unknown) => {
      assert.ok(e instanceof Forbidden, `a Forbidden, got ${String(e)}`);
      assert.equal(e.code, 'APP_FORBIDDEN');
      assert.match(e.message, /needs role admin, the caller has undefined/);
      return true;
    });
    assert.deepEqual(seen, [], 'the refused method never ran');
    assert.equal(await RequestContext.run({ role: 'admin' }, () => g.secret()), 'the secret');
    await assert.rejects(g.fail(), (e: unknown) => {
      assert.ok(e instanceof GranaryError);
      assert.equal(e.code, 'APP_INTERNAL');
      assert.equal(e.message, 'fail failed');
      assert.doesNotMatch(String(e.stack), /database exploded/);
      return true;
    });
  });

  it('outgoing filters see calls from grains (with their source) and from the silo, and may short-circuit', async () => {
    const out: string[] = [];
    const record: OutgoingCallFilter = async (ctx) => {
      out.push(
        `${ctx.source === undefined ? 'silo' : `${ctx.source.type}/${ctx.source.key}`} -> ${ctx.target.type}/${ctx.target.key}.${ctx.method}`,
      );
      if (ctx.method === 'echo' && ctx.args[0] === 'cached') {
        ctx.result = 'from the cache';
        return;
      }
      await ctx.invoke();
    };
    const silo = await Silo.start({ grains: [Filtered], outgoingFilters: [record], logger: silentLogger() });
    silos.push(silo);
    seen.length = 0;
    assert.equal(await silo.getGrain(Filtered, 'x').callOther('y', 'hello'), 'hello');
    assert.deepEqual(out, ['silo -> filtered/x.callOther', 'filtered/x -> filtered/y.echo']);
    assert.equal(await silo.getGrain(Filtered, 'x').callOther('y', 'cached'), 'from the cache');
    assert.deepEqual(seen, ['echo("hello")'], 'the short-circuited call never reached grain y');
  });

  it('a client’s outgoing filter adds to the request context, which the callee sees and the caller does not', async () => {
    const silo = await Silo.start({ grains: [Filtered], gatewayPort: 0, port: 0, logger: silentLogger() });
    silos.push(silo);
    const stamp: OutgoingCallFilter = async (ctx) => {
      RequestContext.set('stamp', `${ctx.method}@client`);
      await ctx.invoke();
    };
    const client = await ClusterClient.connect({
      clusterId: 'dev',
      gateways: [silo.cluster?.gatewayAddress as string],
      outgoingFilters: [stamp],
      logger: silentLogger(),
    });
    clients.push(client);
    const readStamp: IncomingCallFilter = async (ctx) => {
      ctx.result = RequestContext.get('stamp');
    };
    const reader = await Silo.start({
      grains: [Filtered],
      gatewayPort: 0,
      port: 0,
      incomingFilters: [readStamp],
      logger: silentLogger(),
    });
    silos.push(reader);
    const c2 = await ClusterClient.connect({
      clusterId: 'dev',
      gateways: [reader.cluster?.gatewayAddress as string],
      outgoingFilters: [stamp],
      logger: silentLogger(),
    });
    clients.push(c2);
    assert.equal(await c2.getGrain(Filtered, 'r').echo('ignored'), 'echo@client');
    assert.equal(RequestContext.get('stamp'), undefined, 'the filter’s change stayed with the call');
    // A filter may call invoke() again: a retry of the rest of the chain.
    let attempts = 0;
    const retry: OutgoingCallFilter = async (ctx) => {
      try {
        await ctx.invoke();
      } catch {
        await ctx.invoke();
      }
    };
    const flaky: IncomingCallFilter = async (ctx) => {
      if (ctx.method === 'echo' && attempts++ === 0) throw new Error('first attempt fails');
      await ctx.invoke();
    };
    const s3 = await Silo.start({
      grains: [Filtered],
      incomingFilters: [flaky],
      outgoingFilters: [retry],
      logger: silentLogger(),
    });
    silos.push(s3);
    assert.equal(await s3.getGrain(Filtered, 'retry').echo(7), 7);
    assert.equal(attempts, 2);
  });

  it('incoming filters run on the silo that hosts the grain, for calls from another silo', async () => {
    const store = new MemoryMembershipStore();
    const ran: string[] = [];
    const start = (name: string): Promise<Silo> =>
      Silo.start({
        clusterId: 'filters',
        grains: [Filtered],
        port: 0,
        membership: memoryMembership({ store }),
        membershipOptions: { iAmAliveIntervalMs: 100, tableRefreshIntervalMs: 50, probeIntervalMs: 50 },
        incomingFilters: [
          async (ctx) => {
            ran.push(`${name}:${ctx.method}`);
            await ctx.invoke();
          },
        ],
        logger: silentLogger(),
      });
    const a = await start('a');
    const b = await start('b');
    silos.push(a, b);
    await eventually('both silos see each other', () => a.cluster?.view.active.size === 2);
    // Find a grain that lives on b, then call it from a.
    let key = '';
    for (let i = 0; key === '' && i < 200; i++) {
      if ((await b.getGrain(Filtered, `k${i}`).where()) === b.info.address) key = `k${i}`;
    }
    assert.notEqual(key, '', 'some grain was placed on b');
    ran.length = 0;
    assert.equal(await a.getGrain(Filtered, key).echo('over the wire'), 'over the wire');
    assert.deepEqual(ran, ['b:echo']);
  });

  it('refuses filters that are not functions, naming the option', async () => {
    await assert.rejects(
      Silo.start({ incomingFilters: [logging, 'nope' as unknown as IncomingCallFilter], logger: silentLogger() }),
      (e: unknown) => e instanceof ConfigurationError && /incomingFilters\[1\]/.test(e.message),
    );
    await assert.rejects(
      ClusterClient.connect({
        clusterId: 'dev',
        gateways: ['127.0.0.1:1'],
        outgoingFilters: {} as unknown as OutgoingCallFilter[],
      }),
      (e: unknown) => e instanceof ConfigurationError && /outgoingFilters/.test(e.message),
    );
  });
});
