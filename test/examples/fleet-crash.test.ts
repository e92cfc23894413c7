import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fastMembership } from 'granary/testing';
import type { DeviceKind } from '../../examples/fleet/model.ts';
import { eventually } from '../helpers.ts';
import { get, startTwoSilos, telemetry } from './fleet-support.ts';

const DEVICES = 30;
const KINDS: DeviceKind[] = ['vehicle', 'meter', 'sensor'];
const id = (n: number): string => `dev-${String(n).padStart(6, '0')}`;
const siteOf = (n: number): string => `site-${n % 3}`;
const regionOf = (n: number): string => `region-${n % 3 === 0 ? 0 : 1}`;

describe('examples/fleet: a silo crash', () => {
  let cluster: Awaited<ReturnType<typeof startTwoSilos>>;
  /** Seqs acknowledged per device: the messages the totals must count, once each. */
  const acked = new Map<number, Set<number>>();

  before(async () => {
    cluster = await startTwoSilos({
      membershipOptions: fastMembership,
      // Batches wait two seconds before they reach the sites, so the crash surely loses some.
      flushMs: 2000,
      offlineAfterMs: 4000,
      resyncMs: 1000,
    });
  });

  after(async () => {
    await cluster?.stop();
  });

  /** Sends as a device does: again, on the next server, until acknowledged (a silo may be gone). */
  async function send(urls: string[], n: number, seq: number): Promise<void> {
    const t = telemetry(seq, KINDS[n % 3] as DeviceKind, siteOf(n), regionOf(n));
    let last = '';
    for (let attempt = 0; attempt < 200; attempt++) {
      const url = urls[(n + attempt) % urls.length] as string;
      try {
        const res = await fetch(`${url}/api/devices/${id(n)}/telemetry`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(t),
        });
        last = `${res.status} ${await res.text()}`;
        if (res.status === 200) {
          const set = acked.get(n) ?? new Set();
          set.add(seq);
          acked.set(n, set);
          return;
        }
      } catch (e) {
        last = String(e);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.fail(`${id(n)} seq ${seq} never acknowledged; last answer: ${last}`);
  }

  function want(where: (n: number) => boolean): { devices: number; messages: number } {
    let devices = 0;
    let messages = 0;
    for (const [n, seqs] of acked)
      if (where(n)) {
        devices++;
        messages += seqs.size;
      }
    return { devices, messages };
  }

  it('converges to exact totals at site, region and fleet level after a silo crash', async () => {
    const { a, b } = cluster;
    for (let seq = 1; seq <= 2; seq++)
      for (let n = 1; n <= DEVICES; n++) await send([n % 2 === 0 ? a.url : b.url], n, seq);
    await eventually(
      `the fleet to count ${DEVICES} devices and ${2 * DEVICES} messages before the crash`,
      async () => {
        const f = (await get(`${a.url}/api/fleet`)).body;
        return f.devices === DEVICES && f.messages === 2 * DEVICES;
      },
      15_000,
    );

    // A third message from every device, then silo b dies with its batches unflushed.
    for (let n = 1; n <= DEVICES; n++) await send([a.url, b.url], n, 3);
    await b.abort();
    // Half the devices send again, through a only; the other half stay quiet.
    for (let n = 1; n <= DEVICES / 2; n++) await send([a.url], n, 4);

    const total = want(() => true);
    assert.equal(total.messages, 3 * DEVICES + DEVICES / 2);
    await eventually(
      `the fleet to converge to ${total.devices} devices and ${total.messages} messages`,
      async () => {
        const f = (await get(`${a.url}/api/fleet`)).body;
        return f.devices === total.devices && f.messages === total.messages;
      },
      30_000,
    );
    for (const site of ['site-0', 'site-1', 'site-2']) {
      const w = want((n) => siteOf(n) === site);
      const s = (await get(`${a.url}/api/sites/${site}`)).body;
      assert.deepEqual([s.totals.devices, s.totals.messages], [w.devices, w.messages], site);
    }
    for (const region of ['region-0', 'region-1']) {
      const w = want((n) => regionOf(n) === region);
      const r = (await get(`${a.url}/api/regions/${region}`)).body;
      assert.deepEqual([r.totals.devices, r.totals.messages], [w.devices, w.messages], region);
    }
    for (let n = 1; n <= DEVICES; n++)
      assert.equal((await get(`${a.url}/api/devices/${id(n)}`)).body.messages, acked.get(n)?.size, id(n));

    // Liveness survived the crash: the reminders of b's devices fire on a, and every device goes offline.
    await eventually(
      'every device offline after the quiet',
      async () => (await get(`${a.url}/api/fleet`)).body.offline === DEVICES,
      30_000,
    );
  });
});
