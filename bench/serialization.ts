// How fast is the codec? copy against structuredClone (in-process calls), and
// encode+decode against JSON and v8.serialize (the wire), on a small and a
// ~1 KB value. Run: npx tsx bench/serialization.ts

import v8 from 'node:v8';
import { copy, decode, encode } from '../src/serialization/codec.ts';

const small = { id: 1, name: 'x', tags: ['a', 'b'] };

const medium = {
  id: 12345,
  name: 'order-12345',
  createdAt: '2024-01-01T00:00:00.000Z',
  status: 'shipped',
  customer: {
    id: 'c-1',
    name: 'Alice Example',
    email: 'alice@example.com',
    address: { street: '1 Main St', city: 'Springfield', zip: '12345', country: 'US' },
  },
  items: Array.from({ length: 8 }, (_, i) => ({
    sku: `SKU-${i}`,
    title: `Item number ${i}`,
    qty: i + 1,
    price: Math.round(999 * (i + 1)) / 100,
    tags: ['x', 'y'],
  })),
  total: 359.64,
  paid: true,
  notes: null,
};

const MEASURE_MS = 250;
let sink = 0;

/** Operations per second of `fn`, measured for about MEASURE_MS after a short warm-up. */
function opsPerSec(fn: () => unknown): number {
  const warmEnd = performance.now() + 50;
  while (performance.now() < warmEnd) for (let i = 0; i < 100; i++) fn();
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < MEASURE_MS) {
    for (let i = 0; i < 200; i++) if (fn() !== undefined) sink++;
    n += 200;
    now = performance.now();
  }
  return (n * 1000) / (now - start);
}

interface Row {
  case: string;
  granary: string;
  baseline: string;
  ratio: string;
}
const rows: Row[] = [];
const fmt = (x: number): string => `${Math.round(x).toLocaleString('en-US')} ops/s`;

function compare(label: string, mine: () => unknown, baselineName: string, baseline: () => unknown): void {
  const a = opsPerSec(mine);
  const b = opsPerSec(baseline);
  rows.push({ case: label, granary: fmt(a), baseline: `${baselineName} ${fmt(b)}`, ratio: `${(a / b).toFixed(2)}x` });
}

for (const [size, value] of [
  ['small', small],
  ['medium', medium],
] as const) {
  compare(
    `${size}: copy`,
    () => copy(value),
    'structuredClone',
    () => structuredClone(value),
  );
  compare(
    `${size}: encode+decode`,
    () => decode(encode(value)),
    'JSON',
    () => JSON.parse(JSON.stringify(value)) as unknown,
  );
  compare(
    `${size}: encode+decode`,
    () => decode(encode(value)),
    'v8',
    () => v8.deserialize(v8.serialize(value)) as unknown,
  );
}

console.log(`node ${process.version}, ${MEASURE_MS} ms per measurement; ratio = granary / baseline (higher is better)`);
console.table(rows);
console.log(
  `encoded size: small ${encode(small).length} B (JSON ${JSON.stringify(small).length}, v8 ${v8.serialize(small).length}); ` +
    `medium ${encode(medium).length} B (JSON ${JSON.stringify(medium).length}, v8 ${v8.serialize(medium).length})`,
);
if (sink < 0) console.log(sink);
