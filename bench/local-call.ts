// bench/local-call: a warm grain call in one silo against the raw limit, the
// same async method on a plain object kept in a Map, measured in one process
// and one run. Also cold activations per second and heap per idle activation.
// A third path, the floor, is the raw method behind the least a call with a
// deadline needs: a promise the callee's side can settle by itself (as a
// time-out must), settled from one reaction on the method's promise.
// Run: npm run bench:local   (options: --quick for a short run; --metrics for a silo
// that counts metrics, to see what they cost: `npm run bench:local -- --metrics`;
// --dashboard for one that also samples its hottest grains for the dashboard)

import { Silo, Grain, grain, silentLogger } from 'granary';
import { median, Settleable } from './support.ts';

@grain('benchCounter')
class BenchCounter extends Grain {
  total = 0;
  async add(n: number): Promise<number> {
    this.total += n;
    return this.total;
  }
}

@grain('benchSmall')
class Small extends Grain {
  async ping(): Promise<number> {
    return 1;
  }
}

class RawCounter {
  total = 0;
  async add(n: number): Promise<number> {
    this.total += n;
    return this.total;
  }
}

/**
 * For comparison only, what the contract's deadline costs: the caller gets the
 * promise of the reaction that ends the turn, so nothing could reject it while
 * the method runs (such a call could never time out).
 */
class Untimed {
  readonly #target = new RawCounter();
  /** The turn's end: here it only hands the value on. */
  readonly #ended = (v: number): number => v;
  add(n: number): Promise<number> {
    return this.#target.add(n).then(this.#ended);
  }
}

const quick = process.argv.includes('--quick');
const metrics = process.argv.includes('--metrics');
const dashboard = process.argv.includes('--dashboard');
const ROUND_MS = quick ? 300 : 1000;
const ROUNDS = quick ? 2 : 3;
const CALLERS = 1000;

type Add = (key: number, n: number) => Promise<number>;

async function sequential(add: Add): Promise<number> {
  // ns per call, one caller awaiting each call
  let calls = 0;
  const start = process.hrtime.bigint();
  const end = Date.now() + ROUND_MS;
  while (Date.now() < end) {
    for (let i = 0; i < 1000; i++) await add(0, 1);
    calls += 1000;
  }
  return Number(process.hrtime.bigint() - start) / calls;
}

async function concurrent(add: Add): Promise<number> {
  // calls per second, CALLERS callers each on its own target
  // Both sides settle on microtasks alone, so callers watch the clock (a timer would never fire).
  let calls = 0;
  const start = process.hrtime.bigint();
  const end = Date.now() + ROUND_MS;
  const callers: Promise<void>[] = [];
  for (let c = 0; c < CALLERS; c++) {
    callers.push(
      (async () => {
        while (Date.now() < end) {
          for (let i = 0; i < 100; i++) await add(c, 1);
          calls += 100;
        }
      })(),
    );
  }
  await Promise.all(callers);
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  return calls / secs;
}

function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g !== undefined) {
    g();
    g();
  }
}

