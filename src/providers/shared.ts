// What the providers of every store share: how a driver's failure becomes the
// provider's own Granary error, how an unreadable record is reported, and the
// refusals of a provider that is not open. Kept here, not in each provider, so
// that the wording and the rules (a Granary error passes through; a cause is
// kept) are fixed in one place.

import { GranaryError, StorageCorruptError } from '../errors.ts';

/** The message of a thrown value, whatever was thrown. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A thrown value as an Error, for APIs that take one (a pool's release); a non-Error is kept as the cause. */
export function asError(err: unknown): Error {
  return err instanceof Error
    ? err
    : new GranaryError(`a non-Error was thrown: ${String(err)}`, undefined, { cause: err });
}

/** An SQL identifier, quoted so that it is never read as a keyword or folded to lower case. */
export function quote(identifier: string): string {
  return `"${identifier.replaceAll('"', '""')}"`;
}

/** The options of an error with `cause`, none without one (so that no `cause: undefined` shows). */
export function causeOf(cause: unknown): ErrorOptions | undefined {
  return cause === undefined ? undefined : { cause };
}

/** Makes a provider's own error (its class, naming the provider and store) from a problem and its cause. */
export type ProviderErrorFactory = (problem: string, cause?: unknown) => GranaryError;

/**
 * The error to throw for `err`, a failure while doing `what` (e.g. `read of
 * grain a/1 state 's' failed`; none: the operation says it all). A Granary
 * error passes through: it already says what failed and has its class. Any
 * other (a driver's) becomes the provider's error, keeping it as the cause.
 */
export function wrapError(err: unknown, what: string | undefined, make: ProviderErrorFactory): GranaryError {
  if (err instanceof GranaryError) return err;
  return make(`${what === undefined ? '' : `${what}: `}${errorMessage(err)}`, err);
}

/** Why a provider refuses a call before `init`, after a failed `init`, or after `close`. */
export const NOT_OPEN = 'not open (init() not called, did not succeed, or closed)';

/** The problem of `init` for another cluster on a table still open for `clusterId`. */
export function alreadyOpen(clusterId: string | undefined): string {
  return `already open for cluster ${JSON.stringify(clusterId)}; close it first`;
}

/** The problem with a table of a provider's name that the provider did not make: `problem` says how it differs. */
export function foreignTable(table: string, problem: string): string {
  return `table ${table} exists but ${problem}; it was not made by this provider: choose another tablePrefix`;
}

/** The problem with table `table` that has the columns `have`, if it lacks any of `required`; undefined if none. */
export function missingColumns(
  table: string,
  have: ReadonlySet<string | null>,
  required: readonly string[],
): string | undefined {
  const missing = required.filter((c) => !have.has(c));
  return missing.length === 0 ? undefined : foreignTable(table, `lacks column(s) ${missing.join(', ')}`);
}

/** Where an unreadable record is, for `corruptState`. */
export interface CorruptRecord {
  /** What the record holds, e.g. `state for grain a/1 state 's'`, `event of grain a/1 log 'j'`. */
  readonly what: string;
  /** The provider, e.g. `postgres storage 'default'`. */
  readonly provider: string;
  /** Where in the store, e.g. `table t, version 7, postgres://db`. */
  readonly where?: string;
}

/**
 * The error of a record that cannot be read back (bad bytes, unknown format,
 * a column of the wrong type): a StorageCorruptError, so that only that
 * grain's record fails and callers can tell it from an unreachable store.
 */
export function corruptState(record: CorruptRecord, problem: string, cause?: unknown): StorageCorruptError {
  const where = record.where === undefined ? '' : ` (${record.where})`;
  return new StorageCorruptError(`corrupt ${record.what} in ${record.provider}${where}: ${problem}`, causeOf(cause));
}
