// bench/activations: how many idle activations one silo holds, and how fast
// it makes them. Activates `--count` grains of a small type (default
// 1,000,000), `--in-flight` first calls at a time, then reports the time
// taken, activations per second, and the heap and RSS each idle activation
// costs, against the raw floor measured in the same process: the same number
// of plain objects of the same class shape kept in a Map by their key.
// Run: node --expose-gc --import tsx --conditions=source bench/activations.ts [--count=N] [--in-flight=N]

import { performance } from 'node:perf_hooks';
import { Grain, Silo, grain, silentLogger } from 'granary';

@grain('benchIdle')
class Idle extends Grain {
  async ping(): Promise<number> {
    return 1;
  }
}

/** The raw floor: what an object with the grain's own fields costs in a Map keyed by its id. */
class Plain {
  readonly key: string;
  constructor(key: string) {
    this.key = key;
  }
  async ping(): Promise<number> {
    return 1;
  }
}

const argv = process.argv.slice(2);
function whole(name: string, fallback: number): number {
  const raw = argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} takes a whole number of at least 1, got '${raw}'`);
  return n;
}
const COUNT = whole('count', 1_000_000);
const IN_FLIGHT = whole('in-flight', 1000);

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc, or the heap figures mean nothing');
function settle(): { heap: number; rss: number } {
  (gc as () => void)();
  (gc as () => void)();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, rss: m.rss };
}

const f = (n: number, d = 0): string =>
  n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

// The raw floor first, then released, so the silo starts from the same heap.
let before = settle();
let t0 = performance.now();
let map: Map<string, Plain> | undefined = new Map();
for (let i = 0; i < COUNT; i++) {
  const key = `idle-${i}`;
  const p = new Plain(key);
  map.set(key, p);
  await p.ping();
}
const rawSecs = (performance.now() - t0) / 1000;
let after = settle();
const rawHeap = (after.heap - before.heap) / COUNT;
map.clear();
map = undefined;

// Idle collection looks every 2 s (its age stays the default 15 min, so nothing is collected here).
const QUANTUM_MS = 2000;
const silo = await Silo.start({ grains: [Idle], logger: silentLogger(), collectionQuantumMs: QUANTUM_MS });
await silo.getGrain(Idle, 'warm').ping();
before = settle();
t0 = performance.now();
let next = 0;
let lastReport = t0;
await Promise.all(
  Array.from({ length: IN_FLIGHT }, async () => {
    while (next < COUNT) {
      const i = next++;
      await silo.getGrain(Idle, `idle-${i}`).ping();
      if (i % 100_000 === 0 && performance.now() - lastReport > 2000) {
        lastReport = performance.now();
        process.stderr.write(`  ${f(i)} activations, heap ${f(process.memoryUsage().heapUsed / 1048576)} MiB\n`);
      }
    }
  }),
);
const secs = (performance.now() - t0) / 1000;
after = settle();
const heap = (after.heap - before.heap) / COUNT;
const rss = (after.rss - before.rss) / COUNT;
const active = silo.activationCount;
if (active < COUNT) throw new Error(`only ${active} activations of ${COUNT} are in memory`);
// Idle collection lets an activation unused for a whole pass drop what only a busy one needs.
await new Promise((r) => setTimeout(r, 2.5 * QUANTUM_MS));
const idleHeap = (settle().heap - before.heap) / COUNT;
if (silo.activationCount < COUNT) throw new Error(`idle collection deactivated grains it should have kept`);

console.log(
  `${f(COUNT)} idle activations of a small grain in one silo, ${f(IN_FLIGHT)} first calls in flight (one run)`,
);
console.log('');
console.log('| figure | raw (plain object in a Map) | silo | ratio |');
console.log('| --- | --- | --- | --- |');
console.log(`| time to make them | ${f(rawSecs, 2)} s | ${f(secs, 2)} s | ${f(secs / rawSecs, 1)}x |`);
console.log(`| made per second | ${f(COUNT / rawSecs)} | ${f(COUNT / secs)} | |`);
console.log(`| heap per one, just made | ${f(rawHeap)} bytes | ${f(heap)} bytes | ${f(heap / rawHeap, 1)}x |`);
console.log(
  `| heap per one, after an idle-collection pass | ${f(rawHeap)} bytes | ${f(idleHeap)} bytes | ${f(idleHeap / rawHeap, 1)}x |`,
);
console.log(
  `| heap in all | ${f((rawHeap * COUNT) / 1048576)} MiB | ${f((heap * COUNT) / 1048576)} MiB (RSS grew ${f((rss * COUNT) / 1048576)} MiB) | |`,
);
await silo.stop();
process.exit(0);
