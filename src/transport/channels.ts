// Lifecycle events of the transport on node:diagnostics_channel, named
// granary:transport:<event>, for tests and tools to observe without a logger.

import diagnostics_channel from 'node:diagnostics_channel';

/** Channels the transport publishes on. Publishing is skipped when nobody listens. */
export const transportChannels = {
  /** `{ connection, side, peer: Hello, remote }` once a handshake has succeeded. */
  connectionOpened: diagnostics_channel.channel('granary:transport:open'),
  /** `{ connection, side, peer: string, remote, kind, reason }` once a connection has closed, for whatever reason. */
  connectionClosed: diagnostics_channel.channel('granary:transport:close'),
} as const;
