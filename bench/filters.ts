// bench/filters: what call filters, the request context and tracing cost when
// they are used, against the plain local grain call measured in the same run.
// (What they cost when not used is the local-call bench, run on the trees
// before and after.) Order matters: the request context, once used, stays on
// for the process, so the plain and filtered silos are measured first.
// Run: node --import tsx --conditions=source bench/filters.ts   (--quick for a short run)

import {
  BasicTracerProvider,
  NoopSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';
import { Grain, grain, RequestContext, Silo, silentLogger, type SiloOptions } from 'granary';
import { median } from './support.ts';

@grain('benchFiltered')
class Counter extends Grain {
  total = 0;
  async add(n: number): Promise<number> {
    this.total += n;
    return this.total;
  }
}

const quick = process.argv.includes('--quick');
const ROUND_MS = quick ? 300 : 1000;
const ROUNDS = quick ? 2 : 3;
const CALLERS = 1000;

type Add = (key: number) => Promise<number>;

async function sequential(add: Add): Promise<number> {
  let calls = 0;
  const start = process.hrtime.bigint();
  const end = Date.now() + ROUND_MS;
  while (Date.now() < end) {
    for (let i = 0; i < 1000; i++) await add(0);
    calls += 1000;
  }
  return Number(process.hrtime.bigint() - start) / calls;
}

async function concurrent(add: Add): Promise<number> {
  let calls = 0;
  const start = process.hrtime.bigint();
  const end = Date.now() + ROUND_MS;
  const callers: Promise<void>[] = [];
  for (let c = 0; c < CALLERS; c++) {
    callers.push(
      (async () => {
        while (Date.now() < end) {
          for (let i = 0; i < 100; i++) await add(c);
          calls += 100;
        }
      })(),
    );
  }
  await Promise.all(callers);
  return calls / (Number(process.hrtime.bigint() - start) / 1e9);
}

interface Figures {
  seq: number;
  con: number;
}

async function measure(
  options: SiloOptions,
  wrap?: (call: () => Promise<number>) => Promise<number>,
): Promise<Figures> {
  const silo = await Silo.start({ grains: [Counter], logger: silentLogger(), ...options });
  const refs = Array.from({ length: CALLERS }, (_, c) => silo.getGrain(Counter, `k${c}`));
  const add: Add =
    wrap === undefined
      ? (k) => (refs[k] as (typeof refs)[number]).add(1)
      : (k) => wrap(() => (refs[k] as (typeof refs)[number]).add(1));
  await sequential(add);
  await concurrent(add);
  const seq: number[] = [];
  const con: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    seq.push(await sequential(add));
    con.push(await concurrent(add));
  }
  await silo.stop();
  return { seq: median(seq), con: median(con) };
}

const passThrough = async (ctx: { invoke(): Promise<void> }): Promise<void> => {
  await ctx.invoke();
};

const plain = await measure({ tracing: false });
const filtered = await measure({ tracing: false, incomingFilters: [passThrough], outgoingFilters: [passThrough] });
const provider = new BasicTracerProvider({ spanProcessors: [new NoopSpanProcessor()] });
const traced = await measure({ tracing: { tracerProvider: provider } });
const sampledProvider = new BasicTracerProvider({
  sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(0.01) }),
  spanProcessors: [new NoopSpanProcessor()],
});
const sampled = await measure({ tracing: { tracerProvider: sampledProvider } });
const context = await measure({ tracing: false }, (call) => RequestContext.run({ user: 'alice' }, call));

const f = (n: number, d = 0): string =>
  n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
console.log(
  `filters, request context and tracing in use (median of ${ROUNDS} rounds of ${ROUND_MS} ms; ${CALLERS} callers)`,
);
console.log('');
console.log('| local grain call | sequential ns/call | vs plain | concurrent calls/s | vs plain |');
console.log('| --- | --- | --- | --- | --- |');
const row = (name: string, x: Figures): void =>
  console.log(
    `| ${name} | ${f(x.seq)} | ${f(x.seq / plain.seq, 2)}x | ${f(x.con)} | ${f((100 * x.con) / plain.con, 1)}% |`,
  );
row('plain (no filter, no context)', plain);
row('one incoming + one outgoing pass-through filter', filtered);
row('tracing on (SDK, spans dropped by a no-op processor)', traced);
row('tracing on, 1% of traces sampled', sampled);
row('request context of one key on every call', context);
