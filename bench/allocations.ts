// bench/allocations: bytes allocated per local grain call, against the raw
// awaited method on a plain object, each in its own child process. A child
// makes N sequential calls with a fixed 16 MiB young generation and V8's GC
// trace on; every scavenge then stands for 16 MiB allocated, so
// (scavenges with N calls - scavenges with none) x 16 MiB / N is the
// allocation per call, within one scavenge's worth (16 MiB / N).
// The floor of a call that can time out, as bench/local-call.ts measures it, is counted too.
// Run: node --import tsx --conditions=source bench/allocations.ts [--calls=N]

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Grain, Silo, grain, silentLogger } from 'granary';
import { option, Settleable } from './support.ts';

@grain('benchAllocCounter')
class Counter extends Grain {
  total = 0;
  async add(n: number): Promise<number> {
    this.total += n;
    return this.total;
  }
}

class Raw {
  total = 0;
  async add(n: number): Promise<number> {
    this.total += n;
    return this.total;
  }
}

const SEMI_SPACE_MB = 16;
const argv = process.argv.slice(2);

async function child(mode: string, calls: number): Promise<void> {
  const silo = await Silo.start({ grains: [Counter], logger: silentLogger() });
  const ref = silo.getGrain(Counter, 'k');
  const map = new Map([['k', new Raw()]]);
  const floor = new Map([['k', new Settleable(new Raw())]]);
  const call =
    mode === 'grain'
      ? (n: number) => ref.add(n)
      : mode === 'floor'
        ? (n: number) => (floor.get('k') as Settleable).add(n)
        : (n: number) => (map.get('k') as Raw).add(n);
  for (let i = 0; i < 100_000; i++) await call(1);
  for (let i = 0; i < calls; i++) await call(1);
  await silo.stop();
}

function scavenges(mode: string, calls: number): number {
  const r = spawnSync(
    process.execPath,
    [
      `--min-semi-space-size=${SEMI_SPACE_MB}`,
      `--max-semi-space-size=${SEMI_SPACE_MB}`,
      '--trace-gc',
      '--import',
      'tsx',
      '--conditions=source',
      fileURLToPath(import.meta.url),
      'child',
      mode,
      String(calls),
    ],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  );
  if (r.status !== 0) throw new Error(`the ${mode} child failed (${r.status}): ${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l.includes('Scavenge')).length;
}

if (argv[0] === 'child') {
  await child(argv[1] as string, Number(argv[2]));
} else {
  const raw = option('calls');
  const calls = raw === undefined ? 5_000_000 : Number(raw);
  if (!Number.isInteger(calls) || calls < 100_000)
    throw new Error(`--calls takes a whole number of at least 100000, got '${raw}'`);
  const perCall = (mode: string): number =>
    ((scavenges(mode, calls) - scavenges(mode, 0)) * SEMI_SPACE_MB * 1024 * 1024) / calls;
  const r = perCall('raw');
  const g = perCall('grain');
  const fl = perCall('floor');
  const slack = (SEMI_SPACE_MB * 1024 * 1024) / calls;
  console.log(
    `bytes allocated per sequential call, ${calls.toLocaleString('en-US')} calls (± ${slack.toFixed(0)} bytes)`,
  );
  console.log(`  raw awaited method: ${r.toFixed(0)}`);
  console.log(`  local grain call:   ${g.toFixed(0)} (${(g / r).toFixed(2)}x)`);
  console.log(
    `  the floor of a call that can time out (raw method, a promise its side settles, one reaction): ${fl.toFixed(0)} (${(fl / r).toFixed(2)}x; the grain call is ${(g / fl).toFixed(2)}x it)`,
  );
}
