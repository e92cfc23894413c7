// JournaledGrain: a grain whose state is derived from the events it raised,
// kept in an event log (Orleans' JournaledGrain with a log-storage consistency
// provider). Events are raised tentatively and appended to the log on
// confirmEvents(), under optimistic concurrency on the log's version; the
// state is rebuilt on activation from the latest snapshot and the events after it.

import {
  ConfigurationError,
  ErrorCodes,
  GranaryError,
  InconsistentStateError,
  StorageCorruptError,
  StorageError,
} from '../errors.ts';
import { Grain, grainContext } from '../grain/grain.ts';
import { BASE_CLASS, type BaseClassInfo } from '../grain/options.ts';
import { copy } from '../serialization/codec.ts';
import { describeStream, type JournalBinding } from './log.ts';
import { JOURNALED, JOURNALED_GRAIN_MEMBERS } from './members.ts';

export { JOURNALED_GRAIN_MEMBERS, type JournaledGrainMember } from './members.ts';

/**
 * A grain whose state is the fold of its events. Subclasses implement
 * `initialState()` and `apply(state, event)`; their methods raise events with
 * `raiseEvent` and make them durable with `confirmEvents()`.
 *
 * ```ts
 * @grain('account')
 * @journal({ snapshotEvery: 100 })
 * class Account extends JournaledGrain<{ balance: number }, { amount: number }> {
 *   protected initialState() { return { balance: 0 }; }
 *   protected apply(s: { balance: number }, e: { amount: number }) { s.balance += e.amount; }
 *   async deposit(amount: number) { this.raiseEvent({ amount }); await this.confirmEvents(); return this.state.balance; }
 * }
 * ```
 *
 * States and events are values the codec can copy and store (plain objects,
 * arrays, Map, Set, Date, BigInt, typed arrays, registered types, grain
 * references). The journal is read before `onActivate` runs.
 */
export abstract class JournaledGrain<S, E> extends Grain {
  /** Type-level mark of a journaled grain (see GrainRef); no such property exists. */
  declare readonly [JOURNALED]: true;
  readonly #journal: JournalBinding;
  /** The state as of `#version`: the fold of the confirmed events. */
  #confirmed: S | undefined;
  #version = 0;
  #loaded = false;
  /** Raised, not yet appended to the log (private copies). */
  #tentative: Tentative<E>[] = [];
  /**
   * The confirmed state with the tentative events applied, kept apart from
   * `#confirmed` (its own copy), so that an `apply` that mutates its state
   * never changes the confirmed one. Undefined when not made yet.
   */
  #view: S | undefined;
  #hasView = false;
  /** The confirmEvents that runs now; the next one waits for it. */
  #confirming: Promise<void> | undefined;

  constructor() {
    super();
    this.#journal = grainContext(this).journal(() => this.#load());
  }

  /**
   * The state of a grain with no event yet; called once per activation (and
   * on each reload), so return a new object each time.
   */
  protected abstract initialState(): S;

  /**
   * Applies one event to a state and returns the result. It may return a new
   * object, or change `state` and return it (or return nothing): both are
   * supported, and `state` and `confirmedState` stay apart either way. It must
   * be deterministic and depend on nothing but its arguments: it is run again
   * on every activation for the events after the latest snapshot. A throw
   * refuses the event in `raiseEvent`; it should not happen for an event in
   * the log (activation would fail).
   */
  protected abstract apply(state: S, event: E): S | void;

