// The stream service of one silo: stream handles for grains and the silo, and
// delivery. Whatever the provider, items reach the service through
// `deliver`, which finds the stream's subscribers (implicit ones from the
// grain types, explicit ones from the stream's rendezvous, cached here and
// kept current by it) and appends the items to one pipeline per subscriber.
// A pipeline hands its subscriber one batch at a time (a turn of the grain,
// or a call to the client), in order, retrying a failed item per the
// provider's policy and then giving it up as a dead letter.

import { randomUUID } from 'node:crypto';
import { ConfigurationError, OverloadedError, SiloUnavailableError } from '../errors.ts';
import type { GrainStreams, ObserverRef } from '../grain/grain.ts';
import {
  bindStreamHandler,
  endStreamSubscription,
  handlerMethodName,
  unbindStreamHandler,
  type StreamDeliveryResult,
} from '../grain/stream-consumer.ts';
import { channels } from '../observability/channels.ts';
import type { Logger } from '../observability/logger.ts';
import type { StorageProvider } from '../storage/provider.ts';
import type { DeadLetter, StreamProvider, StreamProviderSilo } from './provider.ts';
import { PUBSUB_TYPE, type Consumer, type ProducerSink, type PubSubGrain, type SubscriptionRecord } from './pubsub.ts';
import {
  checkedId,
  streamKey,
  type Stream,
  type StreamHandler,
  type StreamId,
  type StreamSubscription,
  type StreamToken,
  type SubscribeOptions,
} from './types.ts';

/** The pub-sub rendezvous as a reference to it offers it. */
type PubSubRef = {
  [K in 'subscribe' | 'unsubscribe' | 'list' | 'producer' | 'replayed']: PubSubGrain[K];
};

/** What the service needs from its silo. */
export interface StreamServiceHost {
  readonly address: string;
  readonly clusterId: string;
  /** Whether this silo should pull queue `queue` now (the ring); `onOwnershipChange` says when to ask again. */
  owns(queue: string): boolean;
  onOwnershipChange(listener: () => void): void;
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
  readonly logger: Logger;
  /** Where batches for grain `type/key` go (its STREAM_METHOD), wherever it lives; made once per pipeline. */
  grainDeliverer(type: string, key: string): (args: unknown[]) => Promise<unknown>;
  /** A reference to grain `type/key` made by silo code (no caller grain). */
  grain(type: string, key: string): unknown;
  /** An observer on this silo; the rendezvous of each stream this silo produces to calls it. */
  createObserver<T extends object>(impl: T): ObserverRef<T>;
  /** The storage provider configured under `name`; a clear error if none is. */
  storageProvider(name: string, what: string): StorageProvider;
}

/** The grain a handle belongs to: its subscriptions are its own. */
export interface StreamOwner {
  /** The grain instance (read when used: a handle may be made while the grain is constructed). */
  instance(): object;
  readonly type: string;
  readonly key: string;
  /** A reference made in the grain's context (its calls carry its call chain). */
  ref(type: string, key: string): unknown;
}

/** The explicit subscriptions of a stream this silo produces to. */
interface Produced {
  subs: Map<string, SubscriptionRecord> | undefined;
  /** The one load of the subscriptions in flight: deliveries wait on it in arrival order. */
  loading: Promise<Map<string, SubscriptionRecord>> | undefined;
  /** Read again before the next delivery (the view changed, the rendezvous went away, or it is old). */
  stale: boolean;
  loadedAt: number;
  /** Changes the rendezvous pushed while a load ran, applied to its result. */
  pending: Array<{ added: SubscriptionRecord[]; removed: string[] }>;
}

/** The explicit subscriptions of a stream in an implicit-only namespace. */
const NO_SUBSCRIPTIONS: ReadonlyMap<string, SubscriptionRecord> = new Map();

/** How long a stream's cached subscriptions are trusted without the rendezvous saying anything, in ms. */
const SUBSCRIPTIONS_TTL_MS = 60_000;
/** Attempts to read a stream's subscriptions before its deliveries fail. */
const LOAD_ATTEMPTS = 5;

type Target =
  | { readonly kind: 'grain'; readonly type: string; readonly key: string; readonly method: string | null }
  | { readonly kind: 'client'; readonly client: string; readonly sink: ObserverRef<ClientSinkLike> };

