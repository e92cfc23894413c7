// Small values written in place (numbers, booleans, null, undefined, short
// ASCII strings, and arrays of up to 15 of them): the bytes must be exactly
// what encode() writes, so a peer cannot tell the two paths apart.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  NOT_SMALL,
  decode,
  encode,
  readSmall,
  readSmallArray,
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

  it('reads small values back as decode() does, and leaves the rest (or bytes cut short) to it', () => {
    for (const v of small) {
      const bytes = Buffer.from(encode(v));
      const framed = Buffer.concat([Buffer.from([9, 9]), bytes, Buffer.from([7])]);
      assert.ok(Object.is(readSmall(framed, 2, 2 + bytes.length), decode(bytes)), `value ${String(v)}`);
      if (bytes.length > 2) assert.equal(readSmall(bytes, 0, bytes.length - 1), NOT_SMALL, `${String(v)} cut short`);
    }
    for (const v of ['é', {}, [], 5n, new Date(0), [1]]) {
      const bytes = Buffer.from(encode(v));
      assert.equal(readSmall(bytes, 0, bytes.length), NOT_SMALL);
    }
    const a = [1, 'a', null, true, undefined, -5, 2.5, 70000, -70000];
    const bytes = Buffer.from(encode(a));
    assert.deepEqual(readSmallArray(bytes, 0, bytes.length), decode(bytes));
    assert.equal(readSmallArray(bytes, 0, bytes.length - 1), undefined, 'cut short');
    assert.equal(
      readSmallArray(Buffer.concat([bytes, Buffer.from([1])]), 0, bytes.length + 1),
      undefined,
      'bytes left over',
    );
    for (const v of [[{}], new Array(16).fill(0), 3, ['é']]) {
      const b = Buffer.from(encode(v));
      assert.equal(readSmallArray(b, 0, b.length), undefined);
    }
    assert.equal(readSmallArray(Buffer.from([0x02, 0x91, 0x01]), 0, 3), undefined, 'another format byte');
  });
});
