import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { ConfigurationError, ErrorCodes, Silo, serveDashboard, silentLogger, type ServedDashboard } from 'granary';
import { TestCluster } from 'granary/testing';
import { resolveSiloOptions, describeSiloOptions, type SiloFallbacks } from '../../src/hosting/options.ts';
import type { DashboardModel } from '../../src/observability/dashboard/model.ts';
import { DashboardView, quantileMs } from '../../src/observability/dashboard/model.ts';
import { dashboardDefaults } from '../../src/observability/dashboard/options.ts';
import { HotGrains, HOT_SAMPLE } from '../../src/observability/hot-grains.ts';
import { memoryEventLog } from '../../src/providers/memory/event-log.ts';
import { memoryMembership } from '../../src/providers/memory/membership.ts';
import { memoryReminders } from '../../src/providers/memory/reminders.ts';
import { memoryStorage } from '../../src/providers/memory/storage.ts';
import { eventually } from '../helpers.ts';
import { DashCounter, DashPing, DashQueue, DashReminded, holdQueue, releaseQueue } from '../grains/dashboard.ts';

const TOKEN = 'a-test-token-of-32-characters-xx';
const grains = [DashCounter, DashPing, DashQueue, DashReminded];

const fallbacks: SiloFallbacks = {
  storage: () => memoryStorage(),
  eventLog: () => memoryEventLog(),
  reminders: () => memoryReminders(),
  membership: () => memoryMembership(),
};

/** GET or POST `path` on `base` (`http://host:port`), with the JSON body when there is one. */
async function api<T = Record<string, unknown>>(
  base: string,
  path: string,
  init: RequestInit = {},
): Promise<{ status: number; body: T; headers: Headers }> {
  const res = await fetch(`${base}${path}`, { redirect: 'manual', ...init });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // the page, or a redirect
  }
  return { status: res.status, body: body as T, headers: res.headers };
}

/** A request with a Host header of our choosing (fetch sets its own). */
function getWithHost(base: string, path: string, host: string): Promise<number> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, headers: { host } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Polls the snapshot until `check` holds; fails naming `what` with the last snapshot. */
async function snapshotUntil(
  base: string,
  what: string,
  check: (m: DashboardModel) => boolean,
  drive: () => Promise<unknown> = async () => {},
  init: RequestInit = {},
): Promise<DashboardModel> {
  let last: DashboardModel | undefined;
  try {
    await eventually(
      what,
      async () => {
        await drive();
        const r = await api<DashboardModel>(base, '/dashboard/api/snapshot', init);
        assert.equal(r.status, 200, JSON.stringify(r.body));
        last = r.body;
        return check(last);
      },
      15_000,
    );
  } catch (e) {
    throw new Error(`${(e as Error).message}; last snapshot: ${JSON.stringify(last)?.slice(0, 2000)}`);
  }
  return last as DashboardModel;
}

