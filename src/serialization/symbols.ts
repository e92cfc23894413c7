// Markers the codec recognises without importing the grain layer, so that the
// dependency points one way (grain -> serialization).

/** Present on every grain reference; its value is the referenced grain's id. */
export const GRAIN_REF: unique symbol = Symbol.for('granary.grainRef') as never;

/** What a grain reference carries across a boundary. */
export interface RefIdentity {
  readonly type: string;
  readonly key: string;
}

/** A value that is a grain reference. */
export interface RefLike {
  readonly [GRAIN_REF]: RefIdentity;
}

/**
 * Where decoded or copied values land. `reviveRef` rebuilds a grain reference
 * bound to the receiving side (a silo, a client, an activation), so that a
 * reference works wherever it arrives.
 */
export interface CodecContext {
  reviveRef(id: RefIdentity): unknown;
}
