// The call chain: which grains are waiting on a call, innermost first. A
// reference reads it from where it is used (CallerContext), the request
// carries it, and the callee's mailbox checks it for deadlocks.

import type { CodecContext } from '../serialization/symbols.ts';

/** The call chain of a waiting call, as a linked list of grain ids (innermost first). */
export interface ChainNode {
  readonly id: string;
  readonly parent: ChainNode | undefined;
  /** The turn of grain `id` that made the call, when known (same silo). */
  readonly turn?: unknown;
  /** Made in this process: without a turn it was made outside any turn (onActivate, onDeactivate). */
  readonly local?: boolean;
  /** `id` as a request header writes it (u16 length, UTF-8), when the activation keeps it. */
  readonly bytes?: Uint8Array;
}

/**
 * Where a reference is used from: an activation (for call chains), or nothing
 * (a client). References in results are revived bound to it.
 */
export interface CallerContext extends CodecContext {
  /** The chain of the caller's current turn, extended by the caller itself. */
  callChain(): ChainNode | undefined;
}

/** True when `id` is among the waiting grains of `chain`. */
export function chainContains(chain: ChainNode | undefined, id: string): boolean {
  for (let n = chain; n !== undefined; n = n.parent) if (n.id === id) return true;
  return false;
}

/** The chain as printed grain ids, outermost first, ending with `last`. */
export function chainPath(chain: ChainNode | undefined, last: string): string[] {
  const out: string[] = [last];
  for (let n = chain; n !== undefined; n = n.parent) out.push(n.id);
  return out.reverse();
}
