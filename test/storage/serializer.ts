// The serializer storage tests hand to providers: the project codec, as a
// silo hands it (references decode to plain markers here: no silo to bind to).

import { decode, encode } from '../../src/serialization/codec.ts';
import type { StateSerializer } from '../../src/storage/provider.ts';

/** The codec's encode and decode. */
export const testSerializer: StateSerializer = {
  encode: (value) => encode(value),
  decode: (bytes) => decode(bytes),
};
