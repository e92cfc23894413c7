// The calls a silo (or a client) sent and waits on, by request id. Request ids
// are handed out in sequence, so each goes to the slot its low bits name, in
// arrays allocated once: no allocation per call, and none of a Map's rehashing
// as calls come and go (a Map of 1,000 calls in flight reallocated its table
// every few thousand calls). An id whose slot is still taken (a call that has
// waited while as many newer ones were made as there are slots) goes to a Map
// on the side. (Linear probing was tried first: with ids in sequence every call
// in flight forms one run, and each removal scanned all of it.)

import { ProtocolError } from '../errors.ts';

/** Request ids (not 0) to values, for one caller's calls in flight. */
export class PendingCalls<T> {
  #ids: Uint32Array;
  #values: (T | undefined)[];
  #mask: number;
  #size = 0;
  /** Ids whose slot was taken when they came. */
  #overflow: Map<number, T> | undefined;

  constructor(capacity = 1024) {
    let n = 16;
    while (n < capacity) n *= 2;
    this.#ids = new Uint32Array(n);
    this.#values = new Array<T | undefined>(n).fill(undefined);
    this.#mask = n - 1;
  }

  get size(): number {
    return this.#size;
  }

  /** The slot of `id`: a request id drops its low bit (ids are even, or even plus a flag). */
  #slot(id: number): number {
    return (id >>> 1) & this.#mask;
  }

  get(id: number): T | undefined {
    id >>>= 0;
    const i = this.#slot(id);
    if (this.#ids[i] === id) return this.#values[i];
    return this.#overflow?.get(id);
  }

  /** Adds or replaces; `id` must not be 0. */
  set(id: number, value: T): void {
    id >>>= 0;
    if (id === 0) throw new ProtocolError('request id 0 is not a request id');
    const i = this.#slot(id);
    const k = this.#ids[i] as number;
    if (k === id) {
      this.#values[i] = value;
      return;
    }
    if (this.#overflow?.has(id) === true) {
      this.#overflow.set(id, value);
      return;
    }
    if ((this.#size + 1) * 2 > this.#ids.length) {
      this.#grow();
      this.set(id, value);
      return;
    }
    if (k === 0) {
      this.#ids[i] = id;
      this.#values[i] = value;
    } else (this.#overflow ??= new Map()).set(id, value);
    this.#size++;
  }

  /** Removes `id` and returns its value, if it was there. */
  take(id: number): T | undefined {
    id >>>= 0;
    const i = this.#slot(id);
    if (this.#ids[i] === id) {
      const value = this.#values[i];
      this.#ids[i] = 0;
      this.#values[i] = undefined;
      this.#size--;
      return value;
    }
    const overflow = this.#overflow;
    if (overflow === undefined) return undefined;
    const value = overflow.get(id);
    if (value === undefined && !overflow.has(id)) return undefined;
    overflow.delete(id);
    this.#size--;
    return value;
  }

  delete(id: number): boolean {
    id >>>= 0;
    const i = this.#slot(id);
    if (this.#ids[i] === id) {
      this.#ids[i] = 0;
      this.#values[i] = undefined;
      this.#size--;
      return true;
    }
    if (this.#overflow?.delete(id) !== true) return false;
    this.#size--;
    return true;
  }

  /** A snapshot of the entries: the table may change while it is read. */
  entries(): [number, T][] {
    const out: [number, T][] = [];
    const ids = this.#ids;
    for (let i = 0; i < ids.length; i++) if (ids[i] !== 0) out.push([ids[i] as number, this.#values[i] as T]);
    if (this.#overflow !== undefined) for (const e of this.#overflow) out.push(e);
    return out;
  }

  clear(): void {
    this.#ids.fill(0);
    this.#values.fill(undefined);
    this.#overflow = undefined;
    this.#size = 0;
  }

  #grow(): void {
    const entries = this.entries();
    const n = this.#ids.length * 2;
    this.#ids = new Uint32Array(n);
    this.#values = new Array<T | undefined>(n).fill(undefined);
    this.#mask = n - 1;
    this.#overflow = undefined;
    this.#size = 0;
    for (const [id, value] of entries) this.set(id, value);
  }
}
