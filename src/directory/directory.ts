// The distributed grain directory. The ring of active and leaving silos (the
// view's `directoryRing`) partitions grain ids; the owner of a grain's
// partition holds its entry, and registration is first writer wins, so
// concurrent first calls from every silo end in one activation. Each silo
// caches where grains live and corrects the cache when it proves stale. On a
// view change, entries move to their new owners, and every silo re-registers
// the activations whose owner changed, which also rebuilds the entries a
// crashed owner held. A silo that stops gracefully keeps its partition while it
// drains, then hands it over in one step (`handOffAll`), telling every other
// silo that it owns nothing from then on; calls that still reach it are
// forwarded to the new owners until the others see it gone.

import { SiloUnavailableError } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';
import { emptyView, type ClusterView } from '../membership/service.ts';
import { Ring } from '../membership/ring.ts';
import { type SystemCaller, type SystemCallHandlers, type WireDirectoryEntry } from '../messaging/system-calls.ts';

/** Where one activation of a grain lives. `activation` tells incarnations on one silo apart. */
export interface DirectoryEntry {
  readonly address: string;
  readonly activation: number;
}

/** How the directory reaches other silos. */
export interface DirectoryTransport {
  /**
   * Makes a system call on another silo (see `systemCalls`). The directory
   * checks every result against the table before it uses it.
   */
  call: SystemCaller;
  /** Re-reads the membership table (our view may be behind). */
  refresh(): Promise<void>;
}

/** The directory part of one silo: its partition and its cache. */
export class GrainDirectory {
  readonly #self: string;
  readonly #partition = new Map<string, DirectoryEntry>();
  readonly #cache = new Map<string, string>();
  readonly #net: DirectoryTransport;
  /** System calls, typed and with their results checked. */
  readonly #call: SystemCaller;
  readonly #logger: Logger;
  #view: ClusterView;
  /** The ring this directory routes by: the view's directory ring without the silos that handed over. */
  #ring: Ring;
  /**
   * Leaving silos that handed their whole partition over (told us so): they own nothing now.
   * By address; the value is the silo's id if it was still active in our view when it told
   * us (our view lagged), so that a new incarnation on the address is told apart.
   */
  readonly #handedOver = new Map<string, string | undefined>();
  /** Whether this silo handed its partition over (late in its graceful stop). */
  #left = false;
  /**
   * Changes whenever a cached location may have changed (a cache line set, changed
   * or dropped, a new view): a route kept on a grain reference is good while this
   * holds the value it had when the route was taken.
   */
  routeVersion = 0;

  constructor(self: string, net: DirectoryTransport, logger: Logger) {
    this.#self = self;
    this.#net = net;
    this.#call = net.call;
    this.#logger = logger;
    this.#view = emptyView();
    this.#ring = this.#view.directoryRing;
  }

  /** Whether this silo has handed its partition over: it owns nothing, and forwards directory calls. */
  get left(): boolean {
    return this.#left;
  }

  /** The directory ring of the view, without the silos (this one too) that handed their partitions over. */
  #ownersRing(): Ring {
    const ring = this.#view.directoryRing;
    const gone = (m: string): boolean => (m === this.#self ? this.#left : this.#handedOver.has(m));
    return ring.members.some(gone) ? new Ring(ring.members.filter((m) => !gone(m))) : ring;
  }

  /** Entries this silo holds as owner (for tests and metrics). */
  get partitionSize(): number {
    return this.#partition.size;
  }

  /** The owner of a grain's entry under the current view. */
  ownerOf(grain: string): string | undefined {
    return this.#ring.ownerOf(grain);
  }

  /** Where the cache says a grain lives. */
  cached(grain: string): string | undefined {
    return this.#cache.get(grain);
  }

