// The membership table: one row per silo incarnation, and a table version.
// Every change is a compare-and-swap on the table version and the row's ETag,
// as Orleans's IMembershipTable, so that silos agree on who is alive and who
// was declared dead without any other coordination.

import { MembershipError } from '../errors.ts';
import type { Logger } from '../observability/logger.ts';

/** Where a silo is in its life. */
export type SiloStatus = 'Joining' | 'Active' | 'ShuttingDown' | 'Dead';

/** A vote that a silo is dead: who voted (a silo id) and when (epoch ms). */
export interface Suspicion {
  readonly by: string;
  readonly at: number;
}

/** One silo incarnation. Its id is `address@generation` (see `siloId`). */
export interface SiloEntry {
  /** `host:port` of the silo-to-silo endpoint. */
  readonly address: string;
  /** Distinguishes incarnations on one address: the start time in ms, increasing across restarts. */
  readonly generation: number;
  readonly status: SiloStatus;
  /** `host:port` of the gateway for clients, or null when the silo has none. */
  readonly gatewayAddress: string | null;
  readonly hostName: string;
  /** Epoch ms when the silo started. */
  readonly startedAt: number;
  /** Epoch ms of the silo's last I-am-alive write. */
  readonly iAmAliveAt: number;
  readonly suspicions: readonly Suspicion[];
}

/** The table version a change is made against. */
export interface TableVersion {
  readonly version: number;
  readonly etag: string;
}

/** The whole table as read at one moment. */
export interface MembershipSnapshot {
  readonly version: TableVersion;
  readonly entries: ReadonlyArray<{ readonly entry: SiloEntry; readonly etag: string }>;
}

/** What a table is given before first use. */
export interface MembershipContext {
  readonly clusterId: string;
  readonly logger: Logger;
}

/**
 * A membership table provider. Every implementation passes the conformance
 * suite in test/membership/conformance.ts.
 *
 * `next` in insert and update is the version the table moves to: the version
 * read plus one, carrying the ETag of the version read. A change succeeds only
 * if the table is still at the version read (its ETag matches) and, for an
 * update, the row's ETag matches; then the row and the version change
 * atomically. A failed check returns false and changes nothing; store errors
 * throw a MembershipError.
 */
export interface MembershipTable {
  /** Short kind for messages and logs: `memory`, `sqlite`, `postgres`, `redis`. */
  readonly kind: string;
  /** Called once before first use; creates tables or keys if needed. */
  init(ctx: MembershipContext): Promise<void>;
  /** The table version and every row of this cluster. An empty table is at version 0. */
  readAll(): Promise<MembershipSnapshot>;
  /** Inserts a row for a new silo id. False if the version is stale or the id exists. */
  insert(entry: SiloEntry, next: TableVersion): Promise<boolean>;
  /** Replaces a row. False if the version or the row's ETag is stale. */
  update(entry: SiloEntry, etag: string, next: TableVersion): Promise<boolean>;
  /** Sets a row's iAmAliveAt only; changes neither the table version nor the row's ETag. */
  updateIAmAlive(address: string, generation: number, at: number): Promise<void>;
  /** Deletes rows of Dead silos whose iAmAliveAt is before `before`; returns how many. */
  cleanupDefunct(before: number): Promise<number>;
  /** Deletes every row and the version of this cluster (tests, tear-down). */
  deleteCluster(): Promise<void>;
  /** Releases connections and files. */
  close(): Promise<void>;
}

/** The id of a silo incarnation: `address@generation`. */
export function siloId(e: { readonly address: string; readonly generation: number }): string {
  return `${e.address}@${e.generation}`;
}

// ---- Reading rows back, for providers ----------------------------------------

const STATUSES: ReadonlySet<string> = new Set<SiloStatus>(['Joining', 'Active', 'ShuttingDown', 'Dead']);

/**
 * A silo row's fields as a store gives them back, before they are checked.
 * Numbers may come as numbers or as their decimal text (a PostgreSQL bigint,
 * a Redis hash field); suspicions as the JSON array or as its text.
 */
export interface SiloRow {
  readonly address: unknown;
  readonly generation: unknown;
  readonly status: unknown;
  readonly gatewayAddress: unknown;
  readonly hostName: unknown;
  readonly startedAt: unknown;
  readonly iAmAliveAt: unknown;
  readonly suspicions: unknown;
}

/**
 * The suspicions of a row: a JSON array of `{by: string, at: number}`, given
 * as the array or as its JSON text. Throws a MembershipError saying what is wrong.
 */
export function parseSuspicions(value: unknown): Suspicion[] {
  let parsed = value;
  if (typeof value === 'string') {
    try {
      parsed = JSON.parse(value);
    } catch (err) {
      throw new MembershipError(`suspicions are not JSON: ${err instanceof Error ? err.message : String(err)}`, {
        cause: err,
      });
    }
  }
  if (!Array.isArray(parsed)) throw new MembershipError(`suspicions are not a JSON array: ${describe(parsed)}`);
  return parsed.map((s: unknown, i) => {
    const { by, at } = (typeof s === 'object' && s !== null ? s : {}) as { by?: unknown; at?: unknown };
    if (typeof by !== 'string' || typeof at !== 'number')
      throw new MembershipError(`suspicion ${i} lacks by (string) or at (number): ${describe(s)}`);
    return { by, at };
  });
}

/**
 * The entry of a silo row read back from a store, checked field by field.
 * A row that cannot be read fails with what `corrupt` makes of the problem:
 * the provider's MembershipError, naming the row (its silo id, its table or key).
 */
export function decodeSiloEntry(
  row: SiloRow,
  corrupt: (problem: string, cause?: unknown) => MembershipError,
): SiloEntry {
  const { address, status, gatewayAddress, hostName } = row;
  if (typeof address !== 'string') throw corrupt(`address must be text, got ${describe(address)}`);
  if (typeof hostName !== 'string') throw corrupt(`hostName must be text, got ${describe(hostName)}`);
  if (typeof status !== 'string' || !STATUSES.has(status)) throw corrupt(`unknown status ${describe(status)}`);
  if (gatewayAddress !== null && typeof gatewayAddress !== 'string')
    throw corrupt(`gatewayAddress must be text or null, got ${describe(gatewayAddress)}`);
  const number = (name: 'generation' | 'startedAt' | 'iAmAliveAt'): number => {
    const n = toNumber(row[name]);
    if (!Number.isFinite(n)) throw corrupt(`${name} must be a finite number, got ${describe(row[name])}`);
    return n;
  };
  const generation = number('generation');
  const startedAt = number('startedAt');
  const iAmAliveAt = number('iAmAliveAt');
  let suspicions: Suspicion[];
  try {
    suspicions = parseSuspicions(row.suspicions);
  } catch (err) {
    throw corrupt(`bad suspicions: ${err instanceof Error ? err.message : String(err)}`, err);
  }
  return {
    address,
    generation,
    status: status as SiloStatus,
    gatewayAddress,
    hostName,
    startedAt,
    iAmAliveAt,
    suspicions,
  };
}

/** A number given as one or as its decimal text; NaN for anything else. */
function toNumber(value: unknown): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  if (typeof value === 'string' && /^-?[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?$/i.test(value)) return Number(value);
  return Number.NaN;
}

/** A value as a message shows it: JSON where it has one. */
function describe(value: unknown): string {
  return value === undefined ? 'nothing' : typeof value === 'bigint' ? String(value) : JSON.stringify(value);
}
