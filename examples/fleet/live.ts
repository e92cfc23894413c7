// The live feed behind GET /api/live: server-sent events of the fleet's
// numbers (read from the fleet grain once a second while someone watches),
// the list of devices in alert when it changes, and each alert change as it
// happens, from the regions' alerts streams.
//
// Why a cluster client: code in a silo's process may publish to a stream
// but not subscribe (only grains and clients do), and a grain cannot hold
// an HTTP response. So the process connects a client to its own silo's
// gateway and subscribes with a plain function. The numbers are polled, not
// streamed: they are a few hundred bytes, and reading the exact aggregate
// once a second is cheaper and more correct than summing a stream of deltas.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ClusterClient, Silo, StreamSubscription } from 'granary';
import { Fleet, fleetSettings, type FleetView } from './grains.ts';
import { STREAMS, type AlertChange } from './model.ts';

/** What each `fleet` event carries: the totals and the rate of messages. */
export interface LiveNumbers extends FleetView {
  /** Messages per second over the last poll. */
  rate: number;
}

/** The live feed of one silo process. */
export class LiveHub {
  readonly #silo: Silo;
  readonly #client: ClusterClient;
  readonly #watchers = new Set<ServerResponse>();
  readonly #regions = new Map<string, Promise<StreamSubscription<AlertChange> | undefined>>();
  #timer: NodeJS.Timeout | undefined;
  #polling = false;
  #last: { messages: number; at: number } | undefined;
  #numbers: string | undefined;
  #alerts: string | undefined;
  #closed = false;

  constructor(silo: Silo, client: ClusterClient) {
    this.#silo = silo;
    this.#client = client;
  }

  /** Takes a request for /api/live and keeps its response open for events. */
  attach(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
    res.write('retry: 2000\n\n');
    if (this.#numbers !== undefined) res.write(this.#numbers);
    if (this.#alerts !== undefined) res.write(this.#alerts);
    this.#watchers.add(res);
    req.on('close', () => this.#watchers.delete(res));
    // Gathering starts with the first watcher, and stops with the last one.
    this.#timer ??= setInterval(() => void this.#poll(), 1000);
    void this.#poll();
  }

  /** Ends every watcher's response and stops polling. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    for (const res of this.#watchers) res.end();
    this.#watchers.clear();
    const subs = await Promise.all(this.#regions.values());
    await Promise.allSettled(subs.map((s) => s?.unsubscribe()));
  }

  #send(event: string, data: unknown): string {
    const text = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const res of this.#watchers) res.write(text);
    return text;
  }

  async #poll(): Promise<void> {
    if (this.#polling || this.#closed) return;
    if (this.#watchers.size === 0) {
      if (this.#timer !== undefined) clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    this.#polling = true;
    try {
      const fleet = this.#silo.getGrain(Fleet, 'fleet');
      const [view, alerts] = await Promise.all([fleet.view(), fleet.alerts()]);
      const now = Date.now();
      const rate =
        this.#last !== undefined && now > this.#last.at
          ? Math.max(0, ((view.messages - this.#last.messages) * 1000) / (now - this.#last.at))
          : 0;
      this.#last = { messages: view.messages, at: now };
      const numbers: LiveNumbers = { ...view, rate: Math.round(rate * 10) / 10 };
      this.#numbers = this.#send('fleet', numbers);
      const alertsText = `event: alerts\ndata: ${JSON.stringify(alerts)}\n\n`;
      if (alertsText !== this.#alerts) this.#alerts = this.#send('alerts', alerts);
      for (const region of Object.keys(view.regions)) this.#follow(region);
    } catch (e) {
      fleetSettings.warn({ err: e }, 'live feed: fleet not read');
    } finally {
      this.#polling = false;
    }
  }

  /** Subscribes to a region's alerts stream the first time the region shows up. */
  #follow(region: string): void {
    if (this.#regions.has(region)) return;
    const sub = this.#client
      .getStream<AlertChange>(STREAMS.provider, STREAMS.alerts, region)
      .subscribe(async (change) => {
        this.#send('alert', change);
      })
      .catch((e: unknown) => {
        fleetSettings.warn({ region, err: e }, 'live feed: alerts stream not followed; trying again');
        this.#regions.delete(region);
        return undefined;
      });
    this.#regions.set(region, sub);
  }
}
