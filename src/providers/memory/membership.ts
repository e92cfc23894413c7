// In-memory membership table, for tests and single-process clusters: the
// tables of any number of clusters in one `MemoryMembershipStore`, which the
// silos of one process can share. Same compare-and-swap rules as every provider.

import { MembershipError } from '../../errors.ts';
import type {
  MembershipContext,
  MembershipSnapshot,
  MembershipTable,
  SiloEntry,
  TableVersion,
} from '../../membership/table.ts';
import { siloId } from '../../membership/table.ts';

/** The ETag of the version of a cluster that has no version record (only after `deleteCluster`); never issued otherwise. */
const NO_VERSION_ETAG = '0';

interface Row {
  entry: SiloEntry;
  etag: string;
}

interface ClusterTable {
  version: TableVersion;
  readonly rows: Map<string, Row>;
}

/**
 * The membership tables behind one or more memory membership providers, one
 * per cluster id. Share one store between providers (the silos of one
 * process) to let them see the same table. ETags are increasing integers,
 * unique within the store, so none is ever reused.
 */
export class MemoryMembershipStore {
  #clusters = new Map<string, ClusterTable>();
  #lastEtag = 0;

  /** Creates the version record of a cluster at version 0 if it has none; true if this call created it. */
  ensure(clusterId: string): boolean {
    if (this.#clusters.has(clusterId)) return false;
    this.#clusters.set(clusterId, { version: { version: 0, etag: this.#nextEtag() }, rows: new Map() });
    return true;
  }

  /** A copy of a cluster's table. */
  read(clusterId: string): MembershipSnapshot {
    const table = this.#clusters.get(clusterId);
    if (table === undefined) return { version: { version: 0, etag: NO_VERSION_ETAG }, entries: [] };
    return {
      version: { ...table.version },
      entries: [...table.rows.values()].map((row) => ({ entry: copyEntry(row.entry), etag: row.etag })),
    };
  }

  /** Inserts a row if the version is still the one `next` was made from and the silo id is new. */
  insert(clusterId: string, entry: SiloEntry, next: TableVersion): boolean {
    const table = this.#table(clusterId);
    const id = siloId(entry);
    if (table.version.etag !== next.etag || table.rows.has(id)) return false;
    table.rows.set(id, { entry: copyEntry(entry), etag: this.#nextEtag() });
    table.version = { version: next.version, etag: this.#nextEtag() };
    return true;
  }

  /** Replaces a row if the version is still the one `next` was made from and the row's ETag is `etag`. */
  update(clusterId: string, entry: SiloEntry, etag: string, next: TableVersion): boolean {
    const table = this.#table(clusterId);
    const id = siloId(entry);
    const row = table.rows.get(id);
    if (table.version.etag !== next.etag || row === undefined || row.etag !== etag) return false;
    table.rows.set(id, { entry: copyEntry(entry), etag: this.#nextEtag() });
    table.version = { version: next.version, etag: this.#nextEtag() };
    return true;
  }

  /** Sets a row's iAmAliveAt; nothing else changes. No row: nothing happens. */
  updateIAmAlive(clusterId: string, address: string, generation: number, at: number): void {
    const row = this.#clusters.get(clusterId)?.rows.get(siloId({ address, generation }));
    if (row !== undefined) row.entry = { ...row.entry, iAmAliveAt: at };
  }

  /** Deletes the rows of Dead silos whose iAmAliveAt is before `before`; returns how many. */
  cleanupDefunct(clusterId: string, before: number): number {
    const rows = this.#clusters.get(clusterId)?.rows;
    if (rows === undefined) return 0;
    let deleted = 0;
    for (const [id, row] of rows) {
      if (row.entry.status === 'Dead' && row.entry.iAmAliveAt < before) {
        rows.delete(id);
        deleted += 1;
      }
    }
    return deleted;
  }

  /** Forgets a cluster's rows and version. */
  deleteCluster(clusterId: string): void {
    this.#clusters.delete(clusterId);
  }

  /** The table of a cluster, created at version 0 (with the never-issued ETag) if it has none. */
  #table(clusterId: string): ClusterTable {
    let table = this.#clusters.get(clusterId);
    if (table === undefined) {
      table = { version: { version: 0, etag: NO_VERSION_ETAG }, rows: new Map() };
      this.#clusters.set(clusterId, table);
    }
    return table;
  }

  #nextEtag(): string {
    return String(++this.#lastEtag);
  }
}

/** Options of `memoryMembership`. */
export interface MemoryMembershipOptions {
  /** Where the tables live; default: a new store private to this provider. */
  readonly store?: MemoryMembershipStore;
}

/** A membership table in process memory (kind `memory`). */
export function memoryMembership(options: MemoryMembershipOptions = {}): MembershipTable {
  return new MemoryMembership(options.store ?? new MemoryMembershipStore());
}

class MemoryMembership implements MembershipTable {
  readonly kind = 'memory';
  #store: MemoryMembershipStore;
  #clusterId: string | undefined;

  constructor(store: MemoryMembershipStore) {
    this.#store = store;
  }

  // Re-init after close is allowed, so a restarted silo can reuse the provider.
  async init(ctx: MembershipContext): Promise<void> {
    this.#clusterId = ctx.clusterId;
    if (this.#store.ensure(ctx.clusterId))
      ctx.logger.debug({ clusterId: ctx.clusterId }, 'created memory membership table');
  }

  async readAll(): Promise<MembershipSnapshot> {
    return this.#store.read(this.#cluster('readAll'));
  }

  async insert(entry: SiloEntry, next: TableVersion): Promise<boolean> {
    return this.#store.insert(this.#cluster('insert'), entry, next);
  }

  async update(entry: SiloEntry, etag: string, next: TableVersion): Promise<boolean> {
    return this.#store.update(this.#cluster('update'), entry, etag, next);
  }

  async updateIAmAlive(address: string, generation: number, at: number): Promise<void> {
    this.#store.updateIAmAlive(this.#cluster('updateIAmAlive'), address, generation, at);
  }

  async cleanupDefunct(before: number): Promise<number> {
    return this.#store.cleanupDefunct(this.#cluster('cleanupDefunct'), before);
  }

  async deleteCluster(): Promise<void> {
    this.#store.deleteCluster(this.#cluster('deleteCluster'));
  }

  async close(): Promise<void> {
    this.#clusterId = undefined;
  }

  #cluster(op: string): string {
    if (this.#clusterId === undefined) {
      throw new MembershipError(
        `memory membership: ${op} failed: the table is not initialised (init() not called, or closed)`,
      );
    }
    return this.#clusterId;
  }
}

// Field by field, so that the store keeps exactly what the SQL and Redis tables keep.
function copyEntry(e: SiloEntry): SiloEntry {
  return {
    address: e.address,
    generation: e.generation,
    status: e.status,
    gatewayAddress: e.gatewayAddress,
    hostName: e.hostName,
    startedAt: e.startedAt,
    iAmAliveAt: e.iAmAliveAt,
    suspicions: e.suspicions.map((s) => ({ by: s.by, at: s.at })),
  };
}
