// A small device simulator for `npm start`: devices dev-000000 … spread over
// sites and regions, sending telemetry over HTTP at a steady rate, now and
// then out of range (a flat battery, an overload, a hot sensor) so that
// alerts come and go. It takes the options of the load generator's `runLoad`
// that it needs, so start.ts can use either.

/** The subset of the load generator's options the simulator takes. */
export interface SimulateOptions {
  urls: string[];
  devices: number;
  /** Messages per second. */
  rate: number;
  /** Stop after this long, in ms. Default: until `signal` aborts. */
  durationMs?: number;
  transport: 'http';
  signal?: AbortSignal;
  /** First seq of every device. Default 0. */
  startSeq?: number;
  /** Sites site-0 … and regions region-0 …; site s is in region s % regions. Defaults 100 and 10. */
  sites?: number;
  regions?: number;
}

/** What the simulator did. */
export interface SimulateReport {
  sent: number;
  acked: number;
  failed: number;
}

const KINDS = ['vehicle', 'meter', 'sensor'] as const;

/** Runs until `durationMs` passed or `signal` aborted; resolves once the messages in flight settled. */
export async function simulate(options: SimulateOptions): Promise<SimulateReport> {
  const { urls, devices, rate } = options;
  const sites = options.sites ?? 100;
  const regions = options.regions ?? 10;
  const seq = new Array<number>(devices).fill(options.startSeq ?? 0);
  const battery = Array.from({ length: devices }, () => 40 + Math.random() * 60);
  const busy = new Uint8Array(devices);
  const report: SimulateReport = { sent: 0, acked: 0, failed: 0 };
  const inFlight = new Set<Promise<void>>();
  const started = Date.now();
  let nextDevice = 0;

  function body(d: number): string {
    const kind = KINDS[d % 3] as (typeof KINDS)[number];
    const site = d % sites;
    battery[d] = Math.max(0, (battery[d] as number) - Math.random() * 0.5);
    if ((battery[d] as number) < 3) battery[d] = 100; // recharged
    const odd = Math.random() < 0.01;
    const readings =
      kind === 'vehicle'
        ? { speed: odd ? 170 + Math.random() * 30 : Math.random() * 120 }
        : kind === 'meter'
          ? { watts: odd ? 12_000 : 200 + Math.random() * 3000 }
          : { temperature: odd ? 70 : 15 + Math.random() * 10 };
    return JSON.stringify({
      seq: seq[d],
      ts: Date.now(),
      kind,
      site: `site-${site}`,
      region: `region-${site % regions}`,
      battery: Math.round((battery[d] as number) * 10) / 10,
      readings,
      ...(kind === 'vehicle' ? { position: { lat: 48 + (d % 60) / 10, lon: 2 + (d % 120) / 10 } } : {}),
    });
  }

  function send(d: number): void {
    busy[d] = 1;
    const url = `${urls[report.sent % urls.length]}/api/devices/dev-${String(d).padStart(6, '0')}/telemetry`;
    report.sent++;
    const p = fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: body(d),
      signal: AbortSignal.timeout(10_000),
    })
      .then(async (res) => {
        await res.arrayBuffer();
        if (res.ok) {
          report.acked++;
          seq[d] = (seq[d] as number) + 1;
        } else report.failed++; // the same seq goes again next time
      })
      .catch(() => void report.failed++)
      .finally(() => {
        busy[d] = 0;
        inFlight.delete(p);
      });
    inFlight.add(p);
  }

  while (options.signal?.aborted !== true) {
    const elapsed = Date.now() - started;
    if (options.durationMs !== undefined && elapsed >= options.durationMs) break;
    // Open loop: what is due by the clock, held back only by a bound on messages in flight.
    let due = Math.floor((rate * elapsed) / 1000) - report.sent;
    for (let tries = 0; due > 0 && inFlight.size < 512 && tries < devices; tries++) {
      const d = nextDevice;
      nextDevice = (nextDevice + 1) % devices;
      if (busy[d] === 1) continue;
      send(d);
      due--;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await Promise.allSettled([...inFlight]);
  return report;
}