interface ClientSinkLike {
  deliver(s: string, stream: StreamId, items: unknown[], tokens: StreamToken[]): Promise<StreamDeliveryResult>;
}

/** Someone waiting until a batch has reached every subscriber (a broker's ack). */
interface Waiter {
  left: number;
  resolve(): void;
  /** The items will not be delivered by this silo (it stops): the broker should hand them out again. */
  reject(err: unknown): void;
}

/** The items on their way to one subscriber, in order. */
class Pipeline {
  readonly items: unknown[] = [];
  readonly tokens: StreamToken[] = [];
  /** Parallel to items: the waiter of the batch an item ends, if any. */
  readonly waiters: Array<Waiter | undefined> = [];
  head = 0;
  inFlight = false;
  attempts = 0;
  closed = false;
  /** Replaying history (rewind): live items wait behind the replayed ones. */
  paused = false;
  /** When it last delivered (or was made): idle pipelines are dropped by the sweep. */
  usedAt = Date.now();
  /** Where a grain subscriber's batches go; made on first use. */
  toGrain: ((args: unknown[]) => Promise<unknown>) | undefined;
  timer: NodeJS.Timeout | undefined;
  constructor(
    readonly id: string,
    readonly provider: StreamProvider,
    readonly stream: StreamId,
    /** The subscription id, or null for an implicit subscription. */
    readonly subscription: string | null,
    readonly target: Target,
  ) {}
  get length(): number {
    return this.items.length - this.head;
  }
  /** Drops the first `n` waiting items (delivered, or given up on). */
  shift(n: number): void {
    const end = this.head + n;
    if (this.waiting > 0) {
      for (let i = this.head; i < end; i++) {
        const w = this.waiters[i];
        if (w !== undefined) {
          this.waiters[i] = undefined;
          this.waiting--;
          if (--w.left === 0) w.resolve();
        }
      }
    }
    this.head = end;
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.tokens.length = 0;
      this.waiters.length = 0;
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items.splice(0, this.head);
      this.tokens.splice(0, this.head);
      this.waiters.splice(0, this.head);
      this.head = 0;
    }
  }
  /** Waiters among the items. */
  waiting = 0;
  /** Ends the pipeline: nothing more is delivered, and nobody waits on it any more. */
  /**
   * Ends the pipeline: nothing more is delivered. `undelivered` undefined: the
   * subscriber is gone, so nobody needs its items (waiters count them done);
   * else the silo stops before delivering them, and waiters fail with it.
   */
  close(undelivered?: unknown): void {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (undelivered !== undefined && this.waiting > 0) {
      for (let i = this.head; i < this.items.length; i++) {
        const w = this.waiters[i];
        if (w !== undefined) {
          this.waiters[i] = undefined;
          w.reject(undelivered);
        }
      }
      this.waiting = 0;
    }
    this.shift(this.length);
  }
}

export class StreamService {
  readonly #host: StreamServiceHost;
  readonly #providers: ReadonlyMap<string, StreamProvider>;
  /** Grain types implicitly subscribed, by namespace. */
  readonly #implicit: ReadonlyMap<string, readonly string[]>;
  readonly #produced = new Map<string, Produced>();
  readonly #pipelines = new Map<string, Pipeline>();
  #sink: ObserverRef<ProducerSink> | undefined;
  #stopped = false;
  /** Items given up on since the silo started. */
  deadLetters = 0;
  /** The same, by stream provider (for metrics). */
  readonly deadLettersByProvider = new Map<string, number>();

  constructor(
    host: StreamServiceHost,
    providers: ReadonlyMap<string, StreamProvider>,
    implicit: ReadonlyMap<string, readonly string[]>,
  ) {
    this.#host = host;
    this.#providers = providers;
    this.#implicit = implicit;
  }

  /** The providers as started in this silo, by name. */
  readonly #started = new Map<string, StreamProviderSilo>();

  #sweep: NodeJS.Timeout | undefined;

