// Memory storage: the conformance suite, plus what is particular to the
// memory provider (a store shared between providers).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { silentLogger } from '../../../src/observability/logger.ts';
import { MemoryStore, memoryStorage } from '../../../src/providers/memory/storage.ts';
import type { StorageProvider } from '../../../src/storage/provider.ts';
import { storageConformance } from '../../storage/conformance.ts';
import { testSerializer } from '../../storage/serializer.ts';

const stores = new WeakMap<StorageProvider, MemoryStore>();

storageConformance('memory storage', {
  create() {
    const store = new MemoryStore();
    const provider = memoryStorage({ store });
    stores.set(provider, store);
    return provider;
  },
  corrupt(provider, address) {
    const store = stores.get(provider);
    assert.ok(store, 'provider made by create()');
    // 0xff is not a valid v8 serialization header.
    const result = store.compareAndSet(
      address,
      store.get(address)?.etag ?? null,
      new Uint8Array([0xff, 0x00, 0xde, 0xad]),
    );
    assert.ok(result.ok);
  },
});

describe('memory storage specifics', () => {
  const ctx = { name: 'default', logger: silentLogger(), serializer: testSerializer };
  const a = { grainType: 'counter', grainKey: 'shared', stateName: 'count' };

  it('lets two providers on one store see each other and keeps the etag rule between them', async () => {
    const store = new MemoryStore();
    const one = memoryStorage({ store });
    const two = memoryStorage({ store });
    await one.init(ctx);
    await two.init(ctx);
    const e1 = await one.write(a, { value: 1 }, null);
    assert.deepEqual(await two.read(a), { state: { value: 1 }, etag: e1 });
    const e2 = await two.write(a, { value: 2 }, e1);
    await assert.rejects(one.write(a, { value: 3 }, e1), { code: 'GRANARY_INCONSISTENT_STATE' });
    assert.deepEqual(await one.read(a), { state: { value: 2 }, etag: e2 });
    assert.equal(store.size, 1);
  });

  it('refuses use before init and after close, with a StorageError', async () => {
    const p = memoryStorage();
    await assert.rejects(p.read(a), { name: 'StorageError', code: 'GRANARY_STORAGE' });
    await p.init(ctx);
    await p.write(a, { value: 1 }, null);
    await p.close();
    await assert.rejects(p.read(a), { name: 'StorageError', code: 'GRANARY_STORAGE' });
    await p.init(ctx);
    assert.deepEqual((await p.read(a)).state, { value: 1 }, 'a re-initialised provider keeps its store');
  });
});
