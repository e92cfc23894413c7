// The fleet's vocabulary: the telemetry a device sends, its validation (one
// function for HTTP and MQTT, so both refuse the same messages with the same
// words), the alert rules per device kind, and the summaries the aggregator
// grains pass up the hierarchy device → site → region → fleet.

/** The kinds of device the fleet knows. */
export const DEVICE_KINDS = ['vehicle', 'meter', 'sensor'] as const;
export type DeviceKind = (typeof DEVICE_KINDS)[number];

/** Device ids look like `dev-000042`. */
export const DEVICE_ID = /^dev-\d{6}$/;
/** Sites look like `site-7`. */
export const SITE_ID = /^site-\d+$/;
/** Regions look like `region-2`. */
export const REGION_ID = /^region-\d+$/;

/** One message of a device: what it publishes on MQTT or POSTs over HTTP. */
export interface Telemetry {
  /** Per device, increasing; a seq at or below the last accepted one is a repeat. */
  seq: number;
  /** When the device measured it, epoch ms (the device's clock: used for display, never for liveness). */
  ts: number;
  kind: DeviceKind;
  site: string;
  region: string;
  /** Percent, 0..100. */
  battery: number;
  position?: { lat: number; lon: number };
  readings: Record<string, number>;
}

/** A command waiting for its device, delivered once with the answer to its next telemetry. */
export interface Command {
  commandId: string;
  name: string;
  args: Record<string, unknown>;
}

/** The JSON schema of Telemetry, for the HTTP route (validation and the OpenAPI description). */
export const telemetrySchema = {
  type: 'object',
  required: ['seq', 'ts', 'kind', 'site', 'region', 'battery', 'readings'],
  properties: {
    seq: { type: 'integer', minimum: 0, description: 'per device, increasing' },
    ts: { type: 'number', minimum: 0, description: 'epoch ms, the device clock' },
    kind: { type: 'string', enum: [...DEVICE_KINDS] },
    site: { type: 'string', pattern: SITE_ID.source },
    region: { type: 'string', pattern: REGION_ID.source },
    battery: { type: 'number', minimum: 0, maximum: 100 },
    position: {
      type: 'object',
      required: ['lat', 'lon'],
      properties: {
        lat: { type: 'number', minimum: -90, maximum: 90 },
        lon: { type: 'number', minimum: -180, maximum: 180 },
      },
    },
    readings: { type: 'object', additionalProperties: { type: 'number' } },
  },
} as const;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function finite(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

/**
 * Checks a telemetry body. Returns the telemetry (only its known fields, so
 * nothing else is stored) or a message that names the bad field.
 */
export function parseTelemetry(body: unknown): { ok: true; value: Telemetry } | { ok: false; error: string } {
  const bad = (field: string, want: string, got: unknown): { ok: false; error: string } => ({
    ok: false,
    error: `${field} must be ${want}, got ${JSON.stringify(got) ?? 'nothing'}`,
  });
  if (!isRecord(body)) return bad('body', 'a JSON object', body);
  const { seq, ts, kind, site, region, battery, position, readings } = body;
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) return bad('seq', 'an integer >= 0', seq);
  if (!finite(ts) || ts < 0) return bad('ts', 'epoch milliseconds', ts);
  if (typeof kind !== 'string' || !(DEVICE_KINDS as readonly string[]).includes(kind))
    return bad('kind', `one of ${DEVICE_KINDS.join(', ')}`, kind);
  if (typeof site !== 'string' || !SITE_ID.test(site)) return bad('site', 'like site-7', site);
  if (typeof region !== 'string' || !REGION_ID.test(region)) return bad('region', 'like region-2', region);
  if (!finite(battery) || battery < 0 || battery > 100) return bad('battery', 'a number from 0 to 100', battery);
  let pos: Telemetry['position'];
  if (position !== undefined) {
    if (!isRecord(position)) return bad('position', 'an object {lat, lon}', position);
    if (!finite(position['lat']) || Math.abs(position['lat']) > 90)
      return bad('position.lat', 'a number from -90 to 90', position['lat']);
    if (!finite(position['lon']) || Math.abs(position['lon']) > 180)
      return bad('position.lon', 'a number from -180 to 180', position['lon']);
    pos = { lat: position['lat'], lon: position['lon'] };
  }
  if (!isRecord(readings)) return bad('readings', 'an object of numbers', readings);
  const r: Record<string, number> = {};
  for (const [k, v] of Object.entries(readings)) {
    if (!finite(v)) return bad(`readings.${k}`, 'a number', v);
    r[k] = v;
  }
  const value: Telemetry = { seq, ts, kind: kind as DeviceKind, site, region, battery, readings: r };
  if (pos !== undefined) value.position = pos;
  return { ok: true, value };
}

