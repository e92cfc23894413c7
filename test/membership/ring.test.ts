import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { hash32 } from '../../src/hash.ts';
import { Ring } from '../../src/membership/ring.ts';

describe('ring', () => {
  it('hashes stably and spreads keys', () => {
    assert.equal(hash32('counter/alice'), hash32('counter/alice'));
    assert.notEqual(hash32('counter/alice'), hash32('counter/alicf'));
    assert.equal(hash32(''), 0);
    // Known MurmurHash3 x86_32 vector for an even-length ASCII string is not comparable (UTF-16 units); check spread instead.
    const buckets = new Array(16).fill(0);
    for (let i = 0; i < 16_000; i++) buckets[hash32(`g/${i}`) >>> 28]++;
    for (const b of buckets) assert.ok(b > 800 && b < 1200, `uneven buckets: ${buckets.join(',')}`);
  });

  it("gives every silo a fair share of grains, and moves only the leaver's share when one leaves", () => {
    const silos = ['10.0.0.1:1@1', '10.0.0.2:1@1', '10.0.0.3:1@1'];
    const ring = new Ring(silos);
    const counts = new Map<string, number>();
    const owner = new Map<string, string>();
    for (let i = 0; i < 30_000; i++) {
      const o = ring.ownerOf(`counter/${i}`) as string;
      owner.set(`counter/${i}`, o);
      counts.set(o, (counts.get(o) ?? 0) + 1);
    }
    for (const s of silos) assert.ok((counts.get(s) ?? 0) > 6000, `${s} owns too little: ${[...counts].join(' ')}`);
    const smaller = new Ring(silos.slice(0, 2));
    for (const [k, o] of owner) {
      if (o !== silos[2]) assert.equal(smaller.ownerOf(k), o, 'a key of a silo that stayed moved');
    }
  });

  it('agrees on owners whatever order the members come in, and lists successors', () => {
    const a = new Ring(['x@1', 'y@1', 'z@1']);
    const b = new Ring(['z@1', 'x@1', 'y@1', 'x@1']);
    for (let i = 0; i < 1000; i++) assert.equal(a.ownerOf(`k${i}`), b.ownerOf(`k${i}`));
    assert.deepEqual(a.successors('y@1', 5), ['z@1', 'x@1']);
    assert.equal(new Ring([]).ownerOf('k'), undefined);
  });
});
