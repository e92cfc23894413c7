// Memory membership: the conformance suite on one shared store, plus what is
// particular to the memory provider (private stores, copies, use before init).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MembershipError } from '../../../src/errors.ts';
import type { SiloEntry } from '../../../src/membership/table.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { MemoryMembershipStore, memoryMembership } from '../../../src/providers/memory/membership.ts';
import { membershipConformance } from '../../membership/conformance.ts';

const store = new MemoryMembershipStore();
membershipConformance('memory membership', { create: () => memoryMembership({ store }) });

const entry: SiloEntry = {
  address: '127.0.0.1:11111',
  generation: 1,
  status: 'Active',
  gatewayAddress: null,
  hostName: 'h',
  startedAt: 1,
  iAmAliveAt: 2,
  suspicions: [{ by: 'x:1@1', at: 3 }],
};

describe('memory membership specifics', () => {
  it('has kind memory', () => {
    assert.equal(memoryMembership().kind, 'memory');
  });

  it('gives each provider a private store unless one is passed', async () => {
    const a = memoryMembership();
    const b = memoryMembership();
    await a.init({ clusterId: 'c', logger: silentLogger() });
    await b.init({ clusterId: 'c', logger: silentLogger() });
    assert.equal(await a.insert(entry, { version: 1, etag: (await a.readAll()).version.etag }), true);
    assert.deepEqual((await b.readAll()).entries, []);
  });

  it('never shares an entry with the caller by reference', async () => {
    const t = memoryMembership();
    await t.init({ clusterId: 'c', logger: silentLogger() });
    const mine = { ...entry, suspicions: [...entry.suspicions] };
    assert.equal(await t.insert(mine, { version: 1, etag: (await t.readAll()).version.etag }), true);
    mine.suspicions.push({ by: 'changed after insert', at: 0 });

    const read = await t.readAll();
    assert.deepEqual(read.entries[0]?.entry, entry);
    const row = read.entries[0]?.entry as unknown as
      { suspicions: Array<{ by: string; at: number }>; status: string } | undefined;
    assert.ok(row);
    row.suspicions.push({ by: 'changed after read', at: 0 });
    row.status = 'Dead';
    (read.version as { version: number }).version = 99;

    const again = await t.readAll();
    assert.deepEqual(again.entries[0]?.entry, entry);
    assert.equal(again.version.version, 1);
  });

  it('throws a MembershipError when used before init or after close', async () => {
    const t = memoryMembership();
    await assert.rejects(
      t.readAll(),
      (e: unknown) => e instanceof MembershipError && /not initialised/.test(e.message),
    );
    await t.init({ clusterId: 'c', logger: silentLogger() });
    await t.close();
    await assert.rejects(t.insert(entry, { version: 1, etag: '1' }), MembershipError);
  });
});
