import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { place, type PlacementCandidate } from '../../src/placement/placement.ts';
import { ConfigurationError } from 'granary';

const silos: PlacementCandidate[] = [
  { address: 'a:1', activations: 100 },
  { address: 'b:1', activations: 10 },
  { address: 'c:1', activations: 50 },
];
const g = { type: 't', key: 'k' };

describe('placement', () => {
  it('activationCount picks the lighter of two random silos, so the heaviest never wins', () => {
    const seen = new Map<string, number>();
    for (let i = 0; i < 3000; i++) {
      const s = place('activationCount', g, 't/k', silos, 'a:1');
      seen.set(s, (seen.get(s) ?? 0) + 1);
    }
    assert.equal(seen.get('a:1') ?? 0, 0);
    assert.ok((seen.get('b:1') ?? 0) > (seen.get('c:1') ?? 0));
  });

  it('random spreads, preferLocal keeps local, hash is stable and order-free', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 300; i++) seen.add(place('random', g, 't/k', silos, 'a:1'));
    assert.equal(seen.size, 3);
    assert.equal(place('preferLocal', g, 't/k', silos, 'c:1'), 'c:1');
    assert.ok(['a:1', 'b:1', 'c:1'].includes(place('preferLocal', g, 't/k', silos, 'z:1')));
    const h = place('hash', g, 't/k', silos, 'a:1');
    assert.equal(place('hash', g, 't/k', [...silos].reverse(), 'b:1'), h);
  });

  it('runs a custom strategy and refuses an answer that is not a candidate', () => {
    assert.equal(place({ name: 'last', place: (_g, s) => s[s.length - 1] as string }, g, 't/k', silos, 'a:1'), 'c:1');
    assert.throws(() => place({ name: 'bad', place: () => 'nowhere:1' }, g, 't/k', silos, 'a:1'), ConfigurationError);
  });
});
