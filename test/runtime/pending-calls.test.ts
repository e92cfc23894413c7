// The table of calls in flight to other silos: against a Map, through a long
// random run of adds and removes, ids in sequence with some held for long.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PendingCalls } from '../../src/runtime/pending-calls.ts';

describe('PendingCalls', () => {
  it('agrees with a Map through random adds, takes and deletes', () => {
    const table = new PendingCalls<string>(16);
    const map = new Map<number, string>();
    let seed = 42;
    const rand = (): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    let seq = 0xfffff000; // wraps past 2^32 on the way
    for (let step = 0; step < 200_000; step++) {
      const r = rand();
      if (r < 0.5 || map.size === 0) {
        seq = (seq + 2) >>> 0 || 2;
        const id = rand() < 0.5 ? seq : seq + 1;
        table.set(id, `v${id}`);
        map.set(id, `v${id}`);
      } else {
        // Mostly the oldest (answers come back roughly in order), sometimes any.
        const keys = [...map.keys()];
        const id = (rand() < 0.8 ? keys[0] : keys[Math.floor(rand() * keys.length)]) as number;
        if (rand() < 0.5) assert.equal(table.take(id), map.get(id));
        else assert.equal(table.delete(id), true);
        map.delete(id);
        assert.equal(table.take(id), undefined);
        assert.equal(table.delete(id), false);
      }
      assert.equal(table.size, map.size);
      if (step % 1000 === 0) {
        for (const [k, v] of map) assert.equal(table.get(k), v);
        assert.deepEqual(new Map(table.entries()), map);
      }
    }
    table.clear();
    assert.equal(table.size, 0);
    assert.deepEqual(table.entries(), []);
  });

  it('refuses id 0', () => {
    assert.throws(() => new PendingCalls<number>().set(0, 1), RangeError);
  });
});
