// The serializer storage tests hand to providers. A stand-in built on node:v8
// until the project codec lands; then this one export switches to it.

import { deserialize, serialize } from 'node:v8';
import type { StateSerializer } from '../../src/storage/provider.ts';

/** Turns state into bytes and back with the structured-clone format of node:v8. */
export const testSerializer: StateSerializer = {
  encode: (value) => serialize(value),
  decode: (bytes) => deserialize(bytes),
};
