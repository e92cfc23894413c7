// Small values written in place (numbers, booleans, null, undefined, short
// ASCII strings, and arrays of up to 15 of them): the bytes must be exactly
// what encode() writes, so a peer cannot tell the two paths apart.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  decode,
  encode,
  smallArrayBytes,
  smallBytes,
  writeSmall,
  writeSmallArray,
} from '../../src/serialization/codec.ts';

const small: unknown[] = [
  0,
  -0,
  1,
  31,
  32,
  127,
  128,
  255,
  256,
  65535,
  65536,
  2 ** 32 - 1,
  2 ** 32,
  -1,
  -32,
  -33,
  -128,
  -129,
  -32768,
  -32769,
  -(2 ** 31),
  -(2 ** 31) - 1,
  1.5,
  -2.25,
  NaN,
  Infinity,
  -Infinity,
  1e300,
  Number.MAX_SAFE_INTEGER,
  true,
  false,
  null,
  undefined,
  '',
  'a',
  'x'.repeat(31),
  'x'.repeat(32),
  'y'.repeat(255),
];

describe('small values written in place', () => {
  it('writes each small value as encode() does, within its bound', () => {
    for (const v of small) {
      const max = smallBytes(v);
      assert.ok(max > 0, `${String(v)} is small`);
      const buf = Buffer.alloc(max + 6, 0xee);
      const end = writeSmall(v, buf, 3);
      assert.ok(end - 3 <= max, `${String(v)} within its bound`);
      assert.deepEqual(buf.subarray(3, end), Buffer.from(encode(v)), `bytes of ${String(v)}`);
      assert.equal(buf[end], 0xee, 'nothing written past the end');
    }
  });

  it('writes arrays of small values as encode() does', () => {
    const arrays: unknown[][] = [[], [1], [1, 'a', null, true, undefined, -5, 2.5], small.slice(0, 15)];
    for (const a of arrays) {
      const max = smallArrayBytes(a);
      const buf = Buffer.alloc(max);
      const end = writeSmallArray(a, buf, 0);
      assert.deepEqual(buf.subarray(0, end), Buffer.from(encode(a)));
      assert.deepEqual(decode(buf.subarray(0, end)), decode(encode(a)));
    }
  });

  it('leaves everything else to encode()', () => {
    for (const v of ['é', 'z'.repeat(256), {}, [], 5n, Symbol('s'), () => 1, new Date(0)])
      assert.equal(smallBytes(v), -1);
    assert.equal(smallArrayBytes(new Array(16).fill(1)), -1);
    assert.equal(smallArrayBytes([1, {}]), -1);
  });
});