  async start(): Promise<void> {
    // Cached subscriptions of streams not produced to for a while are dropped (read again if needed).
    this.#sweep = setInterval(() => {
      const old = Date.now() - SUBSCRIPTIONS_TTL_MS;
      for (const [key, p] of this.#produced)
        if (p.loading === undefined && p.loadedAt < old) this.#produced.delete(key);
      // Idle pipelines hold nothing worth keeping: a silo that delivered to a million
      // streams does not keep a million of them. The next item makes a new one.
      for (const [id, p] of this.#pipelines)
        if (p.length === 0 && !p.inFlight && !p.paused && p.timer === undefined && p.usedAt < old)
          this.#pipelines.delete(id);
    }, SUBSCRIPTIONS_TTL_MS);
    this.#sweep.unref();
    for (const [name, p] of this.#providers) {
      const started = await p.start({
        name,
        logger: this.#host.logger,
        silo: this.#host.address,
        clusterId: this.#host.clusterId,
        deliver: (stream, items, tokens, until) => this.#deliver(p, stream, items, tokens, until === 'delivered'),
        replay: (stream, subscription, from, before) => this.#replay(p, stream, subscription, from, before),
        owns: (queue) => this.#host.owns(queue),
        onOwnershipChange: (listener) => this.#host.onOwnershipChange(listener),
        encode: (v) => this.#host.encode(v),
        decode: (b) => this.#host.decode(b),
      });
      this.#started.set(name, started);
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#sweep !== undefined) clearInterval(this.#sweep);
    // Items still queued here: a broker hands them out again (their waiters fail, so they
    // are not acknowledged); memory streams lose them, and say how many.
    const stopping = new SiloUnavailableError(`silo ${this.#host.address} stopped before delivering the item`);
    let dropped = 0;
    for (const p of this.#pipelines.values()) {
      dropped += p.length;
      p.close(stopping);
    }
    if (dropped > 0)
      this.#host.logger.warn({ items: dropped }, 'stream items still queued at stop were not delivered by this silo');
    this.#pipelines.clear();
    this.#produced.clear();
    this.#sink?.dispose();
    this.#sink = undefined;
    for (const [name, p] of this.#started) {
      try {
        await p.close();
      } catch (err) {
        this.#host.logger.warn({ err, provider: name }, 'stream provider failed to close');
      }
    }
    this.#started.clear();
  }

  /** The membership changed: a rendezvous may have gone with a silo, so ask each again. */
  viewChanged(): void {
    for (const [key, p] of this.#produced) this.#forget(key, p);
  }

  /** The subscriptions of a stream may be stale: drop them, or mark them if a load is in flight (order). */
  #forget(key: string, p: Produced): void {
    if (p.loading === undefined) this.#produced.delete(key);
    else p.stale = true;
  }

  /** Items waiting in this silo's pipelines, all subscribers together. */
  get queued(): number {
    let n = 0;
    for (const p of this.#pipelines.values()) n += p.length;
    return n;
  }

  provider(name: string): StreamProvider {
    const p = this.#providers.get(name);
    if (p === undefined) {
      throw new ConfigurationError(
        `no stream provider '${name}' is configured; configured: ${[...this.#providers.keys()].join(', ') || 'none'} (the silo's 'streams' option)`,
      );
    }
    return p;
  }

  pubSubStorage(provider: string): StorageProvider {
    const p = this.provider(provider);
    return this.#host.storageProvider(p.delivery.pubSubStorage, `the pub-sub records of stream provider '${provider}'`);
  }

  /** Publishes `items` to `stream` through its provider. */
  publish(stream: StreamId, items: readonly unknown[]): Promise<void> {
    try {
      this.provider(stream.provider);
      if (!Array.isArray(items)) throw new ConfigurationError('publishBatch takes an array of items');
    } catch (e) {
      return Promise.reject(e);
    }
    if (items.length === 0) return Promise.resolve();
    const started = this.#started.get(stream.provider);
    if (started === undefined)
      return Promise.reject(
        new SiloUnavailableError(`stream provider '${stream.provider}' is not running in silo ${this.#host.address}`),
      );
    return started.publish(stream, items);
  }

  /** The streams as grain `owner` sees them. */
  forGrain(owner: StreamOwner): GrainStreams {
    return {
      getStream: (provider, namespace, key) => this.handle(checkedId(provider, namespace, key), owner),
      provider: (provider) => this.provider(provider),
      pubSubStorage: (provider) => this.pubSubStorage(provider),
      requestReplay: (stream, subscription, from) => this.#requestReplay(stream, subscription, from),
    };
  }

  /** A handle to `id`; `owner` undefined for silo code (which can publish but not subscribe). */
  handle(id: StreamId, owner: StreamOwner | undefined): Stream<unknown> {
    return new GrainStream(this, id, owner);
  }

  // ---- Delivery ------------------------------------------------------------------

  async #deliver(
    provider: StreamProvider,
    stream: StreamId,
    items: readonly unknown[],
    tokens: readonly StreamToken[],
    untilDelivered = false,
  ): Promise<void> {
    if (this.#stopped) throw new SiloUnavailableError(`silo ${this.#host.address} is stopping`);
    const key = streamKey(stream);
    let subs: ReadonlyMap<string, SubscriptionRecord>;
    if (provider.delivery.implicitOnly.has(stream.namespace)) subs = NO_SUBSCRIPTIONS;
    else {
      const produced = this.#producedOf(key);
      if (produced.loading !== undefined) subs = await produced.loading;
      else if (produced.subs === undefined || produced.stale || Date.now() - produced.loadedAt > SUBSCRIPTIONS_TTL_MS)
        subs = await this.#load(key, produced);
      else subs = produced.subs;
    }
    const targets: Pipeline[] = [];
    for (const type of this.#implicit.get(stream.namespace) ?? []) {
      targets.push(
        this.#pipeline(`${key}|implicit:${type}`, provider, stream, null, {
          kind: 'grain',
          type,
          key: stream.key,
          method: null,
        }),
      );
    }
    for (const s of subs.values()) {
      // A rewinding subscription takes live items once its replay began here (its marker came).
      if (s.from !== null && !this.#replaying.has(s.id)) continue;
      targets.push(this.#pipeline(`${key}|${s.id}`, provider, stream, s.id, s.consumer));
    }
    const max = provider.delivery.maxQueuedItems;
    if (!untilDelivered) {
      if (targets.length > 0 && items.length > max)
        throw new ConfigurationError(
          `stream ${key}: a batch of ${items.length} items is more than a subscriber may have waiting (maxQueuedItems ${max}); publish smaller batches`,
        );
      for (const p of targets) {
        if (p.length + items.length > max) {
          throw new OverloadedError(
            `stream ${key}: subscriber ${describe(p)} has ${p.length} items waiting (maxQueuedItems ${max}); publish again later`,
          );
        }
      }
    }
    let done: Promise<void> | undefined;
    let waiter: Waiter | undefined;
    if (untilDelivered && targets.length > 0 && items.length > 0) {
      done = new Promise<void>((resolve, reject) => (waiter = { left: targets.length, resolve, reject }));
    }
    for (const p of targets) {
      for (let i = 0; i < items.length; i++) {
        p.items.push(items[i]);
        p.tokens.push(tokens[i] as StreamToken);
        p.waiters.push(undefined);
      }
      if (waiter !== undefined) {
        p.waiters[p.waiters.length - 1] = waiter;
        p.waiting++;
      }
      this.#pump(p);
    }
    if (done !== undefined) await done;
  }

  /**
   * Reads the subscriptions of stream `key` from its rendezvous (registering
   * this silo as a producer), retrying a few times: deliveries wait on it in
   * order, so one that fails would let later items overtake theirs.
   */
  #load(key: string, produced: Produced): Promise<Map<string, SubscriptionRecord>> {
    produced.stale = false;
    produced.pending = [];
    produced.loading = (async () => {
      try {
        const records: SubscriptionRecord[] = [];
        for (let page = 0, more = true; more; page++) {
          for (let attempt = 1; ; attempt++) {
            try {
              const answer = await this.#pubsub(key).producer(this.#host.address, this.#producerSink(), page);
              for (const r of answer.records) records.push(r);
              more = answer.more;
              break;
            } catch (err) {
              if (attempt >= LOAD_ATTEMPTS || this.#stopped) throw err;
              this.#host.logger.warn({ err, stream: key, attempt }, 'cannot read the subscriptions of a stream yet');
              await new Promise((r) => setTimeout(r, 50 * 2 ** attempt).unref());
            }
          }
        }
        const subs = new Map(records.map((r) => [r.id, r]));
        for (const { added, removed } of produced.pending) {
          for (const r of added) subs.set(r.id, r);
          for (const id of removed) subs.delete(id);
        }
        produced.pending = [];
        // Pipelines of subscriptions that ended while this silo was not told (it was not a
        // registered producer then) end now.
        const prefix = `${key}|`;
        if (produced.subs !== undefined)
          for (const id of produced.subs.keys()) if (!subs.has(id)) this.#closePipeline(`${prefix}${id}`);
        produced.subs = subs;
        produced.loadedAt = Date.now();
        return subs;
      } catch (err) {
        produced.stale = true;
        throw err;
      } finally {
        produced.loading = undefined;
      }
    })();
    return produced.loading;
  }

  /** The cached subscriptions of stream `key`, made (empty, to be read) on first use. */
  #producedOf(key: string): Produced {
    let p = this.#produced.get(key);
    if (p === undefined) {
      p = { subs: undefined, loading: undefined, stale: true, loadedAt: 0, pending: [] };
      this.#produced.set(key, p);
    }
    return p;
  }

  #closePipeline(id: string): void {
    const p = this.#pipelines.get(id);
    if (p === undefined) return;
    p.close();
    this.#pipelines.delete(id);
  }

