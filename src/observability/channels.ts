// Lifecycle events on node:diagnostics_channel, named granary:<subsystem>:<event>.
// Tests wait on them instead of sleeping; tools subscribe without a logger.

import diagnostics_channel from 'node:diagnostics_channel';

/** Channels Granary publishes on. Publishing is skipped when nobody listens. */
export const channels = {
  /** `{ silo, grain, type }` once an activation is ready for calls. */
  activationCreated: diagnostics_channel.channel('granary:activation:created'),
  /** `{ silo, grain, type, error }` when construction, state loading or onActivate failed. */
  activationFailed: diagnostics_channel.channel('granary:activation:failed'),
  /** `{ silo, grain, type, reason }` when an activation has been deactivated. */
  activationDeactivated: diagnostics_channel.channel('granary:activation:deactivated'),
  /** `{ silo, version, active }` when a silo's view of the active silos changed. */
  membershipChanged: diagnostics_channel.channel('granary:membership:changed'),
  /** `{ silo, grain, reminder, dueAt, missed }` when the silo owning a reminder fires a tick (its delivery to the grain begins). */
  reminderTick: diagnostics_channel.channel('granary:reminder:tick'),
  /** `{ silo, grain, reminder, reason }` when a silo stops firing a reminder; `reason` is `removed` (unregistered), `moved` (another silo owns it now) or `stopped` (the silo stops). */
  reminderUnscheduled: diagnostics_channel.channel('granary:reminder:unscheduled'),
  /** `{ silo, stream, subscription, consumer, item, token, error, attempts }` when a stream item is given up on after its retries (a dead letter). */
  streamDeadLetter: diagnostics_channel.channel('granary:stream:dead-letter'),
  /** `{ silo, address }` when a silo has started. */
  siloStarted: diagnostics_channel.channel('granary:silo:started'),
  /**
   * `{ silo, address, how }` when a silo begins to end: `how` is `graceful` (stop()), `dead` (declared
   * dead by the cluster) or `abort`. Its readiness probe fails from this moment.
   */
  siloStopping: diagnostics_channel.channel('granary:silo:stopping'),
  /** `{ silo, address }` when a silo has stopped gracefully. */
  siloStopped: diagnostics_channel.channel('granary:silo:stopped'),
} as const;
