// JournaledGrain in a silo: a bank account whose balance is the fold of its
// deposit and withdraw events, on the memory, SQLite and PostgreSQL event logs:
// replay across deactivations, snapshots, conflicts with another writer, store
// failures, and how the class and the silo are configured.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import {
  ConfigurationError,
  Grain,
  GranaryError,
  InconsistentStateError,
  JournaledGrain,
  Silo,
  StorageCorruptError,
  grain,
  journal,
  memoryEventLog,
  reentrant,
  registerError,
  silentLogger,
  statelessWorker,
  type EventLog,
  type LogAddress,
  type SiloOptions,
} from 'granary';
import { sqliteEventLog } from 'granary/sqlite';
import { postgresEventLog } from 'granary/postgres';

// ---- The grains -------------------------------------------------------------

interface Account {
  balance: number;
  deposits: number;
  withdrawals: number;
}

type AccountEvent = { kind: 'deposit'; amount: number } | { kind: 'withdraw'; amount: number };

class InsufficientFundsError extends GranaryError {
  constructor(balance: number, amount: number) {
    super(`cannot withdraw ${amount}: the balance is ${balance}`, 'INSUFFICIENT_FUNDS');
  }
}
registerError(InsufficientFundsError);

/** Activations per grain id, and the version each saw in onActivate. */
const activations = new Map<string, number[]>();

/** A bank account with a pure `apply`: each event gives a new state object. */
@grain('bank')
class BankAccount extends JournaledGrain<Account, AccountEvent> {
  protected initialState(): Account {
    return { balance: 0, deposits: 0, withdrawals: 0 };
  }

  protected apply(s: Account, e: AccountEvent): Account {
    if (e.amount <= 0) throw new RangeError(`a ${e.kind} of ${e.amount}: amounts are positive`);
    return e.kind === 'deposit'
      ? { ...s, balance: s.balance + e.amount, deposits: s.deposits + 1 }
      : { ...s, balance: s.balance - e.amount, withdrawals: s.withdrawals + 1 };
  }

  override async onActivate(): Promise<void> {
    const id = String(this.id);
    activations.set(id, [...(activations.get(id) ?? []), this.version]);
  }

  async deposit(amount: number): Promise<number> {
    this.raiseEvent({ kind: 'deposit', amount });
    await this.confirmEvents();
    return this.state.balance;
  }

  async withdraw(amount: number): Promise<number> {
    if (amount > this.state.balance) throw new InsufficientFundsError(this.state.balance, amount);
    this.raiseEvent({ kind: 'withdraw', amount });
    await this.confirmEvents();
    return this.state.balance;
  }

  /** Raises a deposit without confirming it. */
  async depositLater(amount: number): Promise<void> {
    this.raiseEvent({ kind: 'deposit', amount });
  }

  async confirm(): Promise<void> {
    await this.confirmEvents();
  }

  /** Two confirms started in one turn without waiting: they run one after the other. */
  async depositTwiceAtOnce(a: number, b: number): Promise<number> {
    this.raiseEvent({ kind: 'deposit', amount: a });
    const first = this.confirmEvents();
    this.raiseEvent({ kind: 'deposit', amount: b });
    const second = this.confirmEvents();
    await Promise.all([first, second]);
    return this.version;
  }

  /** As depositTwiceAtOnce, but says how each of the two confirms ended instead of failing with the first. */
  async depositTwiceSettled(a: number, b: number): Promise<string[]> {
    this.raiseEvent({ kind: 'deposit', amount: a });
    const first = this.confirmEvents();
    this.raiseEvent({ kind: 'deposit', amount: b });
    const second = this.confirmEvents();
    const outcomes = await Promise.allSettled([first, second]);
    return outcomes.map((o) =>
      o.status === 'fulfilled' ? 'confirmed' : String((o.reason as { code?: unknown }).code),
    );
  }

  /** Raises an event, then changes the object it raised. */
  async depositAndTamper(amount: number): Promise<void> {
    const e: AccountEvent = { kind: 'deposit', amount };
    this.raiseEvent(e);
    e.amount = 1_000_000;
    await this.confirmEvents();
  }

  async raiseUnstorable(): Promise<void> {
    this.raiseEvent({ kind: 'deposit', amount: 1, note: () => 'a function' } as unknown as AccountEvent);
  }

