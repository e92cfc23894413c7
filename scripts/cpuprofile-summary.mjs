// Sums a V8 .cpuprofile's self time by function and by file, to see where a
// process's CPU goes. Run: node scripts/cpuprofile-summary.mjs FILE.cpuprofile [--top=N] [--calls=N] [--skip-ms=N]
//   --skip-ms=N  leave out the first N ms (start-up)
//   --calls=N  divide by N calls: µs of self time per call (e.g. the calls the bench made)
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith('--'));
if (file === undefined) {
  console.error('usage: node scripts/cpuprofile-summary.mjs FILE.cpuprofile [--top=N] [--calls=N]');
  process.exit(2);
}
const opt = (name) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const top = Number(opt('top') ?? 40);
const calls = opt('calls') === undefined ? undefined : Number(opt('calls'));
/** Samples in the first skip-ms of the profile (start-up, module loading) are left out. */
const skipUs = Number(opt('skip-ms') ?? 0) * 1000;

const profile = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
// Time per sample: the delta that follows it.
const self = new Map();
const deltas = profile.timeDeltas;
let t = 0;
for (let i = 0; i < profile.samples.length; i++) {
  t += deltas[i] ?? 0;
  if (t < skipUs) continue;
  const id = profile.samples[i];
  const dt = deltas[i + 1] ?? 0;
  self.set(id, (self.get(id) ?? 0) + dt);
}
const total = [...self.values()].reduce((a, b) => a + b, 0);
const shortFile = (url) =>
  url === '' ? '(native)' : url.replace(/^file:\/\//, '').replace(/^.*\/(src|node_modules|bench)\//, '$1/');
const byFn = new Map();
const byFile = new Map();
let idle = 0;
for (const [id, us] of self) {
  const n = byId.get(id);
  const cf = n.callFrame;
  if (cf.functionName === '(idle)') idle += us;
  const f = shortFile(cf.url);
  const key = `${cf.functionName || '(anonymous)'}  ${f}:${cf.lineNumber + 1}`;
  byFn.set(key, (byFn.get(key) ?? 0) + us);
  if (cf.functionName !== '(idle)') byFile.set(f, (byFile.get(f) ?? 0) + us);
}
const busy = total - idle;
const fmt = (us) => {
  const pct = `${((100 * us) / busy).toFixed(1).padStart(5)}%`;
  return calls === undefined ? pct : `${pct} ${(us / calls).toFixed(3).padStart(7)} µs/call`;
};
console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled, ${(idle / 1e6).toFixed(2)} s idle; % of busy time`);
console.log('\nby function (self):');
for (const [k, us] of [...byFn]
  .filter(([k]) => !k.startsWith('(idle)'))
  .sort((a, b) => b[1] - a[1])
  .slice(0, top))
  console.log(`${fmt(us)}  ${k}`);
console.log('\nby file (self):');
for (const [k, us] of [...byFile].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${fmt(us)}  ${k}`);
