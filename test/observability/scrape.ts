// Reading a silo's HTTP endpoint in tests: fetch a path, and pick samples out
// of Prometheus text by metric name and labels.

import type { Silo } from 'granary';

/** GET (or HEAD) `path` on the silo's HTTP endpoint. */
export async function get(silo: Silo, path: string, method = 'GET'): Promise<Response> {
  const address = silo.httpAddress;
  if (address === undefined) throw new Error(`silo ${silo.info.address} has no HTTP endpoint (httpPort)`);
  return fetch(`http://${address}${path}`, { method });
}

/** The Prometheus text of `/metrics`. */
export async function scrape(silo: Silo): Promise<string> {
  const res = await get(silo, '/metrics');
  if (res.status !== 200) throw new Error(`/metrics of ${silo.info.address} answered ${res.status}`);
  return res.text();
}

/** One sample line: its metric name, labels and value. */
export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Every sample of `text` (comments skipped). */
export function samples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1] as string] = l[2] as string;
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/**
 * The value of the one sample of metric `name` whose labels include `labels`;
 * undefined when there is none. Fails when several match.
 */
export function value(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples(text).filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value;
}
