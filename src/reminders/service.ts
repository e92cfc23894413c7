// The reminder service of one silo: it fires the reminders of the grains whose
// ids fall in this silo's ring ranges, loads them when its ranges change, and
// writes registrations to the reminder table for the grains it hosts.
//
// Design notes.
// - Ownership follows the same ring as the directory: the silo owning a ring
//   position owns the reminders of the grains hashed there. A view change moves
//   ranges; each silo drops what it no longer owns and loads what it gained.
//   Between two views silos may briefly disagree, so a tick may fire twice:
//   delivery is at least once, never at most once.
// - A firing calls `receiveReminder(name, tick)` on the grain, wherever it lives
//   (activating it if needed). Ticks of one reminder never overlap: a tick due
//   while the previous one is still running is counted as missed. Likewise a
//   timer that fires late (the process was busy) fires one tick, for the latest
//   due time, and counts the ones before it as missed: never a burst.
// - Time is read and timers are set through the `clock` given (tests hand it a
//   ManualClock); ticks and unscheduled reminders are published on
//   `granary:reminder:tick` and `granary:reminder:unscheduled`.
// - The latest tick fired is recorded in the table (when the table can), so a
//   silo that takes a reminder over (its owner died, or the whole cluster was
//   down) knows which ticks nobody fired: it fires one catch-up tick at once and
//   reports the others as `missed`, instead of replaying them one by one.
// - The table is re-read every refresh interval as well: a registration whose
//   notice to the owner was lost, or a table edited by hand, is picked up. A
//   read that fails is tried again soon (backing off up to the refresh
//   interval), not only at the next refresh.
// - The reads that (re)schedule reminders, loads of the ranges and re-reads of
//   one changed reminder, run one at a time, each applied before the next one
//   starts: a load that read a row before it was removed or replaced cannot
//   bring the old row back after the change was applied.

import { MAX_TIMER_MS, systemClock, type Clock, type ClockTimer } from '../clock.ts';
import { ConfigurationError, ReminderError } from '../errors.ts';
import { hash32 } from '../hash.ts';
import { Ring } from '../membership/ring.ts';
import { channels } from '../observability/channels.ts';
import type { Logger } from '../observability/logger.ts';
import type { ReminderEntry, ReminderTable, StoredReminder } from './table.ts';

/** What `receiveReminder(name, tick)` is told about the tick. */
export interface ReminderTick {
  /** Epoch ms of the reminder's first tick. */
  readonly firstTickAt: number;
  readonly periodMs: number;
  /** Epoch ms this tick was due. */
  readonly dueAt: number;
  /** Ticks due before this one (since the last one fired) that were not fired: the silo was down, busy, or the previous tick still ran. */
  readonly missed: number;
}

import type { ReminderInfo, ReminderOptions } from './info.ts';
export type { ReminderInfo, ReminderOptions };

export interface ReminderServiceOptions {
  readonly table: ReminderTable;
  readonly logger: Logger;
  /** Shortest period a registration may ask for. */
  readonly minPeriodMs: number;
  /** How often the owned ranges are re-read from the table. */
  readonly refreshIntervalMs: number;
  /** Delivers a tick to the grain (`type/key`); resolves when the grain has handled it. */
  readonly fire: (grainId: string, name: string, tick: ReminderTick) => Promise<unknown>;
  /** Tells `owner` that a reminder of a grain it owns changed. */
  readonly notify: (owner: string, grainId: string, name: string) => Promise<unknown>;
  /** Where the service reads the time and sets its tick and refresh timers. Default `systemClock`. */
  readonly clock?: Clock;
}

/** Why a silo stops firing a reminder (see `granary:reminder:unscheduled`). */
export type UnscheduleReason = 'removed' | 'moved' | 'stopped';

interface Scheduled {
  entry: StoredReminder;
  timer: ClockTimer | undefined;
  /** A tick is being delivered, or waits for a tick of an earlier registration to end. */
  running: boolean;
  /** The latest due time fired (or skipped past), epoch ms. */
  lastDue: number;
  /** Ticks skipped since the last one fired. */
  missed: number;
}

const keyOf = (grainId: string, name: string): string => `${grainId}\u0000${name}`;

/** Largest setTimeout delay. */

/** First delay before a failed read of the table is tried again; it doubles up to the refresh interval. */
const RETRY_MS = 500;

