// bench/dashboard: what counting costs a local grain call, with metrics and
// with the dashboard (metrics' counters and the hot-grain sample), against a
// silo that counts nothing, in one process: rounds alternate between the
// three silos (each round starting with another) so that a busy machine
// slows each alike.
// Run: node --import tsx --conditions=source bench/dashboard.ts [--quick]

import { Silo, Grain, grain, silentLogger, type GrainRef } from 'granary';
import { median } from './support.ts';

@grain('benchDashCounter')
class Counter extends Grain {
  total = 0;
  async add(n: number): Promise<number> {
    this.total += n;
    return this.total;
  }
}

const quick = process.argv.includes('--quick');
const ROUND_MS = quick ? 200 : 500;
const ROUNDS = quick ? 5 : 15;
const CALLERS = 1000;

/** ns per call, one caller awaiting each call on one grain. */
async function sequential(ref: GrainRef<Counter>): Promise<number> {
  let calls = 0;
  const start = process.hrtime.bigint();
  const end = Date.now() + ROUND_MS;
  while (Date.now() < end) {
    for (let i = 0; i < 1000; i++) await ref.add(1);
    calls += 1000;
  }
  return Number(process.hrtime.bigint() - start) / calls;
}

/** calls/s, CALLERS callers each on its own grain. */
async function concurrent(refs: GrainRef<Counter>[]): Promise<number> {
  let calls = 0;
  const start = process.hrtime.bigint();
  const end = Date.now() + ROUND_MS;
  await Promise.all(
    refs.map(async (r) => {
      while (Date.now() < end) {
        for (let i = 0; i < 100; i++) await r.add(1);
        calls += 100;
      }
    }),
  );
  return calls / (Number(process.hrtime.bigint() - start) / 1e9);
}

async function main(): Promise<void> {
  const configs = [
    { name: 'nothing counted', options: {} },
    { name: 'metrics: true', options: { metrics: true } },
    { name: 'dashboard: true', options: { dashboard: true } },
  ];
  const silos = await Promise.all(
    configs.map((c) => Silo.start({ grains: [Counter], logger: silentLogger(), ...c.options })),
  );
  const refs = silos.map((s) => Array.from({ length: CALLERS }, (_, i) => s.getGrain(Counter, `k${i}`)));
  const seq = configs.map((): number[] => []);
  const con = configs.map((): number[] => []);
  for (let i = 0; i < configs.length; i++) {
    await sequential(refs[i]?.[0] as GrainRef<Counter>);
    await concurrent(refs[i] as GrainRef<Counter>[]);
  }
  // Each round starts with another silo: none always runs right after the same one (its garbage, its caches).
  for (let r = 0; r < ROUNDS; r++)
    for (let j = 0; j < configs.length; j++) {
      const i = (r + j) % configs.length;
      seq[i]?.push(await sequential(refs[i]?.[0] as GrainRef<Counter>));
      con[i]?.push(await concurrent(refs[i] as GrainRef<Counter>[]));
    }
  const f = (n: number, d = 0): string =>
    n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
  const seq0 = median(seq[0] as number[]);
  const con0 = median(con[0] as number[]);
  console.log(`local call by what the silo counts (median of ${ROUNDS} alternating rounds of ${ROUND_MS} ms)`);
  console.log('');
  console.log('| silo | sequential ns/call | vs nothing counted | concurrent calls/s | vs nothing counted |');
  console.log('| --- | --- | --- | --- | --- |');
  configs.forEach((c, i) => {
    const s = median(seq[i] as number[]);
    const k = median(con[i] as number[]);
    console.log(`| ${c.name} | ${f(s)} | ${f(s / seq0, 2)}x | ${f(k)} | ${f((100 * k) / con0, 1)}% |`);
  });
  await Promise.all(silos.map((s) => s.stop()));
}

await main();
