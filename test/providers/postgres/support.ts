// Helpers shared by the PostgreSQL provider tests (and the Redis ones, through
// test/providers/redis/support.ts).

import assert from 'node:assert/strict';
import net from 'node:net';
import type { Logger } from '../../../src/observability/logger.ts';

/** One call of a `recordingLogger`. */
export interface LogRecord {
  readonly level: string;
  readonly fields: Record<string, unknown>;
  readonly message: string | undefined;
}

/** A logger that appends every call to `records`. */
export function recordingLogger(records: LogRecord[] = []): Logger & { records: LogRecord[] } {
  const at =
    (level: string) =>
    (fields: object, message?: string): void => {
      records.push({ level, fields: fields as Record<string, unknown>, message });
    };
  const logger = {
    records,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: () => logger,
  };
  return logger;
}

/**
 * A proxy to the test database that can stop answering without closing
 * anything (a server that hangs): once frozen it holds what it is sent.
 * `freeze()` freezes at once, `freeze(text)` at the first message from the
 * client that holds `text`; either resolves once it holds something the
 * client sent. `connectionString` is the database it stands in front of.
 */
export async function startFreezableProxy(
  connectionString: string,
): Promise<{ via: string; freeze(at?: string): Promise<void>; thaw(): void; close(): Promise<void> }> {
  const target = new URL(connectionString);
  let frozen = false;
  let trigger: string | undefined;
  let onSent: (() => void) | undefined;
  const held: Array<() => void> = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port || 5432), target.hostname);
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      sockets.add(from);
      from.on('close', () => sockets.delete(from));
      from.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
      from.on('data', (chunk: Buffer) => {
        if (!frozen && trigger !== undefined && from === client && chunk.includes(trigger)) frozen = true;
        if (!frozen) {
          to.write(chunk);
          return;
        }
        held.push(() => to.write(chunk));
        if (from === client) onSent?.();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  const via = new URL(connectionString);
  via.host = `127.0.0.1:${address.port}`;
  return {
    via: via.toString(),
    freeze: (at) => {
      if (at === undefined) frozen = true;
      else trigger = at;
      return new Promise<void>((resolve) => (onSent = resolve));
    },
    thaw: () => {
      frozen = false;
      trigger = undefined;
      onSent = undefined;
      for (const deliver of held.splice(0)) deliver();
    },
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
