// Helpers of the fleet example's tests: a local cluster of two fleet silos
// in this process (sharing their SQLite files, each with its HTTP server),
// and telemetry to send.

import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from 'granary';
import { startFleetSilo, type FleetSilo, type FleetSiloOptions } from '../../examples/fleet/app.ts';
import type { DeviceKind, Telemetry } from '../../examples/fleet/model.ts';

export const MQTT_URL = 'mqtt://127.0.0.1:1883';

/** Two silos of one cluster, with fast aggregation and a short offline time. */
export async function startTwoSilos(
  extra: FleetSiloOptions = {},
): Promise<{ a: FleetSilo; b: FleetSilo; dataDir: string; stop(): Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'granary-fleet-'));
  const options: FleetSiloOptions = {
    httpPort: 0,
    siloPort: 0,
    dataDir,
    clusterId: `fleet-test-${randomUUID().slice(0, 8)}`,
    mqtt: null,
    offlineAfterMs: 2000,
    flushMs: 50,
    pushMs: 100,
    logger: silentLogger(),
    ...extra,
  };
  const a = await startFleetSilo(options);
  let b: FleetSilo;
  try {
    b = await startFleetSilo(options);
  } catch (e) {
    await a.stop();
    throw e;
  }
  return {
    a,
    b,
    dataDir,
    // One after the other: b's grains move to a, which then stops alone.
    async stop() {
      await b.stop();
      await a.stop();
    },
  };
}

/** A message of device kind `kind` at `site`/`region`. */
export function telemetry(
  seq: number,
  kind: DeviceKind,
  site: string,
  region: string,
  overrides: Partial<Telemetry> = {},
): Telemetry {
  const readings: Record<DeviceKind, Record<string, number>> = {
    vehicle: { speed: 50 },
    meter: { watts: 800 },
    sensor: { temperature: 21 },
  };
  return { seq, ts: Date.now(), kind, site, region, battery: 80, readings: readings[kind], ...overrides };
}

/** POSTs JSON and returns the status and the parsed body. */
export async function post(url: string, body: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** GETs JSON. */
export async function get(url: string): Promise<{ status: number; body: any }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json() };
}
