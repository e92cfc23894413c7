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
  /** `{ silo, address }` when a silo has started. */
  siloStarted: diagnostics_channel.channel('granary:silo:started'),
  /** `{ silo, address }` when a silo has stopped. */
  siloStopped: diagnostics_channel.channel('granary:silo:stopped'),
} as const;
