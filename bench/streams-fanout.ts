// bench/streams-fanout: one stream with many explicit subscribers (memory
// streams, memory storage, one silo): how long subscribing takes, what the
// subscriptions cost in memory, and how fast an item reaches all of them.
// Also many streams: items to 100,000 streams of an implicitly subscribed
// namespace. Bounded: stops by itself (about a minute with the defaults).
// Run: node --expose-gc --import tsx --conditions=source bench/streams-fanout.ts
//   --subscribers=N   explicit subscribers of the one stream (default 100,000)
//   --items=N         items published to it (default 5)
//   --streams=N       streams of the implicit namespace, one item each (default 100,000)

import { performance } from 'node:perf_hooks';
import { Grain, Silo, grain, implicitSubscription, memoryStreams, silentLogger } from 'granary';

function arg(name: string, dflt: number): number {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a === undefined ? dflt : Number(a.slice(name.length + 3));
}
const SUBSCRIBERS = arg('subscribers', 100_000);
const ITEMS = arg('items', 5);
const STREAMS = arg('streams', 100_000);

let delivered = 0;
let implicitDelivered = 0;
let onDelivered: (() => void) | undefined;

@grain('fanoutFan')
class Fan extends Grain {
  async follow(): Promise<void> {
    await this.getStream('events', 'stage', 'main').subscribe(this.onItem);
  }
  async onItem(): Promise<void> {
    delivered++;
    onDelivered?.();
  }
}

@grain('fanoutSensor')
@implicitSubscription('sensors')
class Sensor extends Grain {
  async onStreamItem(): Promise<void> {
    implicitDelivered++;
    onDelivered?.();
  }
}

function heapMiB(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().heapUsed / 2 ** 20;
}

function until(done: () => boolean, what: string, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`bench/streams-fanout: ${what} took over ${ms} ms`)), ms);
    onDelivered = () => {
      if (!done()) return;
      clearTimeout(timer);
      onDelivered = undefined;
      resolve();
    };
    onDelivered();
  });
}

const budget = setTimeout(() => {
  console.error('bench/streams-fanout: over its 5-minute budget; stopping');
  process.exit(1);
}, 300_000);
budget.unref();

const silo = await Silo.start({
  grains: [Fan, Sensor],
  logger: silentLogger(),
  collectionAgeMs: 3_600_000,
  // 'sensors' has implicit subscribers only: its 100,000 streams read no pub-sub record.
  streams: { events: memoryStreams({ maxQueuedItems: 1_000, implicitOnlyNamespaces: ['sensors'] }) },
});
try {
  const heap0 = heapMiB();
  let t = performance.now();
  const CONCURRENCY = 256;
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < SUBSCRIBERS) await silo.getGrain(Fan, `f${next++}`).follow();
    }),
  );
  const subscribeMs = performance.now() - t;
  const heap1 = heapMiB();

  const stream = silo.getStream<number>('events', 'stage', 'main');
  t = performance.now();
  for (let i = 0; i < ITEMS; i++) await stream.publish(i);
  await until(() => delivered >= SUBSCRIBERS * ITEMS, 'the fan-out', 240_000);
  const fanoutMs = performance.now() - t;

  t = performance.now();
  for (let s = 0; s < STREAMS; s += 1000) {
    await Promise.all(
      Array.from({ length: Math.min(1000, STREAMS - s) }, (_, k) =>
        silo.getStream<number>('events', 'sensors', `s${s + k}`).publish(s + k),
      ),
    );
  }
  await until(() => implicitDelivered >= STREAMS, 'the many streams', 240_000);
  const manyMs = performance.now() - t;
  const heap2 = heapMiB();

  const f = (n: number): string => Math.round(n).toLocaleString('en-US');
  console.log(`streams fan-out, one silo, memory streams and storage (one run)\n`);
  console.log('| figure | value |');
  console.log('| --- | --- |');
  console.log(
    `| ${f(SUBSCRIBERS)} subscribes to one stream (256 at a time) | ${f(subscribeMs)} ms, ${f((SUBSCRIBERS / subscribeMs) * 1000)} /s |`,
  );
  console.log(
    `| heap for them (subscriber grains, rendezvous, records) | ${(heap1 - heap0).toFixed(1)} MiB, ${f(((heap1 - heap0) * 2 ** 20) / SUBSCRIBERS)} bytes per subscriber |`,
  );
  console.log(
    `| ${f(ITEMS)} items to all ${f(SUBSCRIBERS)} subscribers | ${f(fanoutMs)} ms, ${f(((SUBSCRIBERS * ITEMS) / fanoutMs) * 1000)} deliveries/s |`,
  );
  console.log(
    `| one item to each of ${f(STREAMS)} streams (implicit-only namespace, ${f(STREAMS)} grains) | ${f(manyMs)} ms, ${f((STREAMS / manyMs) * 1000)} items/s |`,
  );
  console.log(`| heap after both | ${heap2.toFixed(1)} MiB |`);
  console.log(
    `\ncommand: node --expose-gc --import tsx --conditions=source bench/streams-fanout.ts ${process.argv.slice(2).join(' ')}`.trimEnd(),
  );
} finally {
  await silo.stop();
}
