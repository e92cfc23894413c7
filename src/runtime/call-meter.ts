// What a silo with metrics on counts of its grains, per grain type: the calls
// its activations ran (by method, failures by code), how long they took from
// reaching the activation to their outcome, and activations made and ended.
// Plain fields, read by the metrics endpoint at scrape time. A silo without
// metrics has no meter: its activations settle calls on the tracker directly
// and read no clock.
//
// Reading the clock costs about as much as the rest of a local call (two
// reads per timed call), so past a type's first calls only one in
// LATENCY_SAMPLE is timed, and counts for LATENCY_SAMPLE in the histogram:
// its count and sum stay estimates of all calls, within a few calls.

import type { DeactivationReason } from '../grain/grain.ts';
import type { GrainTypeInfo } from '../grain/options.ts';
import { MessageKind, type Message, type MessageMethod } from '../messaging/message.ts';
import { CALL_LATENCY_BUCKETS, CountsBy, LatencyHistogram, failureCode } from '../observability/stats.ts';
import type { CallMeter } from './activation.ts';
import type { CallSettler } from './call-tracker.ts';

/** Calls of a type whose latency is all timed, before sampling begins. */
export const LATENCY_EXACT_FIRST = 64;
/** Then one call in this many is timed (a power of two). */
export const LATENCY_SAMPLE = 8;

/** The calls of one method of one grain type that ran on this silo. */
export interface MethodCounts {
  readonly name: string;
  /** Calls settled, failed ones included. */
  calls: number;
  /** Failed calls by error code; made on the first failure. */
  failures: CountsBy | undefined;
}

/**
 * The meter of one grain type on one silo. It is the activations' call
 * settler: it counts a call's outcome, then hands it on to the tracker.
 * Timer ticks are not calls: they pass through uncounted.
 */
export class TypeMeter implements CallMeter {
  readonly type: string;
  readonly #inner: CallSettler;
  readonly #methods = new Map<MessageMethod, MethodCounts>();
  /** From reaching the activation (its mailbox included) to the outcome. */
  readonly latency = new LatencyHistogram(CALL_LATENCY_BUCKETS);
  /** Activations that became ready for calls. */
  activated = 0;
  /** Activations whose construction, state load or onActivate failed. */
  failedToActivate = 0;
  /** Activations deactivated, by reason (`idle` is idle collection). */
  readonly deactivated = new CountsBy();
  /** Calls that reached an activation of the type: which to time. */
  #arrivals = 0;
  // The method of the last call: consecutive calls to one method skip the map.
  #lastMethod: MessageMethod | undefined;
  #lastCounts: MethodCounts | undefined;

  constructor(type: string, inner: CallSettler) {
    this.type = type;
    this.#inner = inner;
  }

  /** Counts per method, those called at least once. */
  methods(): IterableIterator<MethodCounts> {
    return this.#methods.values();
  }

  /**
   * A call reached its activation: stamps it if it is one to time. A stamp
   * below zero marks a sample standing for LATENCY_SAMPLE calls.
   */
  arrived(msg: Message): void {
    if (msg.kind === MessageKind.Tick) return;
    const n = ++this.#arrivals;
    if (n <= LATENCY_EXACT_FIRST) msg.arrivedAt = performance.now();
    else if ((n & (LATENCY_SAMPLE - 1)) === 0) msg.arrivedAt = -performance.now();
  }

  succeed(msg: Message, value: unknown): void {
    if (msg.kind !== MessageKind.Tick) this.#settled(msg).calls++;
    this.#inner.succeed(msg, value);
  }

  fail(msg: Message, err: unknown): void {
    if (msg.kind !== MessageKind.Tick) {
      const c = this.#settled(msg);
      c.calls++;
      (c.failures ??= new CountsBy()).add(failureCode(err));
    }
    this.#inner.fail(msg, err);
  }

  #settled(msg: Message): MethodCounts {
    const at = msg.arrivedAt;
    if (at > 0) this.latency.observe(performance.now() - at);
    else if (at < 0) this.latency.observe(performance.now() + at, LATENCY_SAMPLE);
    const m = msg.method;
    if (m === this.#lastMethod) return this.#lastCounts as MethodCounts;
    let c = this.#methods.get(m);
    if (c === undefined) this.#methods.set(m, (c = { name: m.name, calls: 0, failures: undefined }));
    this.#lastMethod = m;
    this.#lastCounts = c;
    return c;
  }
}

/** The meters of one silo's grain types. */
export class CallMeters {
  readonly #inner: CallSettler;
  readonly #byType = new Map<string, TypeMeter>();

  /** `inner` settles the calls once counted: the silo's call tracker. */
  constructor(inner: CallSettler) {
    this.#inner = inner;
  }

  /** The meter of `type`, made on first use. */
  of(type: GrainTypeInfo): TypeMeter {
    let m = this.#byType.get(type.name);
    if (m === undefined) this.#byType.set(type.name, (m = new TypeMeter(type.name, this.#inner)));
    return m;
  }

  /** Every type's meter. */
  all(): IterableIterator<TypeMeter> {
    return this.#byType.values();
  }

  deactivated(type: GrainTypeInfo, reason: DeactivationReason): void {
    this.of(type).deactivated.add(reason);
  }
}
