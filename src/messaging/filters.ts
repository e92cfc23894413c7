// Grain call filters (Orleans' IIncomingGrainCallFilter and
// IOutgoingGrainCallFilter): functions around every grain call that see its
// target, method, arguments, result and error, and may short-circuit it
// (authorization) or translate its errors. With none registered the call path
// does not look at them beyond one field.

/** A grain's identity as filters see it (a GrainId). */
export interface GrainId {
  readonly type: string;
  readonly key: string;
}

/** What an incoming filter sees: a call about to run on a grain of this silo, as a turn of that grain. */
export interface IncomingCallContext {
  /** The grain instance the call runs on. */
  readonly grain: object;
  /** The grain's `{ type, key }`. */
  readonly grainId: GrainId;
  /**
   * The method called. Deliveries the runtime makes have their own names:
   * `receiveReminder` for a reminder tick, `$stream` for a batch of stream
   * items, `$channel` for a broadcast channel item.
   */
  readonly method: string;
  /** The arguments; a filter may change them before `invoke()`. */
  readonly args: unknown[];
  /** The call's result once `invoke()` resolved; a filter may set it (also without invoking). */
  result: unknown;
  /**
   * Runs the next filter, and after the last one the grain's method; rejects
   * with the method's error. A filter that never calls it short-circuits the
   * call: the caller gets `result`, or the error the filter throws.
   */
  invoke(): Promise<void>;
}

/** What an outgoing filter sees: a call leaving a grain, a silo or a client. */
export interface OutgoingCallContext {
  /** The called grain's `{ type, key }` (type `$observer` for an observer). */
  readonly target: GrainId;
  /** The method called. */
  readonly method: string;
  /** The arguments; a filter may change them before `invoke()`. */
  readonly args: unknown[];
  /** The grain making the call, if a grain makes it (undefined from a client or the silo itself). */
  readonly source: GrainId | undefined;
  /** The call's result once `invoke()` resolved; a filter may set it (also without invoking). */
  result: unknown;
  /** Sends the call (through the next filter); rejects with the call's error. */
  invoke(): Promise<void>;
}

/** An incoming grain call filter: awaits `ctx.invoke()` to let the call run. */
export type IncomingCallFilter = (ctx: IncomingCallContext) => Promise<void> | void;

/** An outgoing grain call filter: awaits `ctx.invoke()` to send the call. */
export type OutgoingCallFilter = (ctx: OutgoingCallContext) => Promise<void> | void;

/**
 * The chain of filters around one call, and its context. `invoke()` runs the
 * filter at the current stage with the stage moved on, and puts the stage back
 * once that filter is done, so a filter may call `invoke()` again (a retry)
 * and run the rest once more. No async functions: a chain of n filters costs
 * n promise reactions, not 3n.
 */
abstract class FilterChain<F extends (ctx: never) => Promise<void> | void> {
  readonly #filters: readonly F[];
  #stage = 0;
  readonly args: unknown[];
  result: unknown = undefined;
  constructor(filters: readonly F[], args: unknown[]) {
    this.#filters = filters;
    this.args = args;
  }

  /** The call past the last filter: resolves to its result. */
  protected abstract last(): Promise<unknown>;

  invoke(): Promise<void> {
    const s = this.#stage;
    const filters = this.#filters;
    if (s >= filters.length) {
      let p: Promise<unknown>;
      try {
        p = this.last();
      } catch (e) {
        return Promise.reject(e);
      }
      return p.then((v) => {
        this.result = v;
      });
    }
    this.#stage = s + 1;
    let p: Promise<void> | void;
    try {
      p = (filters[s] as unknown as (ctx: this) => Promise<void> | void)(this);
    } catch (e) {
      this.#stage = s;
      return Promise.reject(e);
    }
    if (!(p instanceof Promise)) {
      this.#stage = s;
      return Promise.resolve();
    }
    return p.then(
      () => {
        this.#stage = s;
      },
      (e: unknown) => {
        this.#stage = s;
        throw e;
      },
    );
  }

  /** Runs the whole chain; resolves to the call's result. */
  run(): Promise<unknown> {
    return this.invoke().then(() => this.result);
  }
}

/** An incoming call through its filters; the last step is the grain's method. */
export class IncomingCall extends FilterChain<IncomingCallFilter> implements IncomingCallContext {
  readonly grain: object;
  readonly grainId: GrainId;
  readonly method: string;
  readonly #fn: (...args: unknown[]) => unknown;
  constructor(
    filters: readonly IncomingCallFilter[],
    grain: object,
    grainId: GrainId,
    method: string,
    fn: (...args: unknown[]) => unknown,
    args: unknown[],
  ) {
    super(filters, args);
    this.grain = grain;
    this.grainId = grainId;
    this.method = method;
    this.#fn = fn;
  }

  protected last(): Promise<unknown> {
    const r = this.#fn.apply(this.grain, this.args);
    return r instanceof Promise ? r : Promise.resolve(r);
  }
}

/** An outgoing call through its filters; the last step sends it. */
export class OutgoingCall extends FilterChain<OutgoingCallFilter> implements OutgoingCallContext {
  readonly target: GrainId;
  readonly method: string;
  readonly source: GrainId | undefined;
  readonly #send: (args: unknown[]) => Promise<unknown>;
  constructor(
    filters: readonly OutgoingCallFilter[],
    target: GrainId,
    method: string,
    source: GrainId | undefined,
    args: unknown[],
    send: (args: unknown[]) => Promise<unknown>,
  ) {
    super(filters, args);
    this.target = target;
    this.method = method;
    this.source = source;
    this.#send = send;
  }

  protected last(): Promise<unknown> {
    // Each send gets its own copy of the arguments: the call path may take an AbortSignal off the end.
    return this.#send(this.args.slice());
  }
}
