// The handshake that opens every connection: each side's first frame is a HELLO
// (protocol, cluster, address, generation, role); the accepting side answers a
// mismatch with a REJECT carrying the reason. Bodies are JSON, small and rare.

/**
 * The wire protocol version this build speaks; peers must speak the same, so
 * a build that meets an older one refuses it at the handshake, by name, rather
 * than dropping the connection on a frame the other cannot read.
 * 2: the Leaving frame (a gateway tells its clients it is stopping) and the
 * response statuses beyond Ok and Error.
 * 3: the request context after a request's header (request flag Context).
 */
export const PROTOCOL_VERSION = 3;

/** Frame type of a HELLO. Only meaningful before the handshake completes; afterwards every type belongs to the upper layer. */
export const FRAME_HELLO = 0xf0;
/** Frame type of a REJECT, the accepting side's answer to a HELLO it refuses. */
export const FRAME_REJECT = 0xf1;

/** Frames before the handshake completes are held to this size, whatever maxFrameBytes says. */
export const HANDSHAKE_MAX_FRAME_BYTES = 64 * 1024;

/** What kind of process a peer is. */
export type PeerRole = 'silo' | 'client';

/** The first frame each side sends. */
export interface Hello {
  /** Wire protocol version, `PROTOCOL_VERSION` of the sender. */
  readonly protocol: number;
  readonly clusterId: string;
  /** `host:port` of the sender's listening endpoint, or a client id. */
  readonly address: string;
  /** The sender's generation (start time or epoch), to tell a restarted silo from its predecessor. */
  readonly generation: number;
  readonly role: PeerRole;
  /** The largest frame the sender accepts; the receiver sends nothing bigger. Absent: no stated limit. */
  readonly maxFrameBytes?: number;
}

/** A HELLO as given in options: `protocol` defaults to `PROTOCOL_VERSION`. */
export interface HelloInit {
  readonly protocol?: number;
  readonly clusterId: string;
  readonly address: string;
  readonly generation: number;
  readonly role: PeerRole;
}

/** Fills in the protocol version, and the frame limit we accept when given. */
export function makeHello(init: HelloInit, maxFrameBytes?: number): Hello {
  const hello: Hello = {
    protocol: init.protocol ?? PROTOCOL_VERSION,
    clusterId: init.clusterId,
    address: init.address,
    generation: init.generation,
    role: init.role,
  };
  return maxFrameBytes === undefined ? hello : { ...hello, maxFrameBytes };
}

/** The body of a HELLO frame. */
export function encodeHello(hello: Hello): Buffer {
  return Buffer.from(
    JSON.stringify({
      protocol: hello.protocol,
      clusterId: hello.clusterId,
      address: hello.address,
      generation: hello.generation,
      role: hello.role,
      maxFrameBytes: hello.maxFrameBytes,
    }),
  );
}

/** Reads a HELLO body; returns a string saying what is wrong when it is not one. */
export function decodeHello(body: Uint8Array): Hello | string {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'));
  } catch {
    return `malformed HELLO: not JSON (${body.length} bytes)`;
  }
  if (typeof value !== 'object' || value === null) return 'malformed HELLO: not an object';
  const v = value as Record<string, unknown>;
  const { protocol, clusterId, address, generation, role, maxFrameBytes } = v;
  if (typeof protocol !== 'number' || !Number.isInteger(protocol)) return 'malformed HELLO: protocol is not an integer';
  if (typeof clusterId !== 'string') return 'malformed HELLO: clusterId is not a string';
  if (typeof address !== 'string') return 'malformed HELLO: address is not a string';
  if (typeof generation !== 'number' || !Number.isFinite(generation))
    return 'malformed HELLO: generation is not a number';
  if (role !== 'silo' && role !== 'client') return `malformed HELLO: role is not 'silo' or 'client'`;
  if (maxFrameBytes === undefined) return { protocol, clusterId, address, generation, role };
  if (typeof maxFrameBytes !== 'number' || !Number.isInteger(maxFrameBytes) || maxFrameBytes < 1) {
    return 'malformed HELLO: maxFrameBytes is not a positive integer';
  }
  return { protocol, clusterId, address, generation, role, maxFrameBytes };
}

/** Why `own` refuses `peer`, or undefined when they may talk. Protocol is checked first. */
export function helloMismatch(
  own: Hello,
  peer: Hello,
  acceptRoles: readonly PeerRole[] = ['silo', 'client'],
): string | undefined {
  if (peer.protocol !== own.protocol) return `protocol ${peer.protocol} != ${own.protocol}`;
  if (peer.clusterId !== own.clusterId) return `cluster '${peer.clusterId}' != '${own.clusterId}'`;
  if (!acceptRoles.includes(peer.role)) return `role '${peer.role}' not accepted here`;
  return undefined;
}

/** The body of a REJECT frame. */
export function encodeReject(reason: string): Buffer {
  return Buffer.from(JSON.stringify({ reason }));
}

/** The reason a REJECT carries (or a description of a malformed one). */
export function decodeReject(body: Uint8Array): string {
  try {
    const value: unknown = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('utf8'));
    if (typeof value === 'object' && value !== null && typeof (value as { reason?: unknown }).reason === 'string') {
      return (value as { reason: string }).reason;
    }
  } catch {
    // fall through
  }
  return 'malformed REJECT';
}
