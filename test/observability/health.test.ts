import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { Grain, Silo, grain, memoryMembership, memoryStorage, silentLogger, type StorageProvider } from 'granary';
import { fastMembership } from 'granary/testing';
import type { MembershipTable } from '../../src/membership/table.ts';
import { SiloHealth } from '../../src/observability/health.ts';
import { deferred, eventually, freePort } from '../helpers.ts';
import { get } from './scrape.ts';

/** Holds a turn open until the test lets it go, so a stop stays in progress. */
let entered = deferred();
let release = deferred();

@grain('obs.holder')
class Holder extends Grain {
  async hold(): Promise<string> {
    entered.resolve();
    await release.promise;
    return 'released';
  }
}

/** The answer of probe `path`: status code and body. */
async function probe(silo: Silo, path: string): Promise<{ code: number; body: Record<string, string> }> {
  const res = await get(silo, path);
  return { code: res.status, body: (await res.json()) as Record<string, string> };
}

/** A membership table that fails every call while `down` is set, as an unreachable store does. */
function breakable(inner: MembershipTable): MembershipTable & { down: boolean } {
  const t = {
    down: false,
    kind: 'breakable',
    guard<T>(f: () => Promise<T>): Promise<T> {
      return t.down ? Promise.reject(new Error('membership store unreachable')) : f();
    },
    init: (ctx: Parameters<MembershipTable['init']>[0]) => inner.init(ctx),
    readAll: () => t.guard(() => inner.readAll()),
    insert: (...a: Parameters<MembershipTable['insert']>) => t.guard(() => inner.insert(...a)),
    update: (...a: Parameters<MembershipTable['update']>) => t.guard(() => inner.update(...a)),
    updateIAmAlive: (...a: Parameters<MembershipTable['updateIAmAlive']>) => t.guard(() => inner.updateIAmAlive(...a)),
    cleanupDefunct: (before: number) => t.guard(() => inner.cleanupDefunct(before)),
    deleteCluster: () => t.guard(() => inner.deleteCluster()),
    close: () => inner.close(),
  };
  return t;
}

