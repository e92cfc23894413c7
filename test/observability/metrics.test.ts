import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConfigurationError,
  Grain,
  GranaryError,
  InconsistentStateError,
  Silo,
  grain,
  memoryStorage,
  readOnly,
  silentLogger,
} from 'granary';
import { LATENCY_EXACT_FIRST, LATENCY_SAMPLE } from '../../src/runtime/call-meter.ts';
import { eventually } from '../helpers.ts';
import { get, samples, scrape, value } from './scrape.ts';

/** Keys no metric may show: each holds this marker. */
const SECRET = 'customer-4711-secret';

@grain('obs.account')
class Account extends Grain {
  readonly balance = this.persistentState('balance', { initial: () => ({ value: 0 }) });
  async deposit(n: number): Promise<number> {
    this.balance.state.value += n;
    await this.balance.write();
    return this.balance.state.value;
  }
  @readOnly async get(): Promise<number> {
    return this.balance.state.value;
  }
  async overdraw(): Promise<never> {
    throw new GranaryError('not enough money', 'OUT_OF_FUNDS');
  }
  async bug(): Promise<never> {
    throw new TypeError('a bug in grain code');
  }
  async leave(): Promise<void> {
    this.deactivateOnIdle();
  }
  async conflict(): Promise<never> {
    throw new InconsistentStateError('someone else wrote first');
  }
}

@grain('obs.plain')
class Plain extends Grain {
  async ping(): Promise<string> {
    return 'pong';
  }
}

