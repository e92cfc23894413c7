// A request on its way to a grain, and the caller's pending promise. One
// object carries the call from the reference to the mailbox and back, and is
// also its own node in the deadline queue, so a call allocates little.

import type { CallerContext, ChainNode } from './call-chain.ts';
import type { ContextValues } from './request-context.ts';

let capturedResolve: ((v: unknown) => void) | undefined;
let capturedReject: ((e: unknown) => void) | undefined;
function capture(res: (v: unknown) => void, rej: (e: unknown) => void): void {
  capturedResolve = res;
  capturedReject = rej;
}

const noop = (): void => {};

/**
 * What a message is, which decides how it is settled:
 * - `Call`: a call made in this process; the caller awaits its promise, and a
 *   result is copied into the caller's context.
 * - `Outbound`: a `Call` sent to another silo; its result arrives decoded, a
 *   fresh copy already.
 * - `Inbound`: a call that came over the wire; its outcome goes back as a
 *   response frame.
 * - `OneWay`: nobody waits (a one-way method, or a one-way request from the wire).
 * - `Tick`: a timer's turn; its outcome goes to the timer.
 */
export const MessageKind = {
  Call: 0,
  Outbound: 1,
  Inbound: 2,
  OneWay: 3,
  Tick: 4,
} as const;
export type MessageKind = (typeof MessageKind)[keyof typeof MessageKind];

/**
 * The method a message calls, as the mailbox (interleaving rules, the turn)
 * and the wire (name, one-way) read it. A grain type's MethodInfo is one.
 */
export interface MessageMethod {
  readonly name: string;
  readonly fn: (...args: unknown[]) => unknown;
  readonly readOnly: boolean;
  readonly alwaysInterleave: boolean;
  readonly oneWay: boolean;
}

/** Cancellation state of a call that was given an AbortSignal. */
export interface CallCancellation {
  readonly callerSignal: AbortSignal;
  readonly controller: AbortController;
  listener: (() => void) | undefined;
}

/** The timer a tick message belongs to. */
export interface TickOwner {
  /** Ticks count as use of the activation. */
  readonly keepAlive: boolean;
  /** The tick's turn ended, with the error it threw if any. */
  tickDone(error: unknown): void;
}

/** Where the responses to calls that came over one connection go. */
export interface RemoteReply {
  /** Sends the response frame; `status` as in the protocol. */
  respond(reqId: number, status: number, value: unknown): void;
  /** Tells the caller that the grain lives elsewhere. */
  relocated(targetId: string, address: string): void;
}

/** A call: target, method, arguments, chain, deadline, and the caller's promise. */
// Fields are `declare`d and set in the constructor only: one shape, no define-semantics cost per call.
export class Message {
  /** What the message is; see MessageKind. `Call` becomes `Outbound` once sent to another silo. */
  declare kind: MessageKind;
  /** `type/key` of the target. */
  declare readonly targetId: string;
  declare readonly method: MessageMethod;
  declare readonly args: unknown[];
  /** Grains waiting on this call, innermost first; undefined for calls from outside any grain. */
  declare readonly chain: ChainNode | undefined;
  /** Where the result goes: references in it are bound to this context. */
  declare readonly caller: CallerContext | undefined;
  declare readonly timeoutMs: number;
  /** The deadline tracker's sweep count when the call was made. */
  declare epoch: number;
  declare resolve: (v: unknown) => void;
  declare reject: (e: unknown) => void;
  /** Settled (result, error, timeout or cancel): later outcomes are dropped. */
  declare done: boolean;
  /** Forwarding hops taken (deactivated or moved targets). */
  declare hops: number;
  declare cancel: CallCancellation | undefined;
  /** The timer of a `Tick`. */
  declare tick: TickOwner | undefined;
  /** A call that came over the wire: where its response goes. */
  declare reply: RemoteReply | undefined;
  /** The caller's request id of a call that came over the wire. */
  declare replyId: number;
  /** The request context the call carries (see RequestContext). */
  declare context: ContextValues | undefined;
  /** A call sent over the wire: the silo it went to, and its request id there. */
  declare via: string | undefined;
  declare reqId: number;
  /**
   * When the call reached its activation (`performance.now()`), for a call the
   * silo's metrics time (negated for a sampled one); 0 for the others.
   */
  declare arrivedAt: number;
  // Deadline queue links.
  declare prev: Message | undefined;
  declare next: Message | undefined;

  constructor(
    kind: MessageKind,
    targetId: string,
    method: MessageMethod,
    args: unknown[],
    chain: ChainNode | undefined,
    caller: CallerContext | undefined,
    timeoutMs: number,
  ) {
    this.kind = kind;
    this.targetId = targetId;
    this.method = method;
    this.args = args;
    this.chain = chain;
    this.caller = caller;
    this.timeoutMs = timeoutMs;
    this.epoch = 0;
    this.resolve = noop;
    this.reject = noop;
    this.done = false;
    this.hops = 0;
    this.cancel = undefined;
    this.tick = undefined;
    this.reply = undefined;
    this.replyId = 0;
    this.context = undefined;
    this.via = undefined;
    this.reqId = 0;
    this.arrivedAt = 0;
    this.prev = undefined;
    this.next = undefined;
  }

  /** Creates the caller's promise and keeps its settle functions here. */
  promise(): Promise<unknown> {
    const p = new Promise(capture);
    this.resolve = capturedResolve as (v: unknown) => void;
    this.reject = capturedReject as (e: unknown) => void;
    return p;
  }
}