/** An alert rule: a name, and whether a message breaks it. */
interface Rule {
  readonly alert: string;
  readonly broken: (t: Telemetry) => boolean;
}

/**
 * Threshold rules per kind. Evaluated on every accepted message by the
 * device's own grain, so a rule costs nothing beyond the message's turn and
 * needs no shared state; an alert is on while its last message breaks it.
 */
export const RULES: Readonly<Record<DeviceKind, readonly Rule[]>> = {
  vehicle: [
    { alert: 'battery-low', broken: (t) => t.battery < 15 },
    { alert: 'overspeed', broken: (t) => (t.readings['speed'] ?? 0) > 160 },
  ],
  meter: [
    { alert: 'battery-low', broken: (t) => t.battery < 5 },
    { alert: 'overload', broken: (t) => (t.readings['watts'] ?? 0) > 10_000 },
  ],
  sensor: [
    { alert: 'battery-low', broken: (t) => t.battery < 10 },
    {
      alert: 'temperature',
      broken: (t) => {
        const c = t.readings['temperature'];
        return c !== undefined && (c < -20 || c > 60);
      },
    },
  ],
};

/** The alerts a message raises, by the rules of its kind. */
export function alertsOf(t: Telemetry): string[] {
  return RULES[t.kind].filter((r) => r.broken(t)).map((r) => r.alert);
}

/**
 * What a device tells its site: its latest persisted facts, whole, never a
 * delta. `rev` grows with every change the device persists, so a site keeps
 * the newest snapshot per device and a report that is late, lost or repeated
 * only delays the totals, never counts twice.
 */
export interface DeviceSnapshot {
  id: string;
  rev: number;
  site: string;
  region: string;
  kind: DeviceKind;
  messages: number;
  online: boolean;
  alerts: string[];
  battery: number;
  /** True when the device moved to another site: this site should forget it. */
  gone?: true;
}

/** Totals of a set of devices: what a site, a region and the fleet report. */
export interface Totals {
  devices: number;
  online: number;
  offline: number;
  inAlert: number;
  messages: number;
  perKind: Record<DeviceKind, number>;
}

/** A device in alert, as the alert list shows it. */
export interface AlertEntry {
  id: string;
  site: string;
  region: string;
  kind: DeviceKind;
  alerts: string[];
  battery: number;
  online: boolean;
}

/** How many devices in alert a summary lists (the count is always exact; the list is capped). */
export const ALERT_LIST_CAP = 200;

/** What a site tells its region, and a region the fleet: whole, with a growing `rev`. */
export interface Summary {
  key: string;
  rev: number;
  totals: Totals;
  /** Devices in alert, at most ALERT_LIST_CAP of them. */
  alerts: AlertEntry[];
  /** True when the site moved to another region: this region should forget it. */
  gone?: true;
}

export function emptyTotals(): Totals {
  return { devices: 0, online: 0, offline: 0, inAlert: 0, messages: 0, perKind: { vehicle: 0, meter: 0, sensor: 0 } };
}

/** Adds `b` into `a`. */
export function addTotals(a: Totals, b: Totals): Totals {
  a.devices += b.devices;
  a.online += b.online;
  a.offline += b.offline;
  a.inAlert += b.inAlert;
  a.messages += b.messages;
  for (const k of DEVICE_KINDS) a.perKind[k] += b.perKind[k];
  return a;
}

/** The totals of one device's snapshot. */
export function totalsOf(s: DeviceSnapshot): Totals {
  const t = emptyTotals();
  if (s.gone === true) return t;
  t.devices = 1;
  t.online = s.online ? 1 : 0;
  t.offline = s.online ? 0 : 1;
  t.inAlert = s.alerts.length > 0 ? 1 : 0;
  t.messages = s.messages;
  t.perKind[s.kind] = 1;
  return t;
}

/** An alert changing on a device: what the `alerts` stream carries. */
export interface AlertChange {
  id: string;
  site: string;
  region: string;
  kind: DeviceKind;
  /** Alerts on now (empty: the device is clear). */
  alerts: string[];
  raised: string[];
  cleared: string[];
  /** Server time of the change, epoch ms. */
  at: number;
}

/** The stream provider, and the namespace of alert changes (one stream per region). */
export const STREAMS = { provider: 'fleet', alerts: 'alerts' } as const;
