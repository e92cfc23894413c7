// Reading a reminder row back (decodeReminderRow), as every reminder table
// does: numbers as numbers or their decimal text; a row that cannot be read
// says why (in the store's own field names); a last tick that cannot be read
// leaves the reminder without it, never skipped.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeReminderRow, reminderColumns, type ReminderRow } from '../../src/reminders/table.ts';

const row: ReminderRow = {
  grainId: 'counter/1',
  name: 'tick',
  grainHash: '4294967295',
  startAt: 1_700_000_000_000,
  periodMs: '60000',
  etag: '7',
  lastTickAt: null,
};

describe('decodeReminderRow', () => {
  it('reads numbers given as decimal text, and no last tick from null', () => {
    assert.deepEqual(decodeReminderRow(row), {
      reminder: {
        grainId: 'counter/1',
        name: 'tick',
        grainHash: 4_294_967_295,
        startAt: 1_700_000_000_000,
        periodMs: 60_000,
        etag: '7',
      },
    });
    assert.equal(decodeReminderRow({ ...row, lastTickAt: 5n }).reminder?.lastTickAt, 5);
  });

  for (const [field, value, says] of [
    ['grainHash', 4_294_967_296, /grain_hash must be a whole number from 0 to 4294967295, got 4294967296/],
    ['startAt', '1.5', /start_at must be a whole number of epoch ms/],
    ['periodMs', 0, /period_ms must be a whole number of ms, 1 or more, got 0/],
    ['etag', '', /etag must be non-empty text/],
    ['name', 3, /grain_id and name must be text/],
  ] as const) {
    it(`says why a row whose ${field} is ${JSON.stringify(value)} cannot be read`, () => {
      const decoded = decodeReminderRow({ ...row, [field]: value });
      assert.equal(decoded.reminder, undefined);
      assert.match('problem' in decoded ? decoded.problem : '', says);
    });
  }

  it('reads a row whose last tick is beyond ±2^53 without it, and says so in the names it is given', () => {
    const decoded = decodeReminderRow(
      { ...row, lastTickAt: '9007199254740993' },
      { ...reminderColumns, lastTickAt: 'the latest tick' },
    );
    assert.equal(decoded.reminder?.etag, '7');
    assert.equal(decoded.reminder?.lastTickAt, undefined);
    assert.match(
      'lastTickProblem' in decoded ? String(decoded.lastTickProblem) : '',
      /the latest tick .*9007199254740993/,
    );
  });
});
