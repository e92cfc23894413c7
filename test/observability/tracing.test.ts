import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import { ClusterClient, Grain, grain, GranaryError, RequestContext, Silo, silentLogger } from 'granary';
import { memoryMembership, MemoryMembershipStore } from '../../src/providers/memory/membership.ts';
import { parseTraceparent, traceparentOf } from '../../src/observability/tracing.ts';
import { eventually } from '../helpers.ts';

@grain('traceFront')
class Front extends Grain {
  async order(backKey: string, item: string): Promise<number> {
    return this.getGrain(Back, backKey).add(item);
  }
  async boom(): Promise<never> {
    throw new GranaryError('out of stock', 'APP_OUT_OF_STOCK');
  }
  async where(): Promise<string> {
    return this.silo.address;
  }
}

@grain('traceBack')
class Back extends Grain {
  readonly items = this.persistentState('items', { initial: () => ({ list: [] as string[] }) });
  async add(item: string): Promise<number> {
    this.items.state.list.push(item);
    await this.items.write();
    return this.items.state.list.length;
  }
  async where(): Promise<string> {
    return this.silo.address;
  }
}

function newProvider(): { provider: BasicTracerProvider; exporter: InMemorySpanExporter } {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  return { provider, exporter };
}

const parentOf = (s: ReadableSpan): string | undefined => s.parentSpanContext?.spanId;

