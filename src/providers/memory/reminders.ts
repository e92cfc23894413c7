// In-memory reminder table, for tests and single-process clusters: the
// reminders of any number of clusters in one `MemoryReminderStore`, which the
// silos of one process can share. Same rules as every provider: rows scoped
// by cluster id, a new ETag on every upsert, removal conditional on it, the
// latest tick recorded per row without a new ETag.

import { ReminderError } from '../../errors.ts';
import type { ReminderContext, ReminderEntry, ReminderTable, StoredReminder } from '../../reminders/table.ts';
import { describeReminder, reminderEntryProblem, ringRangeProblem } from '../../reminders/table.ts';

/**
 * The reminder tables behind one or more memory reminder providers, one per
 * cluster id. Share one store between providers (the silos of one process,
 * e.g. a TestCluster) to let them see the same table. ETags are increasing
 * integers, unique within the store, so none is ever reused, not even after a
 * reminder is removed (or its cluster cleared) and made again.
 */
export class MemoryReminderStore {
  /** cluster id -> grain id -> reminder name -> row. */
  #clusters = new Map<string, Map<string, Map<string, StoredReminder>>>();
  #lastEtag = 0;

  /** Creates the (empty) table of a cluster if it has none; true if this call created it. */
  ensure(clusterId: string): boolean {
    if (this.#clusters.has(clusterId)) return false;
    this.#clusters.set(clusterId, new Map());
    return true;
  }

  /** Copies of every reminder of one grain. */
  readGrain(clusterId: string, grainId: string): StoredReminder[] {
    const rows = this.#clusters.get(clusterId)?.get(grainId);
    return rows === undefined ? [] : [...rows.values()].map(copy);
  }

  /** A copy of one reminder, or undefined. */
  read(clusterId: string, grainId: string, name: string): StoredReminder | undefined {
    const row = this.#clusters.get(clusterId)?.get(grainId)?.get(name);
    return row === undefined ? undefined : copy(row);
  }

  /** Copies of the reminders whose grainHash lies in the ring range `(begin, end]` (see `ReminderTable.readRange`). */
  readRange(clusterId: string, begin: number, end: number): StoredReminder[] {
    const grains = this.#clusters.get(clusterId);
    if (grains === undefined) return [];
    const found: StoredReminder[] = [];
    for (const rows of grains.values()) {
      for (const row of rows.values()) {
        if (inRange(row.grainHash, begin, end)) found.push(copy(row));
      }
    }
    return found;
  }

  /** Inserts or replaces a reminder; returns its new ETag. */
  upsert(clusterId: string, entry: ReminderEntry): string {
    let grains = this.#clusters.get(clusterId);
    if (grains === undefined) {
      grains = new Map();
      this.#clusters.set(clusterId, grains);
    }
    let rows = grains.get(entry.grainId);
    if (rows === undefined) {
      rows = new Map();
      grains.set(entry.grainId, rows);
    }
    const etag = String(++this.#lastEtag);
    // Field by field: an entry that is a row read back brings its lastTickAt, which an upsert clears.
    rows.set(entry.name, {
      grainId: entry.grainId,
      name: entry.name,
      grainHash: entry.grainHash,
      startAt: entry.startAt,
      periodMs: entry.periodMs,
      etag,
    });
    return etag;
  }

  /** Makes `dueAt` the reminder's lastTickAt if it is later than the recorded one; the ETag stays. Nothing if the row is missing. */
  recordTick(clusterId: string, grainId: string, name: string, dueAt: number): void {
    const rows = this.#clusters.get(clusterId)?.get(grainId);
    const row = rows?.get(name);
    if (rows === undefined || row === undefined) return;
    if (row.lastTickAt !== undefined && row.lastTickAt >= dueAt) return;
    rows.set(name, { ...copy(row), lastTickAt: dueAt });
  }

  /** Removes a reminder if its ETag is `etag`; true if it did. */
  remove(clusterId: string, grainId: string, name: string, etag: string): boolean {
    const rows = this.#clusters.get(clusterId)?.get(grainId);
    if (rows?.get(name)?.etag !== etag) return false;
    rows.delete(name);
    if (rows.size === 0) this.#clusters.get(clusterId)?.delete(grainId);
    return true;
  }

  /** Removes every reminder of a cluster. */
  clear(clusterId: string): void {
    this.#clusters.get(clusterId)?.clear();
  }
}

/** Options of `memoryReminders`. */
export interface MemoryRemindersOptions {
  /** Where the tables live; default: a new store private to this provider. */
  readonly store?: MemoryReminderStore;
}

/** A reminder table in process memory (kind `memory`). */
export function memoryReminders(options: MemoryRemindersOptions = {}): ReminderTable {
  return new MemoryReminders(options.store ?? new MemoryReminderStore());
}

class MemoryReminders implements ReminderTable {
  readonly kind = 'memory';
  #store: MemoryReminderStore;
  #clusterId: string | undefined;

  constructor(store: MemoryReminderStore) {
    this.#store = store;
  }

  // Re-init after close is allowed, so a restarted silo can reuse the provider.
  async init(ctx: ReminderContext): Promise<void> {
    if (this.#clusterId !== undefined && this.#clusterId !== ctx.clusterId) {
      throw this.#error('init', `already open for cluster ${JSON.stringify(this.#clusterId)}; close it first`);
    }
    this.#clusterId = ctx.clusterId;
    if (this.#store.ensure(ctx.clusterId))
      ctx.logger.debug({ clusterId: ctx.clusterId }, 'created memory reminder table');
  }

  async readGrain(grainId: string): Promise<StoredReminder[]> {
    const clusterId = this.#cluster('readGrain');
    return this.#store.readGrain(clusterId, grainId);
  }

  async read(grainId: string, name: string): Promise<StoredReminder | undefined> {
    const clusterId = this.#cluster('read');
    return this.#store.read(clusterId, grainId, name);
  }

  async readRange(begin: number, end: number): Promise<StoredReminder[]> {
    const clusterId = this.#cluster('readRange');
    const problem = ringRangeProblem(begin, end);
    if (problem !== undefined) throw this.#error('readRange', problem);
    return this.#store.readRange(clusterId, begin, end);
  }

  async upsert(entry: ReminderEntry): Promise<string> {
    const clusterId = this.#cluster('upsert');
    const problem = reminderEntryProblem(entry);
    if (problem !== undefined)
      throw this.#error('upsert', `${describeReminder(entry.grainId, entry.name)}: ${problem}`);
    return this.#store.upsert(clusterId, entry);
  }

  async recordTick(grainId: string, name: string, dueAt: number): Promise<void> {
    const clusterId = this.#cluster('recordTick');
    if (!Number.isSafeInteger(dueAt)) {
      throw this.#error(
        'recordTick',
        `${describeReminder(grainId, name)}: dueAt must be a whole number of epoch ms, got ${String(dueAt)}`,
      );
    }
    this.#store.recordTick(clusterId, grainId, name, dueAt);
  }

  async remove(grainId: string, name: string, etag: string): Promise<boolean> {
    const clusterId = this.#cluster('remove');
    return this.#store.remove(clusterId, grainId, name, etag);
  }

  async clear(): Promise<void> {
    this.#store.clear(this.#cluster('clear'));
  }

  async close(): Promise<void> {
    this.#clusterId = undefined;
  }

  #cluster(op: string): string {
    if (this.#clusterId === undefined) throw this.#error(op, 'the table is not open (init() not called, or closed)');
    return this.#clusterId;
  }

  #error(op: string, problem: string): ReminderError {
    return new ReminderError(`memory reminders (cluster ${JSON.stringify(this.#clusterId)}): ${op} failed: ${problem}`);
  }
}

/** `begin < hash <= end`, or the wrapping range `hash > begin || hash <= end` when begin >= end. */
function inRange(hash: number, begin: number, end: number): boolean {
  return begin < end ? begin < hash && hash <= end : hash > begin || hash <= end;
}

// Field by field, so that the store keeps exactly what the SQL and Redis tables keep.
// lastTickAt only when set: absent, never undefined-valued.
function copy(r: StoredReminder): StoredReminder {
  const row = {
    grainId: r.grainId,
    name: r.name,
    grainHash: r.grainHash,
    startAt: r.startAt,
    periodMs: r.periodMs,
    etag: r.etag,
  };
  return r.lastTickAt === undefined ? row : { ...row, lastTickAt: r.lastTickAt };
}