describe('the dashboard', () => {
  const clusters: TestCluster[] = [];
  const silos: Silo[] = [];
  const served: ServedDashboard[] = [];
  after(async () => {
    releaseQueue();
    await Promise.all(served.map((s) => s.close()));
    await Promise.all(silos.map((s) => s.stop()));
    await Promise.all(clusters.map((c) => c.stop()));
  });

  it('shows every silo, calls per type and activations of a cluster it gathers from each silo', async () => {
    const cluster = await TestCluster.start({ silos: 2, grains, siloOptions: { httpPort: 0 } });
    clusters.push(cluster);
    const [a, b] = cluster.silos as [Silo, Silo];
    const base = `http://${a.httpAddress}`;
    for (let i = 0; i < 40; i++) await cluster.client.getGrain(DashCounter, `c${i}`).increment();

    const m = await snapshotUntil(
      base,
      'a nonzero call rate for dash.counter',
      (s) => (s.types.find((t) => t.type === 'dash.counter')?.callsPerSecond ?? 0) > 0,
      () =>
        Promise.all(Array.from({ length: 10 }, (_, i) => cluster.client.getGrain(DashCounter, `c${i}`).increment())),
    );
    assert.equal(m.servedBy, a.info.address);
    assert.deepEqual(
      m.silos.map((s) => [s.address, s.status]).sort(),
      [
        [a.info.address, 'active'],
        [b.info.address, 'active'],
      ].sort(),
    );
    const counter = m.types.find((t) => t.type === 'dash.counter');
    assert.ok(counter !== undefined);
    assert.ok(counter.calls >= 40, `dash.counter calls: ${counter.calls}`);
    assert.equal(counter.activations, 40, 'every counter is active once, on one of the two silos');
    assert.equal(m.totals.activations, a.activationCount + b.activationCount);
    assert.ok(counter.p50Ms !== null && counter.p99Ms !== null && counter.p50Ms <= counter.p99Ms);
    assert.ok(
      m.events.some((e) => e.silo === b.info.address || e.detail.includes(b.info.address)),
      'the membership log names the second silo',
    );

    // A failing call shows in the errors, by type and code.
    await assert.rejects(cluster.client.getGrain(DashPing, 'x').fail(), /refused on purpose/);
    const failed = await snapshotUntil(base, 'the failure of dash.ping in the errors', (s) =>
      s.errors.some((e) => e.type === 'dash.ping' && e.code === 'APP_REFUSED' && e.total === 1),
    );
    assert.equal(failed.types.find((t) => t.type === 'dash.ping')?.failures, 1);
    // The page itself is one HTML file that names nothing outside.
    const page = await api<string>(base, '/dashboard');
    assert.equal(page.status, 200);
    assert.ok(page.headers.get('content-type')?.startsWith('text/html'));
    assert.ok(!/\b(src|href)="https?:/.test(page.body), 'the page loads nothing from elsewhere');
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'none'/);
  });

  it('finds a grain, reads its state, its ETag and its reminders, and edits it only under that ETag', async () => {
    const silo = await Silo.start({ grains, httpPort: 0, logger: silentLogger(), minReminderPeriodMs: 1000 });
    silos.push(silo);
    const base = `http://${silo.httpAddress}`;
    await silo.getGrain(DashCounter, 'alice').increment(5);
    await silo.getGrain(DashReminded, 'r1').remind(5000);

    const found = await api<{
      grain: string;
      location: [string, number] | null;
      local: { state: string; rate: number | null } | null;
      states: Array<{ state: string; provider: string; etag: string | null; json: string; editable: boolean }>;
    }>(base, '/dashboard/api/grain?type=dash.counter&key=alice');
    assert.equal(found.status, 200, JSON.stringify(found.body));
    assert.equal(found.body.grain, 'dash.counter/alice');
    assert.equal(found.body.location?.[0], silo.info.address);
    assert.equal(found.body.local?.state, 'Valid');
    const [state] = found.body.states;
    assert.ok(state !== undefined);
    assert.equal(state.state, 'count');
    assert.equal(state.provider, 'default');
    assert.deepEqual(JSON.parse(state.json), { value: 5 });
    assert.equal(state.editable, true);
    assert.ok(state.etag !== null);

    const reminded = await api<{ reminders: Array<{ name: string; periodMs: number }> }>(
      base,
      '/dashboard/api/grain?type=dash.reminded&key=r1',
    );
    assert.deepEqual(
      reminded.body.reminders.map((r) => [r.name, r.periodMs]),
      [['tick', 5000]],
    );
    const nowhere = await api<{ location: unknown; local: unknown }>(
      base,
      '/dashboard/api/grain?type=dash.counter&key=bob',
    );
    assert.equal(nowhere.body.location, null);
    assert.equal(nowhere.body.local, null);

    const edit = (etag: string | null, json: string): Promise<{ status: number; body: Record<string, unknown> }> =>
      api(base, '/dashboard/api/state', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type: 'dash.counter', key: 'alice', state: 'count', etag, json }),
      });
    const written = await edit(state.etag, '{ "value": 100 }');
    assert.equal(written.status, 200, JSON.stringify(written.body));
    assert.equal(written.body['deactivated'], true);
    // The activation went; the next call reads the edited state.
    assert.equal(await silo.getGrain(DashCounter, 'alice').get(), 100);

    // The editor's ETag is stale now: the edit is refused and changes nothing.
    const stale = await edit(state.etag, '{ "value": 7 }');
    assert.equal(stale.status, 409);
    assert.equal(stale.body['code'], ErrorCodes.InconsistentState);
    assert.equal(await silo.getGrain(DashCounter, 'alice').get(), 100);
    // A write the grain makes after the edit starts from the edited value.
    assert.equal(await silo.getGrain(DashCounter, 'alice').increment(), 101);

    const notJson = await edit(written.body['etag'] as string, '{ value: 1');
    assert.equal(notJson.status, 400);
    assert.equal(notJson.body['code'], ErrorCodes.Configuration);
    // An edit is a JSON POST from the page's own origin, never a form from another site.
    const form = await api(base, '/dashboard/api/state', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'type=dash.counter',
    });
    assert.equal(form.status, 415);
    const foreign = await api(base, '/dashboard/api/state', {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: 'http://evil.example' },
      body: '{}',
    });
    assert.equal(foreign.status, 403);
  });

  it('warns of a hammered grain and of a long mailbox, with the pattern that fixes each', async () => {
    const silo = await Silo.start({
      grains,
      httpPort: 0,
      logger: silentLogger(),
      dashboard: { hotGrainCallsPerSecond: 50, hotGrainQueueLength: 5 },
    });
    silos.push(silo);
    const base = `http://${silo.httpAddress}`;
    const hammer = async (): Promise<void> => {
      const ping = silo.getGrain(DashPing, 'singleton');
      for (let i = 0; i < 2000; i++) await ping.ping();
      for (let i = 0; i < 20; i++) await silo.getGrain(DashPing, `other-${i}`).ping();
    };
    const m = await snapshotUntil(
      base,
      'a warning for dash.ping/singleton',
      (s) => s.warnings.some((w) => w.grain === 'dash.ping/singleton' && w.kind === 'calls'),
      hammer,
    );
    const w = m.warnings.find((x) => x.grain === 'dash.ping/singleton');
    assert.ok(w !== undefined);
    assert.equal(w.pattern, 'hot aggregator', 'it takes most of its type calls, and they write (ping is no @readOnly)');
    assert.match(w.advice, /statelessWorker/);
    assert.equal(m.hot[0]?.grain, 'dash.ping/singleton');

    holdQueue();
    const waiting = Array.from({ length: 12 }, () => silo.getGrain(DashQueue, 'q').getTotal());
    const q = await snapshotUntil(base, 'a long-mailbox warning for dash.queue/q', (s) =>
      s.warnings.some((x) => x.grain === 'dash.queue/q' && x.kind === 'queue'),
    );
    const qw = q.warnings.find((x) => x.grain === 'dash.queue/q');
    assert.equal(qw?.pattern, 'long mailbox');
    assert.match(qw?.advice ?? '', /Mark getTotal @readOnly/);
    releaseQueue();
    await Promise.all(waiting);
  });

  it('asks for its token (bearer, or once in the address, then a cookie); probes and metrics stay open', async () => {
    const silo = await Silo.start({ grains, httpPort: 0, logger: silentLogger(), dashboardToken: TOKEN });
    silos.push(silo);
    const base = `http://${silo.httpAddress}`;
    assert.equal((await api(base, '/dashboard')).status, 401);
    assert.equal((await api(base, '/dashboard/api/snapshot')).status, 401);
    assert.equal((await api(base, '/dashboard', { headers: { authorization: 'Bearer wrong-token' } })).status, 401);
    assert.equal((await api(base, '/dashboard', { headers: { authorization: `Bearer ${TOKEN}` } })).status, 200);
    assert.equal(
      (await api(base, '/dashboard/api/snapshot', { headers: { authorization: `Bearer ${TOKEN}` } })).status,
      200,
    );

    const once = await api(base, `/dashboard?token=${TOKEN}`);
    assert.equal(once.status, 303);
    assert.equal(once.headers.get('location'), '/dashboard', 'the token leaves the address');
    const cookie = once.headers.get('set-cookie') ?? '';
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
    const pair = cookie.split(';')[0] as string;
    assert.equal((await api(base, '/dashboard', { headers: { cookie: pair } })).status, 200);
    assert.equal((await api(base, '/dashboard', { headers: { cookie: 'granary_dashboard=nope' } })).status, 401);

    assert.equal((await api(base, '/health/live')).status, 200);
    assert.equal((await api(base, '/metrics')).status, 200);
  });

  it('without a token, answers only requests to a loopback host name', async () => {
    const silo = await Silo.start({ grains, httpPort: 0, logger: silentLogger() });
    silos.push(silo);
    const base = `http://${silo.httpAddress}`;
    assert.equal(await getWithHost(base, '/dashboard', `localhost:${new URL(base).port}`), 200);
    // A name that resolves to 127.0.0.1 for another site's page (DNS rebinding) is refused.
    assert.equal(await getWithHost(base, '/dashboard', 'attacker.example'), 403);
    assert.equal(await getWithHost(base, '/health/live', 'attacker.example'), 200);
  });

  it('is never served open beyond loopback: off by default there, refused at start when asked for', async () => {
    const saved = process.env['GRANARY_DASHBOARD_TOKEN'];
    delete process.env['GRANARY_DASHBOARD_TOKEN'];
    try {
      const beyond = { logger: silentLogger(), httpPort: 0, httpHost: '0.0.0.0' };
      assert.equal(resolveSiloOptions(beyond, fallbacks).dashboard, undefined);
      assert.equal(describeSiloOptions(resolveSiloOptions(beyond, fallbacks)).dashboard, 'off');
      assert.throws(
        () => resolveSiloOptions({ ...beyond, dashboard: true }, fallbacks),
        (e: unknown) =>
          e instanceof ConfigurationError &&
          /dashboardToken/.test(e.message) &&
          /GRANARY_DASHBOARD_TOKEN/.test(e.message) &&
          /0\.0\.0\.0/.test(e.message),
      );
      await assert.rejects(Silo.start({ ...beyond, dashboard: true }), ConfigurationError);
      assert.throws(() => resolveSiloOptions({ ...beyond, dashboardToken: 'short' }, fallbacks), /at least 16/);
      const withToken = resolveSiloOptions({ ...beyond, dashboardToken: TOKEN }, fallbacks);
      assert.ok(withToken.dashboard !== undefined);
      assert.equal(describeSiloOptions(withToken).dashboard, 'on with a token');
      assert.ok(!JSON.stringify(describeSiloOptions(withToken)).includes(TOKEN), 'the start log never shows the token');
      process.env['GRANARY_DASHBOARD_TOKEN'] = TOKEN;
      const fromEnv = resolveSiloOptions(beyond, fallbacks);
      assert.equal(fromEnv.dashboardToken, TOKEN);
      assert.ok(fromEnv.dashboard !== undefined);
      assert.equal(resolveSiloOptions({ ...beyond, dashboard: false }, fallbacks).dashboard, undefined);
      // On loopback it is on by default; off on request.
      delete process.env['GRANARY_DASHBOARD_TOKEN'];
      assert.ok(resolveSiloOptions({ logger: silentLogger(), httpPort: 0 }, fallbacks).dashboard !== undefined);
      assert.throws(
        () => resolveSiloOptions({ logger: silentLogger(), dashboard: { hotGrainsShown: 0 } }, fallbacks),
        /dashboard\.hotGrainsShown must be a whole number from 1 to 64/,
      );
      await assert.rejects(
        serveDashboard({
          client: { dashboardSource: () => ({ cluster: never, grain: never, writeState: never }) },
          host: '0.0.0.0',
          port: 0,
        }),
        /dashboardToken/,
      );
    } finally {
      if (saved === undefined) delete process.env['GRANARY_DASHBOARD_TOKEN'];
      else process.env['GRANARY_DASHBOARD_TOKEN'] = saved;
    }
  });

  it('is served by a process that is no silo, through a client and its gateways', async () => {
    const cluster = await TestCluster.start({ silos: 2, grains, siloOptions: { dashboard: true } });
    clusters.push(cluster);
    for (let i = 0; i < 20; i++) await cluster.client.getGrain(DashCounter, `s${i}`).increment();
    const d = await serveDashboard({
      client: cluster.client,
      port: 0,
      title: cluster.clusterId,
      logger: silentLogger(),
    });
    served.push(d);
    const base = d.url.replace(/\/dashboard$/, '');
    const m = await snapshotUntil(
      base,
      'both silos, and dash.counter with its calls',
      (s) => s.silos.length === 2 && (s.types.find((t) => t.type === 'dash.counter')?.calls ?? 0) >= 20,
    );
    assert.ok(m.silos.every((s) => s.status === 'active'));
    const g = await api<{ location: [string, number] | null; states: unknown[] }>(
      base,
      '/dashboard/api/grain?type=dash.counter&key=s3',
    );
    assert.equal(g.status, 200, JSON.stringify(g.body));
    assert.ok(cluster.silos.some((s) => s.info.address === g.body.location?.[0]));
    assert.equal(g.body.states.length, 1);
    assert.equal((await api(base, '/')).status, 302);
  });

  it("a gateway whose silo has its dashboard off refuses a client's dashboard", async () => {
    const cluster = await TestCluster.start({ silos: 1, grains, siloOptions: { dashboard: false } });
    clusters.push(cluster);
    await assert.rejects(cluster.client.dashboardSource().cluster(), /dashboard off/);
  });
});

