// The transport's surface for the rest of the runtime: framing, connections,
// the handshake, the listener, the connector and their limits.

export {
  FRAME_OVERHEAD_BYTES,
  FRAME_PREFIX_BYTES,
  FrameDecoder,
  FrameWriter,
  encodeFrame,
  type FrameHead,
  type FrameSink,
} from './framing.ts';
export {
  Connection,
  type CloseInfo,
  type ConnectionEvents,
  type ConnectionHandler,
  type ConnectionOptions,
  type ConnectionSide,
  type ConnectionState,
  type ConnectionStats,
} from './connection.ts';
export {
  FRAME_HELLO,
  FRAME_REJECT,
  HANDSHAKE_MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  decodeHello,
  decodeReject,
  encodeHello,
  encodeReject,
  helloMismatch,
  makeHello,
  type Hello,
  type HelloInit,
  type PeerRole,
} from './handshake.ts';
export { Listener, listen, type ListenOptions } from './listener.ts';
export { Connector, parseAddress, type ConnectorOptions, type PeerStatus } from './connector.ts';
export { transportChannels } from './channels.ts';
export { PeerTraffic, type PeerTotals } from './traffic.ts';
export {
  resolveTransportLimits,
  transportDefaults,
  type ResolvedTransportLimits,
  type TransportLimits,
} from './limits.ts';
