// Load generator for the fleet sample: simulated devices send telemetry over
// HTTP or MQTT at a paced, open-loop rate, and the run ends with a report of
// the achieved rate, the latency to acknowledgement and the errors.
//
//   npm run load -- --devices 100000 --rate 20000 --duration 30s
//   npm run load -- --help
//
// Open loop: messages are due on a clock (rate × elapsed time), not when the
// previous answer arrives, so a slow service shows up as latency and as a
// backlog instead of silently lowering the offered rate. A bound on the
// messages in flight (--concurrency) keeps a stalled service from costing
// unbounded memory; the report says for how much of the run that bound held
// the rate back.
//
// A device has at most one message in flight, as a real device sending in
// order would: a busy device is skipped and the next one sends instead.
// `runLoad` is exported for tests and returns, besides the figures, the
// highest acknowledged seq and the acknowledged count of every device, so a
// test can check that nothing acknowledged was lost.

import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

export type Transport = 'http' | 'mqtt';

export interface LoadOptions {
  /** Simulated devices, dev-000000 … (at most 1,000,000). Default 1000. */
  devices?: number;
  /** Target messages per second. Default 1000. */
  rate?: number;
  /** Stop issuing after this long, in ms. Default 30 s unless `messages` is given. */
  durationMs?: number;
  /** Stop after issuing this many messages (retries not counted). */
  messages?: number;
  /** Default 'http'. */
  transport?: Transport;
  /** Base URLs of the service (HTTP); messages are spread across them. Default http://127.0.0.1:3000. */
  urls?: string[];
  /** Broker URL (MQTT). Default mqtt://127.0.0.1:1883. */
  mqttUrl?: string;
  /** First level of the MQTT topics (`<root>/<id>/telemetry`, `<root>/<id>/ack`). Default 'fleet'. */
  mqttTopicRoot?: string;
  /** MQTT client connections carrying the devices between them. Default 4. */
  mqttClients?: number;
  /** Bound on messages in flight (sent, not yet acknowledged or given up). Default 512. */
  concurrency?: number;
  /** Sites site-0 … and regions region-0 …; a site belongs to one region. Defaults 100 and 10. */
  sites?: number;
  regions?: number;
  /** How the next device is picked. Default 'round-robin'. */
  order?: 'round-robin' | 'random';
  /** Attempts per message, the first included (HTTP: each on the next URL). Default 8. */
  tries?: number;
  /** How long one attempt may take before it counts as a timeout, in ms. Default 10 s. */
  timeoutMs?: number;
  /** After issuing stops, how long to wait for messages still in flight (retries included), in ms. Default: tries × (timeoutMs + 2 s), at most 30 s (at least timeoutMs). */
  drainMs?: number;
  /** First seq of every device. Default 0 (a service that already saw these seqs answers them as repeats). */
  startSeq?: number;
  /** Share of messages that carry an anomaly (low battery, overheating …). Default 0.002. */
  anomalyRate?: number;
  /** Seed of the generator's pseudo-random choices. Default 1. */
  seed?: number;
  /** Stops the run early: issuing ends, in-flight messages get up to 1 s. */
  signal?: AbortSignal;
  /** Called about every `progressIntervalMs` during the run. */
  onProgress?: (progress: LoadProgress) => void;
  /** Default 1000. */
  progressIntervalMs?: number;
}

export interface LoadProgress {
  elapsedMs: number;
  sent: number;
  acked: number;
  failed: number;
  inFlight: number;
  retries: number;
  errors: number;
  /** Acknowledgements per second since the previous progress report. */
  rate: number;
  p50Ms: number;
  p99Ms: number;
  /** The in-flight bound held sending back at some point since the previous report. */
  boundLimited: boolean;
}

export interface LatencySummary {
  count: number;
  minMs: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

export interface DeviceAcks {
  /** Highest seq acknowledged by the service (-1: none). */
  highestSeq: number;
  /** Messages acknowledged. */
  acked: number;
  /** Highest seq sent (acknowledged or not). */
  highestSent: number;
}

export interface LoadReport {
  transport: Transport;
  targets: string[];
  devices: number;
  concurrency: number;
  targetRate: number;
  stoppedBy: 'duration' | 'messages' | 'abort';
  /** From the start to the end of issuing, in ms. */
  issuingMs: number;
  /** From the start until every message settled (or was abandoned), in ms. */
  elapsedMs: number;
  /** Distinct messages sent (retries not counted). */
  sent: number;
  /** Messages acknowledged (HTTP 2xx after durable; MQTT ack topic). */
  acked: number;
  /** Messages given up after their last try or a non-retryable answer. */
  failed: number;
  /** Messages still in flight when the drain ended (their fate is unknown). */
  abandoned: number;
  /** Attempts beyond the first. */
  retries: number;
  /** Commands received with HTTP answers. */
  commands: number;
  /** HTTP answers that said the seq was accepted before (a retry of a message that had landed, or a rerun with the same seqs). */
  duplicates: number;
  /** Messages with an anomaly. */
  anomalies: number;
  /** Failed attempts by kind (ECONNREFUSED, http-503, timeout, …). */
  errors: Record<string, number>;
  /** sent / issuing time. */
  sentRate: number;
  /** acked / time to the last acknowledgement. */
  achievedRate: number;
  /** Share (0..1) of the pacing ticks at which the in-flight bound held sending back. */
  boundLimitedShare: number;
  maxInFlight: number;
  /** CPU time of this process during the run (the generator's own cost), and per message attempt in µs. */
  cpu: { userMs: number; systemMs: number; usPerAttempt: number };
  /** From the first attempt of a message to its acknowledgement. */
  latency: LatencySummary;
  /** The non-empty buckets of the latency histogram (bounds in ms, `toMs` exclusive). */
  histogram: { fromMs: number; toMs: number; count: number }[];
  /** Per device that sent anything: highest acknowledged seq, acknowledged count, highest sent seq. */
  perDevice: Map<string, DeviceAcks>;
}

// ---------------------------------------------------------------------------
// Latency histogram: log-linear buckets over integer microseconds, 64 linear
// sub-buckets per power of two (under 1.6% relative error), fixed size, so
// recording is a few integer operations and nothing grows per message.

const SUB_BITS = 6;
const SUB = 1 << SUB_BITS; // 64
const MAX_US = 2 ** 31 - 1;

export class LatencyHistogram {
  readonly counts = new Float64Array(SUB * (31 - SUB_BITS + 1) + SUB);
  count = 0;
  sumUs = 0;
  minUs = Infinity;
  maxUs = 0;

