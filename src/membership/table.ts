// The membership table: one row per silo incarnation, and a table version.
// Every change is a compare-and-swap on the table version and the row's ETag,
// as Orleans's IMembershipTable, so that silos agree on who is alive and who
// was declared dead without any other coordination.

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
