// The event log conformance suite: the behaviour every EventLog (memory,
// SQLite, PostgreSQL...) must show. A provider's test file calls
// `eventLogConformance` once per configuration.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigurationError } from '../../src/errors.ts';
import type { EventLog, LogAddress } from '../../src/journal/log.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { testSerializer } from '../storage/serializer.ts';

/** How the suite gets a fresh log, and how it damages stored rows. */
export interface EventLogConformanceSetup {
  /** A new log, not yet initialised. Each case makes its own. */
  create(): Promise<EventLog> | EventLog;
  /** Replaces the stored bytes of event `version` of `stream` with bytes the serializer cannot decode. */
  corruptEvent(log: EventLog, stream: LogAddress, version: number): Promise<void> | void;
  /** The same for the stream's snapshot. */
  corruptSnapshot(log: EventLog, stream: LogAddress): Promise<void> | void;
  /**
   * False for a store whose names cannot hold the NUL character (PostgreSQL
   * text): it must then refuse such a stream with a StorageError saying so.
   * Default true.
   */
  readonly nulInNames?: boolean;
  /**
   * False for a store whose names cannot hold unpaired UTF-16 surrogates (the
   * PostgreSQL driver sends each as U+FFFD, which would make two streams
   * one): it must then refuse such a stream with a StorageError saying so.
   * Default true.
   */
  readonly unpairedSurrogatesInNames?: boolean;
}

