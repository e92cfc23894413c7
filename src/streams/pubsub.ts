// The pub-sub rendezvous: one grain per stream (Orleans' PubSubRendezvousGrain)
// keeps the stream's explicit subscriptions and tells the silos that produce
// to the stream when they change. Implicit subscriptions never come here.
//
// Its records live on a storage provider in pages of `pubSubPageSize`
// subscriptions (state `index` says how many pages there are, state `page-N`
// holds one), so
// a subscribe or unsubscribe writes one small record however many subscribers
// the stream has, and a million streams are a million separate records.

import { randomUUID } from 'node:crypto';
import { ConfigurationError } from '../errors.ts';
import { Grain, grainContext, type ObserverRef } from '../grain/grain.ts';
import type { StreamDeliveryResult } from '../grain/stream-consumer.ts';
import type { StateAddress, StorageProvider } from '../storage/provider.ts';
import { parseStreamKey, type StreamId, type StreamToken } from './types.ts';

/** The grain type of the rendezvous; its key is the stream's `streamKey`. */
export const PUBSUB_TYPE = 'granary.pubsub';

/** Who receives a subscription's items. */
export type Consumer =
  | {
      readonly kind: 'grain';
      readonly type: string;
      readonly key: string;
      /** The grain method the items go to, when the subscription was made with one. */
      readonly method: string | null;
    }
  | {
      readonly kind: 'client';
      /** The client's id; its subscriptions end with it. */
      readonly client: string;
      readonly sink: ObserverRef<ClientStreamSink>;
    };

/** One explicit subscription as the rendezvous keeps it. */
export interface SubscriptionRecord {
  readonly id: string;
  readonly stream: StreamId;
  readonly consumer: Consumer;
  /** Deliver from this token on (rewind), where the provider keeps history. */
  readonly from: StreamToken | null;
}

/** A client's receiver of stream items (an observer the client made). */
export interface ClientStreamSink {
  deliver(
    subscription: string,
    stream: StreamId,
    items: unknown[],
    tokens: StreamToken[],
  ): Promise<StreamDeliveryResult>;
}

/** A producing silo's receiver of subscription changes (an observer the silo made). */
export interface ProducerSink {
  /** Subscriptions of stream `key` added and removed. */
  changed(key: string, added: SubscriptionRecord[], removed: string[]): Promise<void>;
  /** The rendezvous of stream `key` went away: ask again before the next publish. */
  dropped(key: string): Promise<void>;
}

/** Which subscriptions `list` returns. */
export interface SubscriptionFilter {
  /** `type/key` of a grain consumer. */
  readonly grain?: string;
  readonly client?: string;
}

interface Page {
  ids: Set<string>;
  etag: string | null;
}

/** The rendezvous of one stream. */
export class PubSubGrain extends Grain {
  static readonly grainOptions = { name: PUBSUB_TYPE };

  readonly #subs = new Map<string, SubscriptionRecord>();
  /** Page number of each subscription. */
  readonly #pageOf = new Map<string, number>();
  readonly #pages: Page[] = [];
  #indexEtag: string | null = null;
  /** Silos that produce to this stream, by address. */
  readonly #producers = new Map<string, ObserverRef<ProducerSink>>();
  #stream!: StreamId;
  #storage!: StorageProvider;

  override async onActivate(): Promise<void> {
    const id = parseStreamKey(this.key);
    if (id === undefined) throw new ConfigurationError(`'${this.key}' is not a stream key`);
    this.#stream = id;
    this.#storage = grainContext(this).streams().pubSubStorage(id.provider);
    const index = await this.#storage.read(this.#address('index'));
    this.#indexEtag = index.etag;
    const stored = index.state as { pages?: unknown } | undefined;
    const pages = typeof stored?.pages === 'number' ? stored.pages : 0;
    for (let n = 0; n < pages; n++) {
      const page = await this.#storage.read(this.#address(`page-${n}`));
      const subs = (page.state as { subs?: SubscriptionRecord[] } | undefined)?.subs ?? [];
      this.#pages.push({ ids: new Set(subs.map((s) => s.id)), etag: page.etag });
      for (const s of subs) {
        this.#subs.set(s.id, s);
        this.#pageOf.set(s.id, n);
      }
    }
  }

  override async onDeactivate(): Promise<void> {
    // Producers cached the subscriptions; a later activation would not know them.
    await this.#tellProducers((p) => p.dropped(this.key));
  }