  cache(grain: string, address: string): void {
    if (address === this.#self) {
      if (this.#cache.delete(grain)) this.routeVersion++;
    } else if (this.#cache.get(grain) !== address) {
      this.#cache.set(grain, address);
      this.routeVersion++;
    }
  }

  invalidate(grain: string, address?: string): void {
    if ((address === undefined || this.#cache.get(grain) === address) && this.#cache.delete(grain)) this.routeVersion++;
  }

  /**
   * Registers an activation; resolves to the entry that won, which is `entry`
   * itself unless another live activation registered first.
   */
  async register(grain: string, entry: DirectoryEntry): Promise<DirectoryEntry> {
    let last: unknown;
    for (let attempt = 0; attempt < 10; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, Math.min(400, 25 * 2 ** (attempt - 1))));
      const owner = this.ownerOf(grain);
      if (owner === undefined || owner === this.#self) return this.registerLocal(grain, entry, false);
      try {
        const won = await this.#call(owner, 'dir.register', [grain, entry.address, entry.activation]);
        if (won !== null) return { address: won[0], activation: won[1] };
        // The owner's view and ours differ (a silo just joined or died): both re-read the table, then retry.
        last = new SiloUnavailableError(`silo ${owner} does not own ${grain} in its view of the cluster`);
        await Promise.all([this.#net.refresh(), this.#call(owner, 'refresh', []).catch(() => undefined)]);
      } catch (e) {
        last = e;
        await this.#net.refresh();
      }
    }
    throw last instanceof SiloUnavailableError
      ? last
      : new SiloUnavailableError(
          `could not register ${grain} in the directory while the cluster changes: ${(last as Error)?.message ?? String(last)}`,
          { cause: last },
        );
  }

  /**
   * Registers at this silo as owner. First writer wins, unless the existing
   * entry's silo was declared dead. Returns null when `checkOwner` is set and
   * this silo does not own the grain under its view.
   */
  registerLocal(grain: string, entry: DirectoryEntry, checkOwner: false): DirectoryEntry;
  registerLocal(grain: string, entry: DirectoryEntry, checkOwner: boolean): DirectoryEntry | null;
  registerLocal(grain: string, entry: DirectoryEntry, checkOwner: boolean): DirectoryEntry | null {
    if (checkOwner) {
      const owner = this.ownerOf(grain);
      if (owner !== undefined && owner !== this.#self) return null;
    }
    const cur = this.#partition.get(grain);
    // An entry stands until its silo is declared dead. (Not merely absent from this silo's
    // view: a silo that joined a moment ago may not be in it yet, and its activations are real.)
    if (
      cur !== undefined &&
      !this.#view.dead.has(cur.address) &&
      (cur.address !== entry.address || cur.activation !== entry.activation)
    )
      return cur;
    this.#partition.set(grain, entry);
    return entry;
  }

  /** Removes an entry if it is still this activation's. Fire and forget. */
  unregister(grain: string, entry: DirectoryEntry): void {
    if (this.#cache.delete(grain)) this.routeVersion++;
    const owner = this.ownerOf(grain);
    if (owner === undefined || owner === this.#self) {
      this.unregisterLocal(grain, entry);
      return;
    }
    this.#call(owner, 'dir.unregister', [grain, entry.address, entry.activation]).catch((e: unknown) => {
      this.#logger.debug({ grain, owner, err: e }, 'unregister failed; the entry goes when its silo leaves the view');
    });
  }

  unregisterLocal(grain: string, entry: DirectoryEntry): void {
    const cur = this.#partition.get(grain);
    if (cur !== undefined && cur.address === entry.address && cur.activation === entry.activation)
      this.#partition.delete(grain);
  }

  /** Where the owner says a grain lives, or undefined. */
  async lookup(grain: string): Promise<DirectoryEntry | undefined> {
    const owner = this.ownerOf(grain);
    if (owner === undefined || owner === this.#self) return this.#partition.get(grain);
    const r = await this.#call(owner, 'dir.lookup', [grain]);
    return r === null ? undefined : { address: r[0], activation: r[1] };
  }

  lookupLocal(grain: string): [string, number] | null {
    const e = this.#partition.get(grain);
    return e === undefined ? null : [e.address, e.activation];
  }

  /** Takes entries handed over by a leaving silo or an old owner. Existing live entries win. */
  acceptHandoff(entries: readonly WireDirectoryEntry[]): void {
    for (const [grain, address, activation] of entries) {
      const cur = this.#partition.get(grain);
      if (cur === undefined || this.#view.dead.has(cur.address)) this.#partition.set(grain, { address, activation });
    }
  }

  /**
   * Silo `from`, stopping, handed its whole partition over (`entries` are those this silo
   * owns without it) and owns nothing from now on: route past it.
   */
  acceptHandoffAll(from: string, entries: readonly WireDirectoryEntry[]): void {
    if (from !== this.#self && this.#view.directoryRing.members.includes(from) && !this.#handedOver.has(from)) {
      this.#handedOver.set(from, this.#view.active.get(from)?.id);
      this.#ring = this.#ownersRing();
      this.routeVersion++;
    }
    this.acceptHandoff(entries);
  }

  /** `entries` grouped by their owner under the current ring (those without an owner left out). */
  #byOwner(entries: Iterable<WireDirectoryEntry>): Map<string, WireDirectoryEntry[]> {
    const byOwner = new Map<string, WireDirectoryEntry[]>();
    for (const e of entries) {
      const owner = this.ownerOf(e[0]);
      if (owner === undefined) continue;
      let list = byOwner.get(owner);
      if (list === undefined) byOwner.set(owner, (list = []));
      list.push(e);
    }
    return byOwner;
  }

  // After handOffAll: the calls of silos that still take this one for an owner go on to the
  // new owners, whose answers are the callers' (an owner that does not know yet answers
  // "not the owner", and the caller re-reads the table and tries again).

  /** Forwards a `dir.register` (this silo has left). */
  async forwardRegister(grain: string, address: string, activation: number): Promise<[string, number] | null> {
    const owner = this.ownerOf(grain);
    if (owner === undefined || owner === this.#self) return null;
    return this.#call(owner, 'dir.register', [grain, address, activation]);
  }

  /** Forwards a `dir.registerMany` (this silo has left): the winners, in the order asked. */
  async forwardRegisterMany(entries: readonly WireDirectoryEntry[]): Promise<Array<[string, number]>> {
    const won = new Map<WireDirectoryEntry, [string, number]>();
    await Promise.all(
      [...this.#byOwner(entries)].map(async ([owner, list]) => {
        const results = await this.#call(owner, 'dir.registerMany', [list]);
        list.forEach((e, i) => {
          const r = results[i];
          if (r !== undefined) won.set(e, r);
        });
      }),
    );
    // Without an owner (no other silo): the entry itself, as nothing can contradict it.
    return entries.map((e) => won.get(e) ?? [e[1], e[2]]);
  }

  /** Forwards a `dir.unregister` (this silo has left). */
  async forwardUnregister(grain: string, address: string, activation: number): Promise<null> {
    const owner = this.ownerOf(grain);
    if (owner !== undefined && owner !== this.#self)
      await this.#call(owner, 'dir.unregister', [grain, address, activation]);
    return null;
  }

  /** Forwards a `dir.lookup` (this silo has left). */
  async forwardLookup(grain: string): Promise<[string, number] | null> {
    const owner = this.ownerOf(grain);
    if (owner === undefined || owner === this.#self) return null;
    return this.#call(owner, 'dir.lookup', [grain]);
  }

  /** Forwards handed-over entries to their owners (this silo has left). */
  async forwardHandoff(entries: readonly WireDirectoryEntry[]): Promise<null> {
    await Promise.all([...this.#byOwner(entries)].map(([owner, list]) => this.#call(owner, 'dir.handoff', [list])));
    return null;
  }

  /**
   * A new view: forget entries and cache lines of silos that left, hand over
   * the entries this silo no longer owns, and re-register every local
   * activation with its owner (batched per owner). `onDuplicate` is told of
   * each local activation that lost to another.
   */
  async viewChanged(
    view: ClusterView,
    local: Iterable<[string, DirectoryEntry]>,
    onDuplicate: (grain: string, winner: DirectoryEntry) => void,
  ): Promise<void> {
    this.#view = view;
    // Forget a silo that handed over once it left the ring, or once a new incarnation on its
    // address is active (a stopping silo never becomes active again).
    for (const [a, id] of this.#handedOver) {
      const now = view.active.get(a);
      if (!view.directoryRing.members.includes(a) || (now !== undefined && now.id !== id)) this.#handedOver.delete(a);
    }
    this.#ring = this.#ownersRing();
    this.routeVersion++;
    for (const [g, e] of this.#partition) if (view.dead.has(e.address)) this.#partition.delete(g);
    for (const [g, a] of this.#cache) if (!view.active.has(a)) this.#cache.delete(g);
    if (!view.active.has(this.#self)) return; // not (or no longer) a member: nothing to own
    // Hand over what others own now.
    const handoff = new Map<string, WireDirectoryEntry[]>();
    for (const [g, e] of this.#partition) {
      const owner = this.ownerOf(g);
      if (owner !== undefined && owner !== this.#self) {
        let list = handoff.get(owner);
        if (list === undefined) handoff.set(owner, (list = []));
        list.push([g, e.address, e.activation]);
        this.#partition.delete(g);
      }
    }
    // Re-register every local activation: entries move to new owners, entries a crashed owner
    // held come back, and an activation the directory no longer points at shows up as a duplicate.
    const again = new Map<string, WireDirectoryEntry[]>();
    for (const [g, e] of local) {
      const now = this.ownerOf(g);
      if (now === undefined) continue;
      if (now === this.#self) {
        const won = this.registerLocal(g, e, false);
        if (won.address !== e.address || won.activation !== e.activation) onDuplicate(g, won);
        continue;
      }
      let list = again.get(now);
      if (list === undefined) again.set(now, (list = []));
      list.push([g, e.address, e.activation]);
    }
    await Promise.all([
      ...[...handoff].map(([owner, list]) =>
        this.#call(owner, 'dir.handoff', [list]).catch((e: unknown) =>
          this.#logger.warn(
            { owner, entries: list.length, err: e },
            'directory handoff failed; the hosts will re-register',
          ),
        ),
      ),
      ...[...again].map(async ([owner, list]) => {
        try {
          const results = await this.#call(owner, 'dir.registerMany', [list]);
          list.forEach(([g, address, activation], i) => {
            const r = results[i];
            if (r !== undefined && (r[0] !== address || r[1] !== activation))
              onDuplicate(g, { address: r[0], activation: r[1] });
          });
        } catch (e) {
          this.#logger.warn({ owner, entries: list.length, err: e }, 're-registration failed');
        }
      }),
    ]);
  }

  /**
   * Graceful stop, after the drain: hands every entry this silo owns to its owner on the
   * ring without this silo, and tells every silo on that ring (entries or none) that this
   * one owns nothing from now on. Until then this silo kept its partition, so that the
   * silos that will own it never answered for it without its entries.
   */
  async handOffAll(): Promise<void> {
    this.#left = true;
    this.#ring = this.#ownersRing();
    this.routeVersion++;
    const entries: WireDirectoryEntry[] = [];
    for (const [g, e] of this.#partition) {
      if (e.address === this.#self) continue; // our own activations are going away
      entries.push([g, e.address, e.activation]);
    }
    this.#partition.clear();
    const byOwner = this.#byOwner(entries);
    for (const m of this.#ring.members) if (!byOwner.has(m)) byOwner.set(m, []);
    await Promise.all(
      [...byOwner].map(([owner, list]) =>
        this.#call(owner, 'dir.handoffAll', [list]).catch((e: unknown) =>
          this.#logger.warn(
            { owner, entries: list.length, err: e },
            'directory handoff failed; the hosts will re-register',
          ),
        ),
      ),
    );
  }
}

/** The system calls a directory serves: its part of a silo's `SystemCallHandlers`. */
export type DirectoryCallName =
  'dir.register' | 'dir.registerMany' | 'dir.unregister' | 'dir.lookup' | 'dir.handoff' | 'dir.handoffAll';

/**
 * The handlers of the directory's system calls, served by `dir` (the owner of the entries
 * asked about; once `dir` has handed its partition over, it forwards them to the new owners).
 */
export function directoryHandlers(dir: GrainDirectory): Pick<SystemCallHandlers, DirectoryCallName> {
  return {
    'dir.register': ([grain, address, activation]) => {
      if (dir.left) return dir.forwardRegister(grain, address, activation);
      const won = dir.registerLocal(grain, { address, activation }, true);
      return won === null ? null : [won.address, won.activation];
    },
    'dir.registerMany': ([entries]) => {
      if (dir.left) return dir.forwardRegisterMany(entries);
      return entries.map(([grain, address, activation]) => {
        const won = dir.registerLocal(grain, { address, activation }, false);
        return [won.address, won.activation];
      });
    },
    'dir.unregister': ([grain, address, activation]) => {
      if (dir.left) return dir.forwardUnregister(grain, address, activation);
      dir.unregisterLocal(grain, { address, activation });
      return null;
    },
    'dir.lookup': ([grain]) => (dir.left ? dir.forwardLookup(grain) : dir.lookupLocal(grain)),
    'dir.handoff': ([entries]) => {
      if (dir.left) return dir.forwardHandoff(entries);
      dir.acceptHandoff(entries);
      return null;
    },
    'dir.handoffAll': ([entries], caller) => {
      if (caller === undefined) return null;
      if (dir.left) {
        // Both stopping: note that the caller owns nothing either, and pass its entries on.
        dir.acceptHandoffAll(caller, []);
        return dir.forwardHandoff(entries);
      }
      dir.acceptHandoffAll(caller, entries);
      return null;
    },
  };
}
