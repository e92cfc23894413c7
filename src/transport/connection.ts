// One framed, batched connection over a net.Socket: the handshake, then frames
// both ways. Sends in one tick go out in one socket write; incoming frames go to
// one handler object. A protocol violation closes this connection only, with a log line.

import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { ProtocolError, SiloUnavailableError, TransportError } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';
import { silentLogger } from '../observability/logger.ts';
import { FrameDecoder, FrameWriter, type FrameHead, type FrameSink } from './framing.ts';
import {
  FRAME_HELLO,
  FRAME_REJECT,
  HANDSHAKE_MAX_FRAME_BYTES,
  decodeHello,
  decodeReject,
  encodeHello,
  encodeReject,
  helloMismatch,
  type Hello,
  type PeerRole,
} from './handshake.ts';
import { transportChannels } from './channels.ts';
import { resolveTransportLimits, type ResolvedTransportLimits, type TransportLimits } from './limits.ts';

// Design notes.
// - send() copies the frame into the FrameWriter's batch and, for the first frame
//   of a batch only, schedules one flush with setImmediate (a callback bound once
//   per connection). The flush is one socket.write of the whole batch, after the
//   current round of I/O callbacks, ticks and promise jobs: every send made while
//   handling a chunk of requests shares it. A batch that reaches flushBytes is
//   written at once: under load the peer starts on the first calls of a tick while
//   this side makes the rest, so the two processes overlap instead of taking turns.
// - Back-pressure is ours, not the socket's 16 KiB highWaterMark (which a single
//   batch may exceed while the kernel takes it all at once): after a write, if the
//   socket still queues writeHighWaterMark bytes or more, the connection turns
//   unwritable and emits 'blocked', then 'drain' when the socket has emptied.
//   send() keeps accepting frames meanwhile; the upper layer decides to wait.
// - Before the handshake completes, only HELLO/REJECT are legal and frames are
//   held to HANDSHAKE_MAX_FRAME_BYTES, so a stranger cannot make us buffer 16 MiB.

/** Which end opened the TCP connection. The connecting side speaks first. */
export type ConnectionSide = 'connect' | 'accept';

/** `handshaking` until both HELLOs are exchanged, then `open`, then `closed` for good. */
export type ConnectionState = 'handshaking' | 'open' | 'closed';

/** Why a connection closed. */
export interface CloseInfo {
  /**
   * `local`: close() was called. `peer`: the peer hung up or the socket failed.
   * `protocol`: the peer broke the protocol (bad frame, rejected frame, bad HELLO).
   * `timeout`: no handshake in time. `refused`: the handshake was refused (REJECT sent or received).
   */
  readonly kind: 'local' | 'peer' | 'protocol' | 'timeout' | 'refused';
  readonly reason: string;
  /** The socket error, when one caused the close. */
  readonly error: Error | undefined;
}

/** Receives the frames of a connection after its handshake. */
export interface ConnectionHandler {
  /**
   * One frame, whose body is `buf[start, end)`: the received bytes themselves, valid
   * for as long as they are held (holding them keeps the whole read chunk alive: copy
   * them to keep them long), and never to be written to. `buf.subarray(start, end)`
   * gives a view when one is wanted. Return false or throw to reject the frame
   * (an unknown type, say): the connection is then closed as a protocol violation.
   */
  onFrame(type: number, buf: Buffer, start: number, end: number, connection: Connection): boolean | void;
}

/** Counters of one connection. */
export interface ConnectionStats {
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
  /** Socket writes: one per flushed batch. */
  writes: number;
}

/** Options of a Connection. */
export interface ConnectionOptions {
  readonly side: ConnectionSide;
  /** Our HELLO. */
  readonly hello: Hello;
  readonly limits?: TransportLimits;
  /** Default: silent. */
  readonly logger?: Logger;
  /** Receives frames once open; may instead be set later with setHandler (frames wait meanwhile). */
  readonly handler?: ConnectionHandler;
  /** Roles the accepting side lets in. Default: both. */
  readonly acceptRoles?: readonly PeerRole[];
  /** How to name the peer in logs before its HELLO is known; default: the socket's remote `host:port`. */
  readonly peerName?: string;
  /** Called synchronously when the handshake completes, before any later frame is delivered. */
  readonly onOpen?: (connection: Connection) => void;
}

/** Events of a Connection. */
export interface ConnectionEvents {
  /** Writable again after 'blocked'. */
  drain: [];
  /** The socket queues writeHighWaterMark bytes or more: the peer does not keep up. */
  blocked: [];
  /** The connection closed (emitted once). */
  close: [info: CloseInfo];
}

