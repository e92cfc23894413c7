// The Grain base class. A grain is a plain class that extends Grain; the
// runtime constructs it and hands it its activation context, through which
// every member below reaches the hosting silo. The types of references to
// grains (GrainRef) live here too: they are computed from Grain's members.

import type { ReminderInfo, ReminderOptions } from '../reminders/info.ts';
import { GrainConstructedError } from '../errors.ts';
import type { GrainId } from './identity.ts';
import type { PersistentState, PersistentStateOptions } from '../storage/persistent-state.ts';
import type { StorageProvider } from '../storage/provider.ts';
import type { BroadcastChannel, Stream, StreamId, StreamToken } from '../streams/types.ts';
import type { JournalBinding } from '../journal/log.ts';
import type { ReservedMethod } from './options.ts';
import type { JOURNALED, JournaledGrainMember } from '../journal/members.ts';

/** Why an activation is being deactivated. */
export type DeactivationReason = 'idle' | 'requested' | 'shutdown' | 'error';

/** A read-only view of the hosting silo. */
export interface SiloInfo {
  /** `host:port` of the silo. */
  readonly address: string;
  readonly clusterId: string;
  /** `host:port` of this silo's gateway for clients, if it has one. */
  readonly gatewayAddress?: string | null;
}

/** Options of `registerTimer`. */
export interface TimerOptions {
  /** Delay before the first tick, in ms. Default 0. */
  dueMs?: number;
  /** Period between the end of one tick and the next, in ms; 0 or absent: one tick only. */
  periodMs?: number;
  /** Let ticks interleave with calls, as `@alwaysInterleave` would. Default false. */
  interleave?: boolean;
  /** Ticks count as use, so the grain is not collected while its timer runs. Default false. */
  keepAlive?: boolean;
}

/** A registered timer. */
export interface TimerHandle {
  dispose(): void;
}

/** A grain class: extends Grain, constructed by the runtime only. */
export type GrainClass<T extends Grain = Grain> = (new () => T) & { grainOptions?: unknown };

/** Per-call options, set with `ref.withOptions(...)`. */
export interface CallOptions {
  /** Deadline of each call made through the reference, in ms. Default: the silo's `responseTimeoutMs`. */
  timeoutMs?: number;
}

/** Names no reference offers: Grain's members, the reserved methods, and JournaledGrain's members on a journaled grain. */
type NotOnRef<T> =
  keyof Grain | ReservedMethod | (T extends { readonly [JOURNALED]: true } ? JournaledGrainMember : never);

type MethodKeys<T> = {
  [K in keyof T]-?: K extends NotOnRef<T>
    ? never
    : K extends string
      ? T[K] extends (...args: any[]) => any
        ? K
        : never
      : never;
}[keyof T];

/** Members every reference has, beside the grain's methods. */
export interface GrainRefBase<T> {
  /** The referenced grain's `{ type, key }`. */
  readonly id: GrainId;
  /** The same reference with other call options. */
  withOptions(options: CallOptions): GrainRef<T>;
}

/**
 * A reference to a grain of class T: every public method of T that is not a
 * Grain member, a reserved method (`RESERVED_METHODS`: `receiveReminder`,
 * `onStreamItem`...) or, on a JournaledGrain, one of its members, each
 * returning a promise of its awaited result.
 */
export type GrainRef<T> = {
  readonly [K in MethodKeys<T>]: T[K] extends (...args: infer A) => infer R
    ? (...args: A) => Promise<Awaited<R>>
    : never;
} & GrainRefBase<T>;

/**
 * An observer: a reference that grains call like a grain's, whose calls reach
 * an object in the client, grain or silo that made it; `dispose()` ends it.
 */
export type ObserverRef<T> = GrainRef<T> & { dispose(): void };

/** Any grain class, as lists of them take (`TestCluster`'s `grains`): a class that does not extend Grain does not compile. */
export type AnyGrainClass = GrainClass<Grain>;

/** What an activation gives its grain instance. Implemented by the runtime. */
export interface GrainContext {
  readonly id: GrainId;
  readonly silo: SiloInfo;
  getGrain(type: GrainClass | string, key: string): unknown;
  createObserver(impl: object): unknown;
  persistentState<T>(name: string, options: PersistentStateOptions<T>): PersistentState<T>;
  /** Binds a JournaledGrain to its event log; `load` runs before onActivate, with the persistent states. */
  journal(load: () => Promise<void>): JournalBinding;
  registerTimer(callback: () => unknown, options: TimerOptions): TimerHandle;
  registerReminder(name: string, options: ReminderOptions): Promise<ReminderInfo>;
  unregisterReminder(name: string): Promise<boolean>;
  getReminders(): Promise<ReminderInfo[]>;
  deactivateOnIdle(): void;
  delayDeactivation(ms: number): void;
  /** The silo's streams as this grain sees them. */
  streams(): GrainStreams;
  /** A handle to a broadcast channel. */
  getChannel(namespace: string, key: string): BroadcastChannel<unknown>;
}

