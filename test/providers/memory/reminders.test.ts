// Memory reminders: the conformance suite on one shared store, plus what is
// particular to the memory provider (private stores, copies, the public entry point).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { memoryReminders as fromEntryPoint, MemoryReminderStore as StoreFromEntryPoint } from '../../../src/index.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { MemoryReminderStore, memoryReminders } from '../../../src/providers/memory/reminders.ts';
import type { ReminderEntry } from '../../../src/reminders/table.ts';
import { reminderConformance } from '../../reminders/conformance.ts';

const store = new MemoryReminderStore();
reminderConformance('memory reminders', { create: () => memoryReminders({ store }) });

const entry: ReminderEntry = { grainId: 'g/1', name: 'r', grainHash: 5, startAt: 1_700_000_000_000, periodMs: 60_000 };

describe('memory reminders specifics', () => {
  it('has kind memory and is exported from the granary entry point', () => {
    assert.equal(memoryReminders().kind, 'memory');
    assert.equal(fromEntryPoint, memoryReminders);
    assert.equal(StoreFromEntryPoint, MemoryReminderStore);
  });

  it('gives each provider a private store unless one is passed', async () => {
    const a = memoryReminders();
    const b = memoryReminders();
    await a.init({ clusterId: 'c', logger: silentLogger() });
    await b.init({ clusterId: 'c', logger: silentLogger() });
    await a.upsert(entry);
    assert.deepEqual(await b.readRange(0, 0), []);
  });

  it('never shares a reminder with the caller by reference', async () => {
    const t = memoryReminders();
    await t.init({ clusterId: 'c', logger: silentLogger() });
    const mine = { ...entry };
    const etag = await t.upsert(mine);
    mine.startAt = 0;

    const [read] = await t.readRange(0, 0);
    assert.deepEqual(read, { ...entry, etag });
    (read as { periodMs: number }).periodMs = 1;
    assert.deepEqual(await t.read(entry.grainId, entry.name), { ...entry, etag });
  });

  it('refuses to open for a second cluster while open for one', async () => {
    const t = memoryReminders();
    await t.init({ clusterId: 'a', logger: silentLogger() });
    await t.init({ clusterId: 'a', logger: silentLogger() });
    await assert.rejects(t.init({ clusterId: 'b', logger: silentLogger() }), {
      name: 'ReminderError',
      message: /already open for cluster "a"/,
    });
    await t.close();
    await t.init({ clusterId: 'b', logger: silentLogger() });
  });
});
