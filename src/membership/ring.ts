// The consistent-hash ring of active silos, part of the membership view the
// rest of the runtime subscribes to. Grain ids hash onto a 32-bit ring; each
// silo holds several points on it, and owns the arc that ends at each of its
// points. The directory partitions and the reminder ranges follow this ring,
// so every silo with the same view computes the same owner.

import { hash32 } from '../hash.ts';

/** Points each silo holds on the ring; more points, more even partitions. */
export const POINTS_PER_SILO = 32;

/** An immutable ring over a set of silos (by silo id). */
export class Ring {
  /** Silo ids on the ring, sorted. */
  readonly members: readonly string[];
  readonly #points: Uint32Array;
  readonly #owners: string[];

  constructor(members: Iterable<string>) {
    this.members = [...new Set(members)].sort();
    const pts: Array<[number, string]> = [];
    for (const m of this.members) {
      for (let i = 0; i < POINTS_PER_SILO; i++) pts.push([hash32(`${m}#${i}`), m]);
    }
    // Ties (vanishingly rare) break by silo id so every silo orders them alike.
    pts.sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
    this.#points = Uint32Array.from(pts, (p) => p[0]);
    this.#owners = pts.map((p) => p[1]);
  }

  /** The ring's points in order, each as [position, owner]. */
  get points(): ReadonlyArray<readonly [number, string]> {
    return Array.from(this.#points, (p, i) => [p, this.#owners[i] as string] as const);
  }

  /** Number of silos. */
  get size(): number {
    return this.members.length;
  }

  /** The silo owning ring position `h`: the first point at or after it, wrapping around. */
  ownerOfHash(h: number): string | undefined {
    const pts = this.#points;
    const n = pts.length;
    if (n === 0) return undefined;
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((pts[mid] as number) < h) lo = mid + 1;
      else hi = mid;
    }
    return this.#owners[lo === n ? 0 : lo];
  }

  /** The silo owning a key (a grain id string). */
  ownerOf(key: string): string | undefined {
    return this.ownerOfHash(hash32(key));
  }

  /** The `count` silos after `member` on the ring (by its first point), for probing neighbours. */
  successors(member: string, count: number): string[] {
    const ms = this.members;
    const i = ms.indexOf(member);
    const out: string[] = [];
    if (i < 0) return out;
    for (let k = 1; k < ms.length && out.length < count; k++) out.push(ms[(i + k) % ms.length] as string);
    return out;
  }
}