type LoadReason = 'view' | 'refresh' | 'retry';

export class ReminderService {
  readonly #o: ReminderServiceOptions;
  readonly #clock: Clock;
  readonly #scheduled = new Map<string, Scheduled>();
  /** Ticks this silo fired (their delivery began) since it started, for metrics. */
  ticksFired = 0;
  #self = '';
  /** Ranges `(begin, end]` this silo owns; undefined: the whole ring (a silo alone). */
  #ranges: Array<[number, number]> | undefined;
  #ring: Ring | undefined;
  #refresh: ClockTimer | undefined;
  /** The reads that schedule reminders, one at a time (see the design notes). */
  #queue: Promise<void> = Promise.resolve();
  /** A load is queued and has not started: it will read the ranges as they are then. */
  #loadQueued = false;
  #retry: ClockTimer | undefined;
  #failures = 0;
  /** The tick being delivered per reminder, whichever registration (or spell of ownership) fired it. */
  readonly #inFlight = new Map<string, Promise<void>>();
  #stopped = false;

  constructor(options: ReminderServiceOptions) {
    this.#o = options;
    this.#clock = options.clock ?? systemClock;
  }

  /** Reminders this silo fires now (tests, metrics). */
  get firing(): number {
    return this.#scheduled.size;
  }

  /** Starts firing the reminders of this silo's ranges (`ring` undefined: all of them). */
  start(self: string, ring: Ring | undefined): void {
    this.#self = self;
    // Longer than setTimeout allows would wrap to 1 ms: read the table at most that seldom instead.
    this.#refresh = this.#clock
      .setInterval(() => this.#reload('refresh'), Math.min(MAX_TIMER_MS, this.#o.refreshIntervalMs))
      .unref();
    this.viewChanged(ring);
  }

  /** The ring changed: drop the reminders no longer ours, load the ones we gained. */
  viewChanged(ring: Ring | undefined): void {
    if (this.#stopped) return;
    this.#ring = ring;
    this.#ranges = ring === undefined ? undefined : rangesOf(ring, this.#self);
    for (const [k, s] of this.#scheduled) {
      if (!this.#owns(s.entry.grainHash)) this.#cancel(k, 'moved');
    }
    this.#reload('view');
  }

  /** Stops firing; ticks being delivered finish on their own. */
  stop(): void {
    this.#stopped = true;
    this.#refresh?.cancel();
    this.#retry?.cancel();
    for (const k of [...this.#scheduled.keys()]) this.#cancel(k, 'stopped');
    // Grains still deactivating here may register or unregister reminders: the silos that own
    // them now are the ring's without this one, and they are the ones to tell.
    const ring = this.#ring;
    if (ring !== undefined && ring.members.includes(this.#self))
      this.#ring = new Ring(ring.members.filter((m) => m !== this.#self));
  }

  /** Waits for the loads and re-reads queued so far (tests). */
  settled(): Promise<void> {
    return this.#queue;
  }

  // ---- Registration (on the silo hosting the grain) ----------------------------

  async register(grainId: string, name: string, options: ReminderOptions): Promise<ReminderInfo> {
    if (typeof name !== 'string' || name === '' || name.length > 200) {
      throw new ConfigurationError(
        `a reminder name is a non-empty string of at most 200 characters, got ${JSON.stringify(name)} (grain ${grainId})`,
      );
    }
    const dueMs = options?.dueMs;
    const periodMs = options?.periodMs;
    if (typeof dueMs !== 'number' || !Number.isFinite(dueMs) || dueMs < 0) {
      throw new ConfigurationError(
        `reminder '${name}' of grain ${grainId}: dueMs must be a number of ms from now, 0 or more, got ${String(dueMs)}`,
      );
    }
    if (
      typeof periodMs !== 'number' ||
      !Number.isFinite(periodMs) ||
      periodMs < this.#o.minPeriodMs ||
      Math.round(periodMs) < 1
    ) {
      throw new ConfigurationError(
        `reminder '${name}' of grain ${grainId}: periodMs must be at least the silo's minReminderPeriodMs (${this.#o.minPeriodMs}) and 1, got ${String(periodMs)}`,
      );
    }
    const startAt = this.#clock.now() + Math.round(dueMs);
    if (!Number.isSafeInteger(startAt)) {
      throw new ConfigurationError(
        `reminder '${name}' of grain ${grainId}: dueMs is too large to store a first tick time, got ${String(dueMs)}`,
      );
    }
    if (!Number.isSafeInteger(Math.round(periodMs))) {
      throw new ConfigurationError(
        `reminder '${name}' of grain ${grainId}: periodMs is too large to store, got ${String(periodMs)}`,
      );
    }
    const entry: ReminderEntry = { grainId, name, grainHash: hash32(grainId), startAt, periodMs: Math.round(periodMs) };
    await this.#o.table.upsert(entry);
    this.#tell(entry.grainHash, grainId, name);
    return { name, firstTickAt: entry.startAt, periodMs: entry.periodMs };
  }

  /** Removes a reminder; false if the grain had none of that name. */
  async unregister(grainId: string, name: string): Promise<boolean> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const row = await this.#o.table.read(grainId, name);
      if (row === undefined) return false;
      if (await this.#o.table.remove(grainId, name, row.etag)) {
        this.#tell(row.grainHash, grainId, name);
        return true;
      }
      // Changed between our read and remove (re-registered meanwhile): read again.
    }
    throw new ReminderError(`could not unregister reminder '${name}' of grain ${grainId}: it kept changing`);
  }

  async list(grainId: string): Promise<ReminderInfo[]> {
    const rows = await this.#o.table.readGrain(grainId);
    return rows
      .map((r) => ({ name: r.name, firstTickAt: r.startAt, periodMs: r.periodMs }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Tells the owner of `hash` to look at the reminder again (itself, or another silo). */
  #tell(hash: number, grainId: string, name: string): void {
    const owner = this.#ring?.ownerOfHash(hash) ?? this.#self;
    if (owner === this.#self) {
      void this.changed(grainId, name);
      return;
    }
    this.#o.notify(owner, grainId, name).catch((e: unknown) => {
      this.#o.logger.warn(
        { err: e, owner, grain: grainId, reminder: name },
        'could not tell the owner of a reminder about a change; it will see it at its next refresh',
      );
    });
  }

  // ---- Owner side -----------------------------------------------------------------

  /** A reminder of a grain this silo owns changed: read it and (re)schedule or cancel it. Resolves once applied; never rejects. */
  changed(grainId: string, name: string): Promise<void> {
    if (this.#stopped || !this.#owns(hash32(grainId))) return Promise.resolve();
    return this.#enqueue(() => this.#reread(grainId, name));
  }

  async #reread(grainId: string, name: string): Promise<void> {
    const hash = hash32(grainId);
    if (this.#stopped || !this.#owns(hash)) return;
    let row: StoredReminder | undefined;
    try {
      row = await this.#o.table.read(grainId, name);
    } catch (e) {
      this.#o.logger.warn(
        { err: e, grain: grainId, reminder: name },
        'could not read a changed reminder; reloading the ranges soon',
      );
      this.#retrySoon();
      return;
    }
    // The ranges may have moved while we read: the new owner has the reminder now.
    if (this.#stopped || !this.#owns(hash)) return;
    if (row === undefined) this.#cancel(keyOf(grainId, name), 'removed');
    else this.#schedule(row);
  }

  /** Runs `job` after the reads queued before it; the result never rejects. */
  #enqueue(job: () => Promise<void>): Promise<void> {
    const next = this.#queue.then(job).catch((e: unknown) => {
      this.#o.logger.error({ err: e }, 'reminder service: unexpected error while scheduling reminders');
    });
    this.#queue = next;
    return next;
  }

  #owns(hash: number): boolean {
    const ranges = this.#ranges;
    if (ranges === undefined) return true;
    for (const [b, e] of ranges) if (inRange(hash, b, e)) return true;
    return false;
  }

  /** Queues a load of the ranges, unless one is queued already (it will read the ranges as they are when it starts). */
  #reload(why: LoadReason): void {
    if (this.#stopped || this.#loadQueued) return;
    this.#loadQueued = true;
    void this.#enqueue(() => {
      this.#loadQueued = false;
      return this.#load(why);
    });
  }

  /** A read of the table failed: load the ranges again soon, backing off up to the refresh interval. */
  #retrySoon(): void {
    if (this.#stopped || this.#retry !== undefined) return;
    const delay = Math.min(this.#o.refreshIntervalMs, MAX_TIMER_MS, RETRY_MS * 2 ** Math.min(this.#failures, 16));
    this.#failures++;
    this.#retry = this.#clock
      .setTimeout(() => {
        this.#retry = undefined;
        this.#reload('retry');
      }, delay)
      .unref();
  }

  async #load(why: LoadReason): Promise<void> {
    if (this.#stopped) return;
    const ranges = this.#ranges ?? [[0, 0]];
    const seen = new Set<string>();
    try {
      for (const [b, e] of ranges) {
        for (const row of await this.#o.table.readRange(b, e)) {
          if (!this.#owns(row.grainHash)) continue; // the ranges moved while we read
          seen.add(keyOf(row.grainId, row.name));
          this.#schedule(row);
        }
      }
    } catch (e) {
      this.#o.logger.warn({ err: e, why }, 'could not load reminders; firing those already loaded, trying again soon');
      this.#retrySoon();
      return;
    }
    this.#failures = 0;
    if (this.#stopped) return;
    // Not ours any more, or gone from the ranges we read (unregistered where our notice was lost):
    // stop firing them, even with a tick running (it finishes, and is not followed by another).
    for (const [k, s] of this.#scheduled) {
      const h = s.entry.grainHash;
      if (!this.#owns(h)) this.#cancel(k, 'moved');
      else if (!seen.has(k) && ranges.some(([b, e]) => inRange(h, b, e))) this.#cancel(k, 'removed');
    }
  }

  /** Schedules a reminder as stored; keeps the schedule of one already known with the same ETag. */
  #schedule(row: StoredReminder): void {
    if (this.#stopped) return;
    const k = keyOf(row.grainId, row.name);
    const known = this.#scheduled.get(k);
    if (known !== undefined && known.entry.etag === row.etag) return;
    if (known !== undefined) this.#cancel(k); // replaced: scheduled again below
    const now = this.#clock.now();
    // Ticks nobody fired: after the last one recorded (or, with none, since the first tick).
    const recorded = row.lastTickAt;
    const from = recorded !== undefined && recorded >= row.startAt ? recorded : row.startAt - row.periodMs;
    const s: Scheduled = { entry: row, timer: undefined, running: false, lastDue: from, missed: 0 };
    this.#scheduled.set(k, s);
    const latestDue = latestDueAtOrBefore(row, now);
    if (latestDue !== undefined && latestDue > from) {
      // Due ticks that nobody fired (an owner died, the cluster was down): one tick now, the rest reported.
      s.missed = Math.round((latestDue - from) / row.periodMs) - 1;
      this.#fire(k, s, latestDue);
    } else this.#arm(k, s, now);
  }

  /** Sets the timer for the next due tick after `s.lastDue`. */
  #arm(k: string, s: Scheduled, now: number): void {
    const { startAt, periodMs } = s.entry;
    let due = s.lastDue < startAt ? startAt : s.lastDue + periodMs;
    if (due < now) {
      // Late (a long tick, a stalled loop): skip to the latest due time, counting the skipped ones.
      const latest = latestDueAtOrBefore(s.entry, now) ?? due;
      s.missed += Math.round((latest - due) / periodMs);
      due = latest;
    }
    s.timer = this.#clock
      .setTimeout(
        () => {
          s.timer = undefined;
          if (this.#scheduled.get(k) !== s) return;
          // Never before the due time: a wait longer than setTimeout allows was cut short.
          const at = this.#clock.now();
          if (at < due) {
            this.#arm(k, s, at);
            return;
          }
          // Fired late (the process was busy or suspended): one tick, for the latest due time, the
          // ones skipped counted as missed, rather than a stale tick followed by a catch-up one.
          const latest = latestDueAtOrBefore(s.entry, at) ?? due;
          s.missed += Math.round((latest - due) / periodMs);
          this.#fire(k, s, latest);
        },
        Math.min(MAX_TIMER_MS, Math.max(0, due - now)),
      )
      .unref();
  }

  #fire(k: string, s: Scheduled, dueAt: number): void {
    if (s.running) return;
    s.running = true;
    const busy = this.#inFlight.get(k);
    if (busy !== undefined) {
      // A tick of this reminder fired under an earlier registration (or an earlier spell of
      // ownership) still runs: ticks never overlap. Armed again once it ends, counting from
      // lastDue the ticks that came due meanwhile.
      s.missed = 0;
      void busy.then(() => {
        s.running = false;
        if (this.#scheduled.get(k) === s && !this.#stopped) this.#arm(k, s, this.#clock.now());
      });
      return;
    }
    const missed = s.missed;
    s.missed = 0;
    s.lastDue = dueAt;
    const e = s.entry;
    const tick: ReminderTick = { firstTickAt: e.startAt, periodMs: e.periodMs, dueAt, missed };
    this.ticksFired++;
    if (channels.reminderTick.hasSubscribers)
      channels.reminderTick.publish({ silo: this.#self, grain: e.grainId, reminder: e.name, dueAt, missed });
    const done: Promise<void> = this.#deliver(e, tick).finally(() => {
      if (this.#inFlight.get(k) === done) this.#inFlight.delete(k);
      s.running = false;
      if (this.#scheduled.get(k) === s && !this.#stopped) this.#arm(k, s, this.#clock.now());
    });
    this.#inFlight.set(k, done);
  }

  /** Delivers a tick and records it; never rejects, whatever `fire` or the table throw. */
  async #deliver(e: StoredReminder, tick: ReminderTick): Promise<void> {
    try {
      await this.#o.fire(e.grainId, e.name, tick);
    } catch (err) {
      this.#o.logger.warn(
        { err, grain: e.grainId, reminder: e.name, dueAt: tick.dueAt },
        `reminder '${e.name}' of grain ${e.grainId} failed: ${(err as Error)?.message ?? String(err)}`,
      );
      return;
    }
    // Not waited for: a slow table does not hold the next tick back.
    void this.#record(e, tick.dueAt);
  }

  async #record(e: StoredReminder, dueAt: number): Promise<void> {
    try {
      await this.#o.table.recordTick(e.grainId, e.name, dueAt);
    } catch (err) {
      this.#o.logger.warn(
        { err, grain: e.grainId, reminder: e.name },
        'could not record a reminder tick; a silo taking this reminder over may fire it again',
      );
    }
  }

  /** Stops firing a reminder; with a `reason` (not when it is replaced) says so on `granary:reminder:unscheduled`. */
  #cancel(k: string, reason?: UnscheduleReason): void {
    const s = this.#scheduled.get(k);
    if (s === undefined) return;
    s.timer?.cancel();
    this.#scheduled.delete(k);
    if (reason !== undefined && channels.reminderUnscheduled.hasSubscribers)
      channels.reminderUnscheduled.publish({
        silo: this.#self,
        grain: s.entry.grainId,
        reminder: s.entry.name,
        reason,
      });
  }
}

