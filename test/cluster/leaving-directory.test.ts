// The directory partition of a silo in a graceful stop stays with it until it
// has handed it over: while it drains, a call for one of the grains whose
// entry it holds finds the grain's one activation, and does not make a second
// one at the silo that will own the entry once the stopping silo is gone.

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { Silo, Grain, grain, placement, silentLogger } from 'granary';
import { fastMembership } from 'granary/testing';
import { Ring } from '../../src/membership/ring.ts';
import { memoryMembership, MemoryMembershipStore } from '../../src/providers/memory/membership.ts';
import type { MembershipTable } from '../../src/membership/table.ts';
import { eventually } from '../helpers.ts';

/** Where each activation of each pinned grain was made. */
const activations = new Map<string, string[]>();

/** Activated on the silo that calls it first. */
@grain('pinned')
@placement('preferLocal')
class Pinned extends Grain {
  override async onActivate(): Promise<void> {
    activations.set(this.key, [...(activations.get(this.key) ?? []), this.silo.address]);
  }
  async address(): Promise<string> {
    return this.silo.address;
  }
}

/** A gate a test opens. */
function gate(): { wait: Promise<void>; open(): void } {
  let open = (): void => {};
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

/** Holds its silo's stop (the deactivation of its grains) until the test opens the gate. */
const drain = gate();

@grain('holdStop')
@placement('preferLocal')
class HoldStop extends Grain {
  override async onDeactivate(): Promise<void> {
    await drain.wait;
  }
  async address(): Promise<string> {
    return this.silo.address;
  }
}

/** A memory table whose reads (`holdReads`) or Dead writes (`holdDead`) wait for a gate while set. */
function heldTable(store: MemoryMembershipStore): {
  table: MembershipTable;
  holdReads: { wait: Promise<void>; open(): void } | undefined;
  holdDead: { wait: Promise<void>; open(): void } | undefined;
  deadWriteReached: { wait: Promise<void>; open(): void };
} {
  const real = memoryMembership({ store });
  const held = {
    holdReads: undefined as { wait: Promise<void>; open(): void } | undefined,
    holdDead: undefined as { wait: Promise<void>; open(): void } | undefined,
    deadWriteReached: gate(),
    table: undefined as unknown as MembershipTable,
  };
  held.table = {
    kind: real.kind,
    init: (ctx) => real.init(ctx),
    readAll: async () => {
      if (held.holdReads !== undefined) await held.holdReads.wait;
      return real.readAll();
    },
    insert: (entry, next) => real.insert(entry, next),
    update: async (entry, etag, next) => {
      if (entry.status === 'Dead' && held.holdDead !== undefined) {
        held.deadWriteReached.open();
        await held.holdDead.wait;
      }
      return real.update(entry, etag, next);
    },
    updateIAmAlive: (address, generation, at) => real.updateIAmAlive(address, generation, at),
    cleanupDefunct: (before) => real.cleanupDefunct(before),
    deleteCluster: () => real.deleteCluster(),
    close: () => real.close(),
  };
  return held;
}

describe('the directory partition of a silo in a graceful stop', () => {
  const open: Silo[] = [];
  const tables: Array<ReturnType<typeof heldTable>> = [];
  after(async () => {
    // Open every gate, so that a failed assertion does not leave a stop waiting.
    drain.open();
    for (const t of tables) {
      t.holdReads?.open();
      t.holdDead?.open();
    }
    await Promise.all(open.map((s) => s.stop().catch(() => undefined)));
  });

  it('stays with it until handed over: a call during the stop finds the one activation', async () => {
    const store = new MemoryMembershipStore();
    tables.push(heldTable(store), heldTable(store), heldTable(store));
    const silos: Silo[] = [];
    for (const t of tables) {
      const s = await Silo.start({
        clusterId: 'dir-leaving',
        grains: [Pinned, HoldStop],
        port: 0,
        membership: t.table,
        membershipOptions: fastMembership,
        loadReportIntervalMs: 50,
        logger: silentLogger(),
      });
      silos.push(s);
      open.push(s);
    }
    await eventually('every silo sees every silo', () => silos.every((s) => s.cluster?.view.active.size === 3));
    const [a, b, c] = silos as [Silo, Silo, Silo];
    const [, tb, tc] = tables as [(typeof tables)[0], (typeof tables)[0], (typeof tables)[0]];
    const [A, B, C] = [a.info.address, b.info.address, c.info.address];

    // Grains whose entry b holds, and a will hold once b is gone.
    const all = new Ring([A, B, C]);
    const withoutB = new Ring([A, C]);
    const keys: string[] = [];
    for (let i = 0; keys.length < 2; i++) {
      const id = `pinned/k${i}`;
      if (all.ownerOf(id) === B && withoutB.ownerOf(id) === A) keys.push(`k${i}`);
    }
    const [k1, k2] = keys as [string, string];
    // Each activated on c, its entry at b.
    for (const k of keys) {
      assert.equal(await c.getGrain(Pinned, k).address(), C);
      assert.deepEqual(b.cluster?.directory.lookupLocal(`pinned/${k}`)?.[0], C);
    }
    assert.equal(await b.getGrain(HoldStop, 'b').address(), B);

    // c does not see the stop yet (its reads of the table wait), so it re-registers nothing;
    // b's Dead row waits too, so that the others see b ShuttingDown after its handoff.
    tc.holdReads = gate();
    tb.holdDead = gate();
    const stopping = b.stop();
    await eventually('a sees b leaving', () => a.cluster?.view.leaving.has(B) === true, 5000);

    // b drains (its grain's onDeactivate waits): its partition is still its own.
    assert.equal(await a.getGrain(Pinned, k1).address(), C, 'a call from a during the drain reaches c');
    assert.deepEqual(activations.get(k1), [C], `${k1}: one activation`);

    // b has handed its partition over and is about to leave the table.
    drain.open();
    await tb.deadWriteReached.wait;
    assert.equal(b.cluster?.directory.partitionSize, 0);
    assert.equal(await a.getGrain(Pinned, k2).address(), C, 'a call from a after the handoff reaches c');
    assert.deepEqual(activations.get(k2), [C], `${k2}: one activation`);

    tb.holdDead.open();
    tc.holdReads.open();
    await stopping;
    await eventually('a and c see b gone', () => !a.cluster?.view.leaving.has(B) && !c.cluster?.view.leaving.has(B));
    for (const k of keys) {
      assert.equal(await a.getGrain(Pinned, k).address(), C);
      assert.equal(await c.getGrain(Pinned, k).address(), C);
      assert.equal(a.cluster?.directory.lookupLocal(`pinned/${k}`)?.[0], C, `${k}: its entry moved to a`);
      assert.deepEqual(activations.get(k), [C], `${k}: one activation`);
    }
  });
});
