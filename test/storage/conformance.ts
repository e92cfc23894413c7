// The storage provider conformance suite: the behaviour every StorageProvider
// (memory, SQLite, PostgreSQL, Redis...) must show, after Orleans'
// Persistence.TestKit. A provider's test file calls `storageConformance` once.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { silentLogger } from '../../src/observability/logger.ts';
import type { StateAddress, StorageProvider } from '../../src/storage/provider.ts';
import { testSerializer } from './serializer.ts';

/** How the suite gets a fresh provider, and how it damages a stored record. */
export interface ConformanceSetup {
  /** A new provider, not yet initialised. Each case makes its own. */
  create(): Promise<StorageProvider> | StorageProvider;
  /** Replaces the stored bytes at `address` (which has a record) with bytes the serializer cannot decode. */
  corrupt(provider: StorageProvider, address: StateAddress): Promise<void> | void;
}

/** Declares `describe(name)` with the cases every storage provider must pass. */
export function storageConformance(name: string, setup: ConformanceSetup): void {
  /** Runs `body` against a fresh, initialised provider, and closes it after. */
  async function withProvider(body: (provider: StorageProvider) => Promise<void>): Promise<void> {
    const provider = await setup.create();
    await provider.init({ name: 'default', logger: silentLogger(), serializer: testSerializer });
    try {
      await body(provider);
    } finally {
      await provider.close();
    }
  }

  describe(name, () => {
    it('reads a missing record as no state and a null etag', () =>
      withProvider(async (p) => {
        assert.deepEqual(await p.read(address('counter', 'nobody')), { state: undefined, etag: null });
      }));

    it('round-trips state with a Map, a Date, a Set, a BigInt and nested objects', () =>
      withProvider(async (p) => {
        const a = address('profile', 'alice');
        const state = {
          name: 'Alice',
          born: new Date('1990-05-17T10:20:30.456Z'),
          scores: new Map<string, number[]>([
            ['chess', [1200, 1250]],
            ['go', []],
          ]),
          tags: new Set(['a', 'b']),
          big: 12345678901234567890n,
          nested: { list: [1, 'two', { three: [null, true] }], empty: {} },
        };
        const etag = await p.write(a, state, null);
        assert.equal(typeof etag, 'string');
        assert.notEqual(etag, '');
        assert.deepEqual(await p.read(a), { state, etag });
      }));

    it('never shares stored state with the caller by reference', () =>
      withProvider(async (p) => {
        const a = address('box', 'one');
        const state = { items: ['x'], bytes: new Uint8Array([1, 2, 3]) };
        await p.write(a, state, null);
        state.items.push('changed after write');
        state.bytes[0] = 99;

        const first = await p.read(a);
        assert.deepEqual(first.state, { items: ['x'], bytes: new Uint8Array([1, 2, 3]) });
        const read = first.state as typeof state;
        read.items.push('changed after read');
        read.bytes[1] = 99;
        assert.deepEqual((await p.read(a)).state, { items: ['x'], bytes: new Uint8Array([1, 2, 3]) });
      }));

    it('refuses a write with a stale etag and changes nothing', () =>
      withProvider(async (p) => {
        const a = address('counter', 'stale');
        const e1 = await p.write(a, { value: 1 }, null);
        const e2 = await p.write(a, { value: 2 }, e1);
        assert.notEqual(e2, e1, 'each write gives a new etag');
        await assertInconsistent(p.write(a, { value: 3 }, e1), a);
        assert.deepEqual(await p.read(a), { state: { value: 2 }, etag: e2 });
      }));

    it('refuses a write with a null etag when a record exists', () =>
      withProvider(async (p) => {
        const a = address('counter', 'exists');
        const e1 = await p.write(a, { value: 1 }, null);
        await assertInconsistent(p.write(a, { value: 2 }, null), a);
        assert.deepEqual(await p.read(a), { state: { value: 1 }, etag: e1 });
      }));

    it('refuses a write with an etag when there is no record', () =>
      withProvider(async (p) => {
        const a = address('counter', 'absent');
        const other = address('counter', 'present');
        const etag = await p.write(other, { value: 1 }, null);
        await assertInconsistent(p.write(a, { value: 2 }, etag), a);
        await assertInconsistent(p.write(a, { value: 2 }, 'not-an-etag'), a);
        assert.deepEqual(await p.read(a), { state: undefined, etag: null });
      }));

    it('clears a record: a read then finds none', () =>
      withProvider(async (p) => {
        const a = address('counter', 'cleared');
        const etag = await p.write(a, { value: 1 }, null);
        await p.clear(a, etag);
        assert.deepEqual(await p.read(a), { state: undefined, etag: null });
        await p.clear(a, null); // nothing there, and none expected: fine
        const again = await p.write(a, { value: 2 }, null);
        assert.deepEqual(await p.read(a), { state: { value: 2 }, etag: again });
      }));

    it('refuses a clear with a stale or null etag and keeps the record', () =>
      withProvider(async (p) => {
        const a = address('counter', 'kept');
        const e1 = await p.write(a, { value: 1 }, null);
        const e2 = await p.write(a, { value: 2 }, e1);
        await assertInconsistent(p.clear(a, e1), a);
        await assertInconsistent(p.clear(a, null), a);
        assert.deepEqual(await p.read(a), { state: { value: 2 }, etag: e2 });
      }));

    it('never reuses an etag, not even after a clear (a stale etag from before stays stale)', () =>
      withProvider(async (p) => {
        const a = address('counter', 'aba');
        const seen = new Set<string>();
        let etag: string | null = null;
        for (let round = 0; round < 3; round++) {
          etag = await p.write(a, { round, step: 1 }, null);
          assert.ok(!seen.has(etag), `etag ${etag} was given before`);
          seen.add(etag);
          etag = await p.write(a, { round, step: 2 }, etag);
          assert.ok(!seen.has(etag), `etag ${etag} was given before`);
          seen.add(etag);
          await p.clear(a, etag);
        }
        const current = await p.write(a, { final: true }, null);
        for (const old of seen) await assertInconsistent(p.write(a, { stale: old }, old), a);
        assert.deepEqual(await p.read(a), { state: { final: true }, etag: current });
      }));

    for (const existing of [false, true]) {
      it(`lets exactly one of 20 concurrent writers win (${existing ? 'update of a record' : 'first write'})`, () =>
        withProvider(async (p) => {
          const a = address('counter', existing ? 'race-update' : 'race-insert');
          const etag = existing ? await p.write(a, { writer: -1 }, null) : null;
          const results = await Promise.allSettled(
            Array.from({ length: 20 }, (_, writer) => p.write(a, { writer }, etag)),
          );
          const winners = results.flatMap((r, writer) => (r.status === 'fulfilled' ? [{ writer, etag: r.value }] : []));
          const losers = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
          assert.equal(
            winners.length,
            1,
            `expected exactly one winner, got writers ${winners.map((w) => w.writer).join(', ')}`,
          );
          assert.equal(losers.length, 19);
          for (const err of losers)
            assert.equal(codeOf(err), 'GRANARY_INCONSISTENT_STATE', `a loser failed with ${String(err)}`);
          const [winner] = winners;
          assert.ok(winner);
          assert.deepEqual(await p.read(a), { state: { writer: winner.writer }, etag: winner.etag });
        }));
    }

    it('round-trips a 1 MiB state (1 MiB of bytes and a 1 MiB string)', () =>
      withProvider(async (p) => {
        const a = address('blob', 'big');
        const bytes = new Uint8Array(1024 * 1024);
        for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + 7) & 0xff;
        const text = 'granary-'.repeat(128 * 1024);
        const etag = await p.write(a, { bytes, text }, null);
        const read = await p.read(a);
        assert.equal(read.etag, etag);
        const state = read.state as { bytes: Uint8Array; text: string };
        assert.ok(state.bytes instanceof Uint8Array);
        assert.equal(state.bytes.length, bytes.length);
        assert.ok(Buffer.from(state.bytes).equals(Buffer.from(bytes)), 'the bytes differ');
        assert.equal(state.text.length, text.length);
        assert.ok(state.text === text, 'the string differs');
      }));

    it('keeps grains, keys, state names and types apart', () =>
      withProvider(async (p) => {
        const addresses = [
          address('counter', 'a'),
          address('counter', 'b'),
          address('counter', 'a', 'other'),
          address('account', 'a'),
          // Separators in names must not make two addresses collide.
          address('x/y', 'z'),
          address('x', 'y/z'),
          address('x', 'y', 'z'),
          address('x', 'y\u0000z'),
          address('', ''),
        ];
        const etags: string[] = [];
        for (const [i, a] of addresses.entries()) etags.push(await p.write(a, { i }, null));
        for (const [i, a] of addresses.entries()) {
          assert.deepEqual(await p.read(a), { state: { i }, etag: etags[i] }, `record of ${describeAddress(a)}`);
        }
        const first = addresses[0];
        assert.ok(first);
        await p.clear(first, etags[0] ?? null);
        assert.deepEqual(await p.read(first), { state: undefined, etag: null });
        for (const [i, a] of addresses.entries()) {
          if (i > 0)
            assert.deepEqual(
              await p.read(a),
              { state: { i }, etag: etags[i] },
              `record of ${describeAddress(a)} after a clear of another`,
            );
        }
      }));

    it('fails a read of a corrupt record with GRANARY_STORAGE_CORRUPT and leaves other records alone', () =>
      withProvider(async (p) => {
        const bad = address('ledger', 'bad');
        const good = address('ledger', 'good');
        await p.write(bad, { value: 1 }, null);
        const goodEtag = await p.write(good, { value: 2 }, null);
        await setup.corrupt(p, bad);
        await assert.rejects(p.read(bad), (err: unknown) => {
          assert.ok(err instanceof Error, `expected an Error, got ${String(err)}`);
          assert.equal(err.name, 'StorageCorruptError');
          assert.equal(codeOf(err), 'GRANARY_STORAGE_CORRUPT');
          assert.match(err.message, /ledger\/bad/, 'the message names the grain');
          assert.ok(err.message.includes("'default'"), `the message names the provider: ${err.message}`);
          assert.ok(err.message.includes(p.kind), `the message names the provider kind ${p.kind}: ${err.message}`);
          return true;
        });
        assert.deepEqual(await p.read(good), { state: { value: 2 }, etag: goodEtag });
      }));
  });
}

function address(grainType: string, grainKey: string, stateName = 'state'): StateAddress {
  return { grainType, grainKey, stateName };
}

function describeAddress(a: StateAddress): string {
  return JSON.stringify([a.grainType, a.grainKey, a.stateName]);
}

function codeOf(err: unknown): unknown {
  return typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined;
}

/** Asserts the promise fails with InconsistentStateError naming the grain and state. */
async function assertInconsistent(promise: Promise<unknown>, a: StateAddress): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof Error, `expected an Error, got ${String(err)}`);
    assert.equal(
      codeOf(err),
      'GRANARY_INCONSISTENT_STATE',
      `expected an InconsistentStateError, got ${err.name}: ${err.message}`,
    );
    assert.equal(err.name, 'InconsistentStateError');
    assert.ok(err.message.includes(`${a.grainType}/${a.grainKey}`), `the message names the grain: ${err.message}`);
    assert.ok(err.message.includes(a.stateName), `the message names the state: ${err.message}`);
    return true;
  });
}
