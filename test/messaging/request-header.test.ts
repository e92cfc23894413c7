// Request headers read in place: the reused header object, grain ids read
// through the id table (any id, any number of them, gives its own string), and
// malformed headers refused with a ProtocolError.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  RequestHeaderSlot,
  decodeRequestHeader,
  readId,
  readRequestHeader,
  requestHead,
  requestArgs,
} from '../../src/messaging/protocol.ts';
import { ProtocolError } from '../../src/errors.ts';

function frame(targetId: string, chain: string[] | null): Buffer {
  return Buffer.concat([requestHead(7, 0, targetId, 'ping', 1000, chain, 2), requestArgs([1])]);
}

describe('request headers read in place', () => {
  it('reads ids right whatever they are, seen before or not, colliding or not', () => {
    const ids = ['', 'a', 'grain/é', 'x'.repeat(48), 'y'.repeat(49), 'z'.repeat(300)];
    for (let i = 0; i < 40_000; i++) ids.push(`t/${i}`);
    for (let round = 0; round < 2; round++) {
      for (const id of ids) {
        const b = Buffer.concat([Buffer.from('..'), Buffer.from(id, 'utf8'), Buffer.from('.')]);
        assert.equal(readId(b, 2, b.length - 1), id);
      }
    }
  });

  it('refills one header object per request, chain included', () => {
    const slot = new RequestHeaderSlot(true);
    const a = frame('g/a', ['g/c1', 'g/c2']);
    const h1 = readRequestHeader(a, 0, a.length, slot);
    assert.equal(h1, slot);
    assert.deepEqual([h1.reqId, h1.targetId, h1.method, h1.timeoutMs, h1.hops], [7, 'g/a', 'ping', 1000, 2]);
    assert.deepEqual(h1.chain, ['g/c1', 'g/c2']);
    const b = frame('g/b', ['g/c3']);
    const h2 = readRequestHeader(b, 0, b.length, slot);
    assert.equal(h2.targetId, 'g/b');
    assert.deepEqual(h2.chain, ['g/c3']);
    const c = frame('g/c', null);
    assert.equal(readRequestHeader(c, 0, c.length, slot).chain, null);
    // decodeRequestHeader gives an object of its own each time.
    assert.notEqual(decodeRequestHeader(a), decodeRequestHeader(a));
    assert.deepEqual(decodeRequestHeader(a).chain, ['g/c1', 'g/c2']);
  });

  it('refuses a header cut short, and leaves the reused object as it was', () => {
    const slot = new RequestHeaderSlot(true);
    const good = frame('g/a', ['g/c1']);
    readRequestHeader(good, 0, good.length, slot);
    for (const cut of [5, 14, 16, 20, good.length - 3]) {
      assert.throws(() => readRequestHeader(good, 0, cut, slot), ProtocolError, `cut at ${cut}`);
      assert.equal(slot.targetId, 'g/a');
    }
  });
});
