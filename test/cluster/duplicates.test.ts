// Two activations of one grain, made on purpose by losing a directory entry:
// the next view change finds them, deactivates one, and calls reach the other.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Grain, grain } from 'granary';
import { TestCluster, waitFor } from 'granary/testing';

const live = new Map<string, Set<string>>();

@grain('dup')
class Dup extends Grain {
  override async onActivate(): Promise<void> {
    (live.get(this.key) ?? live.set(this.key, new Set()).get(this.key))?.add(this.silo.address);
  }
  override async onDeactivate(): Promise<void> {
    live.get(this.key)?.delete(this.silo.address);
  }
  async where(): Promise<string> {
    return this.silo.address;
  }
}

describe('duplicate activations', () => {
  it('are found when the view changes: one is deactivated and every caller reaches the other', async () => {
    const c = await TestCluster.start({ silos: 2, grains: [Dup] });
    try {
      const [a, b] = c.silos as [NonNullable<(typeof c.silos)[0]>, NonNullable<(typeof c.silos)[0]>];
      // Find a grain that lives on a.
      let key = '';
      for (let i = 0; i < 100 && key === ''; i++)
        if ((await a.getGrain(Dup, `d${i}`).where()) === a.info.address) key = `d${i}`;
      assert.notEqual(key, '');
      const id = `dup/${key}`;
      // Lose its directory entry, then make b activate it too.
      for (const s of c.silos) {
        const entry = s.cluster?.directory.lookupLocal(id);
        if (entry !== null && entry !== undefined)
          s.cluster?.directory.unregisterLocal(id, { address: entry[0], activation: entry[1] });
        s.cluster?.directory.invalidate(id);
      }
      // Ask b until its placement picks itself: with the entry gone, b's activation registers too.
      await waitFor(
        'a second activation on b',
        async () => {
          b.cluster?.directory.invalidate(id);
          const w = await b.getGrain(Dup, key).withOptions({ timeoutMs: 2000 }).where();
          return w === b.info.address || (live.get(key)?.size ?? 0) === 2;
        },
        10_000,
      );
      assert.equal(live.get(key)?.size, 2, `expected two activations, have ${[...(live.get(key) ?? [])].join(', ')}`);
      // A view change (a silo joins) makes every silo re-register: the duplicate is found.
      await c.startSilo();
      await waitFor('one activation left', () => live.get(key)?.size === 1, 10_000);
      const survivors = [...(live.get(key) ?? [])];
      for (const s of c.live()) assert.equal(await s.getGrain(Dup, key).where(), survivors[0]);
    } finally {
      await c.stop();
    }
  });
});