/** Declares `describe(name)` with the cases every event log must pass. */
export function eventLogConformance(name: string, setup: EventLogConformanceSetup): void {
  /** Runs `body` against a fresh, initialised log, and closes it after. */
  async function withLog(body: (log: EventLog) => Promise<void>): Promise<void> {
    const log = await setup.create();
    await log.init({ name: 'default', logger: silentLogger(), serializer: testSerializer });
    try {
      await body(log);
    } finally {
      await log.close();
    }
  }

  describe(name, () => {
    it('reads a stream with no event as version 0, no events and no snapshot', () =>
      withLog(async (log) => {
        assert.deepEqual(await log.read(stream('account', 'nobody')), { events: [], version: 0 });
        assert.deepEqual(await log.readEvents(stream('account', 'nobody'), 0, 10), []);
      }));

    it('appends events with 1-based versions and reads them back in order', () =>
      withLog(async (log) => {
        const s = stream('account', 'alice');
        assert.equal(await log.append(s, [{ deposit: 10 }], 0), 1);
        assert.equal(await log.append(s, [{ deposit: 5 }, { withdraw: 3 }], 1), 3);
        assert.deepEqual(await log.read(s), {
          events: [
            { version: 1, event: { deposit: 10 } },
            { version: 2, event: { deposit: 5 } },
            { version: 3, event: { withdraw: 3 } },
          ],
          version: 3,
        });
      }));

    it('round-trips events with a Map, a Date, a Set, a BigInt and nested objects', () =>
      withLog(async (log) => {
        const s = stream('profile', 'alice');
        const event = {
          at: new Date('1990-05-17T10:20:30.456Z'),
          scores: new Map<string, number[]>([
            ['chess', [1200, 1250]],
            ['go', []],
          ]),
          tags: new Set(['a', 'b']),
          big: 12345678901234567890n,
          nested: { list: [1, 'two', { three: [null, true] }], empty: {} },
          bytes: new Uint8Array([1, 2, 3]),
        };
        await log.append(s, [event, 42n, 'plain', null], 0);
        const expected = [event, 42n, 'plain', null].map((e, i) => ({ version: i + 1, event: e }));
        assert.deepEqual((await log.read(s)).events, expected);
        assert.deepEqual(await log.readEvents(s, 0, 4), expected);
        await log.writeSnapshot(s, 4, { last: event });
        assert.deepEqual((await log.read(s)).snapshot, { version: 4, state: { last: event } });
      }));

    it('never shares stored events or snapshots with the caller by reference', () =>
      withLog(async (log) => {
        const s = stream('box', 'one');
        const event = { items: ['x'], bytes: new Uint8Array([1, 2, 3]) };
        const state = { items: ['s'] };
        await log.append(s, [event], 0);
        await log.writeSnapshot(s, 1, state);
        event.items.push('changed after append');
        event.bytes[0] = 99;
        state.items.push('changed after snapshot');
        const first = await log.readEvents(s, 0, 1);
        assert.deepEqual(first, [{ version: 1, event: { items: ['x'], bytes: new Uint8Array([1, 2, 3]) } }]);
        (first[0]?.event as typeof event).items.push('changed after read');
        const read = await log.read(s);
        (read.snapshot?.state as typeof state).items.push('changed after read');
        assert.deepEqual(await log.readEvents(s, 0, 1), [
          { version: 1, event: { items: ['x'], bytes: new Uint8Array([1, 2, 3]) } },
        ]);
        assert.deepEqual((await log.read(s)).snapshot, { version: 1, state: { items: ['s'] } });
      }));

    it('refuses an append at a stale or future version with InconsistentStateError and appends nothing', () =>
      withLog(async (log) => {
        const s = stream('account', 'stale');
        await log.append(s, [{ n: 1 }, { n: 2 }], 0);
        for (const expected of [0, 1, 3, 10]) {
          await assertInconsistent(
            log.append(s, [{ stale: expected }, { stale: expected }], expected),
            s,
            `expected version ${expected}`,
          );
        }
        assert.deepEqual(await log.read(s), {
          events: [
            { version: 1, event: { n: 1 } },
            { version: 2, event: { n: 2 } },
          ],
          version: 2,
        });
        await assertInconsistent(
          log.append(stream('account', 'empty'), [{ n: 1 }], 1),
          stream('account', 'empty'),
          'expected version 1',
        );
        assert.deepEqual(await log.read(stream('account', 'empty')), { events: [], version: 0 });
      }));

    it('checks only the version when given no events', () =>
      withLog(async (log) => {
        const s = stream('account', 'check');
        assert.equal(await log.append(s, [], 0), 0);
        await log.append(s, [{ n: 1 }], 0);
        assert.equal(await log.append(s, [], 1), 1);
        await assertInconsistent(log.append(s, [], 0), s, 'expected version 0');
        assert.equal((await log.read(s)).version, 1);
      }));

    it('refuses a negative or fractional expected version with a ConfigurationError', () =>
      withLog(async (log) => {
        const s = stream('account', 'bad');
        await assert.rejects(async () => log.append(s, [{ n: 1 }], -1), ConfigurationError);
        await assert.rejects(async () => log.append(s, [{ n: 1 }], 0.5), ConfigurationError);
        assert.deepEqual(await log.read(s), { events: [], version: 0 });
      }));

    it('appends a batch all or nothing: an event that cannot be serialized fails the append, which stores none', () =>
      withLog(async (log) => {
        const s = stream('account', 'atomic');
        await log.append(s, [{ n: 1 }], 0);
        await assert.rejects(async () => log.append(s, [{ n: 2 }, { bad: () => 1 }, { n: 3 }], 1), {
          code: 'GRANARY_SERIALIZATION',
        });
        assert.deepEqual(await log.read(s), { events: [{ version: 1, event: { n: 1 } }], version: 1 });
        assert.equal(
          await log.append(s, [{ n: 2 }, { n: 3 }], 1),
          3,
          'the version the failed append would have taken is free',
        );
      }));

    it('lets exactly one of 10 concurrent appenders at one version win, with all of its events and none of the others', () =>
      withLog(async (log) => {
        const s = stream('account', 'race');
        await log.append(s, [{ base: true }], 0);
        const outcomes = await Promise.allSettled(
          Array.from({ length: 10 }, (_, writer) =>
            log.append(
              s,
              [
                { writer, part: 1 },
                { writer, part: 2 },
                { writer, part: 3 },
              ],
              1,
            ),
          ),
        );
        const winners = outcomes.flatMap((o, writer) =>
          o.status === 'fulfilled' ? [{ writer, version: o.value }] : [],
        );
        const losers = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason as unknown] : []));
        assert.equal(winners.length, 1, `exactly one winner, got ${JSON.stringify(winners)}`);
        for (const err of losers)
          assert.equal(codeOf(err), 'GRANARY_INCONSISTENT_STATE', `a loser failed with ${String(err)}`);
        const [winner] = winners;
        assert.ok(winner);
        assert.equal(winner.version, 4);
        const { events, version } = await log.read(s);
        assert.equal(version, 4);
        assert.deepEqual(
          events.map((e) => e.event),
          [{ base: true }, ...[1, 2, 3].map((part) => ({ writer: winner.writer, part }))],
        );
      }));

    it('reads the latest snapshot and only the events after it', () =>
      withLog(async (log) => {
        const s = stream('account', 'snap');
        await log.append(
          s,
          [1, 2, 3, 4, 5].map((n) => ({ n })),
          0,
        );
        await log.writeSnapshot(s, 3, { sum: 6 });
        assert.deepEqual(await log.read(s), {
          snapshot: { version: 3, state: { sum: 6 } },
          events: [
            { version: 4, event: { n: 4 } },
            { version: 5, event: { n: 5 } },
          ],
          version: 5,
        });
        await log.writeSnapshot(s, 5, { sum: 15 });
        assert.deepEqual(await log.read(s), { snapshot: { version: 5, state: { sum: 15 } }, events: [], version: 5 });
        // An older snapshot, or another of the same version, does not replace the latest.
        await log.writeSnapshot(s, 4, { sum: 10 });
        await log.writeSnapshot(s, 5, { sum: -1 });
        assert.deepEqual((await log.read(s)).snapshot, { version: 5, state: { sum: 15 } });
        await log.append(s, [{ n: 6 }], 5);
        assert.deepEqual(await log.read(s), {
          snapshot: { version: 5, state: { sum: 15 } },
          events: [{ version: 6, event: { n: 6 } }],
          version: 6,
        });
        // Snapshots drop no event.
        assert.deepEqual(
          (await log.readEvents(s, 0, 6)).map((e) => e.version),
          [1, 2, 3, 4, 5, 6],
        );
      }));

    it('refuses a snapshot of a version the stream does not have', () =>
      withLog(async (log) => {
        const s = stream('account', 'future');
        await assertInconsistent(log.writeSnapshot(s, 1, { sum: 1 }), s, 'version 0');
        await log.append(s, [{ n: 1 }, { n: 2 }], 0);
        await assertInconsistent(log.writeSnapshot(s, 3, { sum: 3 }), s, 'version 2');
        await assert.rejects(async () => log.writeSnapshot(s, 0, { sum: 0 }), ConfigurationError);
        assert.deepEqual(await log.read(s), {
          events: [
            { version: 1, event: { n: 1 } },
            { version: 2, event: { n: 2 } },
          ],
          version: 2,
        });
      }));

    it('reads ranges of events: from < version <= to, cut at the end of the stream', () =>
      withLog(async (log) => {
        const s = stream('account', 'range');
        await log.append(
          s,
          [1, 2, 3, 4, 5, 6].map((n) => ({ n })),
          0,
        );
        const versions = async (from: number, to: number): Promise<number[]> => {
          const got = await log.readEvents(s, from, to);
          for (const e of got) assert.deepEqual(e.event, { n: e.version }, 'each event comes with its own version');
          return got.map((e) => e.version);
        };
        assert.deepEqual(await versions(0, 6), [1, 2, 3, 4, 5, 6]);
        assert.deepEqual(await versions(2, 4), [3, 4]);
        assert.deepEqual(await versions(5, 6), [6]);
        assert.deepEqual(await versions(3, 3), []);
        assert.deepEqual(await versions(4, 100), [5, 6]);
        assert.deepEqual(await versions(6, 9), []);
        assert.deepEqual(await versions(50, 60), []);
        for (const [from, to] of [
          [-1, 2],
          [3, 2],
          [0.5, 2],
          [0, Number.NaN],
          [0, Infinity],
        ] as const) {
          await assert.rejects(
            async () => log.readEvents(s, from, to),
            ConfigurationError,
            `readEvents(${from}, ${to})`,
          );
        }
      }));

    it('keeps grains, keys, log names and types apart', () =>
      withLog(async (log) => {
        const streams = [
          stream('account', 'a'),
          stream('account', 'b'),
          stream('account', 'a', 'other'),
          stream('ledger', 'a'),
          // Separators in names must not make two streams collide.
          stream('x/y', 'z'),
          stream('x', 'y/z'),
          stream('x', 'y', 'z'),
          ...(setup.nulInNames === false ? [] : [stream('x', 'y\u0000z')]),
          stream('', '', ''),
        ];
        for (const [i, s] of streams.entries()) {
          const events = Array.from({ length: i + 1 }, (_, n) => ({ i, n }));
          assert.equal(await log.append(s, events, 0), i + 1, `first append to ${nameOf(s)}`);
        }
        await log.writeSnapshot(streams[0] as LogAddress, 1, { of: 0 });
        for (const [i, s] of streams.entries()) {
          const read = await log.read(s);
          assert.equal(read.version, i + 1, `version of ${nameOf(s)}`);
          if (i === 0) assert.deepEqual(read.snapshot, { version: 1, state: { of: 0 } });
          else {
            assert.equal(read.snapshot, undefined, `no snapshot for ${nameOf(s)}`);
            assert.deepEqual(
              read.events.map((e) => e.event),
              Array.from({ length: i + 1 }, (_, n) => ({ i, n })),
              `events of ${nameOf(s)}`,
            );
          }
        }
      }));

    it('keeps streams apart whose names differ only in unpaired surrogates, or refuses them', () =>
      withLog(async (log) => {
        const odd = [
          stream('x', 'k\uD800'),
          stream('x', 'k\uDC00'),
          stream('x\uDBFF', 'k'),
          stream('x', 'k', 'j\uDFFF'),
        ];
        const plain = [stream('x', 'k\uFFFD'), stream('x', 'k\uD83D\uDE00')];
        if (setup.unpairedSurrogatesInNames === false) {
          for (const s of odd) {
            await assert.rejects(
              async () => log.append(s, [{ n: 1 }], 0),
              { name: 'StorageError', message: /surrogate/ },
              nameOf(s),
            );
            await assert.rejects(async () => log.read(s), { name: 'StorageError', message: /surrogate/ }, nameOf(s));
            await assert.rejects(
              async () => log.readEvents(s, 0, 1),
              { name: 'StorageError', message: /surrogate/ },
              nameOf(s),
            );
            await assert.rejects(
              async () => log.writeSnapshot(s, 1, {}),
              { name: 'StorageError', message: /surrogate/ },
              nameOf(s),
            );
          }
        }
        const streams = setup.unpairedSurrogatesInNames === false ? plain : [...odd, ...plain];
        for (const [i, s] of streams.entries())
          assert.equal(await log.append(s, [{ i }], 0), 1, `first append to ${nameOf(s)}`);
        for (const [i, s] of streams.entries())
          assert.deepEqual(
            await log.read(s),
            { events: [{ version: 1, event: { i } }], version: 1 },
            `events of ${nameOf(s)}`,
          );
      }));

    if (setup.nulInNames === false) {
      it('refuses a stream whose names hold the NUL character with a StorageError saying so', () =>
        withLog(async (log) => {
          for (const s of [stream('x', 'y\u0000z'), stream('x\u0000', 'y'), stream('x', 'y', 'z\u0000')]) {
            await assert.rejects(async () => log.append(s, [{ n: 1 }], 0), { name: 'StorageError', message: /NUL/ });
            await assert.rejects(async () => log.read(s), { name: 'StorageError', message: /NUL/ });
          }
        }));
    }

    it('fails a read of a corrupt event with GRANARY_STORAGE_CORRUPT naming grain, log, provider and version, and leaves other streams alone', () =>
      withLog(async (log) => {
        const bad = stream('ledger', 'bad');
        const good = stream('ledger', 'good');
        await log.append(bad, [{ n: 1 }, { n: 2 }, { n: 3 }], 0);
        await log.append(good, [{ n: 1 }], 0);
        await setup.corruptEvent(log, bad, 2);
        const check = (err: unknown): true => {
          assert.ok(err instanceof Error, `expected an Error, got ${String(err)}`);
          assert.equal(err.name, 'StorageCorruptError');
          assert.equal(codeOf(err), 'GRANARY_STORAGE_CORRUPT');
          for (const part of ['ledger/bad', "'journal'", "'default'", log.kind, 'version 2']) {
            assert.ok(err.message.includes(part), `the message names ${part}: ${err.message}`);
          }
          return true;
        };
        await assert.rejects(log.read(bad), check);
        await assert.rejects(log.readEvents(bad, 0, 3), check);
        assert.deepEqual(
          await log.readEvents(bad, 2, 3),
          [{ version: 3, event: { n: 3 } }],
          'events outside the corrupt one still read',
        );
        assert.deepEqual(await log.read(good), { events: [{ version: 1, event: { n: 1 } }], version: 1 });
      }));

    it('fails a read of a corrupt snapshot with GRANARY_STORAGE_CORRUPT naming the snapshot; the events still read', () =>
      withLog(async (log) => {
        const s = stream('ledger', 'bad-snapshot');
        await log.append(s, [{ n: 1 }, { n: 2 }], 0);
        await log.writeSnapshot(s, 2, { sum: 3 });
        await setup.corruptSnapshot(log, s);
        await assert.rejects(log.read(s), (err: unknown) => {
          assert.ok(err instanceof Error);
          assert.equal(codeOf(err), 'GRANARY_STORAGE_CORRUPT');
          for (const part of ['snapshot', 'ledger/bad-snapshot', "'default'", 'version 2']) {
            assert.ok(err.message.includes(part), `the message names ${part}: ${err.message}`);
          }
          return true;
        });
        assert.deepEqual(
          (await log.readEvents(s, 0, 2)).map((e) => e.event),
          [{ n: 1 }, { n: 2 }],
        );
      }));

    it('refuses use before init and after close with a StorageError, and works after a new init', async () => {
      const log = await setup.create();
      const s = stream('account', 'closed');
      await assert.rejects(async () => log.read(s), { name: 'StorageError', code: 'GRANARY_STORAGE' });
      await log.init({ name: 'default', logger: silentLogger(), serializer: testSerializer });
      await log.append(s, [{ n: 1 }], 0);
      await log.close();
      await assert.rejects(async () => log.append(s, [{ n: 2 }], 1), { name: 'StorageError', code: 'GRANARY_STORAGE' });
      await log.init({ name: 'default', logger: silentLogger(), serializer: testSerializer });
      try {
        // What survives a close is the provider's business (a :memory: database does not); that it works again is not.
        const { version } = await log.read(s);
        assert.equal(await log.append(s, [{ n: 2 }], version), version + 1);
      } finally {
        await log.close();
      }
    });
  });
}

function stream(grainType: string, grainKey: string, logName = 'journal'): LogAddress {
  return { grainType, grainKey, logName };
}

function nameOf(s: LogAddress): string {
  return JSON.stringify([s.grainType, s.grainKey, s.logName]);
}

function codeOf(err: unknown): unknown {
  return typeof err === 'object' && err !== null && 'code' in err ? err.code : undefined;
}

/** Asserts the promise fails with InconsistentStateError naming the grain, the log and `detail`. */
async function assertInconsistent(promise: Promise<unknown>, s: LogAddress, detail: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof Error, `expected an Error, got ${String(err)}`);
    assert.equal(
      codeOf(err),
      'GRANARY_INCONSISTENT_STATE',
      `expected an InconsistentStateError, got ${err.name}: ${err.message}`,
    );
    assert.equal(err.name, 'InconsistentStateError');
    assert.ok(err.message.includes(`${s.grainType}/${s.grainKey}`), `the message names the grain: ${err.message}`);
    assert.ok(err.message.includes(`'${s.logName}'`), `the message names the log: ${err.message}`);
    assert.ok(err.message.includes(detail), `the message says ${detail}: ${err.message}`);
    return true;
  });
}
