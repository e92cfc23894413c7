// natsStreams(): persistent streams on NATS JetStream.
//
// One JetStream stream per cluster and provider holds every item. A publish
// goes to subject `<prefix>.<cluster>.<provider>.<queue>.<namespace>.<key>`,
// where the queue is the stream's hash modulo `queues`: a stream's items
// always share a queue, so they stay in order. Each queue has a durable pull
// consumer, pulled by exactly one silo at a time (the owner of the queue on
// the cluster's ring, as for the grain directory; queues move when the
// membership changes). An item is acknowledged only once every subscriber's
// turn for it has ended, so a silo that dies redelivers what it had not
// finished, and only that (at least once). JetStream keeps items for
// `maxAgeMs`: a subscription can start from a token within that window
// (rewind). Its rendezvous puts a replay marker in the stream's subject; the
// silo that pulls the queue meets it in order, reads the stream's history from
// the token up to the marker with an ordered consumer, and hands it over
// before the items that came after the marker.

import { connect, nanos, type NatsConnection } from '@nats-io/transport-node';
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  jetstreamManager,
  type ConsumerMessages,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { ConfigurationError, StreamError } from '../../errors.ts';
import { hash32 } from '../../hash.ts';
import type { Logger } from '../../observability/logger.ts';
import {
  resolveDeliveryOptions,
  type DeliveryOptions,
  type ResolvedDeliveryOptions,
  type StreamProvider,
  type StreamProviderContext,
  type StreamProviderSilo,
} from '../../streams/provider.ts';
import { streamKey, type StreamId, type StreamToken } from '../../streams/types.ts';
import { errorMessage } from '../shared.ts';

/** Options of `natsStreams`. */
export interface NatsStreamsOptions extends DeliveryOptions {
  /** NATS servers, `host:port` or `nats://host:port`. */
  readonly servers: string | readonly string[];
  /** Queues the streams are spread over; each is pulled by one silo. Default 8. Fixed for a cluster's life. */
  readonly queues?: number;
  /** First token of every subject and of the JetStream stream's name. Default `granary`. */
  readonly prefix?: string;
  /** How long JetStream keeps items (the rewind window), in ms. Default 24 hours. */
  readonly maxAgeMs?: number;
  /** Items of one queue handed out and not yet acknowledged (the back-pressure window). Default 1,000. */
  readonly maxAckPending?: number;
  /** Time a silo has to finish an item before JetStream hands it out again, in ms; extended while delivery runs. Default 30,000. */
  readonly ackWaitMs?: number;
  /** Time a publish waits for JetStream's acknowledgement, in ms. Default 5,000. */
  readonly publishTimeoutMs?: number;
  /** Time the first connection may take, in ms. Default 5,000. */
  readonly connectTimeoutMs?: number;
  /**
   * How long a silo's hold on a queue lasts unless renewed, in ms (a NATS
   * key-value lease): the time a queue of a crashed silo waits before another
   * pulls it. Default 5,000.
   */
  readonly leaseMs?: number;
}

interface Settings {
  readonly servers: string[];
  readonly queues: number;
  readonly prefix: string;
  readonly maxAgeMs: number;
  readonly maxAckPending: number;
  readonly ackWaitMs: number;
  readonly publishTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly leaseMs: number;
}

function resolve(o: NatsStreamsOptions): Settings {
  const fn = 'natsStreams';
  if (o === null || typeof o !== 'object') throw new ConfigurationError(`${fn} takes options { servers, ... }`);
  const servers = typeof o.servers === 'string' ? [o.servers] : Array.isArray(o.servers) ? [...o.servers] : [];
  if (servers.length === 0 || servers.some((s) => typeof s !== 'string' || s === ''))
    throw new ConfigurationError(
      `${fn}: option servers must be a NATS server address such as 127.0.0.1:4222, or a list of them, got ${JSON.stringify(o.servers)}`,
    );
  const whole = (name: keyof NatsStreamsOptions, dflt: number, min: number, max: number): number => {
    const v = o[name] ?? dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
      throw new ConfigurationError(
        `${fn}: option ${name} must be a whole number from ${min} to ${max}, got ${String(v)}`,
      );
    return v;
  };
  const prefix = o.prefix ?? 'granary';
  if (typeof prefix !== 'string' || !/^[A-Za-z0-9_-]{1,32}$/.test(prefix))
    throw new ConfigurationError(
      `${fn}: option prefix may hold only letters, digits, '_' and '-', 1 to 32 of them, got ${JSON.stringify(prefix)}`,
    );
  return {
    servers,
    queues: whole('queues', 8, 1, 1024),
    prefix,
    maxAgeMs: whole('maxAgeMs', 24 * 3_600_000, 1000, 365 * 24 * 3_600_000),
    maxAckPending: whole('maxAckPending', 1000, 1, 1_000_000),
    ackWaitMs: whole('ackWaitMs', 30_000, 1000, 3_600_000),
    publishTimeoutMs: whole('publishTimeoutMs', 5000, 1, 600_000),
    connectTimeoutMs: whole('connectTimeoutMs', 5000, 1, 600_000),
    leaseMs: whole('leaseMs', 5000, 500, 600_000),
  };
}