  async info(): Promise<{
    balance: number;
    confirmedBalance: number;
    version: number;
    tentativeVersion: number;
    unconfirmed: readonly AccountEvent[];
  }> {
    return {
      balance: this.state.balance,
      confirmedBalance: this.confirmedState.balance,
      version: this.version,
      tentativeVersion: this.tentativeVersion,
      unconfirmed: this.unconfirmedEvents,
    };
  }

  async account(): Promise<Account> {
    return this.state;
  }

  async history(from?: number, to?: number): Promise<AccountEvent[]> {
    return this.retrieveEvents(from, to);
  }

  /** The state replayed from version 0 with the events read back from the log. */
  async replayed(): Promise<Account> {
    const events = await this.retrieveEvents(0, this.version);
    return events.reduce((s, e) => this.apply(s, e), this.initialState());
  }

  async leave(): Promise<void> {
    this.deactivateOnIdle();
  }
}

/** The same account with snapshots every 100 events. */
@grain('snapshotBank')
@journal({ snapshotEvery: 100 })
class SnapshotBankAccount extends BankAccount {}

/** Snapshots every 10 events, on the event log named `other`, configured the plain way. */
class PlainBankAccount extends BankAccount {
  static grainOptions = { name: 'plainBank', journal: { log: 'other', snapshotEvery: 10 } };
}

interface Ledger {
  balance: number;
  entries: Array<{ amount: number; tags: string[] }>;
}

/** An `apply` that changes the state it is given and returns nothing, and keeps parts of events in it. */
@grain('ledger')
@journal({ snapshotEvery: 3 })
class MutatingLedger extends JournaledGrain<Ledger, { amount: number; tags: string[] }> {
  protected initialState(): Ledger {
    return { balance: 0, entries: [] };
  }

  protected apply(s: Ledger, e: { amount: number; tags: string[] }): void {
    s.balance += e.amount;
    // Keeps the event object itself, then changes it: the state must still not leak between views.
    s.entries.push(e);
    e.tags.push(`seen at ${s.entries.length}`);
  }

  async add(amount: number, confirm: boolean): Promise<void> {
    this.raiseEvent({ amount, tags: [] });
    if (confirm) await this.confirmEvents();
  }

  async confirm(): Promise<void> {
    await this.confirmEvents();
  }

  async views(): Promise<{ state: Ledger; confirmed: Ledger; version: number }> {
    return { state: this.state, confirmed: this.confirmedState, version: this.version };
  }

  async leave(): Promise<void> {
    this.deactivateOnIdle();
  }
}

@grain('lost')
@journal({ log: 'nowhere' })
class LostAccount extends BankAccount {}

/** The account with calls that interleave: a deposit can raise and confirm while another one's confirm runs. */
@grain('reentrantBank')
@reentrant
class ReentrantBankAccount extends BankAccount {}

// ---- Helpers ----------------------------------------------------------------

interface Counts {
  reads: number;
  /** Events returned by `read` (activation and reload), all reads together. */
  eventsRead: number;
  snapshotsRead: number;
  appends: number;
  snapshotsWritten: number;
  closes: number;
}

/** Wraps an event log to count what the grains read and write, and to fail chosen appends. */
function counting(inner: EventLog): {
  log: EventLog;
  counts: Counts;
  failNextAppend(err: Error): void;
  holdNextAppend(): Held;
} {
  const counts: Counts = { reads: 0, eventsRead: 0, snapshotsRead: 0, appends: 0, snapshotsWritten: 0, closes: 0 };
  let failure: Error | undefined;
  let hold: Held | undefined;
  const log: EventLog = {
    kind: inner.kind,
    init: (ctx) => inner.init(ctx),
    read: async (s) => {
      const r = await inner.read(s);
      counts.reads++;
      counts.eventsRead += r.events.length;
      if (r.snapshot !== undefined) counts.snapshotsRead++;
      return r;
    },
    append: async (s, events, expected) => {
      if (failure !== undefined) {
        const f = failure;
        failure = undefined;
        throw f;
      }
      if (hold !== undefined) {
        const h = hold;
        hold = undefined;
        h.reached();
        await h.released;
      }
      const v = await inner.append(s, events, expected);
      counts.appends++;
      return v;
    },
    writeSnapshot: async (s, version, state) => {
      await inner.writeSnapshot(s, version, state);
      counts.snapshotsWritten++;
    },
    readEvents: (s, from, to) => inner.readEvents(s, from, to),
    close: () => {
      counts.closes++;
      return inner.close();
    },
  };
  return {
    log,
    counts,
    failNextAppend: (err) => (failure = err),
    holdNextAppend: () => {
      let reached!: () => void;
      let release!: () => void;
      const arrived = new Promise<void>((r) => (reached = r));
      const released = new Promise<void>((r) => (release = r));
      hold = { arrived, reached, released, release };
      return hold;
    },
  };
}

