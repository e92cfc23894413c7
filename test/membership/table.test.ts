// Reading a silo row back (decodeSiloEntry, parseSuspicions), as every
// membership provider does: numbers as numbers or their decimal text,
// suspicions as the array or its JSON text, and a typed error naming the row
// and what was wrong otherwise.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MembershipError } from '../../src/errors.ts';
import { decodeSiloEntry, parseSuspicions, type SiloRow } from '../../src/membership/table.ts';

const row: SiloRow = {
  address: '10.0.0.1:11111',
  generation: '1700000000001',
  status: 'Active',
  gatewayAddress: null,
  hostName: 'h1',
  startedAt: 1_700_000_000_000,
  iAmAliveAt: '1700000000500',
  suspicions: '[{"by":"10.0.0.2:11111@1","at":5}]',
};

const corrupt = (problem: string, cause?: unknown): MembershipError =>
  new MembershipError(`corrupt row 10.0.0.1:11111@1700000000001: ${problem}`, cause === undefined ? {} : { cause });

describe('decodeSiloEntry', () => {
  it('reads numbers given as decimal text and suspicions given as JSON text', () => {
    assert.deepEqual(decodeSiloEntry(row, corrupt), {
      address: '10.0.0.1:11111',
      generation: 1_700_000_000_001,
      status: 'Active',
      gatewayAddress: null,
      hostName: 'h1',
      startedAt: 1_700_000_000_000,
      iAmAliveAt: 1_700_000_000_500,
      suspicions: [{ by: '10.0.0.2:11111@1', at: 5 }],
    });
    assert.deepEqual(decodeSiloEntry({ ...row, suspicions: [] }, corrupt).suspicions, []);
  });

  for (const [field, value, says] of [
    ['status', 'Lost', /unknown status "Lost"/],
    ['address', 7, /address must be text, got 7/],
    ['gatewayAddress', 7, /gatewayAddress must be text or null/],
    ['generation', 'twelve', /generation must be a finite number, got "twelve"/],
    ['iAmAliveAt', undefined, /iAmAliveAt must be a finite number, got nothing/],
    ['suspicions', '{"not":"an array"}', /bad suspicions: suspicions are not a JSON array/],
    ['suspicions', '[{"by":1}]', /bad suspicions: suspicion 0 lacks by/],
    ['suspicions', '[', /bad suspicions: suspicions are not JSON/],
  ] as const) {
    it(`fails a row whose ${field} is ${JSON.stringify(value)} with the provider's error naming the row and the problem`, () => {
      assert.throws(
        () => decodeSiloEntry({ ...row, [field]: value }, corrupt),
        (err: unknown) =>
          err instanceof MembershipError &&
          /corrupt row 10\.0\.0\.1:11111@1700000000001: /.test(err.message) &&
          says.test(err.message),
      );
    });
  }
});

describe('parseSuspicions', () => {
  it('throws a MembershipError for anything but an array of {by, at}', () => {
    assert.deepEqual(parseSuspicions([{ by: 'a', at: 1 }]), [{ by: 'a', at: 1 }]);
    for (const bad of [null, 3, '{}', [null], [{ by: 'a' }]]) {
      assert.throws(() => parseSuspicions(bad), MembershipError, JSON.stringify(bad));
    }
  });
});