  #pipeline(id: string, provider: StreamProvider, stream: StreamId, sub: string | null, target: Target): Pipeline {
    let p = this.#pipelines.get(id);
    if (p === undefined) this.#pipelines.set(id, (p = new Pipeline(id, provider, stream, sub, target)));
    return p;
  }

  #pump(p: Pipeline): void {
    if (p.inFlight || p.closed || p.paused || p.length === 0 || p.timer !== undefined) return;
    const n = Math.min(p.length, p.provider.delivery.maxBatch);
    const items = p.items.slice(p.head, p.head + n);
    const tokens = p.tokens.slice(p.head, p.head + n);
    p.inFlight = true;
    this.#send(p, items, tokens).then(
      (r) => this.#delivered(p, n, r, false),
      // The call itself failed (not the handler): the subscriber may be unreachable.
      (error: unknown) => this.#delivered(p, n, { delivered: 0, error }, true),
    );
  }

  #send(p: Pipeline, items: unknown[], tokens: StreamToken[]): Promise<StreamDeliveryResult> {
    const t = p.target;
    if (t.kind === 'grain') {
      p.toGrain ??= this.#host.grainDeliverer(t.type, t.key);
      return p.toGrain([p.subscription, t.method, p.stream, items, tokens]) as Promise<StreamDeliveryResult>;
    }
    return t.sink.deliver(p.subscription as string, p.stream, items, tokens);
  }

  #delivered(p: Pipeline, sent: number, r: StreamDeliveryResult, callFailed: boolean): void {
    p.inFlight = false;
    if (p.closed) return;
    const done = Math.min(Math.max(0, Math.trunc(Number(r?.delivered) || 0)), sent);
    if (done > 0) p.attempts = 0;
    p.shift(done);
    if (r?.error === undefined) {
      p.usedAt = Date.now();
      this.#pump(p);
      return;
    }
    p.attempts++;
    const retries = p.provider.delivery.retries;
    if (p.attempts <= retries) {
      const delay = p.provider.delivery.retryDelayMs * 2 ** (p.attempts - 1);
      p.timer = setTimeout(() => {
        p.timer = undefined;
        this.#pump(p);
      }, delay);
      p.timer.unref();
      return;
    }
    if (p.target.kind === 'client' && callFailed && r.error instanceof SiloUnavailableError) {
      // The client is gone: its subscriptions end with it.
      this.#dropClientSubscription(p, r.error);
      return;
    }
    this.#deadLetter(p, r.error);
    p.attempts = 0;
    p.shift(1);
    this.#pump(p);
  }

  #deadLetter(p: Pipeline, error: unknown): void {
    this.deadLetters++;
    const by = this.deadLettersByProvider;
    by.set(p.stream.provider, (by.get(p.stream.provider) ?? 0) + 1);
    const letter: DeadLetter = {
      stream: p.stream,
      subscription: p.subscription ?? `implicit:${(p.target as { type: string }).type}`,
      consumer: describe(p),
      item: p.items[p.head],
      token: p.tokens[p.head] as StreamToken,
      error,
      attempts: p.attempts,
    };
    this.#host.logger.warn(
      {
        err: error,
        stream: streamKey(p.stream),
        subscription: letter.subscription,
        consumer: letter.consumer,
        token: letter.token,
        attempts: letter.attempts,
      },
      'stream item given up on after its retries (dead letter)',
    );
    if (channels.streamDeadLetter.hasSubscribers)
      channels.streamDeadLetter.publish({ silo: this.#host.address, ...letter });
    try {
      p.provider.delivery.onDeadLetter?.(letter);
    } catch (err) {
      this.#host.logger.warn({ err }, 'onDeadLetter threw');
    }
  }

  #dropClientSubscription(p: Pipeline, error: unknown): void {
    const dropped = p.length;
    p.close();
    this.#pipelines.delete(p.id);
    const key = streamKey(p.stream);
    this.#host.logger.info(
      { stream: key, subscription: p.subscription, consumer: describe(p), err: error, dropped },
      'stream subscriber client is gone; ending its subscription',
    );
    this.#pubsub(key)
      .unsubscribe(p.subscription as string)
      .catch((err: unknown) =>
        this.#host.logger.warn({ err, stream: key }, 'could not end the subscription of a client that is gone'),
      );
  }

  // ---- Rewind ----------------------------------------------------------------------

  /** Subscriptions whose replay began on this silo: they take live items now. */
  readonly #replaying = new Set<string>();

  async #requestReplay(stream: StreamId, subscription: string, from: StreamToken): Promise<void> {
    const p = this.provider(stream.provider);
    const started = this.#started.get(stream.provider);
    if (!p.rewind || started?.requestReplay === undefined)
      throw new ConfigurationError(`stream provider '${stream.provider}' (${p.kind}) cannot replay history`);
    await started.requestReplay(stream, subscription, from);
  }

  /**
   * The replay marker of `subscription` came, at sequence `before`: items
   * before it come from the provider's history, the ones after it live, in
   * that order (the pipeline holds the live ones until the history is in).
   */
  async #replay(
    provider: StreamProvider,
    stream: StreamId,
    subscription: string,
    from: StreamToken,
    before: number,
  ): Promise<void> {
    if (this.#stopped) throw new SiloUnavailableError(`silo ${this.#host.address} is stopping`);
    const key = streamKey(stream);
    const started = this.#started.get(stream.provider);
    if (started?.history === undefined) return;
    const produced = this.#producedOf(key);
    const subs = produced.loading !== undefined ? await produced.loading : await this.#load(key, produced);
    const record = subs.get(subscription);
    if (record === undefined) return; // unsubscribed meanwhile
    if (record.from === null) return; // replayed already (the marker came again)
    const p = this.#pipeline(`${key}|${subscription}`, provider, stream, subscription, record.consumer);
    p.paused = true;
    this.#replaying.add(subscription);
    const items: unknown[] = [];
    const tokens: StreamToken[] = [];
    // If reading the history fails, the live items stay held behind it: the provider hands
    // the marker out again and the replay starts over on this pipeline.
    for await (const batch of started.history(stream, from, before)) {
      for (let i = 0; i < batch.items.length; i++) {
        items.push(batch.items[i]);
        tokens.push(batch.tokens[i] as StreamToken);
      }
    }
    // In front of the live items that came meanwhile.
    let done: Promise<void> | undefined;
    if (items.length > 0) {
      let waiter: Waiter | undefined;
      done = new Promise<void>((resolve, reject) => (waiter = { left: 1, resolve, reject }));
      const at = p.head;
      p.items.splice(at, 0, ...items);
      p.tokens.splice(at, 0, ...tokens);
      const ws: Array<Waiter | undefined> = new Array(items.length).fill(undefined);
      ws[ws.length - 1] = waiter;
      p.waiters.splice(at, 0, ...ws);
      p.waiting++;
    }
    p.paused = false;
    this.#pump(p);
    if (done !== undefined) await done;
    await this.#pubsub(key).replayed(subscription);
    this.#replaying.delete(subscription);
  }

  // ---- Rendezvous ------------------------------------------------------------------

  #pubsub(key: string): PubSubRef {
    return this.#host.grain(PUBSUB_TYPE, key) as PubSubRef;
  }

  #producerSink(): ObserverRef<ProducerSink> {
    this.#sink ??= this.#host.createObserver<ProducerSink>({
      changed: async (key, added, removed) => {
        const produced = this.#produced.get(key);
        if (produced === undefined) return; // not cached here: the next delivery reads them all
        if (produced.loading !== undefined) produced.pending.push({ added, removed });
        for (const id of removed) {
          produced.subs?.delete(id);
          this.#closePipeline(`${key}|${id}`);
        }
        if (produced.subs !== undefined) for (const r of added) produced.subs.set(r.id, r);
      },
      dropped: async (key) => {
        const produced = this.#produced.get(key);
        if (produced !== undefined) this.#forget(key, produced);
      },
    });
    return this.#sink;
  }
}