/** An append held before it reaches the log: `arrived` once it is held, `release()` lets it go on. */
interface Held {
  readonly arrived: Promise<void>;
  readonly reached: () => void;
  readonly released: Promise<void>;
  readonly release: () => void;
}

function reset(counts: Counts): void {
  for (const k of Object.keys(counts) as (keyof Counts)[]) counts[k] = 0;
}

function start(options: SiloOptions): Promise<Silo> {
  return Silo.start({
    grains: [BankAccount, SnapshotBankAccount, PlainBankAccount, MutatingLedger, LostAccount, ReentrantBankAccount],
    logger: silentLogger(),
    ...options,
  });
}

function stream(type: string, key: string): LogAddress {
  return { grainType: type, grainKey: key, logName: 'journal' };
}

/** The amount of the i-th deposit of `depositMany`. */
function amountOf(i: number): number {
  return (i % 9) + 1;
}

/** The sum of deposits 1..n of `depositMany`. */
function sumOf(n: number): number {
  let sum = 0;
  for (let i = 1; i <= n; i++) sum += amountOf(i);
  return sum;
}

/**
 * Makes deposits 1..n (see amountOf) on an account whose balance is `balance`,
 * deactivating the grain after every `leaveEvery`; the balance after.
 */
async function depositMany(
  account: { deposit(n: number): Promise<number>; leave(): Promise<void> },
  n: number,
  leaveEvery: number,
  balance = 0,
): Promise<number> {
  for (let i = 1; i <= n; i++) {
    balance += amountOf(i);
    assert.equal(await account.deposit(amountOf(i)), balance);
    if (i % leaveEvery === 0) await account.leave();
  }
  return balance;
}

// ---- Tests ------------------------------------------------------------------