  static indexOf(us: number): number {
    if (us < SUB * 2) return us;
    const shift = 31 - Math.clz32(us) - SUB_BITS;
    return shift * SUB + (us >>> shift);
  }

  /** Lower bound (inclusive) and upper bound (exclusive) of a bucket, in µs. */
  static boundsOf(index: number): [number, number] {
    if (index < SUB * 2) return [index, index + 1];
    const shift = Math.floor(index / SUB) - 1;
    const from = (index - shift * SUB) * 2 ** shift;
    return [from, from + 2 ** shift];
  }

  recordMs(ms: number): void {
    let us = Math.round(ms * 1000);
    if (us < 0) us = 0;
    else if (us > MAX_US) us = MAX_US;
    this.counts[LatencyHistogram.indexOf(us)]!++;
    this.count++;
    this.sumUs += us;
    if (us < this.minUs) this.minUs = us;
    if (us > this.maxUs) this.maxUs = us;
  }

  /** The value at quantile q (0..1), in ms: the (exclusive) upper bound of its bucket, or the maximum if lower. */
  quantileMs(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    const counts = this.counts;
    for (let i = 0; i < counts.length; i++) {
      seen += counts[i]!;
      if (seen >= rank) return Math.min(LatencyHistogram.boundsOf(i)[1], this.maxUs) / 1000;
    }
    return this.maxUs / 1000;
  }

  summary(): LatencySummary {
    const empty = this.count === 0;
    return {
      count: this.count,
      minMs: empty ? 0 : this.minUs / 1000,
      meanMs: empty ? 0 : this.sumUs / this.count / 1000,
      p50Ms: this.quantileMs(0.5),
      p90Ms: this.quantileMs(0.9),
      p99Ms: this.quantileMs(0.99),
      p999Ms: this.quantileMs(0.999),
      maxMs: this.maxUs / 1000,
    };
  }

  buckets(): { fromMs: number; toMs: number; count: number }[] {
    const out: { fromMs: number; toMs: number; count: number }[] = [];
    for (let i = 0; i < this.counts.length; i++) {
      const c = this.counts[i]!;
      if (c === 0) continue;
      const [from, to] = LatencyHistogram.boundsOf(i);
      out.push({ fromMs: from / 1000, toMs: to / 1000, count: c });
    }
    return out;
  }
}

// ---------------------------------------------------------------------------

// A lean HTTP/1.1 client: keep-alive connections, one request at a time on
// each, the request written as one string and the answer parsed by hand
// (status, Content-Length or chunked). node:http's client cost about twice
// the CPU per request on a 2-core machine (78 against 35 µs, for its
// ClientRequest/IncomingMessage machinery), and the generator must stay well
// below the service in CPU to measure it.

type Answer = (err: NodeJS.ErrnoException | undefined, status: number, body: string) => void;

export class Conn {
  readonly socket: net.Socket;
  #buf = '';
  #cb: Answer | undefined;
  #dead = false;
  lastUsed = 0;

  constructor(readonly pool: HttpPool) {
    const s = net.connect(pool.port, pool.hostname);
    s.setNoDelay(true);
    s.setEncoding('latin1');
    s.on('data', (chunk: string) => this.#onData(chunk));
    s.on('error', (err) => this.#onEnd(err));
    s.on('close', () => this.#onEnd(undefined));
    this.socket = s;
  }

  get dead(): boolean {
    return this.#dead;
  }

  send(request: string, cb: Answer): void {
    this.#cb = cb;
    this.#buf = '';
    this.socket.write(request, 'latin1');
  }

  destroy(): void {
    this.socket.destroy();
  }

  #onData(chunk: string): void {
    this.#buf = this.#buf === '' ? chunk : this.#buf + chunk;
    for (;;) {
      const buf = this.#buf;
      const he = buf.indexOf('\r\n\r\n');
      if (he < 0) return;
      const status = Number(buf.slice(9, 12));
      if (status >= 100 && status < 200) {
        this.#buf = buf.slice(he + 4);
        continue;
      }
      const head = buf.slice(0, he).toLowerCase();
      let body: string;
      const cl = head.indexOf('\r\ncontent-length:');
      if (cl >= 0) {
        const eol = head.indexOf('\r\n', cl + 2);
        const len = parseInt(head.slice(cl + 17, eol < 0 ? he : eol), 10);
        if (buf.length < he + 4 + len) return;
        body = buf.slice(he + 4, he + 4 + len);
      } else if (head.includes('\r\ntransfer-encoding: chunked')) {
        let pos = he + 4;
        body = '';
        for (;;) {
          const eol = buf.indexOf('\r\n', pos);
          if (eol < 0) return;
          const size = parseInt(buf.slice(pos, eol), 16);
          if (size === 0) {
            if (buf.startsWith('\r\n', eol + 2)) break;
            if (buf.indexOf('\r\n\r\n', eol) < 0) return;
            break;
          }
          if (buf.length < eol + 2 + size + 2) return;
          body += buf.slice(eol + 2, eol + 2 + size);
          pos = eol + 2 + size + 2;
        }
      } else if (status === 204 || status === 304) {
        body = '';
      } else {
        return; // delimited by the end of the connection: see #onEnd
      }
      this.#finish(status, body, head.includes('\r\nconnection: close') || buf.startsWith('HTTP/1.0'));
      return;
    }
  }

  #finish(status: number, body: string, close: boolean): void {
    const cb = this.#cb;
    this.#cb = undefined;
    this.#buf = '';
    if (close) this.socket.destroy();
    else this.pool.release(this);
    // The body is read as latin1 (one char a byte); decode it when not ASCII.
    if (cb) cb(undefined, status, /[\x80-\xff]/.test(body) ? Buffer.from(body, 'latin1').toString('utf8') : body);
  }

  #onEnd(err: NodeJS.ErrnoException | undefined): void {
    if (this.#dead) return;
    this.#dead = true;
    this.pool.remove(this);
    const cb = this.#cb;
    if (!cb) return;
    const buf = this.#buf;
    const he = buf.indexOf('\r\n\r\n');
    if (err === undefined && he >= 0) {
      this.#finish(Number(buf.slice(9, 12)), buf.slice(he + 4), true);
      return;
    }
    this.#cb = undefined;
    if (err === undefined) {
      err = new Error('connection closed before an answer');
      err.code = 'ECONNRESET';
    }
    cb(err, 0, '');
  }
}

export class HttpPool {
  readonly #idle: Conn[] = [];
  readonly #all = new Set<Conn>();