/** The silo's stream service as a grain's context offers it. */
export interface GrainStreams {
  /** A handle to a stream; subscriptions made through it belong to this grain. */
  getStream(provider: string, namespace: string, key: string): Stream<unknown>;
  /** What the rendezvous grain needs to know of stream provider `provider`; a clear error if there is none. */
  provider(provider: string): {
    readonly kind: string;
    readonly rewind: boolean;
    readonly delivery: { readonly pubSubPageSize: number; readonly implicitOnly: ReadonlySet<string> };
  };
  /** Starts the replay of a new subscription's history (the rendezvous grain's, on rewind). */
  requestReplay(stream: StreamId, subscription: string, from: StreamToken): Promise<void>;
  /** The storage provider keeping the pub-sub records of stream provider `provider` (the rendezvous grain's). */
  pubSubStorage(provider: string): StorageProvider;
}

let constructing: GrainContext | undefined;
let contextOf: (grain: Grain) => GrainContext;

/** The context of a grain instance. Framework base classes (JournaledGrain) only; not exported from `granary`. */
export function grainContext(grain: Grain): GrainContext {
  return contextOf(grain);
}

/** Constructs a grain instance bound to `ctx`. Runtime use only. */
export function constructGrain<T extends Grain>(cls: new () => T, ctx: GrainContext): T {
  const prev = constructing;
  constructing = ctx;
  try {
    return new cls();
  } finally {
    constructing = prev;
  }
}

/** The base class of every grain. Its public async methods are its interface. */
export abstract class Grain {
  readonly #ctx: GrainContext;

  static {
    contextOf = (grain) => grain.#ctx;
  }

  constructor() {
    const ctx = constructing;
    if (ctx === undefined) {
      throw new GrainConstructedError(
        `${new.target.name} is a grain: it is never constructed by user code; get a reference with getGrain(${new.target.name}, key)`,
      );
    }
    constructing = undefined;
    this.#ctx = ctx;
  }

  /** The grain's string key. */
  get key(): string {
    return this.#ctx.id.key;
  }

  /** The grain's identity, printable as `type/key`. */
  get id(): GrainId {
    return this.#ctx.id;
  }

  /** The hosting silo. */
  get silo(): SiloInfo {
    return this.#ctx.silo;
  }

  /** A reference to another grain, by class or by type name. */
  getGrain<T extends Grain>(type: GrainClass<T>, key: string): GrainRef<T>;
  getGrain<T>(type: string, key: string): GrainRef<T>;
  getGrain(type: GrainClass | string, key: string): unknown {
    return this.#ctx.getGrain(type, key);
  }

  /**
   * Makes `impl` an observer other grains can call through the returned
   * reference (hand it to them as an argument). It lives on this silo and
   * ends with this activation, or sooner with `dispose()`.
   */
  createObserver<T extends object>(impl: T): ObserverRef<T> {
    return this.#ctx.createObserver(impl) as ObserverRef<T>;
  }

  /** Declares a persistent state, read from storage before `onActivate` runs. */
  persistentState<T>(name: string, options: PersistentStateOptions<T>): PersistentState<T> {
    return this.#ctx.persistentState(name, options);
  }

  /** An in-memory timer whose ticks are turns of this grain. */
  registerTimer(callback: () => unknown, options: TimerOptions = {}): TimerHandle {
    return this.#ctx.registerTimer(callback, options);
  }

  /**
   * Registers (or replaces) a durable reminder: it fires `receiveReminder(name,
   * tick)` on this grain every `periodMs` from `dueMs` from now, activating the
   * grain if needed, whichever silo is up, until it is unregistered. The
   * grain class must have a `receiveReminder` method.
   */
  registerReminder(name: string, options: ReminderOptions): Promise<ReminderInfo> {
    return this.#ctx.registerReminder(name, options);
  }

  /** Removes a durable reminder; resolves to false if there was none of that name. */
  unregisterReminder(name: string): Promise<boolean> {
    return this.#ctx.unregisterReminder(name);
  }

  /** This grain's durable reminders. */
  getReminders(): Promise<ReminderInfo[]> {
    return this.#ctx.getReminders();
  }

  /** Deactivates this activation once the current turn ends. */
  deactivateOnIdle(): void {
    this.#ctx.deactivateOnIdle();
  }

  /** Keeps this activation alive for at least `ms`, whatever its idle time. */
  delayDeactivation(ms: number): void {
    this.#ctx.delayDeactivation(ms);
  }

  /**
   * A handle to stream `key` in `namespace` of stream provider `provider`.
   * Subscriptions made through it belong to this grain and outlive its
   * activation (see `Stream.subscribe`).
   */
  getStream<T>(provider: string, namespace: string, key: string): Stream<T> {
    return this.#ctx.streams().getStream(provider, namespace, key) as Stream<T>;
  }

  /**
   * A handle to broadcast channel `key` of `namespace`: `publish(item)` sends
   * it to the grains implicitly subscribed to the namespace, fire and forget.
   */
  getChannel<T>(namespace: string, key: string): BroadcastChannel<T> {
    return this.#ctx.getChannel(namespace, key) as BroadcastChannel<T>;
  }

  /** Runs before the first call is let in. A throw fails that call and discards the activation. */
  async onActivate(): Promise<void> {}

  /** Runs when the activation is deactivated. */
  async onDeactivate(_reason: DeactivationReason): Promise<void> {}
}