const PLAIN_TOKEN = /^[A-Za-z0-9_-]+$/;

/** A subject token: letters, digits, `_` and `-` as they are, any other character as `~` and its code in hex. */
function subjectToken(s: string): string {
  if (PLAIN_TOKEN.test(s)) return s;
  let out = '';
  for (const ch of s) {
    out += /[A-Za-z0-9_-]/.test(ch) ? ch : `~${(ch.codePointAt(0) as number).toString(16)}~`;
  }
  return out === '' ? '~' : out;
}

class NatsStreams implements StreamProvider {
  readonly kind = 'nats';
  readonly rewind = true;
  readonly delivery: ResolvedDeliveryOptions;
  readonly #settings: Settings;

  constructor(options: NatsStreamsOptions) {
    this.#settings = resolve(options);
    this.delivery = resolveDeliveryOptions('natsStreams', options);
  }

  start(ctx: StreamProviderContext): Promise<StreamProviderSilo> {
    return NatsStreamsSilo.start(this.#settings, this.delivery, ctx);
  }
}

/** The provider in one silo: its connection, and the queues it pulls. */
class NatsStreamsSilo implements StreamProviderSilo {
  readonly #s: Settings;
  readonly #delivery: ResolvedDeliveryOptions;
  readonly #ctx: StreamProviderContext;
  readonly #nc: NatsConnection;
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #logger: Logger;
  /** The JetStream stream's name, and the subject prefix of its items. */
  readonly #stream: string;
  readonly #base: string;
  readonly #agents = new Map<number, QueueAgent>();
  #closed = false;
  /** Who pulls each queue: one key per queue, held by one silo at a time. */
  #leases!: KV;

  private constructor(
    s: Settings,
    delivery: ResolvedDeliveryOptions,
    ctx: StreamProviderContext,
    nc: NatsConnection,
    jsm: JetStreamManager,
  ) {
    this.#s = s;
    this.#delivery = delivery;
    this.#ctx = ctx;
    this.#nc = nc;
    this.#jsm = jsm;
    this.#js = jetstream(nc);
    this.#logger = ctx.logger;
    this.#base = `${s.prefix}.${subjectToken(ctx.clusterId)}.${subjectToken(ctx.name)}`;
    this.#stream = `${s.prefix}_${ctx.clusterId}_${ctx.name}`.replace(/[^A-Za-z0-9_-]/g, '_');
  }

