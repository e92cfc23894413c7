import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Silo,
  Grain,
  grain,
  silentLogger,
  memoryStorage,
  InconsistentStateError,
  ConfigurationError,
  StorageError,
  type GrainRef,
  type StorageProvider,
  type StateAddress,
  type PersistentState,
} from 'granary';
import { sqliteStorage } from 'granary/sqlite';
import { Counter } from '../grains/basic.ts';

const seenAtActivate: Array<{ key: string; value: number; exists: boolean }> = [];

interface ProfileData {
  name: string;
  friends: GrainRef<Profile>[];
  seen: Map<string, Date>;
}

@grain('profile')
class Profile extends Grain {
  readonly data: PersistentState<ProfileData> = this.persistentState<ProfileData>('data', {
    initial: () => ({ name: '', friends: [], seen: new Map() }),
  });
  readonly visits = this.persistentState('visits', { storage: 'other', initial: () => ({ value: 0 }) });

  override async onActivate(): Promise<void> {
    seenAtActivate.push({ key: this.key, value: this.visits.state.value, exists: this.visits.recordExists });
  }
  async setName(name: string): Promise<void> {
    this.data.state.name = name;
    this.data.state.seen.set(name, new Date(1000));
    await this.data.write();
  }
  async befriend(other: GrainRef<Profile>): Promise<void> {
    this.data.state.friends.push(other);
    await this.data.write();
  }
  async friendNames(): Promise<string[]> {
    return Promise.all(this.data.state.friends.map((f) => f.name()));
  }
  async name(): Promise<string> {
    return this.data.state.name;
  }
  async visit(): Promise<number> {
    this.visits.state.value++;
    await this.visits.write();
    return this.visits.state.value;
  }
  async seen(): Promise<Map<string, Date>> {
    return this.data.state.seen;
  }
  async leave(): Promise<void> {
    this.deactivateOnIdle();
  }
}

@grain('misconfigured')
class Misconfigured extends Grain {
  readonly s = this.persistentState('s', { storage: 'nowhere', initial: () => 1 });
  async hello(): Promise<number> {
    return this.s.state;
  }
}

function tmpFile(name: string): string {
  return join(mkdtempSync(join(tmpdir(), 'granary-state-')), name);
}

describe('persistent state', () => {
  it('loads state before onActivate, and writes survive deactivation and silo restarts (SQLite)', async () => {
    const path = tmpFile('state.db');
    const start = () =>
      Silo.start({
        grains: [Profile],
        storage: { default: sqliteStorage({ path }), other: sqliteStorage({ path, tablePrefix: 'other_' }) },
        logger: silentLogger(),
      });
    let silo = await start();
    const alice = silo.getGrain(Profile, 'alice');
    await alice.setName('Alice');
    assert.equal(await alice.visit(), 1);
    assert.equal(await alice.visit(), 2);
    await alice.befriend(silo.getGrain(Profile, 'bob'));
    await silo.getGrain(Profile, 'bob').setName('Bob');
    await silo.stop();

    seenAtActivate.length = 0;
    silo = await start();
    try {
      const again = silo.getGrain(Profile, 'alice');
      assert.equal(await again.name(), 'Alice');
      assert.deepEqual(seenAtActivate, [{ key: 'alice', value: 2, exists: true }]);
      assert.deepEqual(await again.friendNames(), ['Bob'], 'a reference stored in state works after a restart');
      assert.deepEqual(await again.seen(), new Map([['Alice', new Date(1000)]]));
      assert.equal(await again.visit(), 3);
    } finally {
      await silo.stop();
    }
  });

  it('fails a write with a stale ETag with InconsistentStateError and changes nothing', async () => {
    const path = tmpFile('etag.db');
    const a = await Silo.start({
      grains: [Counter],
      storage: { default: sqliteStorage({ path }) },
      logger: silentLogger(),
    });
    const b = await Silo.start({
      grains: [Counter],
      storage: { default: sqliteStorage({ path }) },
      logger: silentLogger(),
    });
    try {
      // Two activations of one grain (two silos sharing a file, no directory yet): the second writer is stale.
      assert.equal(await a.getGrain(Counter, 'shared').increment(1), 1);
      assert.equal(await b.getGrain(Counter, 'shared').get(), 1);
      assert.equal(await a.getGrain(Counter, 'shared').increment(1), 2);
      await assert.rejects(
        b.getGrain(Counter, 'shared').increment(10),
        (e: unknown) => e instanceof InconsistentStateError && e.code === 'GRANARY_INCONSISTENT_STATE',
      );
    } finally {
      await a.stop();
      await b.stop();
    }
    const c = await Silo.start({
      grains: [Counter],
      storage: { default: sqliteStorage({ path }) },
      logger: silentLogger(),
    });
    try {
      assert.equal(await c.getGrain(Counter, 'shared').get(), 2, 'the stale write changed nothing');
    } finally {
      await c.stop();
    }
  });

  it('clears state: the record goes and the state is initial again', async () => {
    const silo = await Silo.start({ grains: [Counter], logger: silentLogger() });
    try {
      const c = silo.getGrain(Counter, 'clear');
      await c.increment(4);
      assert.notEqual(await c.etag(), null);
      await c.reset();
      assert.equal(await c.get(), 0);
      assert.equal(await c.etag(), null);
      assert.equal(await c.increment(1), 1);
    } finally {
      await silo.stop();
    }
  });

  it('fails activation with a clear error when a state names a provider that is not configured', async () => {
    const silo = await Silo.start({ grains: [Misconfigured], logger: silentLogger() });
    try {
      await assert.rejects(
        silo.getGrain(Misconfigured, 'x').hello(),
        (e: unknown) =>
          e instanceof ConfigurationError && /nowhere/.test(e.message) && /misconfigured\/x/.test(e.message),
      );
    } finally {
      await silo.stop();
    }
  });

  it('fails only the affected grain when its stored state is corrupt', async () => {
    const inner = memoryStorage();
    let corruptKey = '';
    const provider: StorageProvider = {
      kind: 'memory',
      init: (ctx) => inner.init(ctx),
      read: (a: StateAddress) => {
        if (a.grainKey === corruptKey)
          return Promise.reject(
            new StorageError(`corrupt row for ${a.grainType}/${a.grainKey}`, 'GRANARY_STORAGE_CORRUPT'),
          );
        return inner.read(a);
      },
      write: (a, s, e) => inner.write(a, s, e),
      clear: (a, e) => inner.clear(a, e),
      close: () => inner.close(),
    };
    corruptKey = 'broken';
    const silo = await Silo.start({ grains: [Counter], storage: { default: provider }, logger: silentLogger() });
    try {
      await assert.rejects(
        silo.getGrain(Counter, 'broken').get(),
        (e: unknown) =>
          e instanceof StorageError && e.code === 'GRANARY_STORAGE_CORRUPT' && /counter\/broken/.test(e.message),
      );
      assert.equal(await silo.getGrain(Counter, 'fine').increment(), 1);
    } finally {
      await silo.stop();
    }
  });
});
