// Exit codes of the `granary` commands, one table for all (a code means the
// same wherever it appears), and how a failure is printed.

import { ErrorCodes, GranaryError } from '../errors.ts';

/** Exit codes. Each command's --help says which of them it uses, and when. */
export const Exit = Object.freeze({
  /** Done: the call returned, the silo stopped gracefully, every silo is active. */
  Ok: 0,
  /** Failed: the call failed, a silo could not start or its graceful stop failed. */
  Failed: 1,
  /** Bad usage or configuration: nothing was done. */
  Usage: 2,
  /** `granary silo`: the cluster declared this silo dead. */
  DeclaredDead: 3,
  /** `granary status`: a silo is suspected or was declared dead lately, or none is active. */
  Unhealthy: 4,
  /** `granary silo`: a second SIGINT during the graceful stop (128 + 2, as shells report it). */
  SecondSigint: 130,
  /** `granary silo`: a second SIGTERM during the graceful stop (128 + 15). */
  SecondSigterm: 143,
});

/** `[CODE]: message` of a failure; one that is not a GranaryError has code GRANARY_ERROR. */
export function describeFailure(e: unknown): string {
  const code = e instanceof GranaryError ? e.code : ErrorCodes.Error;
  return `[${code}]: ${(e as Error)?.message ?? String(e)}`;
}
