// The call tracker: every call this silo waits on or answers, from the moment
// it is made (or arrives) until it is settled. It keeps the deadlines, settles
// a call by what kind of message it is (one switch: a local caller's promise,
// a response frame, a timer, nobody), and cancels: a caller's AbortSignal, or a
// Cancel frame from the caller's silo.

import type { Clock } from '../clock.ts';
import { CancelledError, GranaryError, TimeoutError } from '../errors.ts';
import { Deadlines } from '../messaging/deadlines.ts';
import { MessageKind, type Message, type TickOwner } from '../messaging/message.ts';
import { ResponseStatus } from '../messaging/protocol.ts';
import type { Logger } from '../observability/logger.ts';
import { copy } from '../serialization/codec.ts';
import type { CodecContext } from '../serialization/symbols.ts';

/** Settles calls: what an activation (or the cluster layer) needs to end one. */
export interface CallSettler {
  /** Settles a call with its result. */
  succeed(msg: Message, value: unknown): void;
  /** Settles a call with an error. */
  fail(msg: Message, err: unknown): void;
}

/** What the tracker needs from the silo. */
export interface CallTrackerHost {
  readonly logger: Logger;
  /** Where results with no caller context are copied to (references bound to no activation). */
  readonly codecContext: CodecContext;
  /** Forgets a call sent to another silo; tells that silo to cancel it when `cancelCallee`. */
  abandonRemote(msg: Message, cancelCallee: boolean): void;
}

/** The calls of one silo in flight. */
export class CallTracker implements CallSettler {
  readonly #host: CallTrackerHost;
  readonly #deadlines: Deadlines<Message>;
  /** Calls that came over the wire with a signal, by connection and request id, for Cancel frames. */
  readonly #remoteCancels = new Map<object, Map<number, Message>>();
  /** Calls made here that timed out, by grain type (for metrics; counted on this rare path only). */
  readonly timeouts = new Map<string, number>();

  constructor(host: CallTrackerHost, clock: Clock) {
    this.#host = host;
    this.#deadlines = new Deadlines(this.#expire, clock);
  }

  /** Calls waiting for an outcome. */
  get pending(): number {
    return this.#deadlines.size;
  }

  /** Starts the deadline of a call someone waits on. */
  track(msg: Message): void {
    this.#deadlines.add(msg);
  }