function never(): never {
  throw new Error('not called');
}

describe('the pieces of the dashboard', () => {
  it('marks a silo suspected while fresh votes say it is dead, and not for stale votes or once it is dead', () => {
    const at = 1_800_000_000_000;
    const member = (
      address: string,
      status: string,
      votes: [string, number][],
    ): [string, number, string, string | null, string, number, number, [string, number][]] => [
      address,
      1,
      status,
      null,
      'host',
      at - 600_000,
      at - 1_000,
      votes,
    ];
    const model = new DashboardView(dashboardDefaults).update({
      silo: 'a:1',
      at,
      members: [
        member('a:1', 'Active', []),
        member('b:1', 'Active', [
          ['a:1', at - 2_000],
          ['c:1', at - 5_000],
        ]),
        member('c:1', 'Active', [['a:1', at - 120_000]]),
        member('d:1', 'Dead', [['a:1', at - 2_000]]),
      ],
      silos: ['a:1', 'b:1', 'c:1'].map((address) => ({ address, stats: null, error: null })),
      events: [],
    });
    const suspected = Object.fromEntries(model.silos.map((s) => [s.address, s.suspectedBy]));
    assert.deepEqual(suspected, { 'a:1': [], 'b:1': ['a:1', 'c:1'], 'c:1': [], 'd:1': [] });
    assert.equal(model.silos.find((s) => s.address === 'd:1')?.status, 'dead');
  });

  it('estimates the hottest grains from a sample, within its error bound', () => {
    const hot = new HotGrains(16, 10_000, 0);
    // A seeded generator (xorshift32): the same calls and samples on every run, so the
    // bounds below are a statement about the estimator, not a coin toss.
    let seed = 0x9e3779b9;
    const random = (): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) / 0x1_0000_0000;
    };
    // 1 s of calls: grain a 4000 calls, b 1000, and 200 grains 10 each, sampled 1 in HOT_SAMPLE.
    let t = 0;
    let gap = 1;
    const calls: string[] = [];
    for (let i = 0; i < 4000; i++) calls.push('t/a');
    for (let i = 0; i < 1000; i++) calls.push('t/b');
    for (let k = 0; k < 200; k++) for (let i = 0; i < 10; i++) calls.push(`t/c${k}`);
    for (let i = calls.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [calls[i], calls[j]] = [calls[j] as string, calls[i] as string];
    }
    for (const g of calls) {
      t += 1000 / calls.length;
      if (--gap === 0) {
        gap = 1 + Math.floor(random() * (2 * HOT_SAMPLE - 1));
        hot.sample(g, 't', t);
      }
    }
    const top = hot.top(2, t);
    assert.deepEqual(
      top.map((h) => h.grain),
      ['t/a', 't/b'],
    );
    // One second of 4000 calls/s, since sampling began: about 4000/s (one in 16 sampled: a few % off).
    const a = top[0] as { rate: number; error: number };
    assert.ok(a.rate > 2500 && a.rate < 6000, `rate of t/a: ${a.rate}`);
    assert.ok(a.rate - a.error <= 6000, `rate of t/a less its error: ${a.rate - a.error}`);
    // Its share of the type's calls is 4000/7000 = 0.57; about 440 samples put the estimate
    // within ±0.025 at one standard deviation, so ±0.12 is wide enough for any seed.
    const share = top[0]?.share ?? 0;
    assert.ok(share > 0.45 && share < 0.7, `share of t/a: ${share}`);
    assert.equal(hot.rateOf('t/zzz', t), undefined);
  });

  it('reads latency percentiles from bucket counts', () => {
    const bounds = [0.001, 0.01, 0.1];
    assert.equal(quantileMs(bounds, [0, 0, 0, 0], 0.5), null);
    assert.equal(quantileMs(bounds, [10, 0, 0, 0], 0.5), 0.5);
    assert.ok(Math.abs((quantileMs(bounds, [0, 10, 0, 0], 0.5) ?? 0) - 5.5) < 1e-9);
    assert.equal(quantileMs(bounds, [99, 0, 0, 1], 0.99), 1);
  });
});
