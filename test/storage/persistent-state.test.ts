// PersistentState when a write fails: the in-memory state is kept, and a write
// whose outcome is unknown (the store failed after it may have applied it)
// does not leave the grain failing with InconsistentStateError forever: the
// next write re-reads the record and finds out.

import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import { InconsistentStateError, StorageError } from '../../src/errors.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { MemoryStore, memoryStorage } from '../../src/providers/memory/storage.ts';
import { PersistentStateImpl } from '../../src/storage/persistent-state.ts';
import type { ProviderContext, StateAddress, StorageProvider, StoredState } from '../../src/storage/provider.ts';
import { testSerializer } from './serializer.ts';

/** How the fake store fails its next writes and clears. */
type Failure =
  | 'none'
  /** Applies the change, then fails as a connection that died before the answer came. */
  | 'after-applying'
  /** Fails without applying anything, as a connection that died before the request left. */
  | 'before-applying';

/** A memory provider whose writes, clears and reads can be made to fail, counting its reads. */
class FlakyStorage implements StorageProvider {
  readonly kind = 'flaky';
  readonly store = new MemoryStore();
  readonly #inner = memoryStorage({ store: this.store });
  failWrites: Failure = 'none';
  failReads = false;
  reads = 0;

  async init(ctx: ProviderContext): Promise<void> {
    await this.#inner.init(ctx);
  }

  async read(address: StateAddress): Promise<StoredState> {
    this.reads++;
    if (this.failReads) throw new StorageError('flaky storage: connection refused');
    return this.#inner.read(address);
  }

  async write(address: StateAddress, state: unknown, etag: string | null): Promise<string> {
    if (this.failWrites === 'before-applying') throw new StorageError('flaky storage: connection refused');
    const written = await this.#inner.write(address, state, etag);
    if (this.failWrites === 'after-applying')
      throw new StorageError('flaky storage: connection lost before the answer');
    return written;
  }

  async clear(address: StateAddress, etag: string | null): Promise<void> {
    if (this.failWrites === 'before-applying') throw new StorageError('flaky storage: connection refused');
    await this.#inner.clear(address, etag);
    if (this.failWrites === 'after-applying')
      throw new StorageError('flaky storage: connection lost before the answer');
  }

  async close(): Promise<void> {
    await this.#inner.close();
  }
}

interface Cart {
  items: string[];
  total: number;
}

const address: StateAddress = { grainType: 'cart', grainKey: 'alice', stateName: 'cart' };

let provider: FlakyStorage;
let stateOf: () => PersistentStateImpl<Cart>;

beforeEach(async () => {
  provider = new FlakyStorage();
  await provider.init({ name: 'default', logger: silentLogger(), serializer: testSerializer });
  stateOf = () => new PersistentStateImpl<Cart>(address, provider, 'default', () => ({ items: [], total: 0 }));
});

/** What is stored at `address`, as another activation would read it. */
async function stored(): Promise<StoredState> {
  const other = stateOf();
  await other.read();
  return { state: other.recordExists ? other.state : undefined, etag: other.etag };
}

/** Another writer (say, a second activation after a split brain) replaces the record. */
async function writtenByAnother(cart: Cart): Promise<void> {
  const other = stateOf();
  await other.read();
  other.state = cart;
  await other.write();
}

