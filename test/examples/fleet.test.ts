import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import type { DeviceKind, Telemetry } from '../../examples/fleet/model.ts';
import { eventually } from '../helpers.ts';
import { MQTT_URL, get, post, startTwoSilos, telemetry } from './fleet-support.ts';

/** Where each device is and what it sent, to compute the totals the API must show. */
interface Sent {
  kind: DeviceKind;
  site: string;
  region: string;
  messages: number;
}

const SITES: Record<string, string> = {
  'site-1': 'region-1',
  'site-2': 'region-1',
  'site-3': 'region-2',
  'site-4': 'region-2',
};
const KINDS: DeviceKind[] = ['vehicle', 'meter', 'sensor'];

function placeOf(n: number): { kind: DeviceKind; site: string; region: string } {
  const site = `site-${(n % 4) + 1}`;
  return { kind: KINDS[n % 3] as DeviceKind, site, region: SITES[site] as string };
}

const devId = (n: number): string => `dev-${String(n).padStart(6, '0')}`;

describe('examples/fleet', () => {
  // A topic root of its own, so that nothing else on the broker takes this test's messages.
  const root = `fleet-test-${randomUUID().slice(0, 8)}`;
  let cluster: Awaited<ReturnType<typeof startTwoSilos>>;
  let device: MqttClient;
  const inbox: Array<{ topic: string; body: any }> = [];
  const sent = new Map<string, Sent>();

  before(async () => {
    cluster = await startTwoSilos({ mqtt: MQTT_URL, mqttTopicRoot: root });
    device = await mqtt.connectAsync(MQTT_URL, { protocolVersion: 5, connectTimeout: 5000, reconnectPeriod: 0 });
    device.on('message', (topic, payload) => inbox.push({ topic, body: JSON.parse(payload.toString()) }));
    await device.subscribeAsync([`${root}/+/ack`, `${root}/+/commands`], { qos: 1 });
  });

  after(async () => {
    await device?.endAsync();
    await cluster?.stop();
  });

  function record(id: string, t: Telemetry): void {
    const s = sent.get(id) ?? { kind: t.kind, site: t.site, region: t.region, messages: 0 };
    s.messages++;
    sent.set(id, s);
  }

  async function sendHttp(url: string, n: number, seq: number, overrides: Partial<Telemetry> = {}) {
    const p = placeOf(n);
    const t = telemetry(seq, p.kind, p.site, p.region, overrides);
    const r = await post(`${url}/api/devices/${devId(n)}/telemetry`, t);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    if (r.body.duplicate === false) record(devId(n), t);
    return r.body as {
      seq: number;
      commands: Array<{ commandId: string; name: string; args: unknown }>;
      duplicate: boolean;
    };
  }

  async function sendMqtt(n: number, seq: number): Promise<void> {
    const p = placeOf(n);
    const t = telemetry(seq, p.kind, p.site, p.region);
    await device.publishAsync(`${root}/${devId(n)}/telemetry`, JSON.stringify(t), { qos: 1 });
    await eventually(
      `the ack of ${devId(n)} seq ${seq} over MQTT`,
      () => inbox.some((m) => m.topic === `${root}/${devId(n)}/ack` && m.body.seq === seq),
      10_000,
    );
    record(devId(n), t);
  }

  /** The totals the API must show for the devices matching `where`. */
  function expected(where: (s: Sent) => boolean): { devices: number; messages: number } {
    let devices = 0;
    let messages = 0;
    for (const s of sent.values())
      if (where(s)) {
        devices++;
        messages += s.messages;
      }
    return { devices, messages };
  }

  async function settled(what: string): Promise<void> {
    const want = expected(() => true);
    await eventually(
      `${what}: the fleet to count ${want.devices} devices and ${want.messages} messages`,
      async () => {
        const f = (await get(`${cluster.a.url}/api/fleet`)).body;
        return f.devices === want.devices && f.messages === want.messages;
      },
      10_000,
    );
  }

  it('takes telemetry over HTTP on both silos and over MQTT, and counts it exactly per site, region and fleet', async () => {
    const { a, b } = cluster;
    // Devices 1..8 over HTTP, each message to one server or the other; the meter dev-000004 overloads.
    for (let seq = 1; seq <= 3; seq++)
      for (let n = 1; n <= 8; n++)
        await sendHttp(
          (n + seq) % 2 === 0 ? a.url : b.url,
          n,
          seq,
          n === 4 && seq === 3 ? { readings: { watts: 20_000 } } : {},
        );
    // Devices 9..12 over MQTT: the two bridges share the subscription.
    for (let seq = 1; seq <= 2; seq++) for (let n = 9; n <= 12; n++) await sendMqtt(n, seq);

    await settled('after the first messages');
    const fleet = (await get(`${b.url}/api/fleet`)).body;
    assert.equal(fleet.devices, 12);
    assert.equal(fleet.messages, 8 * 3 + 4 * 2);
    assert.equal(fleet.online + fleet.offline, 12);
    assert.deepEqual(fleet.perKind, { vehicle: 4, meter: 4, sensor: 4 });
    assert.equal(fleet.inAlert, 1);
    for (const region of ['region-1', 'region-2']) {
      const want = expected((s) => s.region === region);
      assert.equal(fleet.regions[region].messages, want.messages, region);
      const r = (await get(`${a.url}/api/regions/${region}`)).body;
      assert.equal(r.totals.devices, want.devices, region);
      assert.equal(r.totals.messages, want.messages, region);
      assert.equal(r.sites.length, 2);
    }
    for (const site of Object.keys(SITES)) {
      const want = expected((s) => s.site === site);
      const s = (await get(`${b.url}/api/sites/${site}`)).body;
      assert.equal(s.totals.devices, want.devices, site);
      assert.equal(s.totals.messages, want.messages, site);
      assert.equal(s.devices.length, want.devices, site);
    }
    const alerts = (await get(`${a.url}/api/alerts`)).body;
    assert.deepEqual(
      alerts.devices.map((d: { id: string; alerts: string[] }) => [d.id, d.alerts]),
      [['dev-000004', ['overload']]],
    );
    const dev = (await get(`${a.url}/api/devices/dev-000004`)).body;
    assert.equal(dev.lastSeq, 3);
    assert.equal(dev.messages, 3);
    assert.deepEqual(dev.alerts, ['overload']);
    assert.deepEqual(
      dev.history.map((h: { seq: number }) => h.seq),
      [3, 2, 1],
    );
    assert.equal((await get(`${a.url}/api/devices/dev-000999`)).status, 404);
  });

  it('answers a repeated seq again and never counts it twice', async () => {
    const { a, b } = cluster;
    const again = await sendHttp(b.url, 1, 3);
    assert.deepEqual(again, { seq: 3, commands: [], duplicate: true });
    assert.equal((await sendHttp(a.url, 1, 1)).duplicate, true);
    // The same seq over MQTT is acknowledged again, and not counted either.
    const p = placeOf(9);
    await device.publishAsync(`${root}/dev-000009/telemetry`, JSON.stringify(telemetry(2, p.kind, p.site, p.region)), {
      qos: 1,
    });
    await eventually(
      'a second ack of dev-000009 seq 2',
      () => inbox.filter((m) => m.topic === `${root}/dev-000009/ack` && m.body.seq === 2).length === 2,
      10_000,
    );
    // A new message after the repeats: once it is counted, the repeats would be too.
    await sendHttp(a.url, 1, 4);
    await settled('after the repeats');
    assert.equal((await get(`${a.url}/api/devices/dev-000001`)).body.messages, 4);
    assert.equal((await get(`${a.url}/api/devices/dev-000009`)).body.messages, 2);
    assert.equal((await get(`${b.url}/api/fleet`)).body.messages, 8 * 3 + 4 * 2 + 1);
  });

  it('refuses a bad body with 400 naming the field, over HTTP; drops bad MQTT messages and keeps serving', async () => {
    const { a } = cluster;
    const p = placeOf(3);
    const url = `${a.url}/api/devices/dev-000003/telemetry`;
    const battery = await post(url, telemetry(9, p.kind, p.site, p.region, { battery: 300 }));
    assert.equal(battery.status, 400);
    assert.match(battery.body.message, /battery/);
    const { kind: _kind, ...noKind } = telemetry(9, p.kind, p.site, p.region);
    const kind = await post(url, noKind);
    assert.equal(kind.status, 400);
    assert.match(kind.body.message, /kind/);
    const seq = await post(url, { ...telemetry(9, p.kind, p.site, p.region), seq: -1 });
    assert.equal(seq.status, 400);
    assert.match(seq.body.message, /seq/);
    const reading = await post(url, { ...telemetry(9, p.kind, p.site, p.region), readings: { speed: 'fast' } });
    assert.equal(reading.status, 400);
    assert.match(reading.body.message, /readings/);
    assert.equal(
      (await post(`${a.url}/api/devices/truck-1/telemetry`, telemetry(1, p.kind, p.site, p.region))).status,
      400,
    );
    assert.equal((await get(`${a.url}/api/devices/dev-000003`)).body.lastSeq, 3, 'nothing of the bad bodies was taken');

    await device.publishAsync(`${root}/dev-000010/telemetry`, 'not json', { qos: 1 });
    await device.publishAsync(`${root}/dev-000010/telemetry`, JSON.stringify({ seq: 'x' }), { qos: 1 });
    await device.publishAsync(
      `${root}/not-a-device/telemetry`,
      JSON.stringify(telemetry(1, 'meter', 'site-1', 'region-1')),
      {
        qos: 1,
      },
    );
    await sendMqtt(10, 3);
    assert.equal((await get(`${a.url}/api/devices/dev-000010`)).body.lastSeq, 3);
  });

  it('delivers a command once with the next telemetry, over HTTP and over MQTT', async () => {
    const { a, b } = cluster;
    const queued = await post(`${a.url}/api/devices/dev-000003/commands`, { name: 'reboot', args: { delayS: 5 } });
    assert.equal(queued.status, 202);
    assert.match(queued.body.commandId, /^cmd-/);
    assert.equal((await get(`${b.url}/api/devices/dev-000003`)).body.pendingCommands, 1);
    const answer = await sendHttp(b.url, 3, 4);
    assert.deepEqual(answer.commands, [{ commandId: queued.body.commandId, name: 'reboot', args: { delayS: 5 } }]);
    // The device lost that answer and sends seq 4 again: the same commands; seq 5 has none.
    assert.deepEqual((await sendHttp(a.url, 3, 4)).commands, answer.commands);
    assert.deepEqual((await sendHttp(a.url, 3, 5)).commands, []);
    assert.equal((await post(`${a.url}/api/devices/dev-000003/commands`, { args: {} })).status, 400);

    const overMqtt = await post(`${b.url}/api/devices/dev-000011/commands`, { name: 'locate' });
    assert.equal(overMqtt.status, 202);
    await sendMqtt(11, 3);
    await eventually(
      'the command on dev-000011/commands',
      () =>
        inbox.some((m) => m.topic === `${root}/dev-000011/commands` && m.body.commandId === overMqtt.body.commandId),
      10_000,
    );
    const cmd = inbox.find((m) => m.topic === `${root}/dev-000011/commands`);
    assert.deepEqual(cmd?.body, { commandId: overMqtt.body.commandId, name: 'locate', args: {} });
    await sendMqtt(11, 4);
    assert.equal(inbox.filter((m) => m.topic === `${root}/dev-000011/commands`).length, 1, 'delivered once');
  });

  it('flags devices offline when they go quiet, and online again when they send', async () => {
    const { a, b } = cluster;
    await settled('before the quiet');
    await eventually(
      'every device offline in the fleet totals (offline after 2 s)',
      async () => {
        const f = (await get(`${a.url}/api/fleet`)).body;
        return f.offline === 12 && f.online === 0;
      },
      15_000,
    );
    assert.equal((await get(`${b.url}/api/devices/dev-000007`)).body.status, 'offline');
    await sendHttp(b.url, 7, 4);
    assert.equal((await get(`${a.url}/api/devices/dev-000007`)).body.status, 'online');
    const site = placeOf(7).site;
    await eventually(
      `dev-000007 online again in ${site} and the fleet`,
      async () => {
        const [f, s] = await Promise.all([get(`${a.url}/api/fleet`), get(`${b.url}/api/sites/${site}`)]);
        return f.body.online === 1 && s.body.totals.online === 1;
      },
      10_000,
    );
    const f = (await get(`${a.url}/api/fleet`)).body;
    assert.equal(f.offline, 11);
    assert.equal(f.messages, expected(() => true).messages);
  });

  it('describes its routes in /openapi.json', async () => {
    const doc = (await get(`${cluster.a.url}/openapi.json`)).body;
    assert.equal(doc.openapi.startsWith('3.'), true);
    for (const path of [
      '/api/devices/{id}/telemetry',
      '/api/devices/{id}',
      '/api/devices/{id}/commands',
      '/api/fleet',
      '/api/regions/{region}',
      '/api/sites/{site}',
      '/api/alerts',
      '/api/live',
    ])
      assert.ok(doc.paths[path], `${path} in ${Object.keys(doc.paths).join(', ')}`);
    const body = doc.paths['/api/devices/{id}/telemetry'].post.requestBody.content['application/json'].schema;
    assert.deepEqual(body.required, ['seq', 'ts', 'kind', 'site', 'region', 'battery', 'readings']);
  });
});