async function main(): Promise<void> {
  const silo = await Silo.start({ grains: [BenchCounter, Small], logger: silentLogger(), metrics, dashboard });
  const raw = new Map<string, RawCounter>();
  const floor = new Map<string, Settleable>();
  const untimed = new Map<string, Untimed>();
  const refs: Array<{ add(n: number): Promise<number> }> = [];
  const objs: RawCounter[] = [];
  for (let c = 0; c < CALLERS; c++) {
    raw.set(`k${c}`, new RawCounter());
    floor.set(`k${c}`, new Settleable(new RawCounter()));
    untimed.set(`k${c}`, new Untimed());
    refs.push(silo.getGrain(BenchCounter, `k${c}`));
    objs.push(raw.get(`k${c}`) as RawCounter);
  }
  const keys = Array.from({ length: CALLERS }, (_, c) => `k${c}`);
  const rawAdd: Add = (k, n) => (raw.get(keys[k] as string) as RawCounter).add(n);
  const floorAdd: Add = (k, n) => (floor.get(keys[k] as string) as Settleable).add(n);
  const untimedAdd: Add = (k, n) => (untimed.get(keys[k] as string) as Untimed).add(n);
  const grainAdd: Add = (k, n) => (refs[k] as { add(n: number): Promise<number> }).add(n);
  // Warm up both paths (activations exist, code is optimised).
  await sequential(rawAdd);
  await sequential(grainAdd);
  await sequential(floorAdd);
  await sequential(untimedAdd);
  await concurrent(rawAdd);
  await concurrent(grainAdd);
  await concurrent(floorAdd);
  await concurrent(untimedAdd);

  const rs: number[] = [],
    gs: number[] = [],
    rc: number[] = [],
    gcs: number[] = [],
    fs: number[] = [],
    fc: number[] = [],
    us: number[] = [],
    uc: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    rs.push(await sequential(rawAdd));
    gs.push(await sequential(grainAdd));
    rc.push(await concurrent(rawAdd));
    gcs.push(await concurrent(grainAdd));
    fs.push(await sequential(floorAdd));
    fc.push(await concurrent(floorAdd));
    us.push(await sequential(untimedAdd));
    uc.push(await concurrent(untimedAdd));
  }
  const seqRaw = median(rs),
    seqGrain = median(gs),
    conRaw = median(rc),
    conGrain = median(gcs),
    seqFloor = median(fs),
    conFloor = median(fc),
    seqUntimed = median(us),
    conUntimed = median(uc);

  // Cold activations: first calls on new grains, 1,000 in flight at a time.
  const COLD = quick ? 20_000 : 100_000;
  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const coldStart = process.hrtime.bigint();
  for (let i = 0; i < COLD; i += 1000) {
    const batch: Promise<number>[] = [];
    for (let j = i; j < i + 1000; j++) batch.push(silo.getGrain(Small, `cold-${j}`).ping());
    await Promise.all(batch);
  }
  const coldSecs = Number(process.hrtime.bigint() - coldStart) / 1e9;
  gc();
  const heapAfter = process.memoryUsage().heapUsed;
  const perActivation = (heapAfter - heapBefore) / COLD;

  const f = (n: number, d = 0): string =>
    n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
  console.log(
    `local call, one process (median of ${ROUNDS} rounds of ${ROUND_MS} ms; ${CALLERS} callers on ${CALLERS} targets${metrics ? '; metrics on' : ''}${dashboard ? '; dashboard on' : ''})`,
  );
  console.log('');
  console.log('| figure | raw (async method, Map) | grain call | ratio | target |');
  console.log('| --- | --- | --- | --- | --- |');
  console.log(
    `| sequential ns/call | ${f(seqRaw)} | ${f(seqGrain)} | ${f(seqGrain / seqRaw, 2)}x the raw cost | within 5x |`,
  );
  console.log(
    `| concurrent calls/s | ${f(conRaw)} | ${f(conGrain)} | ${f((100 * conGrain) / conRaw, 1)}% of raw | at least 25% |`,
  );
  console.log('');
  console.log(
    'The floor: the raw method behind a promise its side can settle by itself and one reaction (what a call with a deadline needs at least).',
  );
  console.log('');
  console.log('| figure | floor | floor against raw | grain call against floor |');
  console.log('| --- | --- | --- | --- |');
  console.log(
    `| sequential ns/call | ${f(seqFloor)} | ${f(seqFloor / seqRaw, 2)}x the raw cost | ${f(seqGrain / seqFloor, 2)}x the floor's cost |`,
  );
  console.log(
    `| concurrent calls/s | ${f(conFloor)} | ${f((100 * conFloor) / conRaw, 1)}% of raw | ${f((100 * conGrain) / conFloor, 1)}% of the floor |`,
  );
  console.log(
    `| for comparison: no deadline possible (the caller gets the turn's own reaction) | ${f(seqUntimed)} ns, ${f(seqUntimed / seqRaw, 2)}x raw | ${f(conUntimed)} calls/s, ${f((100 * conUntimed) / conRaw, 1)}% of raw | |`,
  );
  console.log('');
  console.log(`| cold activations/s | ${f(COLD / coldSecs)} (${f(COLD)} grains) |`);
  console.log(
    `| heap per idle activation | ${f(perActivation)} bytes; ${f((perActivation * 100_000) / 1048576, 1)} MiB per 100,000 (target under 200 MiB)${(globalThis as { gc?: unknown }).gc === undefined ? ' (run with --expose-gc for a clean figure)' : ''} |`,
  );
  await silo.stop();
}

await main();