describe('OpenTelemetry tracing', () => {
  const silos: Silo[] = [];
  const clients: ClusterClient[] = [];
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(silos.map((s) => s.stop()));
    trace.disable();
  });

  it('one request through a client and two silos is one trace: client -> grain -> grain -> storage', async () => {
    const { provider, exporter } = newProvider();
    const store = new MemoryMembershipStore();
    const start = (): Promise<Silo> =>
      Silo.start({
        clusterId: 'tracing',
        grains: [Front, Back],
        port: 0,
        gatewayPort: 0,
        membership: memoryMembership({ store }),
        membershipOptions: { iAmAliveIntervalMs: 100, tableRefreshIntervalMs: 50, probeIntervalMs: 50 },
        tracing: { tracerProvider: provider },
        logger: silentLogger(),
      });
    const a = await start();
    const b = await start();
    silos.push(a, b);
    await eventually('both silos see each other', () => a.cluster?.view.active.size === 2);
    const client = await ClusterClient.connect({
      clusterId: 'tracing',
      gateways: [a.cluster?.gatewayAddress as string],
      tracing: { tracerProvider: provider },
      logger: silentLogger(),
    });
    clients.push(client);
    // A front grain on a, a back grain on b: the request crosses both silos.
    let front = '';
    let back = '';
    for (let i = 0; (front === '' || back === '') && i < 200; i++) {
      if (front === '' && (await a.getGrain(Front, `f${i}`).where()) === a.info.address) front = `f${i}`;
      if (back === '' && (await a.getGrain(Back, `b${i}`).where()) === b.info.address) back = `b${i}`;
    }
    assert.ok(front !== '' && back !== '', 'grains placed on both silos');
    exporter.reset();

    assert.equal(await client.getGrain(Front, front).order(back, 'apple'), 1);
    await eventually('the spans of the request are exported', () =>
      exporter.getFinishedSpans().some((s) => s.name === 'storage write'),
    );
    const spans = exporter.getFinishedSpans();
    const root = spans.find((s) => s.kind === SpanKind.CLIENT && s.name === 'traceFront/order');
    assert.ok(root, `a client span for the call; got ${spans.map((s) => s.name).join(', ')}`);
    assert.equal(parentOf(root), undefined, 'the client span is the root');
    assert.equal(root.attributes['granary.caller'], 'client');
    const traceId = root.spanContext().traceId;
    for (const s of spans) assert.equal(s.spanContext().traceId, traceId, `${s.name} is in the request's trace`);

    const frontServer = spans.find((s) => s.kind === SpanKind.SERVER && s.name === 'traceFront/order');
    assert.ok(frontServer);
    assert.equal(parentOf(frontServer), root.spanContext().spanId);
    assert.equal(frontServer.attributes['granary.silo'], a.info.address);
    const hop = spans.find((s) => s.kind === SpanKind.CLIENT && s.name === 'traceBack/add');
    assert.ok(hop);
    assert.equal(parentOf(hop), frontServer.spanContext().spanId);
    assert.equal(hop.attributes['granary.caller'], `traceFront/${front}`);
    const backServer = spans.find((s) => s.kind === SpanKind.SERVER && s.name === 'traceBack/add');
    assert.ok(backServer);
    assert.equal(parentOf(backServer), hop.spanContext().spanId);
    assert.equal(backServer.attributes['granary.silo'], b.info.address);
    const write = spans.find((s) => s.name === 'storage write');
    assert.ok(write);
    assert.equal(parentOf(write), backServer.spanContext().spanId);
    assert.equal(write.attributes['granary.grain.id'], `traceBack/${back}`);
    assert.equal(write.attributes['granary.state'], 'items');
    // The trace context never leaks back to the caller.
    assert.equal(RequestContext.get('traceparent'), undefined);
  });

  it('activations get a span in the trace of the call that made them, and failures are marked', async () => {
    const { provider, exporter } = newProvider();
    const silo = await Silo.start({
      grains: [Front, Back],
      tracing: { tracerProvider: provider },
      logger: silentLogger(),
    });
    silos.push(silo);
    assert.equal(await silo.getGrain(Back, 'fresh').add('x'), 1);
    await eventually('spans exported', () => exporter.getFinishedSpans().some((s) => s.name === 'storage write'));
    let spans = exporter.getFinishedSpans();
    const activation = spans.find((s) => s.name === 'activate traceBack');
    assert.ok(activation, `an activation span; got ${spans.map((s) => s.name).join(', ')}`);
    const call = spans.find((s) => s.kind === SpanKind.CLIENT && s.name === 'traceBack/add');
    assert.ok(call);
    assert.equal(activation.spanContext().traceId, call.spanContext().traceId);
    assert.equal(parentOf(activation), call.spanContext().spanId);
    assert.ok(spans.some((s) => s.name === 'storage read' && s.attributes['granary.grain.id'] === 'traceBack/fresh'));

    exporter.reset();
    await assert.rejects(silo.getGrain(Front, 'f').boom(), /out of stock/);
    await eventually('failed spans exported', () => exporter.getFinishedSpans().length >= 2);
    spans = exporter.getFinishedSpans();
    for (const kind of [SpanKind.CLIENT, SpanKind.SERVER]) {
      const s = spans.find((x) => x.kind === kind && x.name === 'traceFront/boom');
      assert.ok(s, `a ${kind} span for the failed call`);
      assert.equal(s.status.code, SpanStatusCode.ERROR);
      assert.equal(s.status.message, 'out of stock');
      assert.equal(s.attributes['granary.error.code'], 'APP_OUT_OF_STOCK');
    }
  });

  it('uses the global tracer provider when one is registered, and nothing with tracing off', async () => {
    const { provider, exporter } = newProvider();
    const off = await Silo.start({ grains: [Front], tracing: false, logger: silentLogger() });
    silos.push(off);
    trace.setGlobalTracerProvider(provider);
    const auto = await Silo.start({ grains: [Front], logger: silentLogger() });
    silos.push(auto);
    await off.getGrain(Front, 'quiet').where();
    assert.deepEqual(exporter.getFinishedSpans(), [], 'a silo with tracing off makes no span');
    await auto.getGrain(Front, 'loud').where();
    await eventually('spans from the global provider', () =>
      exporter.getFinishedSpans().some((s) => s.name === 'traceFront/where' && s.kind === SpanKind.SERVER),
    );
  });

  it('reads a W3C traceparent, and ignores a malformed one (the call then starts a trace of its own)', () => {
    const good = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const sc = parseTraceparent(good, 'congo=t61rcWkgMzE');
    assert.ok(sc);
    assert.equal(sc.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.equal(sc.spanId, 'b7ad6b7169203331');
    assert.equal(sc.traceFlags, 1);
    assert.equal(sc.isRemote, true);
    assert.equal(sc.traceState?.get('congo'), 't61rcWkgMzE');
    assert.equal(traceparentOf(sc), good);
    for (const bad of [
      '',
      good.toUpperCase(),
      good.replace('00-', '01-'),
      good.slice(0, -1),
      `00-${'0'.repeat(32)}-b7ad6b7169203331-01`,
      `00-0af7651916cd43dd8448eb211c80319c-${'0'.repeat(16)}-01`,
      good.replace('-b7ad', '_b7ad'),
      good.replace('-01', '-zz'),
      42,
      undefined,
    ])
      assert.equal(parseTraceparent(bad, undefined), undefined, `refused: ${String(bad)}`);
  });

  it('refuses a tracing option that is not a tracer provider', async () => {
    await assert.rejects(
      Silo.start({ tracing: { tracerProvider: {} } as never, logger: silentLogger() }),
      /silo option tracing must be true, false or \{ tracerProvider \}/,
    );
  });
});