/** The latest due time at or before `now`, or undefined before the first tick. */
function latestDueAtOrBefore(e: ReminderEntry, now: number): number | undefined {
  if (now < e.startAt) return undefined;
  return e.startAt + Math.floor((now - e.startAt) / e.periodMs) * e.periodMs;
}

/** True when `h` lies in the ring range `(b, e]` (wrapping when b >= e; b === e is the whole ring). */
export function inRange(h: number, b: number, e: number): boolean {
  if (b < e) return b < h && h <= e;
  if (b === e) return true;
  return h > b || h <= e;
}

/** The ring ranges `(begin, end]` that `member` owns, adjacent ones merged. */
export function rangesOf(ring: Ring, member: string): Array<[number, number]> {
  const points = ring.points;
  const n = points.length;
  const out: Array<[number, number]> = [];
  if (n === 0) return out;
  if (ring.members.length === 1) return ring.members[0] === member ? [[0, 0]] : out;
  for (let i = 0; i < n; i++) {
    const [p, owner] = points[i] as [number, string];
    if (owner !== member) continue;
    const prev = (points[(i - 1 + n) % n] as [number, string])[0];
    // A point at the same position as the one before it (a hash tie) owns nothing: the
    // position goes to the first of them. Its range (p, p] would read as the whole ring.
    if (prev === p) continue;
    const last = out[out.length - 1];
    if (last !== undefined && last[1] === prev) last[1] = p;
    else out.push([prev, p]);
  }
  // The first and last ranges meet across the top of the ring.
  if (out.length > 1) {
    const first = out[0] as [number, number];
    const last = out[out.length - 1] as [number, number];
    if (last[1] === first[0]) {
      first[0] = last[0];
      out.pop();
    }
  }
  return out;
}
