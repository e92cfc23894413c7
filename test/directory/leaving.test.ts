// The directory of three silos while one of them stops gracefully, without a
// network: the stopping silo owns its partition until it hands it over, the
// others route past it once it told them, and a silo that was not told is
// forwarded to the new owner.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { GrainDirectory, directoryHandlers, type DirectoryEntry } from '../../src/directory/directory.ts';
import { Ring } from '../../src/membership/ring.ts';
import type { ActiveSilo, ClusterView } from '../../src/membership/service.ts';
import { checkedSystemCaller, isSystemCallName, type SystemCallHandler } from '../../src/messaging/system-calls.ts';
import { silentLogger } from '../../src/observability/logger.ts';

const A = '127.0.0.1:1001';
const B = '127.0.0.1:1002';
const C = '127.0.0.1:1003';

function silo(address: string): ActiveSilo {
  return { id: `${address}@1`, address, generation: 1, gatewayAddress: null };
}

/** A view with `active` silos and `leaving` ones (ShuttingDown), as a silo other than those leaving sees it. */
function viewOf(version: number, active: string[], leaving: string[] = [], dead: string[] = []): ClusterView {
  const ring = new Ring(active);
  return {
    version,
    active: new Map(active.map((a) => [a, silo(a)])),
    ring,
    directoryRing: new Ring([...active, ...leaving]),
    dead: new Set(dead),
    leaving: new Set(leaving),
  };
}

/** Three directories whose system calls reach each other's handlers; `lost` says which calls go missing. */
function directories(lost: (from: string, to: string, name: string) => boolean = () => false): {
  dirs: Map<string, GrainDirectory>;
  calls: string[];
} {
  const dirs = new Map<string, GrainDirectory>();
  const calls: string[] = [];
  for (const self of [A, B, C]) {
    const call = checkedSystemCaller(async (to, name, args) => {
      calls.push(`${name} ${self} -> ${to}`);
      if (lost(self, to, name)) throw new Error(`${name} from ${self} to ${to} lost`);
      const dir = dirs.get(to);
      assert.ok(dir !== undefined && isSystemCallName(name));
      if (name === 'refresh') return null;
      const h = directoryHandlers(dir) as Record<string, SystemCallHandler<never>>;
      const handler = h[name];
      assert.ok(handler !== undefined, `no handler for ${name}`);
      return handler(args as never, self);
    });
    dirs.set(self, new GrainDirectory(self, { call, refresh: async () => {} }, silentLogger()));
  }
  return { dirs, calls };
}

/** A grain whose entry `owner` holds on the ring of all three, and `next` on the ring without `owner`. */
function grainOwned(owner: string, next: string, from = 0): string {
  const all = new Ring([A, B, C]);
  const without = new Ring([A, B, C].filter((a) => a !== owner));
  for (let i = from; ; i++) {
    const g = `pinned/k${i}`;
    if (all.ownerOf(g) === owner && without.ownerOf(g) === next) return g;
  }
}

const noDuplicates = (): void => assert.fail('no duplicate expected');
const onC: DirectoryEntry = { address: C, activation: 7 };

describe('the directory while a silo stops', () => {
  it('keeps the stopping silo the owner of its partition until it hands it over, then routes past it', async () => {
    const { dirs } = directories();
    const [a, b, c] = [dirs.get(A), dirs.get(B), dirs.get(C)] as [GrainDirectory, GrainDirectory, GrainDirectory];
    const g = grainOwned(B, A);
    const all = viewOf(1, [A, B, C]);
    for (const d of [a, b, c]) await d.viewChanged(all, [], noDuplicates);
    assert.deepEqual(await c.register(g, onC), onC);
    assert.equal(b.lookupLocal(g)?.[0], C);

    // B stops: the others see it leaving; B sees itself still (ShuttingDown, its own view).
    const leaving = viewOf(2, [A, C], [B]);
    await a.viewChanged(leaving, [], noDuplicates);
    assert.equal(a.ownerOf(g), B, 'B still owns the entry while it drains');
    assert.deepEqual(await a.register(g, { address: A, activation: 1 }), onC, "A's activation loses to C's");
    assert.equal(a.partitionSize, 0, 'A holds nothing of B yet');

    // B hands its partition over at the end of its stop.
    await b.handOffAll();
    assert.ok(b.left);
    assert.equal(b.partitionSize, 0);
    assert.equal(a.lookupLocal(g)?.[0], C, 'the entry moved to A');
    assert.equal(a.ownerOf(g), A, 'A routes past B at once');
    assert.equal(c.ownerOf(g), A, 'so does C, told with no entries of its own');
    assert.deepEqual(await c.register(g, { address: C, activation: 8 }), onC);

    // B is gone from the views: the same owners.
    const gone = viewOf(3, [A, C], [], [B]);
    await a.viewChanged(gone, [], noDuplicates);
    await c.viewChanged(gone, [[g, onC]], noDuplicates);
    assert.equal(a.ownerOf(g), A);
    assert.equal(a.lookupLocal(g)?.[0], C);
  });

  it('forwards the calls of a silo that was not told of the handoff to the new owner', async () => {
    // C never hears of B's handoff: it keeps asking B.
    const { dirs, calls } = directories((from, to, name) => from === B && to === C && name === 'dir.handoffAll');
    const [a, b, c] = [dirs.get(A), dirs.get(B), dirs.get(C)] as [GrainDirectory, GrainDirectory, GrainDirectory];
    const g = grainOwned(B, A);
    const h = grainOwned(B, A, Number(g.slice('pinned/k'.length)) + 1);
    const all = viewOf(1, [A, B, C]);
    for (const d of [a, b, c]) await d.viewChanged(all, [], noDuplicates);
    assert.deepEqual(await c.register(g, onC), onC);
    const leaving = viewOf(2, [A, C], [B]);
    for (const d of [a, c]) await d.viewChanged(leaving, [], noDuplicates);
    await b.handOffAll();
    assert.equal(c.ownerOf(g), B, 'C still takes B for the owner');

    calls.length = 0;
    assert.deepEqual(await c.register(g, { address: C, activation: 9 }), onC, 'the entry, from A through B');
    assert.deepEqual(calls, [`dir.register ${C} -> ${B}`, `dir.register ${B} -> ${A}`]);
    assert.deepEqual(await c.lookup(g), onC);
    // A new grain registers at A (through B), not in B's empty partition.
    assert.deepEqual(await c.register(h, { address: C, activation: 10 }), { address: C, activation: 10 });
    assert.equal(a.lookupLocal(h)?.[0], C);
    assert.equal(b.partitionSize, 0);
    // A re-registration after a view change, and an unregistration, go on to A too.
    await c.viewChanged(viewOf(3, [A, C], [B]), [[g, onC]], noDuplicates);
    c.unregister(h, { address: C, activation: 10 });
    await new Promise((r) => setImmediate(r));
    assert.equal(a.lookupLocal(h), null, 'unregistered at A');
    assert.equal(a.lookupLocal(g)?.[0], C);
    assert.equal(b.partitionSize, 0, 'B keeps nothing');
  });
});
