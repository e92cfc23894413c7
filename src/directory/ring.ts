// The consistent-hash ring of active silos. Grain ids hash onto a 32-bit ring;
// each silo holds several points on it, and owns the arc that ends at each of
// its points. The directory partitions, and later the reminder ranges, follow
// this ring, so every silo with the same view computes the same owner.

/** MurmurHash3 (x86, 32-bit) of a string's UTF-16 code units. Stable across processes. */
export function hash32(s: string, seed = 0): number {
  let h = seed >>> 0;
  const n = s.length;
  let i = 0;
  for (; i + 1 < n; i += 2) {
    let k = (s.charCodeAt(i) | (s.charCodeAt(i + 1) << 16)) >>> 0;
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  if (i < n) {
    let k = s.charCodeAt(i);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  h ^= n * 2;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

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