describe('the health probes of a silo', () => {
  const silos: Silo[] = [];
  after(async () => {
    release.resolve();
    await Promise.all(silos.map((s) => s.stop()));
  });

  it('answer startup 503 until the silo has started, then 200', async () => {
    // Storage that opens only when the test says so: the silo is mid-start meanwhile.
    const opened = deferred();
    const inner = memoryStorage();
    const slow: StorageProvider = {
      kind: 'slow',
      init: async (ctx) => {
        await opened.promise;
        await inner.init(ctx);
      },
      read: (a) => inner.read(a),
      write: (a, s, e) => inner.write(a, s, e),
      clear: (a, e) => inner.clear(a, e),
      close: () => inner.close(),
    };
    const httpPort = await freePort();
    const starting = Silo.start({ grains: [Holder], httpPort, storage: { default: slow }, logger: silentLogger() });
    const url = (path: string): string => `http://127.0.0.1:${httpPort}${path}`;
    let startup: Response | undefined;
    await eventually('the HTTP endpoint answers while the silo starts', async () => {
      startup = await fetch(url('/health/startup')).catch(() => undefined);
      return startup !== undefined;
    });
    assert.equal(startup?.status, 503);
    assert.deepEqual(await startup?.json(), {
      status: 'fail',
      silo: '127.0.0.1:11111',
      reason: 'the silo is starting',
    });
    assert.equal((await fetch(url('/health/ready'))).status, 503, 'ready before the start completed');
    assert.equal((await fetch(url('/health/live'))).status, 200, 'live while starting');
    opened.resolve();
    const silo = await starting;
    silos.push(silo);
    assert.equal(silo.httpAddress, `127.0.0.1:${httpPort}`);
    assert.equal((await probe(silo, '/health/startup')).code, 200);
    assert.deepEqual(await probe(silo, '/health/ready'), {
      code: 200,
      body: { status: 'pass', silo: '127.0.0.1:11111' },
    });
  });

  it('fail readiness as soon as a stop begins, stay live during the drain, and close at the end', async () => {
    entered = deferred();
    release = deferred();
    const silo = await Silo.start({ grains: [Holder], httpPort: 0, logger: silentLogger() });
    const call = silo.getGrain(Holder, 'h').hold();
    await entered.promise;
    assert.equal((await probe(silo, '/health/ready')).code, 200);
    const stopping = silo.stop();
    // The turn is still running: the stop is in progress, waiting for it.
    const ready = await probe(silo, '/health/ready');
    assert.deepEqual(ready, {
      code: 503,
      body: { status: 'fail', silo: silo.info.address, reason: 'the silo is stopping' },
    });
    assert.equal((await probe(silo, '/health/live')).code, 200, 'live while the stop drains');
    assert.equal((await probe(silo, '/health/startup')).code, 200);
    const head = await get(silo, '/health/ready', 'HEAD');
    assert.equal(head.status, 503);
    assert.equal(await head.text(), '');
    release.resolve();
    assert.equal(await call, 'released', 'the running turn finished before the stop');
    await stopping;
    await assert.rejects(get(silo, '/health/live'), 'the endpoint is closed after the stop');
  });

  it('fail liveness and readiness once the cluster declared the silo dead', async () => {
    entered = deferred();
    release = deferred();
    const silo = await Silo.start({ grains: [Holder], httpPort: 0, logger: silentLogger() });
    const call = silo.getGrain(Holder, 'd').hold();
    await entered.promise;
    silo.declaredDead();
    const live = await probe(silo, '/health/live');
    assert.deepEqual(live.body, {
      status: 'fail',
      silo: silo.info.address,
      reason: 'the silo was declared dead by the cluster',
    });
    assert.equal(live.code, 503);
    assert.equal((await probe(silo, '/health/ready')).code, 503);
    release.resolve();
    await call;
    assert.equal(await silo.terminated, 'declared dead');
  });

  it('stay live and ready while the membership store is unreachable', async () => {
    const table = breakable(memoryMembership());
    const silo = await Silo.start({
      grains: [Holder],
      port: 0,
      httpPort: 0,
      membership: table,
      membershipOptions: fastMembership,
      logger: silentLogger(),
    });
    silos.push(silo);
    table.down = true;
    await eventually(
      'the silo notices that the membership table is unreachable',
      () => silo.cluster?.membership.tableReachable === false,
    );
    assert.equal((await probe(silo, '/health/live')).code, 200);
    assert.equal((await probe(silo, '/health/ready')).code, 200);
    table.down = false;
  });

  it('answer 404 in JSON for an unknown path and 405 for a method other than GET or HEAD', async () => {
    const silo = await Silo.start({ grains: [Holder], httpPort: 0, logger: silentLogger() });
    silos.push(silo);
    const missing = await get(silo, '/healthz');
    assert.equal(missing.status, 404);
    assert.match(missing.headers.get('content-type') ?? '', /^application\/json/);
    const body = (await missing.json()) as { reason: string; paths: string[] };
    assert.match(body.reason, /no such path: \/healthz/);
    assert.ok(body.paths.includes('/health/live') && body.paths.includes('/metrics'));
    const post = await get(silo, '/health/live', 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    assert.equal((await get(silo, '/health/live?verbose=1')).status, 200, 'a query string is ignored');
  });
});

describe('SiloHealth', () => {
  it('only moves forward, and answers each probe from the phase alone', () => {
    const h = new SiloHealth('a:1');
    const all = (): string => (['startup', 'live', 'ready'] as const).map((k) => (h.probe(k).ok ? 'y' : 'n')).join('');
    assert.equal(all(), 'nyn');
    h.moveTo('active');
    assert.equal(all(), 'yyy');
    h.moveTo('stopping');
    assert.equal(all(), 'yyn');
    h.moveTo('active');
    assert.equal(h.phase, 'stopping', 'no way back');
    h.moveTo('stopped');
    assert.equal(all(), 'ynn');
    const dead = new SiloHealth('a:1');
    dead.moveTo('active');
    dead.moveTo('dead');
    assert.equal(dead.probe('live').reason, 'the silo was declared dead by the cluster');
    dead.moveTo('stopped');
    assert.equal(dead.phase, 'dead');
  });
});
