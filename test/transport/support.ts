// Shared pieces of the transport tests: a logger that records its lines, a frame
// collector, raw sockets that speak (or break) the protocol by hand.

import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import type { Logger } from '../../src/observability/logger.ts';
import type { Connection, ConnectionHandler } from '../../src/transport/connection.ts';
import { encodeFrame } from '../../src/transport/framing.ts';
import { FRAME_HELLO, encodeHello, makeHello, type HelloInit } from '../../src/transport/handshake.ts';
import { eventually } from '../helpers.ts';

/** One recorded log call. */
export interface LogEntry {
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly fields: Record<string, unknown>;
  readonly message: string;
}

/** A Logger that keeps every call; child() shares the record. */
export interface RecordingLogger extends Logger {
  readonly entries: LogEntry[];
  /** The first entry at `level` whose message matches. */
  find(level: LogEntry['level'], pattern: RegExp): LogEntry | undefined;
  /** Waits for such an entry; fails naming the pattern and what was logged. */
  waitFor(level: LogEntry['level'], pattern: RegExp, timeoutMs?: number): Promise<LogEntry>;
}

export function recordingLogger(): RecordingLogger {
  const entries: LogEntry[] = [];
  const record =
    (level: LogEntry['level']) =>
    (fields: object, message?: string): void => {
      entries.push({ level, fields: fields as Record<string, unknown>, message: message ?? '' });
    };
  const find = (level: LogEntry['level'], pattern: RegExp): LogEntry | undefined =>
    entries.find((e) => e.level === level && pattern.test(e.message));
  const logger: RecordingLogger = {
    entries,
    debug: record('debug'),
    info: record('info'),
    warn: record('warn'),
    error: record('error'),
    child: () => logger,
    find,
    async waitFor(level, pattern, timeoutMs = 5000) {
      try {
        await eventually(
          `a ${level} log line matching ${pattern}`,
          () => find(level, pattern) !== undefined,
          timeoutMs,
        );
      } catch (error) {
        const seen = entries.map((e) => `${e.level}: ${e.message}`).join('\n  ');
        throw new Error(`${(error as Error).message}\nlogged:\n  ${seen}`);
      }
      const entry = find(level, pattern);
      if (entry === undefined) throw new Error('unreachable');
      return entry;
    },
  };
  return logger;
}

/** A frame as received. */
export interface ReceivedFrame {
  readonly type: number;
  readonly body: Buffer;
  readonly connection: Connection;
}

/** A handler that keeps every frame; `reject` lists types it refuses; `echo` answers each frame with itself. */
export function collector(
  options: { reject?: readonly number[]; throwOn?: readonly number[]; echo?: boolean } = {},
): ConnectionHandler & { frames: ReceivedFrame[] } {
  const frames: ReceivedFrame[] = [];
  return {
    frames,
    onFrame(type, buf, start, end, connection) {
      const body = buf.subarray(start, end);
      if (options.reject?.includes(type) === true) return false;
      if (options.throwOn?.includes(type) === true) throw new Error(`no handler for frame type ${type}`);
      frames.push({ type, body, connection });
      if (options.echo === true) connection.send(type, body);
      return true;
    },
  };
}

/** A raw socket to `port`, connected. */
export async function rawSocket(port: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port });
  await once(socket, 'connect');
  socket.on('error', () => {});
  return socket;
}

/** The `host:port` the server sees for a raw socket. */
export function seenAs(socket: Socket): string {
  return `127.0.0.1:${socket.localPort ?? 0}`;
}

/** Resolves when the socket has closed; fails naming `what` after the deadline. */
export async function closedWithin(socket: Socket, what: string, timeoutMs = 5000): Promise<void> {
  socket.resume();
  await eventually(
    `${what}: the server closes the connection`,
    () => socket.destroyed || socket.readableEnded,
    timeoutMs,
  );
}

/** The HELLO frame a hand-written peer sends. */
export function helloFrame(init: HelloInit): Buffer {
  return encodeFrame(FRAME_HELLO, encodeHello(makeHello(init)));
}

/** A deterministic byte source (xorshift32). */
export function seededBytes(seed: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** A body of `size` bytes whose content depends on `seed`, so misplaced bytes show. */
export function body(size: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) out[i] = (i * 31 + seed * 7) & 0xff;
  return out;
}