  /** Settles a call with its result. */
  succeed(msg: Message, value: unknown): void {
    if (msg.kind === MessageKind.Tick) {
      (msg.tick as TickOwner).tickDone(undefined);
      return;
    }
    if (!this.#close(msg)) return;
    switch (msg.kind) {
      case MessageKind.OneWay:
        return;
      case MessageKind.Inbound:
        this.#deadlines.remove(msg);
        this.#forgetRemoteCancel(msg);
        msg.reply?.respond(msg.replyId, ResponseStatus.Ok, value);
        return;
      case MessageKind.Outbound:
        // Decoded from the response frame: a fresh copy already.
        this.#deadlines.remove(msg);
        msg.resolve(value);
        return;
      default: {
        this.#deadlines.remove(msg);
        const t = typeof value;
        if (value === null || (t !== 'object' && t !== 'function' && t !== 'symbol')) {
          msg.resolve(value);
          return;
        }
        let v: unknown;
        try {
          v = copy(value, msg.caller ?? this.#host.codecContext, 'result');
        } catch (e) {
          msg.reject(e);
          return;
        }
        msg.resolve(v);
      }
    }
  }

  /** Settles a call with an error. */
  fail(msg: Message, err: unknown): void {
    if (msg.kind === MessageKind.Tick) {
      (msg.tick as TickOwner).tickDone(err ?? new GranaryError('timer tick threw undefined'));
      return;
    }
    if (!this.#close(msg)) return;
    switch (msg.kind) {
      case MessageKind.OneWay:
        if (!(err instanceof CancelledError))
          this.#host.logger.warn({ grain: msg.targetId, method: msg.method.name, err }, 'one-way call failed');
        return;
      case MessageKind.Inbound:
        this.#deadlines.remove(msg);
        this.#forgetRemoteCancel(msg);
        // The reply picks the wire status from the error (transient, overloaded, ...).
        msg.reply?.respond(msg.replyId, ResponseStatus.Error, err);
        return;
      default:
        this.#deadlines.remove(msg);
        msg.reject(this.#callerError(msg, err));
    }
  }

  /** Marks `msg` settled; false if it already was (an outcome after a time-out or a cancel). */
  #close(msg: Message): boolean {
    if (msg.done) return false;
    msg.done = true;
    if (msg.cancel !== undefined) this.#releaseSignal(msg, false);
    return true;
  }

  /**
   * The error as the caller sees it: a copy (the callee keeps no hold on it)
   * whose stack ends with the call and the grains waiting on it.
   */
  #callerError(msg: Message, err: unknown): unknown {
    let e: unknown;
    try {
      e = copy(err, msg.caller ?? this.#host.codecContext, 'error');
    } catch {
      e = new GranaryError(
        `call to ${msg.targetId}.${msg.method.name} failed with an error that cannot be copied: ${String(err)}`,
      );
    }
    if (e !== err && e instanceof Error && typeof e.stack === 'string') {
      let s = `${e.stack}\n    at <grain call> ${msg.targetId}.${msg.method.name}`;
      for (let n = msg.chain; n !== undefined; n = n.parent) s += `\n    at <awaited by grain> ${n.id}`;
      e.stack = s;
    }
    return e;
  }

  readonly #expire = (msg: Message): void => {
    if (msg.done) return;
    msg.done = true;
    this.#releaseSignal(msg, true);
    if (msg.via !== undefined) this.#host.abandonRemote(msg, true);
    if (msg.kind === MessageKind.Inbound) {
      this.#forgetRemoteCancel(msg);
      return; // the caller, on its own silo, times out by itself
    }
    const slash = msg.targetId.indexOf('/');
    const type = slash < 0 ? msg.targetId : msg.targetId.slice(0, slash);
    this.timeouts.set(type, (this.timeouts.get(type) ?? 0) + 1);
    msg.reject(new TimeoutError(`call to ${msg.targetId}.${msg.method.name} timed out after ${msg.timeoutMs} ms`));
  };

  // ---- Cancellation ----------------------------------------------------------

  /**
   * Gives the callee its own signal in the caller's argument slot, aborted when
   * the caller's is. False (and the call failed) if the caller's signal was
   * aborted already.
   */
  attachSignal(msg: Message, signal: AbortSignal): boolean {
    const controller = new AbortController();
    msg.args.push(controller.signal);
    if (signal.aborted) {
      controller.abort(signal.reason);
      this.fail(
        msg,
        new CancelledError(`call to ${msg.targetId}.${msg.method.name} was cancelled before it was sent`, {
          cause: signal.reason,
        }),
      );
      return false;
    }
    const cancel = { callerSignal: signal, controller, listener: undefined as (() => void) | undefined };
    cancel.listener = () => {
      controller.abort(signal.reason);
      if (msg.via !== undefined) this.#host.abandonRemote(msg, true);
      this.fail(
        msg,
        new CancelledError(`call to ${msg.targetId}.${msg.method.name} was cancelled by the caller`, {
          cause: signal.reason,
        }),
      );
    };
    signal.addEventListener('abort', cancel.listener, { once: true });
    msg.cancel = cancel;
    return true;
  }

  /** A call from the wire whose caller may cancel it: its callee gets a signal, found again by a Cancel frame. */
  attachRemoteSignal(msg: Message, conn: object): void {
    const controller = new AbortController();
    msg.args.push(controller.signal);
    msg.cancel = { callerSignal: controller.signal, controller, listener: undefined };
    if (msg.reply === undefined) return;
    let byConn = this.#remoteCancels.get(conn);
    if (byConn === undefined) this.#remoteCancels.set(conn, (byConn = new Map()));
    byConn.set(msg.replyId, msg);
  }

  /** A Cancel frame: abort the callee's signal of that call. */
  cancelRemote(conn: object, reqId: number): void {
    const msg = this.#remoteCancels.get(conn)?.get(reqId);
    if (msg === undefined) return;
    this.#forgetRemoteCancel(msg);
    msg.cancel?.controller.abort(new CancelledError('cancelled by the caller'));
    if (msg.via !== undefined) this.#host.abandonRemote(msg, true); // forwarded on: cancel there too
    // The call is settled for nobody: its caller already gave up.
    msg.done = true;
    this.#deadlines.remove(msg);
  }

  #forgetRemoteCancel(msg: Message): void {
    if (msg.cancel === undefined || msg.reply === undefined) return;
    for (const [conn, byConn] of this.#remoteCancels) {
      if (byConn.get(msg.replyId) === msg) {
        byConn.delete(msg.replyId);
        if (byConn.size === 0) this.#remoteCancels.delete(conn);
        return;
      }
    }
  }

  #releaseSignal(msg: Message, abortCallee: boolean): void {
    const c = msg.cancel;
    if (c === undefined) return;
    if (c.listener !== undefined) c.callerSignal.removeEventListener('abort', c.listener);
    c.listener = undefined;
    if (abortCallee && !c.controller.signal.aborted)
      c.controller.abort(new TimeoutError(`call to ${msg.targetId}.${msg.method.name} timed out`));
  }

  /**
   * Stops the deadline sweep (the silo stopped) and fails with `err` every
   * call still waiting, so no caller in this process waits for a deadline that
   * would never be swept. A call tracked later starts the sweep again.
   */
  close(err: unknown): void {
    for (const m of this.#deadlines.close()) this.fail(m, err);
  }
}