const HANDSHAKING = 0;
const OPEN = 1;
const CLOSED = 2;
const stateNames: readonly ConnectionState[] = ['handshaking', 'open', 'closed'];

const noop = (): void => {};

function endpoint(host: string | undefined, port: number | undefined): string {
  if (host === undefined || port === undefined) return 'unknown';
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A framed connection over a socket: handshake, batched sends, frames to one handler. */
export class Connection extends EventEmitter<ConnectionEvents> {
  /** The socket's remote `host:port`. */
  readonly remoteAddress: string;
  /** Resolves with the peer's HELLO when the handshake succeeds; rejects with a SiloUnavailableError if it closes first. */
  readonly ready: Promise<Hello>;
  /** Resolves, never rejects, once the connection is closed. */
  readonly closed: Promise<CloseInfo>;

  readonly #socket: Socket;
  readonly #side: ConnectionSide;
  readonly #hello: Hello;
  readonly #limits: ResolvedTransportLimits;
  readonly #logger: Logger;
  readonly #acceptRoles: readonly PeerRole[];
  readonly #peerName: string;
  readonly #onOpen: ((connection: Connection) => void) | undefined;
  readonly #writer: FrameWriter;
  readonly #decoder: FrameDecoder;
  readonly #stats: ConnectionStats = { framesSent: 0, framesReceived: 0, bytesSent: 0, bytesReceived: 0, writes: 0 };
  #state = HANDSHAKING;
  #handler: ConnectionHandler | undefined;
  /** Frames that arrived after the handshake but before a handler was set, as bodies of their own. */
  #waiting: { type: number; body: Buffer }[] | undefined;
  #peer: Hello | undefined;
  #closeInfo: CloseInfo | undefined;
  #flushScheduled = false;
  /** limits.flushBytes and limits.maxQueuedBytes, read per frame. */
  readonly #flushBytes: number;
  readonly #maxQueuedBytes: number;
  #blocked = false;
  #handshakeTimer: NodeJS.Timeout | undefined;
  #resolveReady: (hello: Hello) => void = noop;
  #rejectReady: (error: Error) => void = noop;
  #resolveClosed: (info: CloseInfo) => void = noop;
  // Bound once: no closure per frame or per batch.
  readonly #flushCallback = (): void => {
    this.#flushScheduled = false;
    this.#flushNow();
  };

  /** Wraps a connected socket and starts the handshake (the connecting side sends its HELLO at once). */
  constructor(socket: Socket, options: ConnectionOptions) {
    super();
    this.#socket = socket;
    this.#side = options.side;
    this.#hello = options.hello;
    this.#limits = resolveTransportLimits(options.limits);
    this.#logger = options.logger ?? silentLogger();
    this.#acceptRoles = options.acceptRoles ?? ['silo', 'client'];
    this.#handler = options.handler;
    this.#onOpen = options.onOpen;
    this.remoteAddress = endpoint(socket.remoteAddress, socket.remotePort);
    this.#peerName = options.peerName ?? this.remoteAddress;
    this.#writer = new FrameWriter(this.#limits.maxFrameBytes);
    this.#flushBytes = this.#limits.flushBytes;
    this.#maxQueuedBytes = this.#limits.maxQueuedBytes;
    const sink: FrameSink = { onFrame: (type, buf, start, end) => this.#deliver(type, buf, start, end) };
    this.#decoder = new FrameDecoder(sink, Math.min(this.#limits.maxFrameBytes, HANDSHAKE_MAX_FRAME_BYTES));
    this.ready = new Promise<Hello>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(noop);
    this.closed = new Promise<CloseInfo>((resolve) => {
      this.#resolveClosed = resolve;
    });

    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () => this.#onEnd());
    socket.on('error', (error: Error) => this.#onError(error));
    socket.on('close', () => this.#finish({ kind: 'peer', reason: 'socket closed', error: undefined }, false));
    socket.on('drain', () => this.#onDrain());

    const timeoutMs = this.#limits.handshakeTimeoutMs;
    this.#handshakeTimer = setTimeout(() => {
      const partial = this.#decoder.bufferedBytes;
      this.#drop(
        'timeout',
        `no handshake within ${timeoutMs} ms${partial > 0 ? ` (${partial} bytes of an unfinished frame)` : ''}`,
      );
    }, timeoutMs);
    this.#handshakeTimer.unref();
    if (this.#side === 'connect') this.#sendControl(FRAME_HELLO, encodeHello(this.#hello));
  }

  /** `handshaking`, `open` or `closed`. */
  get state(): ConnectionState {
    return stateNames[this.#state] ?? 'closed';
  }

  /** True while the connection is open (handshake done, not closed): `state === 'open'` without the string. */
  get isOpen(): boolean {
    return this.#state === OPEN;
  }

  /** The peer's HELLO, once the handshake is done. */
  get peer(): Hello | undefined {
    return this.#peer;
  }

  /** Our HELLO. */
  get hello(): Hello {
    return this.#hello;
  }

  /** False while the peer does not keep up (see 'blocked' and 'drain'). */
  get writable(): boolean {
    return !this.#blocked && this.#state === OPEN;
  }

  /**
   * True while `maxQueuedBytes` or more wait to be written: the peer has stopped
   * reading, or reads far slower than we send. Callers refuse new requests then.
   */
  get backlogged(): boolean {
    return this.#writer.pendingBytes + this.#socket.writableLength >= this.#maxQueuedBytes;
  }

  /** Bytes accepted by send() and not yet handed to the kernel: the pending batch and the socket's queue. */
  get bufferedBytes(): number {
    return this.#writer.pendingBytes + this.#socket.writableLength;
  }

  /** Why it closed, once closed. */
  get closeInfo(): CloseInfo | undefined {
    return this.#closeInfo;
  }

  /** Counters (live object; do not modify). */
  get stats(): Readonly<ConnectionStats> {
    return this.#stats;
  }

  /** A short name of the peer for logs: its HELLO address, else its socket address. */
  get peerName(): string {
    return this.#peer === undefined ? this.#peerName : this.#peer.address;
  }

  /** Sets the handler once; frames that arrived before it are delivered now, in order. */
  setHandler(handler: ConnectionHandler): void {
    if (this.#handler !== undefined) throw new TransportError('the connection already has a handler');
    this.#handler = handler;
    const waiting = this.#waiting;
    if (waiting === undefined) return;
    this.#waiting = undefined;
    for (const { type, body } of waiting) {
      if (this.#state !== OPEN || !this.#dispatch(handler, type, body, 0, body.length)) break;
    }
  }

  /**
   * Queues one frame (type 0..255); it leaves with the rest of this tick's batch. The
   * body is copied. Throws a SiloUnavailableError when the connection is not open,
   * a FrameTooLargeError when the body is over maxFrameBytes, a ProtocolError for a bad type.
   */
  send(type: number, body: Uint8Array): void {
    if (this.#state !== OPEN) throw this.#notOpen();
    this.#writer.append(type, body);
    this.#stats.framesSent++;
    if (this.#writer.pendingBytes >= this.#flushBytes) this.#flushNow();
    else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flushCallback);
    }
  }

  /** Like send, with the body given in two parts (the first `headLength` bytes of `head`, then `body`), copied once. */
  send2(type: number, head: Uint8Array, body: Uint8Array, headLength = head.length): void {
    if (this.#state !== OPEN) throw this.#notOpen();
    this.#writer.append2(type, head, body, headLength);
    this.#stats.framesSent++;
    if (this.#writer.pendingBytes >= this.#flushBytes) this.#flushNow();
    else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flushCallback);
    }
  }

  /** Like send, with the body's header written in place by `head` (see FrameHead), then `body`. */
  sendHead(type: number, head: FrameHead, body: Uint8Array): void {
    if (this.#state !== OPEN) throw this.#notOpen();
    this.#writer.appendHead(type, head, body);
    this.#stats.framesSent++;
    if (this.#writer.pendingBytes >= this.#flushBytes) this.#flushNow();
    else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flushCallback);
    }
  }

  /** Writes the pending batch now instead of at the end of the tick. */
  flush(): void {
    this.#flushNow();
  }

  /** Resolves when writable (at once if it is); rejects with a SiloUnavailableError if the connection closes first. */
  waitForDrain(): Promise<void> {
    if (this.#state === CLOSED) return Promise.reject(this.#notOpen());
    if (!this.#blocked) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const onDrain = (): void => {
        this.off('close', onClose);
        resolve();
      };
      const onClose = (): void => {
        this.off('drain', onDrain);
        reject(this.#notOpen());
      };
      this.once('drain', onDrain);
      this.once('close', onClose);
    });
  }

  /** Stops reading from the socket (the peer will see back-pressure). */
  pause(): void {
    this.#socket.pause();
  }

  /** Reads again after pause(). */
  resume(): void {
    this.#socket.resume();
  }

  /** Closes gracefully: pending frames are written, then the socket is ended. */
  close(reason = 'closed locally'): void {
    this.#finish({ kind: 'local', reason, error: undefined }, true);
  }

  /** Closes at once, dropping pending frames. */
  destroy(reason = 'destroyed locally'): void {
    this.#finish({ kind: 'local', reason, error: undefined }, false);
  }

  // ---- Receiving ---------------------------------------------------------------

  #onData(chunk: Buffer): void {
    if (this.#state === CLOSED) return;
    this.#stats.bytesReceived += chunk.length;
    try {
      this.#decoder.push(chunk);
    } catch (error) {
      if (error instanceof ProtocolError) {
        this.#drop('protocol', error.message);
      } else {
        // A bug here or in an onOpen callback: this connection goes, the process stays.
        this.#logger.error(
          { peer: this.peerName, error },
          `closing connection with ${this.peerName} after an internal error: ${messageOf(error)}`,
        );
        this.#finish(
          {
            kind: 'protocol',
            reason: `internal error: ${messageOf(error)}`,
            error: error instanceof Error ? error : undefined,
          },
          false,
        );
      }
    }
  }

  #deliver(type: number, buf: Buffer, start: number, end: number): boolean {
    if (this.#state !== OPEN)
      return this.#state === HANDSHAKING ? this.#handshakeFrame(type, buf.subarray(start, end)) : false;
    this.#stats.framesReceived++;
    const handler = this.#handler;
    if (handler === undefined) {
      (this.#waiting ??= []).push({ type, body: buf.subarray(start, end) });
      return true;
    }
    return this.#dispatch(handler, type, buf, start, end);
  }

  /** Hands one frame to the handler; false (and the connection closed) when it was rejected. */
  #dispatch(handler: ConnectionHandler, type: number, buf: Buffer, start: number, end: number): boolean {
    let verdict: boolean | void;
    try {
      verdict = handler.onFrame(type, buf, start, end, this);
    } catch (error) {
      return this.#drop('protocol', `frame type ${type} rejected: ${messageOf(error)}`);
    }
    if (verdict === false) return this.#drop('protocol', `frame type ${type} rejected by the handler`);
    return this.#state === OPEN;
  }

  #handshakeFrame(type: number, body: Buffer): boolean {
    if (type === FRAME_REJECT && this.#side === 'connect') {
      const reason = decodeReject(body);
      this.#logger.warn(
        { peer: this.#peerName, remote: this.remoteAddress, reason },
        `refused by peer ${this.#peerName}: ${reason}`,
      );
      this.#finish(
        { kind: 'refused', reason: `refused by peer ${this.#peerName}: ${reason}`, error: undefined },
        false,
      );
      return false;
    }
    if (type !== FRAME_HELLO) return this.#drop('protocol', `frame type ${type} before the handshake`);
    const peer = decodeHello(body);
    if (typeof peer === 'string') return this.#drop('protocol', peer);
    if (this.#side === 'accept') {
      const reason = helloMismatch(this.#hello, peer, this.#acceptRoles);
      if (reason !== undefined) {
        this.#logger.warn(
          { peer: peer.address, remote: this.remoteAddress, reason },
          `refused peer ${peer.address}: ${reason}`,
        );
        this.#sendControl(FRAME_REJECT, encodeReject(reason));
        this.#finish({ kind: 'refused', reason: `refused peer ${peer.address}: ${reason}`, error: undefined }, true);
        return false;
      }
      this.#sendControl(FRAME_HELLO, encodeHello(this.#hello));
    } else {
      const reason = helloMismatch(this.#hello, peer);
      if (reason !== undefined) return this.#drop('protocol', `peer answered a HELLO we refuse: ${reason}`);
    }
    this.#peer = peer;
    this.#state = OPEN;
    clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = undefined;
    this.#decoder.maxFrameBytes = this.#limits.maxFrameBytes;
    // Never send what the peer would refuse: a too-big frame fails at send(), not the connection.
    this.#writer.maxFrameBytes = Math.min(this.#limits.maxFrameBytes, peer.maxFrameBytes ?? this.#limits.maxFrameBytes);
    this.#logger.debug(
      { peer: peer.address, remote: this.remoteAddress, role: peer.role, generation: peer.generation },
      `connection with ${peer.address} open`,
    );
    this.#resolveReady(peer);
    if (transportChannels.connectionOpened.hasSubscribers) {
      transportChannels.connectionOpened.publish({
        connection: this,
        side: this.#side,
        peer,
        remote: this.remoteAddress,
      });
    }
    if (this.#onOpen !== undefined) this.#onOpen(this);
    return this.#state === OPEN;
  }

  #onEnd(): void {
    if (this.#state === CLOSED) return;
    const partial = this.#decoder.bufferedBytes;
    if (partial > 0) {
      this.#drop('protocol', `peer hung up inside a frame (${partial} bytes of it received)`);
    } else if (this.#state === HANDSHAKING) {
      this.#logger.info({ peer: this.#peerName }, `peer ${this.#peerName} hung up during the handshake`);
      this.#finish(
        { kind: 'peer', reason: `peer ${this.#peerName} hung up during the handshake`, error: undefined },
        false,
      );
    } else {
      // The peer sent its FIN and, without half-open sockets, no longer reads: nothing pending can reach it.
      this.#logger.info({ peer: this.peerName }, `peer ${this.peerName} closed the connection`);
      this.#finish({ kind: 'peer', reason: `peer ${this.peerName} closed the connection`, error: undefined }, false);
    }
  }

  #onError(error: Error): void {
    if (this.#state === CLOSED) return;
    const reason = `connection with ${this.peerName} failed: ${error.message}`;
    this.#logger.info({ peer: this.peerName, error: error.message }, reason);
    this.#finish({ kind: 'peer', reason, error }, false);
  }

  // ---- Sending -----------------------------------------------------------------

  /** A HELLO or REJECT: written at once, whatever the state. */
  #sendControl(type: number, body: Buffer): void {
    this.#writer.append(type, body);
    this.#flushNow();
  }

  #flushNow(): void {
    const chunk = this.#writer.take();
    if (chunk === undefined || this.#socket.destroyed) return;
    const stats = this.#stats;
    stats.writes++;
    stats.bytesSent += chunk.length;
    const socket = this.#socket;
    socket.write(chunk);
    // The kernel took the whole batch (nothing queued): its bytes may be overwritten by the next one.
    if (socket.writableLength === 0) this.#writer.reuse();
    if (!this.#blocked && socket.writableLength >= this.#limits.writeHighWaterMark && this.#state === OPEN) {
      this.#blocked = true;
      this.emit('blocked');
    }
  }

  #onDrain(): void {
    if (!this.#blocked || this.#socket.writableLength >= this.#limits.writeHighWaterMark) return;
    this.#blocked = false;
    if (this.#state === OPEN) this.emit('drain');
  }

  // ---- Closing -----------------------------------------------------------------

  /** Logs a violation (or a handshake timeout) naming the peer and closes this connection at once. */
  #drop(kind: 'protocol' | 'timeout', reason: string): false {
    if (this.#state === CLOSED) return false;
    const peer = this.peerName;
    this.#logger.warn({ peer, remote: this.remoteAddress, reason }, `dropped connection with ${peer}: ${reason}`);
    this.#finish({ kind, reason, error: undefined }, false);
    return false;
  }

  #finish(info: CloseInfo, graceful: boolean): void {
    if (this.#state === CLOSED) return;
    const wasOpen = this.#state === OPEN;
    this.#state = CLOSED;
    this.#closeInfo = info;
    clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = undefined;
    this.#waiting = undefined;
    const socket = this.#socket;
    if (graceful && !socket.destroyed) {
      this.#flushNow();
      socket.end();
      // Wait for the peer to hang up (so it reads what we wrote), but not forever.
      const timer = setTimeout(() => socket.destroy(), this.#limits.closeTimeoutMs);
      timer.unref();
      socket.once('close', () => clearTimeout(timer));
    } else {
      this.#writer.clear();
      socket.destroy();
    }
    if (!wasOpen) this.#rejectReady(new SiloUnavailableError(`handshake with ${this.peerName} failed: ${info.reason}`));
    this.#resolveClosed(info);
    if (transportChannels.connectionClosed.hasSubscribers) {
      transportChannels.connectionClosed.publish({
        connection: this,
        side: this.#side,
        peer: this.peerName,
        remote: this.remoteAddress,
        kind: info.kind,
        reason: info.reason,
      });
    }
    this.emit('close', info);
  }

  #notOpen(): TransportError | SiloUnavailableError {
    if (this.#state === HANDSHAKING) return new TransportError(`connection with ${this.peerName} is not open yet`);
    return new SiloUnavailableError(
      `connection with ${this.peerName} is closed: ${this.#closeInfo?.reason ?? 'closed'}`,
    );
  }
}
