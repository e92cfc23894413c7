// Streams from a client: publishing goes through the stream worker grain of
// the gateway silo (items leave from there, as a grain's would); subscribing
// records the client's sink (one observer per client) with the stream's
// rendezvous, and items come back through the gateway to the handler. A
// client's subscriptions end with it: close() ends them, and a silo that
// cannot reach a client any more ends them itself.

import { randomUUID } from 'node:crypto';
import { ConfigurationError } from '../errors.ts';
import type { ObserverRef } from '../grain/grain.ts';
import type { StreamDeliveryResult } from '../grain/stream-consumer.ts';
import type { Logger } from '../observability/logger.ts';
import { PUBSUB_TYPE, type ClientStreamSink, type PubSubGrain } from '../streams/pubsub.ts';
import { checkedId } from '../streams/types.ts';
import { STREAM_WORKER_TYPE, type StreamWorker } from '../streams/worker.ts';
import {
  streamKey,
  type Stream,
  type StreamHandler,
  type StreamId,
  type StreamSubscription,
  type StreamToken,
  type SubscribeOptions,
} from '../streams/types.ts';

/** How long close() waits for the rendezvous to confirm the end of the client's subscriptions. */
const CLOSE_WAIT_MS = 2000;

type PubSubRef = { [K in 'subscribe' | 'unsubscribe' | 'list']: PubSubGrain[K] };
type WorkerRef = { publish: StreamWorker['publish'] };

/** What the client's streams need from the client. */
export interface ClientStreamsHost {
  readonly id: string;
  readonly logger: Logger;
  grain(type: string, key: string): unknown;
  createObserver<T extends object>(impl: T): ObserverRef<T>;
}

/** The streams of one client: its handles, its sink, its subscriptions. */
export class ClientStreams {
  readonly #host: ClientStreamsHost;
  readonly #handlers = new Map<string, { stream: StreamId; handler: StreamHandler<unknown> }>();
  #sink: ObserverRef<ClientStreamSink> | undefined;

  constructor(host: ClientStreamsHost) {
    this.#host = host;
  }

  getStream<T>(provider: string, namespace: string, key: string): Stream<T> {
    return new ClientStream(this, checkedId(provider, namespace, key)) as unknown as Stream<T>;
  }

  /** The last publish of each stream still under way: the next one waits for it. */
  readonly #tails = new Map<string, Promise<void>>();

  /**
   * Publishes through a gateway. Calls spread over the gateways, and two
   * gateways are two producers with no order between them, so a stream's
   * publishes go one after another: the next leaves once the previous was
   * accepted. Different streams go in parallel.
   */
  publish(stream: StreamId, items: readonly unknown[]): Promise<void> {
    if (!Array.isArray(items)) return Promise.reject(new ConfigurationError('publishBatch takes an array of items'));
    if (items.length === 0) return Promise.resolve();
    const copy = [...items];
    const key = streamKey(stream);
    const send = (): Promise<void> => (this.#host.grain(STREAM_WORKER_TYPE, '') as WorkerRef).publish(stream, copy);
    const before = this.#tails.get(key);
    // A failed publish does not fail the ones after it: each caller sees its own outcome.
    const mine = before === undefined ? send() : before.then(send, send);
    const tail = mine.catch(() => undefined);
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return mine;
  }

  async subscribe(
    stream: StreamId,
    handler: StreamHandler<unknown>,
    options: SubscribeOptions | undefined,
  ): Promise<StreamSubscription<unknown>> {
    if (typeof handler !== 'function')
      throw new ConfigurationError(`subscribe takes a handler function (item, token, stream), got ${typeof handler}`);
    // Bound before the rendezvous hears of it: the first item may come before its answer.
    const id = randomUUID();
    this.#handlers.set(id, { stream, handler });
    try {
      await this.#pubsub(stream).subscribe(
        { kind: 'client', client: this.#host.id, sink: this.#sinkRef() },
        options?.from ?? null,
        id,
      );
    } catch (e) {
      this.#handlers.delete(id);
      throw e;
    }
    return this.#subscription(stream, id);
  }

  async subscriptions(stream: StreamId): Promise<StreamSubscription<unknown>[]> {
    const records = await this.#pubsub(stream).list({ client: this.#host.id });
    return records.map((r) => this.#subscription(stream, r.id));
  }

  /**
   * Ends every subscription of this client (it is closing); failures are
   * logged, not thrown, and it waits at most CLOSE_WAIT_MS (the silos end
   * what is left when they find the client gone).
   */
  async close(): Promise<void> {
    const all = [...this.#handlers];
    this.#handlers.clear();
    let timer: NodeJS.Timeout | undefined;
    const waited = new Promise<void>((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)));
    const ended = Promise.all(
      all.map(([id, { stream }]) =>
        this.#pubsub(stream)
          .unsubscribe(id)
          .catch((err: unknown) =>
            this.#host.logger.warn(
              { err, stream: streamKey(stream), subscription: id },
              'could not end a stream subscription at close; the silos end it when they find the client gone',
            ),
          ),
      ),
    );
    await Promise.race([ended, waited]);
    clearTimeout(timer);
    this.#sink?.dispose();
    this.#sink = undefined;
  }

  #subscription(stream: StreamId, id: string): StreamSubscription<unknown> {
    const sub: StreamSubscription<unknown> = {
      id,
      stream,
      unsubscribe: async () => {
        this.#handlers.delete(id);
        await this.#pubsub(stream).unsubscribe(id);
      },
      resume: (handler) => {
        if (typeof handler !== 'function') throw new ConfigurationError('resume takes a handler function');
        this.#handlers.set(id, { stream, handler });
        return sub;
      },
    };
    return sub;
  }

  #pubsub(stream: StreamId): PubSubRef {
    return this.#host.grain(PUBSUB_TYPE, streamKey(stream)) as PubSubRef;
  }

  #sinkRef(): ObserverRef<ClientStreamSink> {
    this.#sink ??= this.#host.createObserver<ClientStreamSink>({
      deliver: (id, stream, items, tokens) => this.#deliver(id, stream, items, tokens),
    });
    return this.#sink;
  }

  async #deliver(id: string, stream: StreamId, items: unknown[], tokens: StreamToken[]): Promise<StreamDeliveryResult> {
    const h = this.#handlers.get(id);
    // Unsubscribed here, and the silo has not heard yet: nothing to hand them to.
    if (h === undefined) return { delivered: items.length };
    for (let i = 0; i < items.length; i++) {
      try {
        await h.handler(items[i], tokens[i] as StreamToken, stream);
      } catch (error) {
        return { delivered: i, error };
      }
    }
    return { delivered: items.length };
  }
}

class ClientStream implements Stream<unknown> {
  readonly id: StreamId;
  readonly #streams: ClientStreams;
  constructor(streams: ClientStreams, id: StreamId) {
    this.#streams = streams;
    this.id = id;
  }
  publish(item: unknown): Promise<void> {
    return this.#streams.publish(this.id, [item]);
  }
  publishBatch(items: readonly unknown[]): Promise<void> {
    return this.#streams.publish(this.id, items);
  }
  subscribe(handler: StreamHandler<unknown>, options?: SubscribeOptions): Promise<StreamSubscription<unknown>> {
    return this.#streams.subscribe(this.id, handler, options);
  }
  getSubscriptions(): Promise<StreamSubscription<unknown>[]> {
    return this.#streams.subscriptions(this.id);
  }
}