  static async start(
    s: Settings,
    delivery: ResolvedDeliveryOptions,
    ctx: StreamProviderContext,
  ): Promise<NatsStreamsSilo> {
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers: s.servers,
        name: `granary ${ctx.clusterId} ${ctx.silo}`,
        timeout: s.connectTimeoutMs,
        // Once connected, a silo rides out a NATS restart: it reconnects for as long as it runs.
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        // The client would build an error with a stack trace for every request, failed or
        // not; its failures reach users as StreamError with their own message anyway.
        noAsyncTraces: true,
      });
    } catch (e) {
      throw new StreamError(
        `nats streams '${ctx.name}': cannot connect to ${s.servers.join(', ')}: ${errorMessage(e)}`,
        { cause: e },
      );
    }
    try {
      const jsm = await jetstreamManager(nc);
      const silo = new NatsStreamsSilo(s, delivery, ctx, nc, jsm);
      await silo.#setUp();
      ctx.onOwnershipChange(() => silo.#rebalance());
      silo.#rebalance();
      void silo.#watch();
      return silo;
    } catch (e) {
      await nc.close().catch(() => undefined);
      if (e instanceof StreamError) throw e;
      throw new StreamError(
        `nats streams '${ctx.name}': cannot set up JetStream on ${s.servers.join(', ')} (is the server started with JetStream, -js?): ${errorMessage(e)}`,
        { cause: e },
      );
    }
  }

  /** The JetStream stream and one durable consumer per queue; made by whichever silo comes first. */
  async #setUp(): Promise<void> {
    this.#leases = await new Kvm(this.#js).create(`${this.#stream}_leases`, { ttl: this.#s.leaseMs });
    const config = {
      name: this.#stream,
      subjects: [`${this.#base}.>`],
      max_age: nanos(this.#s.maxAgeMs),
    };
    try {
      await this.#jsm.streams.info(this.#stream);
    } catch {
      try {
        await this.#jsm.streams.add(config);
      } catch (e) {
        // Another silo made it meanwhile.
        await this.#jsm.streams.info(this.#stream).catch(() => {
          throw e;
        });
      }
    }
    for (let q = 0; q < this.#s.queues; q++) {
      const name = `q${q}`;
      try {
        await this.#jsm.consumers.info(this.#stream, name);
      } catch {
        await this.#jsm.consumers
          .add(this.#stream, {
            durable_name: name,
            ack_policy: AckPolicy.Explicit,
            deliver_policy: DeliverPolicy.All,
            filter_subject: `${this.#base}.${q}.>`,
            ack_wait: nanos(this.#s.ackWaitMs),
            max_ack_pending: this.#s.maxAckPending,
            max_deliver: -1,
          })
          .catch(async (e: unknown) => {
            await this.#jsm.consumers.info(this.#stream, name).catch(() => {
              throw e;
            });
          });
      }
    }
  }

  /** The queue of a stream: its items always go to the same one, so they keep their order. */
  #queueOf(stream: StreamId): number {
    return hash32(streamKey(stream)) % this.#s.queues;
  }

  #subject(stream: StreamId): string {
    return `${this.#base}.${this.#queueOf(stream)}.${subjectToken(stream.namespace)}.${subjectToken(stream.key)}`;
  }

  publish(stream: StreamId, items: readonly unknown[]): Promise<void> {
    return this.#send(stream, [stream.namespace, stream.key, items]);
  }

  /** A replay marker: `[namespace, key, null, [subscription, sequence, index]]`. */
  requestReplay(stream: StreamId, subscription: string, from: StreamToken): Promise<void> {
    return this.#send(stream, [stream.namespace, stream.key, null, [subscription, from.sequence, from.index]]);
  }

  async *history(
    stream: StreamId,
    from: StreamToken,
    before: number,
  ): AsyncIterable<{ items: unknown[]; tokens: StreamToken[] }> {
    if (before <= from.sequence) return;
    let consumer;
    try {
      consumer = await this.#js.consumers.get(this.#stream, {
        // One subject as a string: a list needs NATS 2.10.
        filter_subjects: this.#subject(stream),
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: Math.max(1, from.sequence),
      });
    } catch (e) {
      throw new StreamError(
        `nats streams '${this.#ctx.name}': cannot read the history of ${streamKey(stream)}: ${errorMessage(e)}`,
        { cause: e },
      );
    }
    try {
      for (;;) {
        const batch = await consumer.fetch({ max_messages: 256, expires: 2000 });
        let seen = 0;
        for await (const m of batch) {
          seen++;
          if (m.seq >= before) return;
          const v = this.#ctx.decode(m.data) as unknown[];
          if (!Array.isArray(v) || !Array.isArray(v[2])) continue; // another replay marker
          const items = v[2] as unknown[];
          const start = m.seq === from.sequence ? Math.max(0, from.index) : 0;
          const out: unknown[] = [];
          const tokens: StreamToken[] = [];
          for (let i = start; i < items.length; i++) {
            out.push(items[i]);
            tokens.push({ sequence: m.seq, index: i });
          }
          if (out.length > 0) yield { items: out, tokens };
          if (m.seq >= before - 1) return;
        }
        // Nothing more before the marker (items past the retention window are gone).
        if (seen === 0) return;
      }
    } finally {
      await consumer.delete().catch(() => undefined);
    }
  }

  async #send(stream: StreamId, value: unknown): Promise<void> {
    if (this.#closed) throw new StreamError(`nats streams '${this.#ctx.name}': closed`);
    const subject = this.#subject(stream);
    const payload = this.#ctx.encode(value);
    try {
      await this.#js.publish(subject, payload, { timeout: this.#s.publishTimeoutMs });
    } catch (e) {
      throw new StreamError(
        `nats streams '${this.#ctx.name}': publish to ${streamKey(stream)} was not acknowledged by ${this.#s.servers.join(', ')}: ${errorMessage(e)}`,
        { cause: e },
      );
    }
  }

  /** Starts pulling the queues this silo owns now, stops pulling the others. */
  #rebalance(): void {
    if (this.#closed) return;
    for (let q = 0; q < this.#s.queues; q++) {
      const mine = this.#ctx.owns(`${this.#stream}/q${q}`);
      const agent = this.#agents.get(q);
      if (mine && agent === undefined) {
        const a = new QueueAgent(q, this);
        this.#agents.set(q, a);
        void a.start();
      } else if (!mine && agent !== undefined) {
        this.#agents.delete(q);
        void agent.stop();
      }
    }
  }

  /** Logs the connection's ups and downs. */
  async #watch(): Promise<void> {
    for await (const st of this.#nc.status()) {
      if (st.type === 'disconnect')
        this.#logger.warn(
          { provider: this.#ctx.name, server: st.server },
          'nats streams: connection lost; reconnecting',
        );
      else if (st.type === 'reconnect')
        this.#logger.info({ provider: this.#ctx.name, server: st.server }, 'nats streams: reconnected');
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    const agents = [...this.#agents.values()];
    this.#agents.clear();
    await Promise.all(agents.map((a) => a.stop()));
    await this.#nc.close().catch(() => undefined);
  }

  // ---- What a queue agent uses ---------------------------------------------------

  get js(): JetStreamClient {
    return this.#js;
  }
  get streamName(): string {
    return this.#stream;
  }
  get settings(): Settings {
    return this.#s;
  }
  get ctx(): StreamProviderContext {
    return this.#ctx;
  }
  get retryDelayMs(): number {
    return this.#delivery.retryDelayMs;
  }
  get closed(): boolean {
    return this.#closed;
  }
  get leases(): KV {
    return this.#leases;
  }
}

