// Test helpers: wait on a condition or a diagnostics channel with a deadline,
// never a bare sleep used as synchronisation.

import diagnostics_channel from 'node:diagnostics_channel';
import net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';

/** Polls `check` until it returns true; fails naming `what` after `timeoutMs`. */
export async function eventually(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await delay(5);
  }
}

/** Resolves with the first message on `channel` that matches `match`. */
export function nextEvent<T = Record<string, unknown>>(
  channel: string,
  match: (m: T) => boolean,
  timeoutMs = 5000,
): Promise<T> {
  const ch = diagnostics_channel.channel(channel);
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      ch.unsubscribe(on);
      reject(new Error(`timed out after ${timeoutMs} ms waiting for an event on ${channel}`));
    }, timeoutMs);
    function on(m: unknown): void {
      if (!match(m as T)) return;
      clearTimeout(timer);
      ch.unsubscribe(on);
      resolve(m as T);
    }
    ch.subscribe(on);
  });
}

/** Collects every message published on `channel` until `close()`. */
export function recordEvents<T = Record<string, unknown>>(channel: string): { events: T[]; close: () => void } {
  const ch = diagnostics_channel.channel(channel);
  const events: T[] = [];
  const on = (m: unknown): void => {
    events.push(m as T);
  };
  ch.subscribe(on);
  return { events, close: () => ch.unsubscribe(on) };
}

/** A promise with its settle functions, for gates in tests. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A TCP proxy on a loopback port, which a test can cut (the server is gone) and restore. */
export interface CuttableProxy {
  readonly port: number;
  /** Closes the listening socket and every connection through it. */
  cut(): Promise<void>;
  /** Listens again on the same port. */
  restore(): Promise<void>;
}

/** Starts a proxy from a free loopback port to `host:port` (a store under test). */
export async function startProxy(host: string, port: number): Promise<CuttableProxy> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  const listen = (p: number): Promise<number> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(p, '127.0.0.1', () => {
        server.off('error', reject);
        const address = server.address();
        if (address === null || typeof address !== 'object') reject(new Error('proxy has no address'));
        else resolve(address.port);
      });
    });
  const own = await listen(0);
  return {
    port: own,
    cut: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
    restore: async () => {
      await listen(own);
    },
  };
}

/** A TCP port on 127.0.0.1 that was free a moment ago (nothing listens on it). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
