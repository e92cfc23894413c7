// Observers: objects grains can call through a reference, as if they were
// grains, with no turn discipline (Orleans' CreateObjectReference). A client
// makes them (calls reach it through its gateway); so can a grain or the
// silo's own code, and then they live here, on this silo, until disposed (a
// grain's also end with its activation).
//
// An observer's key says where it lives: `<owner>.<n>@<address>`, where the
// owner is a client id and the address its gateway, or the owner is `silo`
// and the address the silo's.

import { SiloUnavailableError, UnknownMethodError } from '../errors.ts';
import type { SiloInfo } from '../grain/grain.ts';
import type { MethodInfo } from '../grain/options.ts';
import { MessageKind, type Message } from '../messaging/message.ts';
import { copyArgs } from '../serialization/codec.ts';
import type { CodecContext } from '../serialization/symbols.ts';
import { failingTarget, type Target } from './activation.ts';
import type { CallSettler } from './call-tracker.ts';

/** The owner part of the keys of observers that live on a silo. */
export const SILO_OBSERVER_OWNER = 'silo';

const observerMethods = new Map<string, MethodInfo>();
const noop = (): undefined => undefined;

/** Method info for a call by name on an observer (its class is unknown to the silo). */
export function observerMethod(name: string): MethodInfo {
  let m = observerMethods.get(name);
  if (m === undefined)
    observerMethods.set(name, (m = { name, fn: noop, readOnly: false, alwaysInterleave: false, oneWay: false }));
  return m;
}

/** Splits an observer key into owner and address; undefined if malformed. */
export function parseObserverKey(key: string): { owner: string; address: string } | undefined {
  const at = key.lastIndexOf('@');
  const dot = key.lastIndexOf('.', at);
  if (at < 0 || dot <= 0) return undefined;
  return { owner: key.slice(0, dot), address: key.slice(at + 1) };
}

/** A target that fails every call with SiloUnavailableError: observer `key` cannot be reached, for reason `why`. */
export function unreachableObserver(calls: CallSettler, key: string, why: string): Target {
  return failingTarget(calls, () => new SiloUnavailableError(`observer ${key} is unreachable: ${why}`));
}

/** What the observer table needs from the silo. */
export interface ObserverHost {
  readonly siloInfo: SiloInfo;
  readonly calls: CallSettler;
  readonly codecContext: CodecContext;
}

/** The observers that live on this silo. */
export class Observers {
  readonly #host: ObserverHost;
  readonly #objects = new Map<string, object>();
  #seq = 0;

  constructor(host: ObserverHost) {
    this.#host = host;
  }

  /** Observers alive on this silo. */
  get size(): number {
    return this.#objects.size;
  }

  /** Keeps `impl` as an observer; returns its key. */
  create(impl: object): string {
    const key = `${SILO_OBSERVER_OWNER}.${++this.#seq}@${this.#host.siloInfo.address}`;
    this.#objects.set(key, impl);
    return key;
  }

  /** Forgets an observer: later calls to it fail with UnknownMethodError. */
  dispose(key: string): void {
    this.#objects.delete(key);
  }

  /** The target of an observer of this silo; undefined when the key names another place. */
  target(key: string): Target | undefined {
    const where = parseObserverKey(key);
    if (where?.owner !== SILO_OBSERVER_OWNER || where.address !== this.#host.siloInfo.address) return undefined;
    return { live: true, remote: true, receive: (msg: Message) => this.#deliver(key, msg) };
  }

  /** A target that fails every call: the observer cannot be reached from here. */
  unreachable(key: string): Target {
    return unreachableObserver(
      this.#host.calls,
      key,
      `it lives on another silo or client, and silo ${this.#host.siloInfo.address} is not part of a cluster`,
    );
  }

  #deliver(key: string, msg: Message): void {
    const calls = this.#host.calls;
    const impl = this.#objects.get(key) as Record<string, unknown> | undefined;
    const fn = impl?.[msg.method.name];
    if (impl === undefined || typeof fn !== 'function') {
      calls.fail(
        msg,
        new UnknownMethodError(
          impl === undefined
            ? `observer ${key} is disposed or unknown to silo ${this.#host.siloInfo.address}`
            : `observer ${key} has no method '${msg.method.name}'`,
        ),
      );
      return;
    }
    // Arguments from the wire are fresh; a local caller's are copied, as for a grain.
    if (msg.kind !== MessageKind.Inbound) {
      try {
        copyArgs(msg.args, this.#host.codecContext);
      } catch (e) {
        calls.fail(msg, e);
        return;
      }
    }
    Promise.resolve()
      .then(() => (fn as (...a: unknown[]) => unknown).apply(impl, msg.args))
      .then(
        (v) => calls.succeed(msg, v),
        (e: unknown) => calls.fail(msg, e),
      );
  }
}