  constructor(
    readonly hostname: string,
    readonly port: number,
    readonly maxIdle: number,
  ) {}

  /** The most recently used idle connection (one idle 4 s or more is dropped, as servers close those), or a new one. */
  acquire(): Conn {
    const now = performance.now();
    for (;;) {
      const c = this.#idle.pop();
      if (c === undefined) break;
      if (c.dead) continue;
      if (now - c.lastUsed < 4000) return c;
      c.destroy();
    }
    const c = new Conn(this);
    this.#all.add(c);
    return c;
  }

  release(c: Conn): void {
    if (c.dead) return;
    if (this.#idle.length >= this.maxIdle) {
      c.destroy();
      return;
    }
    c.lastUsed = performance.now();
    this.#idle.push(c);
  }

  remove(c: Conn): void {
    this.#all.delete(c);
    const i = this.#idle.lastIndexOf(c);
    if (i >= 0) this.#idle.splice(i, 1);
  }

  dropIdle(): void {
    for (const c of this.#idle.splice(0)) c.destroy();
  }

  close(): void {
    for (const c of [...this.#all]) c.destroy();
    this.#idle.length = 0;
  }
}

/** xorshift32: cheap, seeded, good enough for picking devices and readings. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export function deviceId(index: number): string {
  return 'dev-' + String(index).padStart(6, '0');
}

const KINDS = ['vehicle', 'meter', 'sensor'] as const;
interface Pending {
  device: number;
  seq: number;
  body: string;
  path: string;
  tries: number;
  urlIndex: number;
  firstAt: number;
  attemptAt: number;
  conn: Conn | undefined;
  done: boolean;
}

interface Target {
  url: string;
  hostname: string;
  port: number;
  host: string;
  prefix: string;
  downUntil: number;
}

const round1 = (x: number) => Math.round(x * 10) / 10;
const round5 = (x: number) => Math.round(x * 1e5) / 1e5;

export async function runLoad(options: LoadOptions = {}): Promise<LoadReport> {
  const devices = options.devices ?? 1000;
  const rate = options.rate ?? 1000;
  const maxMessages = options.messages ?? Infinity;
  const durationMs = options.durationMs ?? (options.messages === undefined ? 30_000 : Infinity);
  const transport = options.transport ?? 'http';
  const urls = options.urls ?? ['http://127.0.0.1:3000'];
  const mqttUrl = options.mqttUrl ?? 'mqtt://127.0.0.1:1883';
  const root = options.mqttTopicRoot ?? 'fleet';
  const cap = Math.max(1, Math.min(options.concurrency ?? 512, devices));
  const sites = options.sites ?? 100;
  const regions = options.regions ?? 10;
  const random = options.order === 'random';
  const maxTries = Math.max(1, options.tries ?? 8);
  const timeoutMs = options.timeoutMs ?? 10_000;
  // Long enough for a message's every try (each at most timeoutMs, with at most 2 s of backoff), within 30 s.
  const drainMs = options.drainMs ?? Math.max(timeoutMs, Math.min(30_000, maxTries * (timeoutMs + 2000)));
  const startSeq = options.startSeq ?? 0;
  const anomalyRate = options.anomalyRate ?? 0.002;
  const progressIntervalMs = options.progressIntervalMs ?? 1000;
  const signal = options.signal;
  if (!(devices >= 1 && devices <= 1_000_000 && Number.isInteger(devices)))
    throw new RangeError('devices: an integer from 1 to 1000000');
  if (!(rate > 0)) throw new RangeError('rate: a positive number');
  if (transport === 'http' && urls.length === 0) throw new RangeError('urls: at least one');
  const rand = rng(options.seed ?? 1);

  // Device state, in typed arrays indexed by device.
  const nextSeq = new Float64Array(devices).fill(startSeq);
  const ackedHigh = new Float64Array(devices).fill(-1);
  const ackedCount = new Uint32Array(devices);
  const busy = new Uint8Array(devices);
  const battery = new Float32Array(devices);
  const lat = new Float64Array(devices);
  const lon = new Float64Array(devices);
  const level = new Float32Array(devices); // speed, watts or temperature
  const ids: string[] = new Array<string>(devices);
  const siteOf = new Uint32Array(devices);
  const kindOf = new Uint8Array(devices); // index into KINDS
  const siteNames = Array.from({ length: sites }, (_, s) => `site-${s}`);
  const regionNames = Array.from({ length: regions }, (_, r) => `region-${r}`);
  for (let d = 0; d < devices; d++) {
    ids[d] = deviceId(d);
    // Sites at random (and so regions); kinds 50% vehicles, 30% meters, 20% sensors.
    siteOf[d] = Math.floor(rand() * sites);
    const r = rand();
    kindOf[d] = r < 0.5 ? 0 : r < 0.8 ? 1 : 2;
    battery[d] = 40 + rand() * 60;
    lat[d] = 48 + rand() * 6;
    lon[d] = 2 + rand() * 12;
    const k = kindOf[d]!;
    level[d] = k === 0 ? rand() * 90 : k === 1 ? 200 + rand() * 3000 : 15 + rand() * 10;
  }

  let anomalies = 0;
  function makeBody(d: number, seq: number): string {
    const k = kindOf[d]!;
    const site = siteOf[d]!;
    let b = battery[d]! - rand() * 0.05;
    if (b < 5) b = 100;
    battery[d] = b;
    const anomaly = rand() < anomalyRate;
    if (anomaly) anomalies++;
    let readings: string;
    let position = '';
    if (k === 0) {
      let v = level[d]! + (rand() - 0.5) * 10;
      v = v < 0 ? 0 : v > 130 ? 130 : v;
      level[d] = v;
      lat[d] = lat[d]! + (rand() - 0.5) * 0.001;
      lon[d] = lon[d]! + (rand() - 0.5) * 0.001;
      position = `"position":{"lat":${round5(lat[d]!)},"lon":${round5(lon[d]!)}},`;
      readings = `"speed":${round1(anomaly ? 180 + rand() * 60 : v)}`;
    } else if (k === 1) {
      let w = level[d]! + (rand() - 0.5) * 200;
      w = w < 0 ? 0 : w > 5000 ? 5000 : w;
      level[d] = w;
      readings = `"watts":${round1(anomaly ? 9000 + rand() * 3000 : w)}`;
    } else {
      let t = level[d]! + (rand() - 0.5) * 0.4;
      t = t < -10 ? -10 : t > 45 ? 45 : t;
      level[d] = t;
      readings = `"temperature":${round1(anomaly ? 70 + rand() * 20 : t)}`;
    }
    // Every third anomaly is a battery about to die instead.
    const bat = anomaly && anomalies % 3 === 0 ? round1(rand() * 4) : round1(b);
    return (
      `{"seq":${seq},"ts":${Date.now()},"kind":"${KINDS[k]}","site":"${siteNames[site]}",` +
      `"region":"${regionNames[site % regions]}","battery":${bat},${position}"readings":{${readings}}}`
    );
  }

  // Counters.
  const hist = new LatencyHistogram();
  const errors: Record<string, number> = {};
  let errorCount = 0;
  let issued = 0;
  let acked = 0;
  let failed = 0;
  let abandoned = 0;
  let retries = 0;
  let commands = 0;
  let duplicates = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  let ticks = 0;
  let limitedTicks = 0;
  let limitedSinceProgress = false;
  let lastAckAt = 0;
  let rr = 0;
  let running = true;
  const inflight = new Set<Pending>();

  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const deadline = t0 + durationMs;
  let issuingEnd = 0;
  let stoppedBy = 'duration' as LoadReport['stoppedBy'];
  let issuing = true;

  let resolveDone!: () => void;
  const done = new Promise<void>((r) => (resolveDone = r));

  function countError(kind: string): void {
    errors[kind] = (errors[kind] ?? 0) + 1;
    errorCount++;
  }

  function settle(p: Pending): void {
    p.done = true;
    p.conn = undefined;
    busy[p.device] = 0;
    inFlight--;
    inflight.delete(p);
    if (!issuing && inFlight === 0) resolveDone();
  }

  function ack(p: Pending): void {
    if (p.done) return;
    const now = performance.now();
    hist.recordMs(now - p.firstAt);
    lastAckAt = now;
    acked++;
    const d = p.device;
    ackedCount[d]!++;
    if (p.seq > ackedHigh[d]!) ackedHigh[d] = p.seq;
    settle(p);
    if (issuing && issued < target()) pump();
  }

  // A failed attempt: retried (HTTP on the next URL) unless out of tries.
  function fail(p: Pending, kind: string, retryable: boolean): void {
    if (p.done) return;
    countError(kind);
    p.conn = undefined;
    if (!retryable || p.tries >= maxTries || !running) {
      failed++;
      settle(p);
      return;
    }
    retries++;
    p.urlIndex++;
    // Every try of a URL list's first round goes straight to the next URL; later ones back off.
    const immediate = transport === 'http' && p.tries < targets.length;
    const delay = immediate ? 0 : Math.min(2000, 100 * 2 ** (p.tries - 1));
    // No attempt is out while it waits: the timeout sweep must pass it by.
    p.attemptAt = Infinity;
    setTimeout(() => {
      if (!p.done) attempt(p);
    }, delay).unref();
  }

  // ---- HTTP ----
  const targets: Target[] = urls.map((u) => {
    const url = new URL(u);
    if (url.protocol !== 'http:') throw new RangeError(`url ${u}: only http:// is supported`);
    return {
      url: u,
      hostname: url.hostname,
      port: Number(url.port || 80),
      host: url.host,
      prefix: url.pathname.replace(/\/+$/, ''),
      downUntil: 0,
    };
  });
  const pools = targets.map((t) => new HttpPool(t.hostname, t.port, cap));

  function pickTarget(p: Pending): number {
    const n = targets.length;
    const now = performance.now();
    for (let i = 0; i < n; i++) {
      const k = (p.urlIndex + i) % n;
      if (targets[k]!.downUntil <= now) {
        p.urlIndex += i;
        return k;
      }
    }
    return p.urlIndex % n;
  }

  function attemptHttp(p: Pending): void {
    const k = pickTarget(p);
    const t = targets[k]!;
    const conn = pools[k]!.acquire();
    p.conn = conn;
    conn.send(
      `POST ${t.prefix}${p.path} HTTP/1.1\r\nHost: ${t.host}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${p.body.length}\r\n\r\n${p.body}`,
      (err, status, body) => {
        if (p.conn !== conn) return;
        p.conn = undefined;
        if (err) {
          const code = err.code ?? err.name;
          if (code === 'ECONNREFUSED') t.downUntil = performance.now() + 500;
          // A refused or reset connection: the server's other idle connections are likely gone too.
          if (code === 'ECONNREFUSED' || code === 'ECONNRESET') pools[k]!.dropIdle();
          fail(p, code, true);
        } else if (status >= 200 && status < 300) {
          try {
            const parsed = JSON.parse(body) as { seq?: unknown; commands?: unknown; duplicate?: unknown };
            if (Array.isArray(parsed.commands)) commands += parsed.commands.length;
            if (parsed.duplicate === true) duplicates++;
            if (parsed.seq !== undefined && parsed.seq !== p.seq) countError('seq-mismatch');
          } catch {
            countError('bad-json');
          }
          ack(p);
        } else {
          fail(p, `http-${status}`, status >= 500 || status === 429 || status === 408);
        }
      },
    );
  }

  // ---- MQTT ----
  // A few client connections carry all the devices, each device always on
  // the same one (so its messages stay in order). What is measured is the
  // service's throughput and its latency to the ack; 100k broker connections
  // would measure the broker and this process's sockets instead. The acks come
  // back through a shared subscription spread over the same connections.
  type MqttClient = import('mqtt').MqttClient;
  const clients: MqttClient[] = [];
  const pendingByDevice: (Pending | undefined)[] = transport === 'mqtt' ? new Array(devices) : [];

  function attemptMqtt(p: Pending): void {
    // The device's own connection; a retry goes through the next one.
    const client = clients[(p.device + p.tries - 1) % clients.length]!;
    const attemptAt = p.attemptAt;
    pendingByDevice[p.device] = p;
    client.publish(`${root}/${ids[p.device]}/telemetry`, p.body, { qos: 1 }, (err) => {
      if (err && !p.done && p.attemptAt === attemptAt) {
        pendingByDevice[p.device] = undefined;
        fail(p, 'mqtt-publish', true);
      }
    });
  }

  const ackPrefix = `${root}/dev-`;
  function onAck(topic: string, payload: Buffer): void {
    // <root>/dev-000042/ack
    if (topic.length !== root.length + 15 || !topic.startsWith(ackPrefix)) return;
    const d = Number(topic.slice(ackPrefix.length, ackPrefix.length + 6));
    if (!(d < devices)) return;
    const p = pendingByDevice[d];
    if (p === undefined || p.done) return;
    let seq: unknown;
    try {
      seq = (JSON.parse(payload.toString()) as { seq?: unknown }).seq;
    } catch {
      countError('bad-ack');
      return;
    }
    if (seq === p.seq) {
      pendingByDevice[d] = undefined;
      ack(p);
    }
  }

  if (transport === 'mqtt') {
    const mqtt = await import('mqtt');
    const n = Math.max(1, options.mqttClients ?? 4);
    const group = `granary-load-${process.pid}-${Math.floor(Math.random() * 1e9)}`;
    try {
      for (let i = 0; i < n; i++) {
        const c = await mqtt.connectAsync(mqttUrl, {
          clientId: `${group}-${i}`,
          clean: true,
          connectTimeout: 5000,
          reconnectPeriod: 1000,
        });
        clients.push(c);
        c.on('message', onAck);
        c.on('error', () => {});
        // Acks are spread over the connections by a shared subscription.
        await c.subscribeAsync(`$share/${group}/${root}/+/ack`, { qos: 0 });
      }
    } catch (err) {
      await Promise.all(clients.map((c) => c.endAsync(true)));
      throw new Error(`cannot connect to MQTT broker ${mqttUrl}: ${(err as Error).message}`, { cause: err });
    }
  }

  function attempt(p: Pending): void {
    p.tries++;
    p.attemptAt = performance.now();
    if (transport === 'http') attemptHttp(p);
    else attemptMqtt(p);
  }

  // ---- pacing ----
  function target(): number {
    const now = performance.now();
    const due = Math.floor(((now < deadline ? now : deadline) - t0) * (rate / 1000));
    return due < maxMessages ? due : maxMessages;
  }

  let cursor = 0;
  function nextDevice(): number {
    let d = random ? Math.floor(rand() * devices) : cursor;
    while (busy[d]) d = d + 1 === devices ? 0 : d + 1;
    if (!random) cursor = d + 1 === devices ? 0 : d + 1;
    return d;
  }

  function issue(): void {
    const d = nextDevice();
    const seq = nextSeq[d]!;
    nextSeq[d] = seq + 1;
    busy[d] = 1;
    const now = performance.now();
    const p: Pending = {
      device: d,
      seq,
      body: makeBody(d, seq),
      path: `/api/devices/${ids[d]}/telemetry`,
      tries: 0,
      urlIndex: rr++,
      firstAt: now,
      attemptAt: now,
      conn: undefined,
      done: false,
    };
    issued++;
    inFlight++;
    if (inFlight > maxInFlight) maxInFlight = inFlight;
    inflight.add(p);
    attempt(p);
  }

  function pump(): boolean {
    const due = target();
    let n = 0;
    // At most 5000 at once so a backlog does not block the loop for long.
    while (issued < due && n < 5000) {
      if (inFlight >= cap) return true;
      issue();
      n++;
    }
    return false;
  }

  function stopIssuing(why: LoadReport['stoppedBy']): void {
    if (!issuing) return;
    issuing = false;
    stoppedBy = why;
    issuingEnd = performance.now();
    clearInterval(pacer);
    if (inFlight === 0) resolveDone();
  }

  const pacer = setInterval(() => {
    ticks++;
    if (pump()) {
      limitedTicks++;
      limitedSinceProgress = true;
    }
    if (issued >= maxMessages) stopIssuing('messages');
    else if (performance.now() >= deadline) {
      pump();
      stopIssuing(issued >= maxMessages ? 'messages' : 'duration');
    }
  }, 1);

  // Timeouts: a sweep over the messages in flight instead of a timer each.
  const sweeper = setInterval(() => {
    const now = performance.now();
    for (const p of inflight) {
      if (p.done || now - p.attemptAt < timeoutMs) continue;
      if (p.conn) {
        const conn = p.conn;
        p.conn = undefined;
        conn.destroy();
        fail(p, 'timeout', true);
      } else if (transport === 'mqtt') {
        pendingByDevice[p.device] = undefined;
        fail(p, 'ack-timeout', true);
      }
    }
  }, 100);

  let lastProgressAt = t0;
  let lastProgressAcked = 0;
  const progress = options.onProgress
    ? setInterval(() => {
        const now = performance.now();
        const s = hist.count > 0;
        options.onProgress!({
          elapsedMs: now - t0,
          sent: issued,
          acked,
          failed,
          inFlight,
          retries,
          errors: errorCount,
          rate: ((acked - lastProgressAcked) * 1000) / Math.max(1, now - lastProgressAt),
          p50Ms: s ? hist.quantileMs(0.5) : 0,
          p99Ms: s ? hist.quantileMs(0.99) : 0,
          boundLimited: limitedSinceProgress,
        });
        lastProgressAt = now;
        lastProgressAcked = acked;
        limitedSinceProgress = false;
      }, progressIntervalMs)
    : undefined;

  const onAbort = () => stopIssuing('abort');
  if (signal?.aborted) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });

  // Wait until issuing ended, then for the messages in flight (bounded).
  await new Promise<void>((resolve) => {
    const check = setInterval(() => {
      if (!issuing) {
        clearInterval(check);
        resolve();
      }
    }, 5);
    if (!issuing) {
      clearInterval(check);
      resolve();
    }
  });
  const drainFor = stoppedBy === 'abort' ? Math.min(drainMs, 1000) : drainMs;
  let drainTimer: NodeJS.Timeout | undefined;
  await Promise.race([done, new Promise<void>((r) => (drainTimer = setTimeout(r, drainFor)))]);
  clearTimeout(drainTimer);
  running = false;
  for (const p of [...inflight]) {
    if (p.done) continue;
    abandoned++;
    const conn = p.conn;
    settle(p);
    conn?.destroy();
  }
  const end = performance.now();
  const cpu = process.cpuUsage(cpu0);
  clearInterval(pacer);
  clearInterval(sweeper);
  if (progress) clearInterval(progress);
  signal?.removeEventListener('abort', onAbort);
  for (const pool of pools) pool.close();
  await Promise.all(clients.map((c) => c.endAsync(true)));

  const perDevice = new Map<string, DeviceAcks>();
  for (let d = 0; d < devices; d++) {
    if (nextSeq[d] === startSeq) continue;
    perDevice.set(ids[d]!, { highestSeq: ackedHigh[d]!, acked: ackedCount[d]!, highestSent: nextSeq[d]! - 1 });
  }
  const issuingMs = (issuingEnd || end) - t0;
  const ackSpan = Math.max(issuingMs, lastAckAt - t0);
  return {
    transport,
    targets: transport === 'http' ? urls : [mqttUrl],
    devices,
    concurrency: cap,
    targetRate: rate,
    stoppedBy,
    issuingMs,
    elapsedMs: end - t0,
    sent: issued,
    acked,
    failed,
    abandoned,
    retries,
    commands,
    duplicates,
    anomalies,
    errors,
    sentRate: issuingMs > 0 ? (issued * 1000) / issuingMs : 0,
    achievedRate: ackSpan > 0 ? (acked * 1000) / ackSpan : 0,
    boundLimitedShare: ticks > 0 ? limitedTicks / ticks : 0,
    maxInFlight,
    cpu: {
      userMs: cpu.user / 1000,
      systemMs: cpu.system / 1000,
      usPerAttempt: issued + retries > 0 ? (cpu.user + cpu.system) / (issued + retries) : 0,
    },
    latency: hist.summary(),
    histogram: hist.buckets(),
    perDevice,
  };
}

// ---------------------------------------------------------------------------
// Command line

const HELP = `Usage: npm run load -- [options]

Simulated devices send telemetry to the fleet sample, paced to a target rate
(open loop), and a report of the achieved rate and latency ends the run.

  --devices N        simulated devices dev-000000 … (default 1000, at most 1000000; 100k is fine)
  --rate N           target messages per second (default 1000)
  --duration T       how long to send: 30s, 2m, 500ms (default 30s)
  --messages N       send exactly N messages, then stop (instead of, or within, --duration)
  --transport T      http or mqtt (default http)
  --url U[,U…]       service base URLs, messages spread across them and retried on
                     the next one on a refused/reset connection or a 5xx
                     (default http://127.0.0.1:3000)
  --mqtt U           MQTT broker (default mqtt://127.0.0.1:1883)
  --mqtt-clients N   MQTT connections carrying the devices (default 4)
  --mqtt-topic-root R
                     first topic level: R/<id>/telemetry, R/<id>/ack (default fleet)
  --concurrency N    bound on messages in flight (default 512)
  --sites N          sites site-0 … (default 100)
  --regions N        regions region-0 … (default 10)
  --order O          round-robin or random (default round-robin)
  --tries N          attempts per message, first included (default 8)
  --timeout T        one attempt's timeout (default 10s)
  --start-seq N      first seq of every device (default: the clock in ms, so each
                     run's seqs are above the last run's)
  --seed N           seed of the pseudo-random choices (default 1)
  --json             print the report as JSON on stdout
  --quiet            no progress on stderr
  -h, --help         this help

MQTT: the devices share a few client connections (--mqtt-clients), since what
is measured is the service's throughput and latency to the ack, not the
broker's ability to hold 100k connections. Latency runs from a message's first
publish to its fleet/<id>/ack.

Ctrl-C stops early and still prints the report.`;

export class UsageError extends Error {}

function parseCount(flag: string, v: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  const m = /^(\d+(?:\.\d+)?)([kKmM]?)$/.exec(v.trim());
  const n = m ? Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]!) ? 1e3 : 1e6) : NaN;
  if (!Number.isInteger(n) || n < min || n > max)
    throw new UsageError(`--${flag}: expected an integer from ${min} to ${max} (like 5000 or 5k), got '${v}'`);
  return n;
}

function parseDuration(flag: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) throw new UsageError(`--${flag}: expected a duration like 30s, 2m or 500ms, got '${v}'`);
  const n = Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  if (!(n > 0)) throw new UsageError(`--${flag}: must be above zero, got '${v}'`);
  return n;
}

export interface CliOptions extends LoadOptions {
  json: boolean;
  quiet: boolean;
  help: boolean;
}

export function parseLoadArgs(argv: string[]): CliOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        devices: { type: 'string' },
        rate: { type: 'string' },
        duration: { type: 'string' },
        messages: { type: 'string' },
        transport: { type: 'string' },
        url: { type: 'string' },
        mqtt: { type: 'string' },
        'mqtt-topic-root': { type: 'string' },
        'mqtt-clients': { type: 'string' },
        concurrency: { type: 'string' },
        sites: { type: 'string' },
        regions: { type: 'string' },
        order: { type: 'string' },
        tries: { type: 'string' },
        timeout: { type: 'string' },
        'start-seq': { type: 'string' },
        seed: { type: 'string' },
        json: { type: 'boolean' },
        quiet: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const s = (k: string) => values[k] as string | undefined;
  const o: CliOptions = {
    json: values['json'] === true,
    quiet: values['quiet'] === true,
    help: values['help'] === true,
  };
  if (s('devices') !== undefined) o.devices = parseCount('devices', s('devices')!, 1, 1_000_000);
  if (s('rate') !== undefined) o.rate = parseCount('rate', s('rate')!, 1, 10_000_000);
  if (s('duration') !== undefined) o.durationMs = parseDuration('duration', s('duration')!);
  if (s('messages') !== undefined) o.messages = parseCount('messages', s('messages')!);
  if (s('transport') !== undefined) {
    const t = s('transport')!;
    if (t !== 'http' && t !== 'mqtt') throw new UsageError(`--transport: expected http or mqtt, got '${t}'`);
    o.transport = t;
  }
  if (s('url') !== undefined) {
    const list = s('url')!
      .split(',')
      .map((u) => u.trim())
      .filter((u) => u !== '');
    if (list.length === 0) throw new UsageError(`--url: expected one or more http:// URLs, got '${s('url')}'`);
    for (const u of list) {
      let ok = false;
      try {
        ok = new URL(u).protocol === 'http:';
      } catch {
        ok = false;
      }
      if (!ok) throw new UsageError(`--url: expected http:// URLs separated by commas, got '${u}'`);
    }
    o.urls = list;
  }
  if (s('mqtt') !== undefined) {
    const u = s('mqtt')!;
    let ok = false;
    try {
      ok = ['mqtt:', 'tcp:', 'mqtts:', 'ws:', 'wss:'].includes(new URL(u).protocol);
    } catch {
      ok = false;
    }
    if (!ok) throw new UsageError(`--mqtt: expected a broker URL like mqtt://127.0.0.1:1883, got '${u}'`);
    o.mqttUrl = u;
  }
  if (s('mqtt-topic-root') !== undefined) {
    const v = s('mqtt-topic-root')!;
    if (!/^[A-Za-z0-9_.-]+$/.test(v))
      throw new UsageError(`--mqtt-topic-root: expected one topic level (letters, digits, _ . -), got '${v}'`);
    o.mqttTopicRoot = v;
  }
  if (s('mqtt-clients') !== undefined) o.mqttClients = parseCount('mqtt-clients', s('mqtt-clients')!, 1, 1000);
  if (s('concurrency') !== undefined) o.concurrency = parseCount('concurrency', s('concurrency')!, 1, 100_000);
  if (s('sites') !== undefined) o.sites = parseCount('sites', s('sites')!, 1, 1_000_000);
  if (s('regions') !== undefined) o.regions = parseCount('regions', s('regions')!, 1, 1_000_000);
  if (s('order') !== undefined) {
    const v = s('order')!;
    if (v !== 'round-robin' && v !== 'random')
      throw new UsageError(`--order: expected round-robin or random, got '${v}'`);
    o.order = v;
  }
  if (s('tries') !== undefined) o.tries = parseCount('tries', s('tries')!, 1, 100);
  if (s('timeout') !== undefined) o.timeoutMs = parseDuration('timeout', s('timeout')!);
  // From the command line the seqs start at the clock (ms), as npm start's simulator does, so a run
  // against a service that already holds earlier runs' seqs is counted rather than answered as repeats.
  o.startSeq = s('start-seq') !== undefined ? parseCount('start-seq', s('start-seq')!, 0) : Date.now();
  if (s('seed') !== undefined) o.seed = parseCount('seed', s('seed')!, 0, 2 ** 32 - 1);
  return o;
}

const fmtMs = (ms: number) => (ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0)) + ' ms';
const fmtN = (n: number) => Math.round(n).toLocaleString('en-US');

export function formatProgress(p: LoadProgress): string {
  return (
    `${(p.elapsedMs / 1000).toFixed(1).padStart(5)} s  sent ${fmtN(p.sent)}  acked ${fmtN(p.acked)}  ` +
    `${fmtN(p.rate)}/s  p50 ${fmtMs(p.p50Ms)}  p99 ${fmtMs(p.p99Ms)}  in flight ${p.inFlight}  ` +
    `errors ${p.errors}  retries ${p.retries}${p.boundLimited ? '  [bound]' : ''}`
  );
}

export function formatReport(r: LoadReport): string {
  const lines: string[] = [];
  const l = r.latency;
  lines.push(`fleet load, ${r.transport} → ${r.targets.join(', ')}`);
  lines.push(
    `  devices ${fmtN(r.devices)}, concurrency ${r.concurrency}, stopped by ${r.stoppedBy} after ${(r.issuingMs / 1000).toFixed(1)} s`,
  );
  lines.push(
    `  messages   sent ${fmtN(r.sent)}  acked ${fmtN(r.acked)}  failed ${fmtN(r.failed)}  abandoned ${fmtN(r.abandoned)}  retries ${fmtN(r.retries)}`,
  );
  lines.push(
    `  rate       target ${fmtN(r.targetRate)}/s  sent ${fmtN(r.sentRate)}/s  achieved ${fmtN(r.achievedRate)}/s (acknowledged)`,
  );
  if (r.boundLimitedShare > 0.01)
    lines.push(
      `             the in-flight bound (${r.concurrency}) held sending back ${(r.boundLimitedShare * 100).toFixed(0)}% of the time`,
    );
  else if (r.sentRate < r.targetRate * 0.95 && r.stoppedBy === 'duration')
    lines.push(`             the generator itself fell behind the target (CPU-bound)`);
  lines.push(
    `  latency    p50 ${fmtMs(l.p50Ms)}  p90 ${fmtMs(l.p90Ms)}  p99 ${fmtMs(l.p99Ms)}  p99.9 ${fmtMs(l.p999Ms)}  max ${fmtMs(l.maxMs)}  mean ${fmtMs(l.meanMs)}`,
  );
  // A coarse view of the histogram: powers of two in ms.
  if (l.count > 0) {
    const coarse = new Map<number, number>();
    for (const b of r.histogram) {
      const k = Math.max(-3, Math.ceil(Math.log2(Math.max(b.toMs, 1e-3))));
      coarse.set(k, (coarse.get(k) ?? 0) + b.count);
    }
    const keys = [...coarse.keys()].sort((a, b) => a - b);
    const most = Math.max(...coarse.values());
    for (let k = keys[0]!; k <= keys[keys.length - 1]!; k++) {
      const c = coarse.get(k) ?? 0;
      const label = `≤ ${2 ** k < 1 ? (2 ** k).toFixed(3) : String(2 ** k)} ms`.padStart(14);
      lines.push(`  ${label} ${'#'.repeat(Math.ceil((c / most) * 40)).padEnd(40)} ${fmtN(c)}`);
    }
  }
  const errs = Object.entries(r.errors).sort((a, b) => b[1] - a[1]);
  lines.push(`  errors     ${errs.length === 0 ? 'none' : errs.map(([k, n]) => `${k} ${fmtN(n)}`).join(', ')}`);
  if (r.acked === 0 && (r.errors['ECONNREFUSED'] ?? 0) > 0)
    lines.push(`             nothing listens at ${r.targets.join(', ')}: is the service running (npm start)?`);
  lines.push(`  anomalies  ${fmtN(r.anomalies)}, commands received ${fmtN(r.commands)}`);
  if (r.duplicates > 0)
    lines.push(
      `  repeats    ${fmtN(r.duplicates)} answers said the seq was already accepted` +
        (r.duplicates > r.retries ? ' (run again with a higher --start-seq, or on fresh data)' : ''),
    );
  lines.push(
    `  generator  CPU ${fmtN(r.cpu.userMs + r.cpu.systemMs)} ms over ${fmtN(r.elapsedMs)} ms, ${r.cpu.usPerAttempt.toFixed(0)} µs a request`,
  );
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  let opts: CliOptions;
  try {
    opts = parseLoadArgs(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`load: ${err.message}\nTry --help.\n`);
      return 2;
    }
    throw err;
  }
  if (opts.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = () => {
    if (++interrupts > 1) process.exit(130);
    process.stderr.write('\nstopping (Ctrl-C again to quit at once)\n');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  const tty = process.stderr.isTTY === true;
  let lastLine = 0;
  const { json, quiet, help: _help, ...load } = opts;
  let report: LoadReport;
  try {
    report = await runLoad({
      ...load,
      signal: controller.signal,
      progressIntervalMs: tty ? 250 : 1000,
      ...(quiet
        ? {}
        : {
            onProgress: (p: LoadProgress) => {
              if (tty) process.stderr.write('\r' + formatProgress(p) + '\x1b[K');
              else if (p.elapsedMs - lastLine >= 4900) {
                lastLine = p.elapsedMs;
                process.stderr.write(formatProgress(p) + '\n');
              }
            },
          }),
    });
  } catch (err) {
    process.stderr.write(`\nload: ${(err as Error).message}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSigint);
  }
  if (tty && !quiet) process.stderr.write('\n');
  if (json) {
    const { perDevice: _per, ...rest } = report;
    process.stdout.write(JSON.stringify(rest, null, 2) + '\n');
  } else process.stdout.write(formatReport(report) + '\n');
  return report.sent > 0 && report.acked === 0 ? 1 : 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}
