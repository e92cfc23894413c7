// Checks the import graph of src/: no cycles (type-only imports count too: a
// cycle of types is still two modules that cannot be read one after the
// other), and the layering rules of docs/architecture.md. Run by `npm test`.
// Usage: node scripts/check-imports.mjs [--print]
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const root = resolve('src');

function collect(dir, out) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) collect(p, out);
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

const importRe = /(?:^|\n)\s*(?:import|export)\s+(?:type\s+)?(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/g;
const dynamicRe = /import\(\s*['"]([^'"]+)['"]\s*\)/g;

/** Module (path relative to src/) -> modules it imports. */
const graph = new Map();
for (const file of collect(root, [])) {
  const text = readFileSync(file, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/(^|[^:])\/\/.*$/gm, '$1');
  const deps = new Set();
  for (const re of [importRe, dynamicRe]) {
    re.lastIndex = 0;
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      const spec = m[1];
      if (!spec.startsWith('.')) continue;
      deps.add(relative(root, resolve(dirname(file), spec)));
    }
  }
  graph.set(relative(root, file), deps);
}

const problems = [];

// Cycles: strongly connected components of more than one module (Tarjan).
let index = 0;
const idx = new Map();
const low = new Map();
const stack = [];
const on = new Set();
function strong(v) {
  idx.set(v, index);
  low.set(v, index++);
  stack.push(v);
  on.add(v);
  for (const w of graph.get(v) ?? []) {
    if (!graph.has(w)) {
      problems.push(`${v} imports ${w}, which does not exist`);
      continue;
    }
    if (!idx.has(w)) {
      strong(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
  }
  if (low.get(v) === idx.get(v)) {
    const scc = [];
    let w;
    do {
      w = stack.pop();
      on.delete(w);
      scc.push(w);
    } while (w !== v);
    if (scc.length > 1 || graph.get(v)?.has(v)) problems.push(`import cycle: ${scc.sort().join(', ')}`);
  }
}
for (const v of graph.keys()) if (!idx.has(v)) strong(v);

// Layering: what a folder may not import (docs/architecture.md, "Layers").
const folder = (m) => (m.includes('/') ? m.slice(0, m.indexOf('/')) : '');
// The top of the stack: no folder below imports one of these (a folder's own
// modules are always allowed; hosting/ has a rule of its own further down).
const top = ['providers', 'client', 'cli', 'testing'];
const below = (...more) => [...more, ...top];
const rules = [
  // Lower layers know nothing of the runtime or the network.
  {
    from: 'serialization',
    not: below('grain', 'runtime', 'messaging', 'transport', 'membership', 'directory', 'placement'),
  },
  // A reference builds requests: it may use messaging/'s call-chain context (the
  // architecture's "grain -> messaging"), never the runtime that carries them.
  { from: 'grain', not: below('runtime', 'transport', 'membership', 'directory', 'placement') },
  { from: 'messaging', not: below('grain', 'runtime', 'transport', 'membership', 'directory', 'placement') },
  { from: 'transport', not: below('grain', 'runtime', 'membership', 'directory', 'placement') },
  { from: 'membership', not: below('grain', 'runtime', 'directory', 'placement') },
  { from: 'directory', not: below('grain', 'runtime', 'placement') },
  { from: 'placement', not: below('runtime', 'transport', 'membership', 'directory') },
  { from: 'storage', not: below('runtime', 'transport', 'membership', 'directory', 'placement') },
  { from: 'reminders', not: below('runtime', 'transport') },
  { from: 'journal', not: below('runtime', 'transport') },
  // Streams deliver through the runtime's interfaces (the service is handed its host).
  { from: 'streams', not: below('runtime', 'transport', 'membership', 'directory', 'placement', 'hosting') },
  // The runtime reaches providers only through their interfaces.
  { from: 'runtime', not: below() },
  { from: 'client', not: below('runtime') },
  { from: 'providers', not: below('runtime', 'hosting') },
  // hosting/ is the composition root: it may pick providers; only the entry points and tools import it.
  { from: 'hosting', not: ['client', 'cli', 'testing'] },
  { from: 'observability', not: below() },
];
// The root modules (errors, clock, hash) and observability/'s logger and
// channels import nothing of Granary's but each other: every layer may lean on
// them. The rest of observability/ (tracing, metrics, the HTTP endpoint) sits
// above the call path it watches, below hosting/ that wires it in.
const leaves = new Set(['errors.ts', 'clock.ts', 'hash.ts', 'observability/logger.ts', 'observability/channels.ts']);
for (const [m, deps] of graph) {
  if (!leaves.has(m)) continue;
  for (const d of deps)
    if (!leaves.has(d))
      problems.push(
        `layering: ${m} imports ${d}: the root modules, the logger and the channels import only each other`,
      );
}
const mayImportHosting = new Set(['', 'hosting', 'cli', 'testing']);
// A rule holds over everything a module reaches, not only what it imports itself:
// grain/ reaching membership/ through a module of reminders/ breaks it too.
for (const m of graph.keys()) {
  const rule = rules.find((r) => r.from === folder(m));
  if (rule === undefined) continue;
  const via = new Map([[m, undefined]]);
  const queue = [m];
  while (queue.length > 0) {
    const v = queue.shift();
    for (const d of graph.get(v) ?? []) {
      if (via.has(d)) continue;
      via.set(d, v);
      if (folder(d) !== rule.from && rule.not.includes(folder(d))) {
        const path = [d];
        for (let p = v; p !== undefined; p = via.get(p)) path.unshift(p);
        problems.push(`layering: ${m} (${rule.from}/) reaches ${d} (${folder(d)}/): ${path.join(' -> ')}`);
      } else queue.push(d);
    }
  }
}
for (const [m, deps] of graph) {
  if (mayImportHosting.has(folder(m))) continue;
  for (const d of deps)
    if (folder(d) === 'hosting')
      problems.push(`layering: ${m} imports ${d}: only the entry points, cli/ and testing/ may`);
}

if (process.argv.includes('--print')) {
  for (const [m, deps] of [...graph].sort()) console.log(`${m}: ${[...deps].sort().join(' ')}`);
}
if (problems.length > 0) {
  console.error(`check-imports: ${problems.length} problem(s) in src/:`);
  for (const p of problems) console.error(`  ${p}`);
  process.exit(1);
}
console.log(`check-imports: ${graph.size} modules, no cycles, layering holds`);