  /** Adds a subscription; resolves once every producing silo knows of it. */
  async subscribe(
    consumer: Consumer,
    from: StreamToken | null = null,
    id: string = randomUUID(),
  ): Promise<SubscriptionRecord> {
    checkConsumer(consumer);
    // The subscriber picks the id, so it can bind its handler before the first item can come.
    if (typeof id !== 'string' || id === '' || id.length > 200)
      throw new ConfigurationError(
        `subscribe: a subscription id is a string of 1 to 200 characters, got ${JSON.stringify(id)}`,
      );
    const existing = this.#subs.get(id);
    if (existing !== undefined) return existing;
    if (from !== null) {
      if (typeof from?.sequence !== 'number' || typeof from.index !== 'number')
        throw new ConfigurationError(
          `subscribe: 'from' must be a stream token { sequence, index }, got ${JSON.stringify(from)}`,
        );
      const p = grainContext(this).streams().provider(this.#stream.provider);
      if (!p.rewind)
        throw new ConfigurationError(
          `stream provider '${this.#stream.provider}' (${p.kind}) keeps no history: it cannot subscribe from a token`,
        );
    }
    const record: SubscriptionRecord = { id, stream: this.#stream, consumer, from };
    const { delivery } = grainContext(this).streams().provider(this.#stream.provider);
    if (delivery.implicitOnly.has(this.#stream.namespace))
      throw new ConfigurationError(
        `namespace '${this.#stream.namespace}' of stream provider '${this.#stream.provider}' is implicit-only (implicitOnlyNamespaces): its streams take no explicit subscription`,
      );
    const pageSize = delivery.pubSubPageSize;
    let n = this.#pages.findIndex((p) => p.ids.size < pageSize);
    const grows = n < 0;
    if (grows) {
      n = this.#pages.length;
      this.#pages.push({ ids: new Set(), etag: null });
    }
    const page = this.#pages[n] as Page;
    page.ids.add(id);
    this.#subs.set(id, record);
    this.#pageOf.set(id, n);
    try {
      // The index first (it changes only when a page is added, so no record is written by
      // every subscribe): an index naming a page that was never written reads as an empty page.
      if (grows) await this.#writeIndex();
      await this.#writePage(n);
    } catch (e) {
      page.ids.delete(id);
      this.#subs.delete(id);
      this.#pageOf.delete(id);
      // What was written is uncertain (a write may time out and still land): read it all again.
      this.deactivateOnIdle();
      throw e;
    }
    await this.#tellProducers((p) => p.changed(this.key, [record], []));
    // Rewind: the provider puts a marker in the stream's order; the silo that meets it replays.
    if (from !== null) await grainContext(this).streams().requestReplay(this.#stream, id, from);
    return record;
  }

  /** Removes a subscription; resolves to false if there was none of that id. */
  async unsubscribe(id: string): Promise<boolean> {
    const n = this.#pageOf.get(id);
    const record = this.#subs.get(id);
    if (n === undefined || record === undefined) return false;
    const page = this.#pages[n] as Page;
    page.ids.delete(id);
    this.#subs.delete(id);
    this.#pageOf.delete(id);
    try {
      await this.#writePage(n);
    } catch (e) {
      page.ids.add(id);
      this.#subs.set(id, record);
      this.#pageOf.set(id, n);
      this.deactivateOnIdle();
      throw e;
    }
    await this.#tellProducers((p) => p.changed(this.key, [], [id]));
    return true;
  }

  /**
   * The history of subscription `id` was replayed (rewind): from now on it
   * takes items live, like any other.
   */
  async replayed(id: string): Promise<void> {
    const record = this.#subs.get(id);
    const n = this.#pageOf.get(id);
    if (record === undefined || n === undefined || record.from === null) return;
    const live: SubscriptionRecord = { ...record, from: null };
    this.#subs.set(id, live);
    try {
      await this.#writePage(n);
    } catch (e) {
      this.#subs.set(id, record);
      this.deactivateOnIdle();
      throw e;
    }
    await this.#tellProducers((p) => p.changed(this.key, [live], []));
  }

  /** The subscriptions, all or those of one grain or client. */
  async list(filter: SubscriptionFilter | null): Promise<SubscriptionRecord[]> {
    const out: SubscriptionRecord[] = [];
    for (const s of this.#subs.values()) {
      const c = s.consumer;
      if (filter?.grain !== undefined && (c.kind !== 'grain' || `${c.type}/${c.key}` !== filter.grain)) continue;
      if (filter?.client !== undefined && (c.kind !== 'client' || c.client !== filter.client)) continue;
      out.push(s);
    }
    return out;
  }

  /**
   * Registers silo `address` as a producer of this stream (it hears of every
   * change through `sink` until this activation ends) and returns page `page`
   * of the subscriptions (a stream with 100,000 subscribers is read in pages,
   * never in one answer the size of all of them).
   */
  async producer(
    address: string,
    sink: ObserverRef<ProducerSink>,
    page = 0,
  ): Promise<{ records: SubscriptionRecord[]; more: boolean }> {
    // Registered at once: changes from now on reach it while it reads the other pages.
    if (page === 0) this.#producers.set(address, sink);
    const ids = this.#pages[page]?.ids ?? new Set<string>();
    const records: SubscriptionRecord[] = [];
    for (const id of ids) records.push(this.#subs.get(id) as SubscriptionRecord);
    return { records, more: page + 1 < this.#pages.length };
  }

  async #tellProducers(tell: (p: ObserverRef<ProducerSink>) => Promise<void>): Promise<void> {
    await Promise.all(
      [...this.#producers].map(([address, p]) =>
        // A producer that cannot be told is gone (its silo stopped or died): it asks again if it comes back.
        tell(p).catch(() => void this.#producers.delete(address)),
      ),
    );
  }

  #address(stateName: string): StateAddress {
    return { grainType: PUBSUB_TYPE, grainKey: this.key, stateName };
  }

  async #writePage(n: number): Promise<void> {
    const page = this.#pages[n] as Page;
    const subs = [...page.ids].map((id) => this.#subs.get(id) as SubscriptionRecord);
    page.etag = await this.#storage.write(this.#address(`page-${n}`), { subs }, page.etag);
  }

  async #writeIndex(): Promise<void> {
    this.#indexEtag = await this.#storage.write(this.#address('index'), { pages: this.#pages.length }, this.#indexEtag);
  }
}

function checkConsumer(c: Consumer): void {
  const ok =
    c !== null &&
    typeof c === 'object' &&
    ((c.kind === 'grain' &&
      typeof c.type === 'string' &&
      typeof c.key === 'string' &&
      (c.method === null || typeof c.method === 'string')) ||
      (c.kind === 'client' && typeof c.client === 'string' && c.sink !== null && typeof c.sink === 'object'));
  if (!ok) throw new ConfigurationError(`not a stream consumer: ${JSON.stringify(c)}`);
}