  /** The confirmed state with the tentative (raised, not yet confirmed) events applied. Treat it as read-only. */
  protected get state(): S {
    if (this.#hasView) return this.#view as S;
    if (this.#tentative.length === 0) return this.confirmedState;
    return this.#ensureView();
  }

  /** The state as of `version`: the fold of the events in the log. Treat it as read-only. */
  protected get confirmedState(): S {
    if (!this.#loaded) {
      // Only before the journal is read (a field initializer): the initial state.
      this.#confirmed = this.initialState();
      this.#loaded = true;
    }
    return this.#confirmed as S;
  }

  /** The confirmed version: how many events the log holds for this grain. */
  protected get version(): number {
    return this.#version;
  }

  /** `version` plus the tentative events: the version the log will have once they are confirmed. */
  protected get tentativeVersion(): number {
    return this.#version + this.#tentative.length;
  }

  /** Copies of the raised events not yet confirmed, oldest first. */
  protected get unconfirmedEvents(): readonly E[] {
    return Object.freeze(this.#tentative.map((t) => copy(t.event)));
  }

  /**
   * Raises an event: applies it to `state` at once; `confirmEvents()` makes it
   * durable. The event is copied (later changes by the caller do not reach
   * it); a value that cannot be stored fails here with SerializationError, and
   * a throw of `apply` refuses the event. Either way nothing is raised.
   */
  protected raiseEvent(event: E): void {
    this.#raise([copy(event, undefined, 'event')]);
  }

  /** Raises several events, all or none (as `raiseEvent` each). */
  protected raiseEvents(events: Iterable<E>): void {
    const copies: E[] = [];
    for (const e of events) copies.push(copy(e, undefined, `events[${copies.length}]`));
    if (copies.length > 0) this.#raise(copies);
  }

  /**
   * Appends the tentative events to the log, if the log is still at
   * `version`. Resolves once they are durable; `version` and `confirmedState`
   * then include them.
   *
   * - Someone else appended first (another activation, a tool): fails with
   *   InconsistentStateError after re-reading the log; the tentative events
   *   are dropped (they were decided on a stale state), so the caller can
   *   re-run its operation on the fresh state.
   * - The store fails: fails with StorageError and keeps the tentative events
   *   for the next `confirmEvents()`.
   *
   * Calls wait for each other: each appends what is tentative when its turn comes.
   * A call whose events an earlier call dropped (after a conflict) fails with
   * InconsistentStateError too: they are not in the log.
   */
  protected confirmEvents(): Promise<void> {
    const prev = this.#confirming;
    // The latest event raised before this call: this call resolves only if it gets into the log.
    const last = this.#tentative.at(-1);
    const run =
      prev === undefined
        ? this.#confirm()
        : prev.then(() => (last?.dropped === true ? Promise.reject(this.#droppedError()) : this.#confirm()));
    // The next call waits for this one to settle, whatever its outcome.
    const settled: Promise<void> = run.then(
      () => {
        if (this.#confirming === settled) this.#confirming = undefined;
      },
      () => {
        if (this.#confirming === settled) this.#confirming = undefined;
      },
    );
    this.#confirming = settled;
    return run;
  }

  /**
   * The confirmed events that moved the state from version `from` to version
   * `to` (default: all of them, from 0 to `version`), read from the log.
   * Replaying them with `apply` from `initialState()` gives the state as of `to`.
   * A range outside 0 <= from <= to <= version fails with ConfigurationError.
   */
  protected async retrieveEvents(from = 0, to: number = this.#version): Promise<E[]> {
    if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || to < from || to > this.#version) {
      throw new ConfigurationError(
        `retrieveEvents(${String(from)}, ${String(to)}) of ${String(this.id)}: give whole numbers 0 <= from <= to <= version (${this.#version})`,
      );
    }
    if (from === to) return [];
    const j = this.#journal;
    let got;
    try {
      got = await j.log.readEvents(j.address, from, to);
    } catch (err) {
      throw this.#wrap('reading events', err);
    }
    if (got.length !== to - from || got.some((e, i) => e.version !== from + 1 + i)) {
      throw this.#corrupt(
        `asked for events ${from + 1} to ${to}, got versions ${got.map((e) => e.version).join(', ') || 'none'}`,
      );
    }
    return got.map((e) => e.event as E);
  }

  // ---- Internals ---------------------------------------------------------

  /** Applies private copies of events to the view, then makes them tentative; all or none. */
  #raise(copies: E[]): void {
    let view = this.#ensureView();
    try {
      // The view gets copies of its own: apply may keep (and later change) parts of an event.
      for (const e of copies) view = this.#applyTo(view, copy(e));
    } catch (err) {
      // apply may have changed the view half way: drop it, it is made again from the confirmed state.
      this.#dropView();
      throw err;
    }
    this.#view = view;
    for (const event of copies) this.#tentative.push({ event, dropped: false });
  }

  async #confirm(): Promise<void> {
    const batch = this.#tentative.map((t) => t.event);
    if (batch.length === 0) return;
    const j = this.#journal;
    const expected = this.#version;
    let version: number;
    try {
      version = await j.log.append(j.address, batch, expected);
    } catch (err) {
      if (err instanceof InconsistentStateError) {
        this.#dropTentative();
        try {
          await this.#load();
        } catch (reloadErr) {
          // The confirmed state is stale and cannot be refreshed: the next call gets a new activation, which reads the log.
          this.deactivateOnIdle();
          j.logger.warn(
            { grain: String(this.id), err: reloadErr },
            're-reading the journal after a conflict failed; the activation is deactivated',
          );
        }
        throw err;
      }
      throw this.#wrap('confirming events', err);
    }
    if (version !== expected + batch.length) {
      this.deactivateOnIdle();
      throw this.#corrupt(`appending ${batch.length} event(s) at version ${expected} gave version ${version}`);
    }
    // Events raised while the append ran stay tentative.
    this.#tentative.splice(0, batch.length);
    let state = this.confirmedState;
    try {
      for (const e of batch) state = this.#applyTo(state, e);
    } catch (err) {
      // It applied to the view when raised: apply is not deterministic. The log is right; the next activation reads it.
      this.deactivateOnIdle();
      throw err;
    }
    this.#confirmed = state;
    this.#version = version;
    // The view (confirmed state plus tentative events) is still right: nothing to do to it.
    const every = j.snapshotEvery;
    if (every > 0 && Math.floor(version / every) > Math.floor(expected / every)) await this.#snapshot();
  }

  /** Reads the log: the latest snapshot and the events after it. Drops tentative events. */
  async #load(): Promise<void> {
    const j = this.#journal;
    let stored;
    try {
      stored = await j.log.read(j.address);
    } catch (err) {
      throw this.#wrap('reading the journal', err);
    }
    let state: S;
    let version: number;
    if (stored.snapshot === undefined) {
      state = this.initialState();
      version = 0;
    } else {
      state = stored.snapshot.state as S;
      version = stored.snapshot.version;
    }
    const from = version;
    for (const { version: v, event } of stored.events) {
      if (v !== version + 1) throw this.#corrupt(`after version ${version} comes version ${v}`);
      state = this.#applyTo(state, event as E);
      version = v;
    }
    if (version !== stored.version)
      throw this.#corrupt(`the log is at version ${stored.version} but its events end at version ${version}`);
    this.#confirmed = state;
    this.#version = version;
    this.#loaded = true;
    this.#dropTentative();
    // Snapshots were on for a while, or one failed to be written: write it now, so the next activation replays less.
    if (j.snapshotEvery > 0 && version - from >= j.snapshotEvery) await this.#snapshot();
  }

  /** Saves the confirmed state as the snapshot; a failure is logged, not thrown (the events are durable). */
  async #snapshot(): Promise<void> {
    const j = this.#journal;
    try {
      await j.log.writeSnapshot(j.address, this.#version, this.#confirmed);
    } catch (err) {
      j.logger.warn(
        { grain: String(this.id), eventLog: j.logName, version: this.#version, err },
        'writing a journal snapshot failed; activation replays more events until one is written',
      );
    }
  }

  #applyTo(state: S, event: E): S {
    const next = this.apply(state, event);
    return next === undefined ? state : next;
  }

  /** The view, made from a copy of the confirmed state if there is none. */
  #ensureView(): S {
    if (this.#hasView) return this.#view as S;
    let view = copy(this.confirmedState, undefined, 'state');
    for (const t of this.#tentative) view = this.#applyTo(view, copy(t.event));
    this.#view = view;
    this.#hasView = true;
    return view;
  }

  #dropView(): void {
    this.#view = undefined;
    this.#hasView = false;
  }

  /** Drops the tentative events (marking them, for the confirmEvents calls that wait for them) and the view. */
  #dropTentative(): void {
    for (const t of this.#tentative) t.dropped = true;
    this.#tentative = [];
    this.#dropView();
  }

  #droppedError(): InconsistentStateError {
    const j = this.#journal;
    return new InconsistentStateError(
      `confirmEvents of ${describeStream(j.address)} in event log '${j.logName}' (${j.log.kind}) refused: another writer appended to the log first, ` +
        `so an earlier confirmEvents dropped the tentative events, those raised before this call among them; the state is the log's again: re-run the operation`,
    );
  }

  #wrap(op: string, err: unknown): unknown {
    if (err instanceof GranaryError) return err;
    const j = this.#journal;
    return new StorageError(
      `${op} of ${describeStream(j.address)} failed in event log '${j.logName}' (${j.log.kind}): ${(err as Error)?.message ?? String(err)}`,
      ErrorCodes.Storage,
      { cause: err },
    );
  }

  #corrupt(problem: string): StorageCorruptError {
    const j = this.#journal;
    return new StorageCorruptError(
      `the journal of ${describeStream(j.address)} in event log '${j.logName}' (${j.log.kind}) is inconsistent: ${problem}`,
    );
  }
}

/** A raised event not yet in the log; `dropped` once a conflict discarded it. */
interface Tentative<E> {
  readonly event: E;
  dropped: boolean;
}

const baseClass: BaseClassInfo = { name: 'JournaledGrain', members: JOURNALED_GRAIN_MEMBERS, journaled: true };
Object.defineProperty(JournaledGrain.prototype, BASE_CLASS, { value: baseClass });