describe('JournaledGrain', () => {
  it('keeps 1,000 deposits across deactivations: the balance is the sum, and replaying the log from version 0 gives the same state', async () => {
    const { log, counts } = counting(memoryEventLog());
    const silo = await start({ eventLogs: { default: log } });
    try {
      const account = silo.getGrain(BankAccount, 'thousand');
      const sum = await depositMany(account, 1000, 100);
      const seen = activations.get('bank/thousand');
      assert.deepEqual(
        seen,
        [0, 100, 200, 300, 400, 500, 600, 700, 800, 900],
        'each activation starts at the version the log had',
      );
      // Without snapshots every activation replays the whole log: 0 + 100 + ... + 900 events.
      assert.equal(counts.eventsRead, 4500);
      assert.equal(counts.snapshotsWritten, 0);
      const info = await account.info();
      assert.deepEqual(info, {
        balance: sum,
        confirmedBalance: sum,
        version: 1000,
        tentativeVersion: 1000,
        unconfirmed: [],
      });
      assert.deepEqual(await account.replayed(), { balance: sum, deposits: 1000, withdrawals: 0 });
      assert.deepEqual(await account.account(), await account.replayed());
      const history = await account.history();
      assert.equal(history.length, 1000);
      assert.equal(
        history.reduce((s, e) => s + e.amount, 0),
        sum,
      );
      assert.deepEqual(
        await account.history(998),
        [999, 1000].map((i) => ({ kind: 'deposit', amount: amountOf(i) })),
      );
      assert.deepEqual(await account.history(10, 10), []);
      await assert.rejects(
        account.history(0, 1001),
        (e: unknown) => e instanceof ConfigurationError && /retrieveEvents\(0, 1001\)/.test(e.message),
        'events past the confirmed version',
      );
      await assert.rejects(account.history(5, 4), ConfigurationError);
      await assert.rejects(account.history(-1), ConfigurationError);
    } finally {
      await silo.stop();
    }
    assert.equal(counts.closes, 1, 'the silo closes its event logs when it stops');
  });

  it('fails with StorageCorruptError when the log skips a version, on read-back and on activation', async () => {
    const inner = memoryEventLog();
    let skip = false;
    const without2 = <T extends { version: number }>(events: readonly T[]): T[] =>
      events.filter((e) => !skip || e.version !== 2);
    const log: EventLog = {
      kind: inner.kind,
      init: (ctx) => inner.init(ctx),
      read: async (s) => {
        const r = await inner.read(s);
        return { ...r, events: without2(r.events) };
      },
      append: (s, events, expected) => inner.append(s, events, expected),
      writeSnapshot: (s, version, state) => inner.writeSnapshot(s, version, state),
      readEvents: async (s, from, to) => without2(await inner.readEvents(s, from, to)),
      close: () => inner.close(),
    };
    const silo = await start({ eventLogs: { default: log } });
    try {
      const account = silo.getGrain(BankAccount, 'gap');
      for (const amount of [1, 2, 3]) await account.deposit(amount);
      skip = true;
      const corrupt = (pattern: RegExp) => (e: unknown) =>
        e instanceof StorageCorruptError && e.code === 'GRANARY_STORAGE_CORRUPT' && pattern.test(e.message);
      await assert.rejects(account.history(), corrupt(/asked for events 1 to 3, got versions 1, 3/));
      await account.leave();
      await assert.rejects(account.account(), corrupt(/after version 1 comes version 3/));
    } finally {
      await silo.stop();
    }
  });

  it('with snapshots, activation reads the latest snapshot and only the events after it', async () => {
    const { log, counts } = counting(memoryEventLog());
    const silo = await start({ eventLogs: { default: log } });
    try {
      const account = silo.getGrain(SnapshotBankAccount, 'snap');
      const sum = await depositMany(account, 250, 1000);
      assert.equal(counts.snapshotsWritten, 2, 'a snapshot at 100 and at 200');
      const stored = await log.read(stream('snapshotBank', 'snap'));
      assert.equal(stored.snapshot?.version, 200);
      assert.deepEqual(stored.snapshot?.state, { balance: sumOf(200), deposits: 200, withdrawals: 0 });

      await account.leave();
      reset(counts);
      assert.deepEqual(await account.info(), {
        balance: sum,
        confirmedBalance: sum,
        version: 250,
        tentativeVersion: 250,
        unconfirmed: [],
      });
      assert.deepEqual(
        counts,
        { reads: 1, eventsRead: 50, snapshotsRead: 1, appends: 0, snapshotsWritten: 0, closes: 0 },
        'activation read the snapshot at 200 and events 201 to 250',
      );
      assert.deepEqual(await account.replayed(), await account.account(), 'the snapshot and the full log agree');

      const total = await depositMany(account, 50, 1000, sum);
      await account.leave();
      reset(counts);
      assert.equal((await account.info()).balance, total);
      assert.equal(counts.eventsRead, 0, 'a snapshot at 300 leaves nothing to replay');
      assert.deepEqual((await account.history()).length, 300, 'snapshots drop no event');
    } finally {
      await silo.stop();
    }
  });

  it('writes a snapshot on activation when it had to replay more than snapshotEvery events', async () => {
    const { log, counts } = counting(memoryEventLog());
    const silo = await start({ eventLogs: { default: memoryEventLog(), other: log } });
    try {
      // 25 events written while the grain had no snapshots (here: by another writer).
      await log.append(
        stream('plainBank', 'late'),
        Array.from({ length: 25 }, () => ({ kind: 'deposit', amount: 2 })),
        0,
      );
      const account = silo.getGrain(PlainBankAccount, 'late');
      assert.equal((await account.info()).balance, 50);
      assert.equal(counts.eventsRead, 25);
      assert.equal((await log.read(stream('plainBank', 'late'))).snapshot?.version, 25);
      await account.leave();
      reset(counts);
      assert.equal((await account.info()).balance, 50);
      assert.equal(counts.eventsRead, 0);
    } finally {
      await silo.stop();
    }
  });

  it('fails confirmEvents with InconsistentStateError when another writer appended first, then recovers on retry', async () => {
    const { log } = counting(memoryEventLog());
    const silo = await start({ eventLogs: { default: log } });
    try {
      const account = silo.getGrain(BankAccount, 'contested');
      assert.equal(await account.deposit(10), 10);
      // Behind the grain's back: another writer takes version 2.
      assert.equal(await log.append(stream('bank', 'contested'), [{ kind: 'deposit', amount: 100 }], 1), 2);
      await assert.rejects(
        account.deposit(5),
        (e: unknown) => e instanceof InconsistentStateError && /bank\/contested/.test(e.message),
      );
      // The grain re-read the log and dropped its tentative deposit.
      assert.deepEqual(await account.info(), {
        balance: 110,
        confirmedBalance: 110,
        version: 2,
        tentativeVersion: 2,
        unconfirmed: [],
      });
      assert.equal(await account.deposit(5), 115, 'the retry succeeds');
      assert.deepEqual(
        (await account.history()).map((e) => e.amount),
        [10, 100, 5],
      );

      // A withdraw decided on a stale balance is not replayed blindly: the retry sees the new balance.
      await log.append(stream('bank', 'contested'), [{ kind: 'withdraw', amount: 115 }], 3);
      await assert.rejects(account.withdraw(100), InconsistentStateError);
      await assert.rejects(
        account.withdraw(100),
        (e: unknown) => (e as { code?: string }).code === 'INSUFFICIENT_FUNDS',
      );
      assert.deepEqual(await account.account(), { balance: 0, deposits: 3, withdrawals: 1 });
    } finally {
      await silo.stop();
    }
  });

  it('keeps tentative events when the store fails, and confirms them with the next confirmEvents', async () => {
    const { log, failNextAppend } = counting(memoryEventLog());
    const silo = await start({ eventLogs: { default: log } });
    try {
      const account = silo.getGrain(BankAccount, 'flaky');
      await account.depositLater(5);
      failNextAppend(new Error('disk on fire'));
      await assert.rejects(account.confirm(), (e: unknown) => {
        assert.ok(e instanceof GranaryError);
        assert.equal(e.code, 'GRANARY_STORAGE');
        for (const part of ['bank/flaky', "event log 'default'", 'memory', 'disk on fire'])
          assert.ok(e.message.includes(part), `names ${part}: ${e.message}`);
        return true;
      });
      assert.deepEqual(await account.info(), {
        balance: 5,
        confirmedBalance: 0,
        version: 0,
        tentativeVersion: 1,
        unconfirmed: [{ kind: 'deposit', amount: 5 }],
      });
      assert.equal(await account.deposit(7), 12, 'the next confirm appends the kept event and the new one');
      assert.deepEqual(await account.info(), {
        balance: 12,
        confirmedBalance: 12,
        version: 2,
        tentativeVersion: 2,
        unconfirmed: [],
      });
      assert.deepEqual(
        (await log.readEvents(stream('bank', 'flaky'), 0, 2)).map((e) => e.event),
        [
          { kind: 'deposit', amount: 5 },
          { kind: 'deposit', amount: 7 },
        ],
      );
    } finally {
      await silo.stop();
    }
  });

  it('confirms in order when confirmEvents is called again before the first one finished', async () => {
    const silo = await start({});
    try {
      const account = silo.getGrain(BankAccount, 'twice');
      assert.equal(await account.depositTwiceAtOnce(3, 4), 2);
      assert.deepEqual(await account.history(), [
        { kind: 'deposit', amount: 3 },
        { kind: 'deposit', amount: 4 },
      ]);
    } finally {
      await silo.stop();
    }
  });

  it('fails every waiting confirmEvents whose events a conflict dropped, instead of resolving it with nothing appended', async () => {
    const { log } = counting(memoryEventLog());
    const silo = await start({ eventLogs: { default: log } });
    try {
      const account = silo.getGrain(BankAccount, 'dropped');
      assert.equal(await account.deposit(10), 10);
      await log.append(stream('bank', 'dropped'), [{ kind: 'deposit', amount: 100 }], 1);
      // The first confirm appends [1] at the stale version 1 and conflicts; the second waited for it, and its event (2) was dropped with it.
      assert.deepEqual(await account.depositTwiceSettled(1, 2), [
        'GRANARY_INCONSISTENT_STATE',
        'GRANARY_INCONSISTENT_STATE',
      ]);
      assert.deepEqual(
        (await log.readEvents(stream('bank', 'dropped'), 0, 2)).map((e) => e.event),
        [
          { kind: 'deposit', amount: 10 },
          { kind: 'deposit', amount: 100 },
        ],
      );
      assert.deepEqual(await account.info(), {
        balance: 110,
        confirmedBalance: 110,
        version: 2,
        tentativeVersion: 2,
        unconfirmed: [],
      });
      // Without a conflict, both confirm.
      assert.deepEqual(await account.depositTwiceSettled(1, 2), ['confirmed', 'confirmed']);
      assert.equal((await account.info()).version, 4);
    } finally {
      await silo.stop();
    }
  });

  it('fails the confirmEvents of an interleaved call whose event a conflict of another call dropped', async () => {
    const { log, holdNextAppend } = counting(memoryEventLog());
    const silo = await start({ eventLogs: { default: log } });
    try {
      const account = silo.getGrain(ReentrantBankAccount, 'interleaved');
      assert.equal(await account.deposit(10), 10);
      const held = holdNextAppend();
      const first = account.deposit(1);
      await held.arrived;
      // While the first deposit's append is on its way, another writer takes version 2 and a second deposit is raised.
      await log.append(stream('reentrantBank', 'interleaved'), [{ kind: 'deposit', amount: 100 }], 1);
      const second = account.deposit(2);
      assert.deepEqual((await account.info()).unconfirmed, [
        { kind: 'deposit', amount: 1 },
        { kind: 'deposit', amount: 2 },
      ]);
      held.release();
      const outcomes = await Promise.allSettled([first, second]);
      assert.deepEqual(
        outcomes.map((o) =>
          o.status === 'fulfilled' ? `balance ${o.value}` : String((o.reason as { code?: unknown }).code),
        ),
        ['GRANARY_INCONSISTENT_STATE', 'GRANARY_INCONSISTENT_STATE'],
        'a caller told its deposit is confirmed finds it in the log',
      );
      assert.deepEqual((await log.read(stream('reentrantBank', 'interleaved'))).version, 2);
      assert.equal(await account.deposit(2), 112, 'the retry succeeds');
    } finally {
      await silo.stop();
    }
  });

  it('refuses an event that apply throws on, or that cannot be stored, and raises nothing', async () => {
    const silo = await start({});
    try {
      const account = silo.getGrain(BankAccount, 'refused');
      await account.deposit(10);
      await assert.rejects(
        account.deposit(-5),
        (e: unknown) => e instanceof RangeError && /amounts are positive/.test(e.message),
      );
      await assert.rejects(
        account.raiseUnstorable(),
        (e: unknown) =>
          (e as { code?: string }).code === 'GRANARY_SERIALIZATION' && /event\.note/.test((e as Error).message),
      );
      assert.deepEqual(await account.info(), {
        balance: 10,
        confirmedBalance: 10,
        version: 1,
        tentativeVersion: 1,
        unconfirmed: [],
      });
      assert.equal(await account.deposit(1), 11);
    } finally {
      await silo.stop();
    }
  });

  it('stores the event as raised, not as the caller changed it afterwards', async () => {
    const silo = await start({});
    try {
      const account = silo.getGrain(BankAccount, 'tamper');
      await account.depositAndTamper(3);
      assert.deepEqual(await account.history(), [{ kind: 'deposit', amount: 3 }]);
      assert.equal((await account.info()).balance, 3);
    } finally {
      await silo.stop();
    }
  });

  it('keeps state and confirmedState apart when apply mutates its state and keeps events in it', async () => {
    const { log } = counting(memoryEventLog());
    const silo = await start({ eventLogs: { default: log } });
    try {
      const ledger = silo.getGrain(MutatingLedger, 'l');
      await ledger.add(5, true);
      await ledger.add(7, false);
      const tentative = await ledger.views();
      assert.equal(tentative.state.balance, 12);
      assert.equal(tentative.confirmed.balance, 5, 'a tentative event does not reach the confirmed state');
      assert.deepEqual(tentative.confirmed.entries, [{ amount: 5, tags: ['seen at 1'] }]);
      assert.deepEqual(tentative.state.entries, [
        { amount: 5, tags: ['seen at 1'] },
        { amount: 7, tags: ['seen at 2'] },
      ]);

      await ledger.confirm();
      const confirmed = await ledger.views();
      assert.deepEqual(confirmed.state, confirmed.confirmed, 'once confirmed, both views agree');
      assert.deepEqual(confirmed.state, {
        balance: 12,
        entries: [
          { amount: 5, tags: ['seen at 1'] },
          { amount: 7, tags: ['seen at 2'] },
        ],
      });

      // A conflict drops the tentative event; both views are the log's.
      await ledger.add(100, false);
      await log.append(stream('ledger', 'l'), [{ amount: 1, tags: [] }], 2);
      await assert.rejects(ledger.confirm(), InconsistentStateError);
      const after = await ledger.views();
      assert.equal(after.version, 3);
      assert.deepEqual(after.state, after.confirmed);
      assert.equal(after.state.balance, 13);

      // A new activation (from the snapshot at 3) sees the same state.
      await ledger.leave();
      assert.deepEqual((await ledger.views()).state, after.state);
      // The events in the log are as raised: what apply did to its own copies did not reach them.
      assert.deepEqual(
        (await log.readEvents(stream('ledger', 'l'), 0, 3)).map((e) => e.event),
        [
          { amount: 5, tags: [] },
          { amount: 7, tags: [] },
          { amount: 1, tags: [] },
        ],
      );
    } finally {
      await silo.stop();
    }
  });

  it('does not let references call JournaledGrain members or hooks', async () => {
    const silo = await start({});
    try {
      const byName = silo.getGrain<unknown>('bank', 'members') as unknown as Record<
        string,
        (...args: unknown[]) => Promise<unknown>
      >;
      for (const name of ['raiseEvent', 'raiseEvents', 'confirmEvents', 'retrieveEvents', 'apply', 'initialState']) {
        const call = byName[name];
        assert.equal(typeof call, 'function', 'a reference turns any name into a call');
        await assert.rejects(
          async () => call?.call(byName, { kind: 'deposit', amount: 1 }),
          { code: 'GRANARY_UNKNOWN_METHOD' },
          name,
        );
      }
      assert.equal(await silo.getGrain(BankAccount, 'members').deposit(1), 1, "the grain's own methods are callable");
    } finally {
      await silo.stop();
    }
  });

  it('fails activation with a ConfigurationError naming the event log and the grain when the log is not configured', async () => {
    const silo = await start({});
    try {
      await assert.rejects(
        silo.getGrain(LostAccount, 'x').deposit(1),
        (e: unknown) =>
          e instanceof ConfigurationError &&
          /'nowhere'/.test(e.message) &&
          /lost\/x/.test(e.message) &&
          /configured event logs: default/.test(e.message),
      );
    } finally {
      await silo.stop();
    }
  });

  it('refuses bad journal options and event logs at Silo.start with a ConfigurationError saying what to change', async () => {
    @grain('badSnapshots')
    @journal({ snapshotEvery: -1 })
    class BadSnapshots extends BankAccount {}
    await assert.rejects(Silo.start({ grains: [BadSnapshots], logger: silentLogger() }), {
      code: 'GRANARY_CONFIGURATION',
      message: /snapshotEvery of grain badSnapshots/,
    });

    class NotJournaled extends Grain {
      static grainOptions = { journal: { snapshotEvery: 5 } };
    }
    await assert.rejects(Silo.start({ grains: [NotJournaled], logger: silentLogger() }), {
      code: 'GRANARY_CONFIGURATION',
      message: /NotJournaled.*JournaledGrain/,
    });

    @grain('workerAccount')
    @statelessWorker()
    class WorkerAccount extends BankAccount {}
    await assert.rejects(Silo.start({ grains: [WorkerAccount], logger: silentLogger() }), {
      code: 'GRANARY_CONFIGURATION',
      message: /workerAccount.*stateless worker/,
    });

    await assert.rejects(Silo.start({ eventLogs: { default: {} as never }, logger: silentLogger() }), {
      code: 'GRANARY_CONFIGURATION',
      message: /event log 'default'/,
    });
  });

  it('runs with the in-memory event log by default', async () => {
    const silo = await Silo.start({ grains: [BankAccount], logger: silentLogger() });
    try {
      const account = silo.getGrain(BankAccount, 'default');
      await account.deposit(2);
      await account.leave();
      assert.equal((await account.info()).balance, 2, 'read back from the default log by a new activation');
    } finally {
      await silo.stop();
    }
  });
});

