// The table of calls in flight to other silos: against a Map, through a long
// random run of adds and removes, ids in sequence with some held for long
// (so that newer ids find their slot taken), and removals in time that does
// not grow with the calls in flight.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ProtocolError } from '../../src/errors.ts';
import { PendingCalls } from '../../src/messaging/pending-calls.ts';

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

  it('adds and removes in a time that does not grow with the calls in flight, ids in sequence', () => {
    /** The fastest of three runs of 100,000 adds and removals of the oldest, with `inFlight` calls waiting. */
    const ms = (inFlight: number): number => {
      let best = Infinity;
      for (let run = 0; run < 3; run++) {
        const table = new PendingCalls<number>();
        let seq = 0;
        for (; seq < inFlight; seq++) table.set(2 * seq + 2, seq);
        const t0 = performance.now();
        for (let i = 0; i < 100_000; i++, seq++) {
          table.set(2 * seq + 2, seq);
          if (table.take(2 * (seq - inFlight) + 2) !== seq - inFlight) throw new Error(`lost call ${seq - inFlight}`);
        }
        best = Math.min(best, performance.now() - t0);
        assert.equal(table.size, inFlight);
      }
      return best;
    };
    const few = ms(100);
    const many = ms(4000);
    // Linear probing scanned every call in flight per removal here: about 40 times slower with 4,000.
    assert.ok(many < 4 * few + 20, `${many.toFixed(1)} ms with 4,000 in flight, ${few.toFixed(1)} ms with 100`);
  });

  it('refuses id 0', () => {
    assert.throws(() => new PendingCalls<number>().set(0, 1), ProtocolError);
  });
});
