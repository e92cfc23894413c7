// Memory event log: the conformance suite, plus what is particular to the
// memory log (a store shared between logs).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { EventLog } from '../../../src/journal/log.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { MemoryEventStore, memoryEventLog } from '../../../src/providers/memory/event-log.ts';
import { eventLogConformance } from '../../journal/conformance.ts';
import { testSerializer } from '../../storage/serializer.ts';

const stores = new WeakMap<EventLog, MemoryEventStore>();
/** 0xff is not a format byte the codec knows. */
const garbage = new Uint8Array([0xff, 0x00, 0xde, 0xad]);

eventLogConformance('memory event log', {
  create() {
    const store = new MemoryEventStore();
    const log = memoryEventLog({ store });
    stores.set(log, store);
    return log;
  },
  corruptEvent(log, stream, version) {
    assert.ok(stores.get(log)?.replace(stream, version, garbage), 'the event to corrupt exists');
  },
  corruptSnapshot(log, stream) {
    const snapshot = stores.get(log)?.get(stream)?.snapshot;
    assert.ok(snapshot, 'the snapshot to corrupt exists');
    garbage.forEach((b, i) => (snapshot.bytes[i] = b));
  },
});

describe('memory event log specifics', () => {
  const ctx = { name: 'default', logger: silentLogger(), serializer: testSerializer };
  const s = { grainType: 'account', grainKey: 'shared', logName: 'journal' };

  it('lets two logs on one store see each other and keeps the version rule between them', async () => {
    const store = new MemoryEventStore();
    const one = memoryEventLog({ store });
    const two = memoryEventLog({ store });
    await one.init(ctx);
    await two.init(ctx);
    assert.equal(await one.append(s, [{ n: 1 }], 0), 1);
    assert.deepEqual(await two.read(s), { events: [{ version: 1, event: { n: 1 } }], version: 1 });
    assert.equal(await two.append(s, [{ n: 2 }], 1), 2);
    await assert.rejects(one.append(s, [{ n: 3 }], 1), { code: 'GRANARY_INCONSISTENT_STATE' });
    assert.equal(store.size, 1);
  });

  it('keeps its store across close and a new init', async () => {
    const log = memoryEventLog();
    await log.init(ctx);
    await log.append(s, [{ n: 1 }], 0);
    await log.close();
    await log.init(ctx);
    assert.equal((await log.read(s)).version, 1, 'a re-initialised log keeps its store');
  });
});