// ---- On real stores ---------------------------------------------------------

describe('JournaledGrain on SQLite and PostgreSQL', () => {
  /** Deposits and withdraws through a silo, restarts it on the same store, and checks the state came back from the log. */
  async function bankRun(makeLog: () => EventLog): Promise<void> {
    const first = counting(makeLog());
    let silo = await start({ eventLogs: { default: makeLog(), other: first.log } });
    let sum: number;
    try {
      const account = silo.getGrain(PlainBankAccount, 'store');
      sum = await depositMany(account, 120, 40);
      assert.equal(await account.withdraw(20), sum - 20);
      await assert.rejects(
        account.withdraw(1_000_000),
        (e: unknown) => (e as { code?: string }).code === 'INSUFFICIENT_FUNDS',
      );
      assert.equal(first.counts.snapshotsWritten, 12, 'a snapshot every 10 events');

      // Another writer on the same store (another silo, say) makes the grain's next confirm conflict.
      const version = (await account.info()).version;
      await first.log.append(stream('plainBank', 'store'), [{ kind: 'deposit', amount: 1000 }], version);
      await assert.rejects(account.deposit(1), InconsistentStateError);
      assert.equal(await account.deposit(1), sum - 20 + 1000 + 1);
    } finally {
      await silo.stop();
    }

    const second = counting(makeLog());
    silo = await start({ eventLogs: { default: makeLog(), other: second.log } });
    try {
      const account = silo.getGrain(PlainBankAccount, 'store');
      const expected = { balance: sum - 20 + 1000 + 1, deposits: 122, withdrawals: 1 };
      assert.deepEqual(await account.account(), expected, 'the state after a silo restart');
      assert.equal((await account.info()).version, 123);
      assert.ok(
        second.counts.eventsRead < 10,
        `activation replayed ${second.counts.eventsRead} events after the latest snapshot, not the whole log`,
      );
      assert.deepEqual(await account.replayed(), expected, 'the log replayed from version 0');
    } finally {
      await silo.stop();
    }
  }

  it('keeps 1,000 deposits across deactivations and a silo crash on SQLite: the balance is the sum of confirmed events', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'granary-journal-crash-'));
    try {
      const path = join(dir, 'events.db');
      let silo = await start({ eventLogs: { default: sqliteEventLog({ path }) } });
      let balance = await depositMany(silo.getGrain(SnapshotBankAccount, 'crash'), 400, 90);
      // As a crash: no deactivation, no goodbye; only what was confirmed is in the log.
      await silo.abort();
      silo = await start({ eventLogs: { default: sqliteEventLog({ path }) } });
      try {
        const account = silo.getGrain(SnapshotBankAccount, 'crash');
        assert.deepEqual(
          await account.account(),
          { balance, deposits: 400, withdrawals: 0 },
          'the state after the crash is the confirmed one',
        );
        for (let i = 401; i <= 1000; i++) {
          balance += amountOf(i);
          assert.equal(await account.deposit(amountOf(i)), balance);
          if (i % 150 === 0) await account.leave();
        }
        assert.equal(balance, sumOf(1000));
        assert.deepEqual(await account.account(), { balance, deposits: 1000, withdrawals: 0 });
        assert.equal((await account.info()).version, 1000);
        assert.deepEqual(
          await account.replayed(),
          { balance, deposits: 1000, withdrawals: 0 },
          'the log replayed from version 0',
        );
      } finally {
        await silo.stop();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs the bank account on SQLite through a silo, across a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'granary-journal-'));
    try {
      const path = join(dir, 'events.db');
      await bankRun(() => sqliteEventLog({ path }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs the bank account on PostgreSQL through a silo, across a restart', async () => {
    const connectionString = process.env['GRANARY_TEST_POSTGRES'] ?? 'postgres://postgres@127.0.0.1:5432/test';
    const tablePrefix = `t${randomUUID().replaceAll('-', '').slice(0, 12)}_journal_`;
    try {
      await bankRun(() => postgresEventLog({ connectionString, tablePrefix }));
    } finally {
      const admin = new pg.Client({ connectionString });
      await admin.connect();
      try {
        await admin.query(`DROP TABLE IF EXISTS "${tablePrefix}events", "${tablePrefix}event_snapshots"`);
      } finally {
        await admin.end();
      }
    }
  });
});

after(() => activations.clear());
