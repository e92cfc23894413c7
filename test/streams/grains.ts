// Grains of the stream tests: producers, explicit and implicit consumers, a
// consumer that throws. What they receive goes to module-level logs the tests read.

import { Grain, grain, implicitSubscription, type StreamId, type StreamToken } from 'granary';

export const PROVIDER = 'events';

/** Items received, by `grain key`. */
export const received = new Map<string, unknown[]>();
/** Tokens received, by `grain key`. */
export const tokensSeen = new Map<string, StreamToken[]>();

function record(key: string, item: unknown, token: StreamToken): void {
  let items = received.get(key);
  if (items === undefined) received.set(key, (items = []));
  items.push(item);
  let tokens = tokensSeen.get(key);
  if (tokens === undefined) tokensSeen.set(key, (tokens = []));
  tokens.push(token);
}

export function resetLogs(): void {
  received.clear();
  tokensSeen.clear();
  throwing.failuresLeft = 0;
  throwing.attempts = 0;
}

@grain('streamProducer')
export class Producer extends Grain {
  async send(namespace: string, key: string, item: unknown): Promise<void> {
    await this.getStream(PROVIDER, namespace, key).publish(item);
  }
  async sendBatch(namespace: string, key: string, items: unknown[]): Promise<void> {
    await this.getStream(PROVIDER, namespace, key).publishBatch(items);
  }
}

/** Subscribes with one of its own methods: the subscription survives deactivation. */
@grain('streamConsumer')
export class Consumer extends Grain {
  async join(namespace: string, key: string): Promise<string> {
    const sub = await this.getStream<unknown>(PROVIDER, namespace, key).subscribe(this.onItem);
    return sub.id;
  }
  async joinFrom(namespace: string, key: string, from: StreamToken): Promise<string> {
    const sub = await this.getStream<unknown>(PROVIDER, namespace, key).subscribe(this.onItem, { from });
    return sub.id;
  }
  async leave(namespace: string, key: string): Promise<number> {
    const subs = await this.getStream(PROVIDER, namespace, key).getSubscriptions();
    for (const s of subs) await s.unsubscribe();
    return subs.length;
  }
  async subscriptions(namespace: string, key: string): Promise<string[]> {
    return (await this.getStream(PROVIDER, namespace, key).getSubscriptions()).map((s) => s.id);
  }
  async goAway(): Promise<void> {
    this.deactivateOnIdle();
  }
  async onItem(item: unknown, token: StreamToken): Promise<void> {
    record(this.key, item, token);
  }
}

/** Subscribes with a closure and no onStreamItem: refused. */
@grain('closureConsumer')
export class ClosureConsumer extends Grain {
  async join(namespace: string, key: string): Promise<void> {
    await this.getStream(PROVIDER, namespace, key).subscribe((item, token) => record(this.key, item, token));
  }
}

@grain('implicitConsumer')
@implicitSubscription('telemetry')
export class ImplicitConsumer extends Grain {
  async onStreamItem(item: unknown, token: StreamToken, stream: StreamId): Promise<void> {
    record(`implicit:${stream.key}`, item, token);
  }
}

export const throwing = { failuresLeft: 0, attempts: 0 };

/** Throws on items while `throwing.failuresLeft` is positive; always throws on 'poison'. */
@grain('throwingConsumer')
@implicitSubscription('flaky')
export class ThrowingConsumer extends Grain {
  async onStreamItem(item: unknown, token: StreamToken, stream: StreamId): Promise<void> {
    throwing.attempts++;
    if (item === 'poison') throw new RangeError(`cannot take ${String(item)}`);
    if (throwing.failuresLeft > 0) {
      throwing.failuresLeft--;
      throw new RangeError('not now');
    }
    record(`flaky:${stream.key}`, item, token);
  }
}