/** Pulls one queue: hands each item to the silo's delivery, acknowledges it once delivered. */
class QueueAgent {
  readonly #q: number;
  readonly #silo: NatsStreamsSilo;
  #messages: ConsumerMessages | undefined;
  #stopped = false;
  /** Messages handed out and not yet acknowledged, kept alive while delivery runs. */
  readonly #inFlight = new Set<JsMsg>();
  #keepAlive: NodeJS.Timeout | undefined;

  constructor(q: number, silo: NatsStreamsSilo) {
    this.#q = q;
    this.#silo = silo;
  }

  /** The revision of this silo's lease on the queue, while it holds it. */
  #lease: number | undefined;
  #renew: NodeJS.Timeout | undefined;

  /**
   * Takes the queue's lease: exactly one silo pulls a queue at a time. While
   * the ring and the views settle, the one the ring names waits here until the
   * last holder has finished its items and let go (or its lease ran out: it died).
   */
  async #acquire(): Promise<boolean> {
    const { ctx, leases } = this.#silo;
    const key = `q${this.#q}`;
    for (let attempt = 0; !this.#stopped; attempt++) {
      try {
        this.#lease = await leases.create(key, ctx.silo);
        break;
      } catch {
        // Held by another silo (or NATS is down): try again shortly.
        await new Promise((r) => setTimeout(r, Math.min(1000, 100 * 2 ** Math.min(attempt, 4))).unref());
      }
    }
    if (this.#stopped || this.#lease === undefined) {
      await this.#release();
      return false;
    }
    const every = Math.max(100, Math.floor(this.#silo.settings.leaseMs / 3));
    this.#renew = setInterval(() => {
      if (this.#lease === undefined) return;
      leases.update(key, ctx.silo, this.#lease).then(
        (rev) => {
          if (this.#lease !== undefined) this.#lease = rev;
        },
        (err: unknown) => {
          // Another silo holds it now (ours ran out): stop pulling at once, then ask again.
          ctx.logger.warn({ err, provider: ctx.name, queue: this.#q }, 'nats streams: lost the lease of a queue');
          this.#lease = undefined;
          void this.#restart();
        },
      );
    }, every);
    this.#renew.unref();
    return true;
  }

  async #restart(): Promise<void> {
    if (this.#renew !== undefined) clearInterval(this.#renew);
    if (this.#keepAlive !== undefined) clearInterval(this.#keepAlive);
    await this.#messages?.close().catch(() => undefined);
    this.#messages = undefined;
    if (!this.#stopped) await this.start();
  }

  async #release(): Promise<void> {
    const rev = this.#lease;
    this.#lease = undefined;
    if (rev === undefined) return;
    await this.#silo.leases.delete(`q${this.#q}`, { previousSeq: rev }).catch(() => undefined);
  }

  async start(): Promise<void> {
    const { ctx } = this.#silo;
    if (!(await this.#acquire())) return;
    // Retries until it gets the consumer: NATS may be down right now.
    for (let attempt = 0; !this.#stopped; attempt++) {
      try {
        const consumer = await this.#silo.js.consumers.get(this.#silo.streamName, `q${this.#q}`);
        if (this.#stopped) return;
        const messages = await consumer.consume({
          max_messages: Math.min(256, this.#silo.settings.maxAckPending),
          callback: (m) => this.#handle(m),
        });
        if (this.#stopped) {
          // Stopped while it was starting: another silo owns the queue now.
          await messages.close().catch(() => undefined);
          return;
        }
        this.#messages = messages;
        break;
      } catch (err) {
        ctx.logger.warn({ err, provider: ctx.name, queue: this.#q, attempt }, 'nats streams: cannot pull a queue yet');
        await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** Math.min(attempt, 5))).unref());
      }
    }
    if (this.#stopped) return;
    // JetStream hands an item out again after ackWait; tell it the silo is still on the ones it has.
    const every = Math.max(250, Math.floor(this.#silo.settings.ackWaitMs / 3));
    this.#keepAlive = setInterval(() => {
      for (const m of this.#inFlight) m.working();
    }, every);
    this.#keepAlive.unref();
    ctx.logger.debug({ provider: ctx.name, queue: this.#q }, 'nats streams: pulling queue');
  }

  #handle(m: JsMsg): void {
    const { ctx } = this.#silo;
    let namespace: string;
    let key: string;
    let items: unknown[];
    try {
      const v = ctx.decode(m.data);
      if (!Array.isArray(v) || typeof v[0] !== 'string' || typeof v[1] !== 'string')
        throw new StreamError('not [namespace, key, items]');
      if (v[2] === null && Array.isArray(v[3])) {
        this.#replay(m, { provider: ctx.name, namespace: v[0], key: v[1] }, v[3]);
        return;
      }
      if (!Array.isArray(v[2])) throw new StreamError('not [namespace, key, items]');
      [namespace, key, items] = v as [string, string, unknown[]];
    } catch (err) {
      // Never deliverable: say so once and drop it, rather than have it handed out for ever.
      ctx.logger.error(
        { err, provider: ctx.name, queue: this.#q, sequence: m.seq, subject: m.subject },
        'nats streams: an item cannot be decoded; dropping it',
      );
      m.term('undecodable');
      return;
    }
    const tokens: StreamToken[] = new Array(items.length);
    for (let i = 0; i < items.length; i++) tokens[i] = { sequence: m.seq, index: i };
    this.#settle(m, ctx.deliver({ provider: ctx.name, namespace, key }, items, tokens, 'delivered'), 'an item');
  }

  /** Acknowledges `m` once `work` is done; hands it back to JetStream (nak) if it failed. */
  #settle(m: JsMsg, work: Promise<void>, what: string): void {
    const { ctx } = this.#silo;
    this.#inFlight.add(m);
    work.then(
      () => {
        this.#inFlight.delete(m);
        m.ack();
      },
      (err: unknown) => {
        this.#inFlight.delete(m);
        ctx.logger.warn(
          { err, provider: ctx.name, queue: this.#q, sequence: m.seq },
          `nats streams: could not handle ${what}; JetStream hands it out again`,
        );
        m.nak(this.#silo.retryDelayMs);
      },
    );
  }

  /** A replay marker: the subscription's history up to here goes to it first. */
  #replay(m: JsMsg, stream: StreamId, marker: unknown[]): void {
    const { ctx } = this.#silo;
    const [subscription, sequence, index] = marker;
    if (typeof subscription !== 'string' || typeof sequence !== 'number' || typeof index !== 'number') {
      ctx.logger.error(
        { provider: ctx.name, sequence: m.seq },
        'nats streams: a replay marker cannot be read; dropping it',
      );
      m.term('bad replay marker');
      return;
    }
    this.#settle(m, ctx.replay(stream, subscription, { sequence, index }, m.seq), `the replay of ${subscription}`);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#keepAlive !== undefined) clearInterval(this.#keepAlive);
    await this.#messages?.close().catch(() => undefined);
    // The items handed out finish here (or fail back to JetStream) before the next owner
    // may pull: so a queue's items keep their order across the move.
    const until = Date.now() + this.#silo.settings.ackWaitMs;
    while (this.#inFlight.size > 0 && Date.now() < until && !this.#silo.closed)
      await new Promise((r) => setTimeout(r, 20));
    this.#inFlight.clear();
    if (this.#renew !== undefined) clearInterval(this.#renew);
    await this.#release();
  }
}

/** Persistent streams on NATS JetStream: at least once, ordered per stream, rewind within `maxAgeMs`. */
export function natsStreams(options: NatsStreamsOptions): StreamProvider {
  return new NatsStreams(options);
}
