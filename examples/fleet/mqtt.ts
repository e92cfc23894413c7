// The MQTT bridge of a silo process: takes devices' telemetry from the
// broker, hands each message to its device grain (the same direct call as
// HTTP), and once the message is durable publishes the device's ack and its
// pending commands.
//
// Topics: devices publish QoS 1 on `fleet/<id>/telemetry`; the service
// answers on `fleet/<id>/ack` ({seq}) and `fleet/<id>/commands` ({commandId,
// name, args}). The service subscribes through the shared subscription
// `$share/fleet/fleet/+/telemetry`, so the broker splits the messages over
// the silo processes, and any of them can take any device: the grain, not
// the connection, is where a device's messages meet.
//
// Delivery end to end is the device's affair, as with HTTP: the broker's
// PUBACK only says the bridge has the message; the `ack` topic says it is
// durable. A device that sees no ack sends the same seq again, which the
// grain answers without counting it twice. That is why the bridge acks the
// broker at once and handles messages concurrently: mqtt.js would otherwise
// take one message at a time from the connection.

import mqtt, { type MqttClient } from 'mqtt';
import type { Silo } from 'granary';
import { Device, fleetSettings } from './grains.ts';
import { DEVICE_ID, parseTelemetry } from './model.ts';

/** The first level of the fleet's topics. Default `fleet`; another root keeps several fleets on one broker apart. */
export const DEFAULT_TOPIC_ROOT = 'fleet';

/** The topic filter the bridge subscribes to: `$share/fleet/fleet/+/telemetry` for the default root. */
export function telemetrySubscription(root = DEFAULT_TOPIC_ROOT): string {
  return `$share/fleet/${root}/+/telemetry`;
}

/** Messages the bridge handles at once; past it new ones are dropped (their devices send them again). */
const MAX_IN_FLIGHT = 5000;

/** A running bridge. */
export interface MqttBridge {
  /** True once it has subscribed (at least once). */
  readonly subscribed: boolean;
  stop(): Promise<void>;
}

/**
 * Connects to the broker at `url` and bridges it to the silo's device grains.
 * Resolves once subscribed, or after `waitMs` with the bridge still trying
 * in the background (a broker that is down later is retried every second).
 */
export async function startMqttBridge(
  silo: Silo,
  url: string,
  root = DEFAULT_TOPIC_ROOT,
  waitMs = 5000,
): Promise<MqttBridge> {
  const client: MqttClient = mqtt.connect(url, {
    clientId: `fleet-service-${silo.info.address}-${process.pid}`,
    protocolVersion: 5,
    clean: true,
    reconnectPeriod: 1000,
    connectTimeout: 5000,
  });
  let subscribed = false;
  let inFlight = 0;
  let resolveFirst: () => void = () => {};
  const first = new Promise<void>((resolve) => (resolveFirst = resolve));

  // A clean session forgets its subscriptions: subscribe on every (re)connect.
  client.on('connect', () => {
    client.subscribe(telemetrySubscription(root), { qos: 1 }, (err) => {
      if (err) return fleetSettings.warn({ url, err }, 'mqtt: subscribe failed');
      subscribed = true;
      resolveFirst();
    });
  });
  client.on('error', (err) => fleetSettings.warn({ url, err: err.message }, 'mqtt: connection error'));

  client.on('message', (topic, payload) => {
    if (inFlight >= MAX_IN_FLIGHT) {
      fleetSettings.warn({ topic }, 'mqtt: too many messages in flight; dropped one (its device sends it again)');
      return;
    }
    inFlight++;
    void handle(topic, payload).finally(() => inFlight--);
  });

  async function handle(topic: string, payload: Buffer): Promise<void> {
    const id = topic.split('/')[1] ?? '';
    if (!DEVICE_ID.test(id))
      return fleetSettings.warn({ topic }, 'mqtt: dropped a message: the topic names no device id like dev-000042');
    let body: unknown;
    try {
      body = JSON.parse(payload.toString('utf8'));
    } catch {
      return fleetSettings.warn({ topic }, 'mqtt: dropped a message that is not JSON');
    }
    const parsed = parseTelemetry(body);
    if (!parsed.ok) return fleetSettings.warn({ topic, error: parsed.error }, 'mqtt: dropped a bad message');
    try {
      const result = await silo.getGrain(Device, id).telemetry(parsed.value);
      // Only now, with the message durable, does the device hear of it.
      await client.publishAsync(`${root}/${id}/ack`, JSON.stringify({ seq: result.seq }), { qos: 1 });
      for (const c of result.commands)
        await client.publishAsync(`${root}/${id}/commands`, JSON.stringify(c), { qos: 1 });
    } catch (e) {
      fleetSettings.warn({ topic, err: e }, 'mqtt: message not handled (its device sends it again)');
    }
  }

  let timer: NodeJS.Timeout | undefined;
  await Promise.race([first, new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)))]);
  clearTimeout(timer);
  if (!subscribed) fleetSettings.warn({ url }, 'mqtt: no broker answered yet; still trying');
  return {
    get subscribed() {
      return subscribed;
    },
    async stop() {
      await client.endAsync();
    },
  };
}