function describe(p: Pipeline): string {
  const t = p.target;
  return t.kind === 'grain' ? `${t.type}/${t.key}` : `client:${t.client}`;
}

/** A stream handle of a grain (or of silo code, which can only publish). */
class GrainStream implements Stream<unknown> {
  readonly id: StreamId;
  readonly #service: StreamService;
  readonly #owner: StreamOwner | undefined;

  constructor(service: StreamService, id: StreamId, owner: StreamOwner | undefined) {
    this.#service = service;
    this.id = id;
    this.#owner = owner;
  }

  publish(item: unknown): Promise<void> {
    return this.#service.publish(this.id, [item]);
  }

  publishBatch(items: readonly unknown[]): Promise<void> {
    return this.#service.publish(this.id, items);
  }

  async subscribe(handler: StreamHandler<unknown>, options?: SubscribeOptions): Promise<StreamSubscription<unknown>> {
    const owner = this.#ownerOrThrow('subscribe');
    this.#service.provider(this.id.provider);
    if (typeof handler !== 'function')
      throw new ConfigurationError(`subscribe takes a handler function (item, token, stream), got ${typeof handler}`);
    const method = handlerMethodName(owner.instance(), handler) ?? null;
    if (method === null && typeof (owner.instance() as { onStreamItem?: unknown }).onStreamItem !== 'function') {
      throw new ConfigurationError(
        `${owner.type}/${owner.key}: subscribe with one of the grain's own methods (this.onItem), or implement onStreamItem, so that items reach the grain after it is reactivated; a closure lives only as long as this activation`,
      );
    }
    const consumer: Consumer = { kind: 'grain', type: owner.type, key: owner.key, method };
    // Bound before the rendezvous hears of it: in a reentrant grain the first item may come first.
    const id = randomUUID();
    bindStreamHandler(owner.instance(), id, handler);
    try {
      await this.#pubsub(owner).subscribe(consumer, options?.from ?? null, id);
    } catch (e) {
      unbindStreamHandler(owner.instance(), id);
      throw e;
    }
    return this.#subscription(owner, id);
  }

  async getSubscriptions(): Promise<StreamSubscription<unknown>[]> {
    const owner = this.#ownerOrThrow('getSubscriptions');
    const records = await this.#pubsub(owner).list({ grain: `${owner.type}/${owner.key}` });
    return records.map((r) => this.#subscription(owner, r.id));
  }

  #subscription(owner: StreamOwner, id: string): StreamSubscription<unknown> {
    const sub: StreamSubscription<unknown> = {
      id,
      stream: this.id,
      unsubscribe: async () => {
        endStreamSubscription(owner.instance(), id);
        await this.#pubsub(owner).unsubscribe(id);
      },
      resume: (handler) => {
        if (typeof handler !== 'function') throw new ConfigurationError('resume takes a handler function');
        bindStreamHandler(owner.instance(), id, handler);
        return sub;
      },
    };
    return sub;
  }

  #pubsub(owner: StreamOwner): PubSubRef {
    return owner.ref(PUBSUB_TYPE, streamKey(this.id)) as PubSubRef;
  }

  #ownerOrThrow(what: string): StreamOwner {
    if (this.#owner === undefined)
      throw new ConfigurationError(`${what}: only a grain or a client subscribes to a stream; silo code can publish`);
    return this.#owner;
  }
}