describe('the /metrics endpoint of a silo', () => {
  const silos: Silo[] = [];
  after(async () => {
    await Promise.all(silos.map((s) => s.stop()));
  });

  it('counts calls by type and method, failures by code, activations and storage, and never shows a key', async () => {
    const silo = await Silo.start({
      grains: [Account, Plain],
      httpPort: 0,
      storage: { default: memoryStorage() },
      logger: silentLogger(),
    });
    silos.push(silo);
    assert.match(silo.httpAddress ?? '', /^127\.0\.0\.1:\d+$/);
    for (let i = 0; i < 3; i++) await silo.getGrain(Account, `${SECRET}-${i}`).deposit(10);
    for (let i = 0; i < 4; i++) await silo.getGrain(Account, `${SECRET}-0`).get();
    await assert.rejects(silo.getGrain(Account, `${SECRET}-0`).overdraw());
    await assert.rejects(silo.getGrain(Account, `${SECRET}-0`).overdraw());
    await assert.rejects(silo.getGrain(Account, `${SECRET}-1`).bug());
    await assert.rejects(silo.getGrain(Account, `${SECRET}-1`).conflict());
    await silo.getGrain(Plain, `${SECRET}-p`).ping();

    const text = await scrape(silo);
    assert.ok(!text.includes(SECRET), 'a grain key appears in the metrics');
    const calls = (method: string, type = 'obs.account'): number | undefined =>
      value(text, 'granary_app_requests_total', { type, method });
    assert.equal(calls('deposit'), 3);
    assert.equal(calls('get'), 4);
    assert.equal(calls('overdraw'), 2);
    assert.equal(calls('bug'), 1);
    assert.equal(calls('ping', 'obs.plain'), 1);
    const failed = (method: string, code: string): number | undefined =>
      value(text, 'granary_app_requests_failed_total', { type: 'obs.account', method, code });
    assert.equal(failed('overdraw', 'OUT_OF_FUNDS'), 2);
    assert.equal(failed('bug', 'GRANARY_ERROR'), 1, 'an error that is no GranaryError counts as GRANARY_ERROR');
    assert.equal(failed('conflict', 'GRANARY_INCONSISTENT_STATE'), 1);
    assert.equal(failed('deposit', 'GRANARY_ERROR'), undefined, 'deposit never failed');
    // 3 + 4 + 2 + 1 + 1 calls of obs.account reached their activations.
    assert.equal(value(text, 'granary_app_requests_latency_seconds_count', { type: 'obs.account' }), 11);
    assert.equal(value(text, 'granary_app_requests_latency_seconds_bucket', { type: 'obs.account', le: '+Inf' }), 11);

    assert.equal(value(text, 'granary_catalog_activations', { type: 'obs.account' }), 3);
    assert.equal(value(text, 'granary_catalog_activations', { type: 'obs.plain' }), 1);
    assert.equal(value(text, 'granary_catalog_activations_created_total', { type: 'obs.account' }), 3);
    assert.equal(value(text, 'granary_catalog_mailbox_messages'), 0);

    // Each new activation read its state once; three deposits wrote it three times.
    const storage = (name: string, operation: string): number | undefined =>
      value(text, name, { provider: 'default', operation });
    assert.equal(storage('granary_storage_operations_total', 'read'), 3);
    assert.equal(storage('granary_storage_operations_total', 'write'), 3);
    assert.equal(storage('granary_storage_latency_seconds_count', 'write'), 3);
    assert.equal(value(text, 'granary_storage_operations_failed_total'), undefined);

    // A silo alone has no cluster to count; the process's own metrics come along.
    assert.equal(value(text, 'granary_membership_active_silos'), undefined);
    assert.ok(samples(text).some((s) => s.name === 'process_cpu_user_seconds_total'));
    // Every series of a silo's own metrics is labelled with few values: no label holds an id.
    for (const s of samples(text).filter((x) => x.name.startsWith('granary_')))
      for (const [label, v] of Object.entries(s.labels))
        assert.ok(v.length < 40, `label ${label}="${v}" of ${s.name} looks like an id`);
  });

  it('times every call of a type at first, then one in LATENCY_SAMPLE standing for as many', async () => {
    const silo = await Silo.start({ grains: [Plain], metrics: true, logger: silentLogger() });
    silos.push(silo);
    const n = LATENCY_EXACT_FIRST + 1000;
    for (let i = 0; i < n; i++) await silo.getGrain(Plain, `p-${i % 10}`).ping();
    const text = await silo.metrics();
    assert.equal(value(text, 'granary_app_requests_total', { type: 'obs.plain', method: 'ping' }), n);
    const timed = value(text, 'granary_app_requests_latency_seconds_count', { type: 'obs.plain' }) ?? 0;
    assert.ok(Math.abs(timed - n) < LATENCY_SAMPLE, `the histogram counts ${timed} of ${n} calls`);
    assert.equal(
      timed % LATENCY_SAMPLE,
      LATENCY_EXACT_FIRST % LATENCY_SAMPLE,
      'past the first calls, each sample counts LATENCY_SAMPLE',
    );
  });

  it('counts deactivations by reason, and failed storage operations by code', async () => {
    const store = memoryStorage();
    const silo = await Silo.start({
      grains: [Account],
      metrics: true,
      storage: { default: store },
      logger: silentLogger(),
    });
    silos.push(silo);
    await silo.getGrain(Account, 'a').deposit(1);
    // Another writer changes the record behind the activation's back: its next write fails on the ETag.
    await store.write(
      { grainType: 'obs.account', grainKey: 'a', stateName: 'balance' },
      { value: 99 },
      await etagOf(store),
    );
    await assert.rejects(silo.getGrain(Account, 'a').deposit(1), InconsistentStateError);
    const text = await silo.metrics();
    assert.equal(
      value(text, 'granary_storage_operations_failed_total', {
        provider: 'default',
        operation: 'write',
        code: 'GRANARY_INCONSISTENT_STATE',
      }),
      1,
    );
    assert.equal(value(text, 'granary_storage_operations_total', { provider: 'default', operation: 'write' }), 2);
    assert.equal(
      value(text, 'granary_app_requests_failed_total', { method: 'deposit', code: 'GRANARY_INCONSISTENT_STATE' }),
      1,
    );
    assert.equal(silo.httpAddress, undefined, 'metrics: true alone opens no HTTP endpoint');

    // Deactivations, by reason: one the grain asked for, then idle collection.
    await silo.getGrain(Account, 'leaving').leave();
    await eventually(
      'the deactivation asked for is counted',
      async () =>
        value(await silo.metrics(), 'granary_catalog_activations_deactivated_total', { reason: 'requested' }) === 1,
    );
    const idle = await Silo.start({
      grains: [Plain],
      metrics: true,
      collectionAgeMs: 20,
      collectionQuantumMs: 5,
      logger: silentLogger(),
    });
    silos.push(idle);
    await idle.getGrain(Plain, 'idle').ping();
    await eventually(
      'the idle activation is collected and counted',
      async () =>
        value(await idle.metrics(), 'granary_catalog_activations_deactivated_total', {
          type: 'obs.plain',
          reason: 'idle',
        }) === 1,
    );
    assert.equal(value(await idle.metrics(), 'granary_catalog_activations', { type: 'obs.plain' }), undefined);
  });

  it('serves no /metrics when metrics are off, and refuses silo.metrics() on a silo without them', async () => {
    const silo = await Silo.start({ grains: [Plain], httpPort: 0, metrics: false, logger: silentLogger() });
    silos.push(silo);
    assert.equal((await get(silo, '/metrics')).status, 404);
    assert.equal((await get(silo, '/health/ready')).status, 200);
    await assert.rejects(silo.metrics(), ConfigurationError);
    const plain = await Silo.start({ grains: [Plain], logger: silentLogger() });
    silos.push(plain);
    await assert.rejects(plain.metrics(), /metrics: true or an httpPort/);
  });

  async function etagOf(store: ReturnType<typeof memoryStorage>): Promise<string | null> {
    return (await store.read({ grainType: 'obs.account', grainKey: 'a', stateName: 'balance' })).etag;
  }
});