describe('PersistentState after a failed write', () => {
  it('keeps the in-memory state when a write fails, and writes it once the store is back', async () => {
    const s = stateOf();
    await s.read();
    s.state.items.push('apple');
    provider.failWrites = 'before-applying';
    await assert.rejects(s.write(), { name: 'StorageError', code: 'GRANARY_STORAGE' });
    assert.deepEqual(s.state, { items: ['apple'], total: 0 }, 'the state the grain changed is not lost');
    assert.equal(s.recordExists, false);

    provider.failWrites = 'none';
    await s.write();
    assert.deepEqual(await stored(), { state: { items: ['apple'], total: 0 }, etag: s.etag });
  });

  it('after a write that landed but reported failure, the next write adopts its etag instead of failing', async () => {
    const s = stateOf();
    await s.read();
    s.state = { items: ['apple'], total: 1 };
    await s.write();

    s.state.items.push('pear');
    s.state.total = 2;
    provider.failWrites = 'after-applying';
    await assert.rejects(s.write(), { name: 'StorageError', code: 'GRANARY_STORAGE' });
    assert.deepEqual((await stored()).state, { items: ['apple', 'pear'], total: 2 }, 'the failed write did land');

    provider.failWrites = 'none';
    s.state.items.push('plum');
    s.state.total = 3;
    await s.write();
    const now = await stored();
    assert.deepEqual(now.state, { items: ['apple', 'pear', 'plum'], total: 3 });
    assert.equal(s.etag, now.etag);
    // And the grain goes on writing normally.
    s.state.total = 4;
    await s.write();
    assert.deepEqual((await stored()).state, { items: ['apple', 'pear', 'plum'], total: 4 });
  });

  it('after a first write (no record yet) that landed but reported failure, the next write succeeds', async () => {
    const s = stateOf();
    await s.read();
    s.state.items.push('apple');
    provider.failWrites = 'after-applying';
    await assert.rejects(s.write(), { code: 'GRANARY_STORAGE' });
    provider.failWrites = 'none';
    s.state.total = 1;
    await s.write();
    assert.equal(s.recordExists, true);
    assert.deepEqual(await stored(), { state: { items: ['apple'], total: 1 }, etag: s.etag });
  });

  it('after a write that did not land, the next write goes ahead with the etag it had', async () => {
    const s = stateOf();
    await s.read();
    await s.write();
    const before = s.etag;
    s.state.total = 5;
    provider.failWrites = 'before-applying';
    await assert.rejects(s.write(), { code: 'GRANARY_STORAGE' });
    assert.equal(s.etag, before, 'a failed write keeps the etag');
    provider.failWrites = 'none';
    await s.write();
    assert.deepEqual(await stored(), { state: { items: [], total: 5 }, etag: s.etag });
  });

  it('after a write of unknown outcome, a record changed by another writer still fails with InconsistentStateError until read()', async () => {
    const s = stateOf();
    await s.read();
    await s.write();
    s.state.total = 1;
    provider.failWrites = 'before-applying';
    await assert.rejects(s.write(), { code: 'GRANARY_STORAGE' });
    provider.failWrites = 'none';
    await writtenByAnother({ items: ['theirs'], total: 99 });

    await assert.rejects(s.write(), (err: unknown) => {
      assert.ok(err instanceof InconsistentStateError, String(err));
      assert.match(err.message, /cart\/alice/);
      assert.match(err.message, /outcome|whether it was stored/);
      return true;
    });
    assert.deepEqual(s.state, { items: [], total: 1 }, 'the state the grain changed is not lost');
    await assert.rejects(s.write(), InconsistentStateError, 'the etag is still stale');
    assert.deepEqual((await stored()).state, { items: ['theirs'], total: 99 }, 'nothing overwrote the other writer');

    await s.read();
    assert.deepEqual(s.state, { items: ['theirs'], total: 99 });
    s.state.total = 100;
    await s.write();
    assert.deepEqual((await stored()).state, { items: ['theirs'], total: 100 });
  });

  it('while the store is still down, the next write fails with StorageError and still finds out once it is back', async () => {
    const s = stateOf();
    await s.read();
    await s.write();
    s.state.total = 7;
    provider.failWrites = 'after-applying';
    await assert.rejects(s.write(), { code: 'GRANARY_STORAGE' });
    provider.failReads = true;
    provider.failWrites = 'before-applying';
    await assert.rejects(s.write(), (err: unknown) => {
      assert.ok(err instanceof StorageError, String(err));
      assert.equal(err.code, 'GRANARY_STORAGE');
      return true;
    });
    provider.failReads = false;
    provider.failWrites = 'none';
    s.state.total = 8;
    await s.write();
    assert.deepEqual((await stored()).state, { items: [], total: 8 });
  });

  it('after a clear that landed but reported failure, the next write creates the record', async () => {
    const s = stateOf();
    await s.read();
    s.state.total = 1;
    await s.write();
    provider.failWrites = 'after-applying';
    await assert.rejects(s.clear(), { code: 'GRANARY_STORAGE' });
    assert.deepEqual(await stored(), { state: undefined, etag: null }, 'the failed clear did land');
    assert.deepEqual(s.state, { items: [], total: 1 }, 'a failed clear keeps the state');
    provider.failWrites = 'none';
    await s.write();
    assert.deepEqual(await stored(), { state: { items: [], total: 1 }, etag: s.etag });
  });

  it('re-reads only after a write of unknown outcome: not after a success, a stale etag or a state that cannot be serialized', async () => {
    const s = stateOf();
    await s.read();
    await s.write();
    await s.write();
    await writtenByAnother({ items: [], total: 42 });
    const readsBefore = provider.reads;
    await assert.rejects(s.write(), InconsistentStateError);
    await assert.rejects(s.write(), InconsistentStateError, 'a stale etag stays stale, as before');
    await s.read();
    (s.state as unknown as { total: unknown }).total = () => 1;
    await assert.rejects(s.write(), { code: 'GRANARY_SERIALIZATION' });
    s.state.total = 43;
    await s.write();
    assert.equal(provider.reads - readsBefore, 1, "the store was read once, by the grain's own read()");
    assert.deepEqual((await stored()).state, { items: [], total: 43 });
  });
});
