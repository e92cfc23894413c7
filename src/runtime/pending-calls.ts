// The calls a silo sent to other silos and waits on, by request id. Request ids
// are handed out in sequence, so a table indexed by the id's low bits holds them
// with few collisions (linear probing, deletion by backward shift), in arrays
// allocated once: no allocation per call, and none of a Map's rehashing as calls
// come and go (a Map of 1,000 calls in flight reallocated its table every few
// thousand calls).

/** Request ids (not 0) to values, for one caller's calls in flight. */
export class PendingCalls<T> {
  #ids: Uint32Array;
  #values: (T | undefined)[];
  #mask: number;
  #size = 0;

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

  /** The slot of `id` (a request id drops its low bit: ids are even, or even plus a flag). */
  #home(id: number): number {
    return (id >>> 1) & this.#mask;
  }

  #find(id: number): number {
    const ids = this.#ids;
    const mask = this.#mask;
    for (let i = this.#home(id); ; i = (i + 1) & mask) {
      const k = ids[i] as number;
      if (k === id) return i;
      if (k === 0) return -1;
    }
  }

  get(id: number): T | undefined {
    const i = this.#find(id >>> 0);
    return i < 0 ? undefined : this.#values[i];
  }

  /** Adds or replaces; `id` must not be 0. */
  set(id: number, value: T): void {
    id >>>= 0;
    if (id === 0) throw new RangeError('request id 0 is not a request id');
    if ((this.#size + 1) * 2 > this.#ids.length) this.#grow();
    const ids = this.#ids;
    const mask = this.#mask;
    let i = this.#home(id);
    for (;;) {
      const k = ids[i] as number;
      if (k === id) {
        this.#values[i] = value;
        return;
      }
      if (k === 0) break;
      i = (i + 1) & mask;
    }
    ids[i] = id;
    this.#values[i] = value;
    this.#size++;
  }

  /** Removes `id` and returns its value, if it was there. */
  take(id: number): T | undefined {
    const i = this.#find(id >>> 0);
    if (i < 0) return undefined;
    const value = this.#values[i];
    this.#removeAt(i);
    return value;
  }

  delete(id: number): boolean {
    const i = this.#find(id >>> 0);
    if (i < 0) return false;
    this.#removeAt(i);
    return true;
  }

  /** A snapshot of the entries: the table may change while it is read. */
  entries(): [number, T][] {
    const out: [number, T][] = [];
    const ids = this.#ids;
    for (let i = 0; i < ids.length; i++) if (ids[i] !== 0) out.push([ids[i] as number, this.#values[i] as T]);
    return out;
  }

  clear(): void {
    this.#ids.fill(0);
    this.#values.fill(undefined);
    this.#size = 0;
  }

  /** Empties slot `i`, moving later entries of its probe run back so that every entry stays reachable. */
  #removeAt(i: number): void {
    const ids = this.#ids;
    const values = this.#values;
    const mask = this.#mask;
    let hole = i;
    for (let j = (i + 1) & mask; ids[j] !== 0; j = (j + 1) & mask) {
      const home = this.#home(ids[j] as number);
      // The entry at j may move to the hole unless its home lies cyclically in (hole, j].
      const stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
      if (stays) continue;
      ids[hole] = ids[j] as number;
      values[hole] = values[j];
      hole = j;
    }
    ids[hole] = 0;
    values[hole] = undefined;
    this.#size--;
  }

  #grow(): void {
    const oldIds = this.#ids;
    const oldValues = this.#values;
    const n = oldIds.length * 2;
    this.#ids = new Uint32Array(n);
    this.#values = new Array<T | undefined>(n).fill(undefined);
    this.#mask = n - 1;
    this.#size = 0;
    for (let i = 0; i < oldIds.length; i++) if (oldIds[i] !== 0) this.set(oldIds[i] as number, oldValues[i] as T);
  }
}
