// The grains of the fleet: one per device (its latest state, a short history,
// alert rules, liveness), a stateless pre-aggregator per silo, and the
// aggregation hierarchy site → region → fleet, plus an alert log per region
// fed by the alerts stream. Every total the API shows is the sum of what the
// devices persisted, reached by idempotent whole snapshots, never by deltas.

import { randomUUID } from 'node:crypto';
import {
  Grain,
  grain,
  implicitSubscription,
  oneWay,
  readOnly,
  reentrant,
  statelessWorker,
  type DeactivationReason,
  type PersistentState,
  type ReminderTick,
  type StreamId,
  type StreamToken,
  type TimerHandle,
} from 'granary';
import {
  ALERT_LIST_CAP,
  STREAMS,
  addTotals,
  alertsOf,
  emptyTotals,
  totalsOf,
  type AlertChange,
  type AlertEntry,
  type Command,
  type DeviceKind,
  type DeviceSnapshot,
  type Summary,
  type Telemetry,
  type Totals,
} from './model.ts';

/** Settings of the fleet's grains, the same for every silo of a process. */
export interface FleetSettings {
  /** A device that sent nothing for this long is offline, in ms. Default 60 000. */
  offlineAfterMs: number;
  /** How often a silo's pre-aggregator flushes its batches to the sites, in ms. Default 250. */
  flushMs: number;
  /** How often a site (region) pushes its changed summary to its region (the fleet), in ms. Default 500. */
  pushMs: number;
  /** Period of the aggregators' durable resync reminder, in ms. Default 60 000. */
  resyncMs: number;
  /** Where grains report what they cannot return to a caller. Default: console.warn. */
  warn: (fields: Record<string, unknown>, msg: string) => void;
}

/**
 * The settings the grains read. Granary gives a grain no per-silo services
 * (no dependency injection), so the process sets them once, before its silos
 * start; two silos of one process share them.
 */
export const fleetSettings: FleetSettings = {
  offlineAfterMs: 60_000,
  flushMs: 250,
  pushMs: 500,
  resyncMs: 60_000,
  warn: (fields, msg) => console.warn(msg, fields),
};

/** The reminder period that checks a device's liveness: half the offline time, so offline is seen within 1.5x. */
export function livenessPeriodMs(): number {
  return Math.max(1, Math.floor(fleetSettings.offlineAfterMs / 2));
}

/** Entries of the in-memory history a device keeps. */
export const HISTORY = 20;
/** Commands a device may have waiting; more is refused (the device is not picking them up). */
export const MAX_PENDING_COMMANDS = 100;

/** One accepted message, as the history shows it. */
export interface HistoryEntry {
  seq: number;
  ts: number;
  receivedAt: number;
  battery: number;
  readings: Record<string, number>;
  position?: { lat: number; lon: number };
  alerts: string[];
}

/** What a device answers to its telemetry: the seq accepted and the commands for it. */
export interface TelemetryResult {
  seq: number;
  commands: Command[];
  /** The seq was accepted before: nothing was counted again. */
  duplicate: boolean;
}

/** What GET /api/devices/:id shows. */
export interface DeviceView {
  id: string;
  kind: DeviceKind;
  site: string;
  region: string;
  status: 'online' | 'offline';
  lastSeq: number;
  messages: number;
  /** Server time of the last accepted message, epoch ms. */
  lastSeenAt: number;
  ts: number;
  battery: number;
  position?: { lat: number; lon: number };
  readings: Record<string, number>;
  alerts: string[];
  pendingCommands: number;
  /** The last accepted messages, newest first; kept in memory only, so it starts again after a reactivation. */
  history: HistoryEntry[];
}

/** What a device persists: a summary, not its history. */
interface DeviceState {
  rev: number;
  lastSeq: number;
  messages: number;
  kind: DeviceKind;
  site: string;
  region: string;
  /** Sites the device reported to before it moved; each is told to forget it again on activation. */
  formerSites: string[];
  battery: number;
  position: { lat: number; lon: number } | null;
  readings: Record<string, number>;
  ts: number;
  lastSeenAt: number;
  online: boolean;
  alerts: string[];
  pending: Command[];
  /** The commands handed out with lastSeq: a device that repeats lastSeq (it lost our answer) gets them again. */
  delivered: Command[];
}

/** A device refused a command (too many waiting). */
export class TooManyCommandsError extends Error {
  readonly code = 'FLEET_TOO_MANY_COMMANDS';
  override readonly name = 'TooManyCommandsError';
}

/**
 * One grain per device, keyed by its id. All of a device's messages meet
 * here, one turn at a time, so sequence checks, counts and alert rules need
 * no locks and no shared table.
 */
@grain('fleet.device')
export class Device extends Grain {
  readonly #state: PersistentState<DeviceState> = this.persistentState<DeviceState>('device', {
    initial: () => ({
      rev: 0,
      lastSeq: -1,
      messages: 0,
      kind: 'sensor',
      site: '',
      region: '',
      formerSites: [],
      battery: 0,
      position: null,
      readings: {},
      ts: 0,
      lastSeenAt: 0,
      online: false,
      alerts: [],
      pending: [],
      delivered: [],
    }),
  });
  /** In memory only: the history is for looking at, and rebuilding it after a crash is not worth a write per message. */
  readonly #history: HistoryEntry[] = [];
  /** Whether this activation has made sure of the liveness reminder (once per activation, not once per message). */
  #watching = false;

  override async onActivate(): Promise<void> {
    // Re-report on activation: a report lost in a crash (the pre-aggregator's
    // batch lives in memory) is made good the next time the device wakes,
    // which its durable liveness reminder guarantees while it is online.
    if (this.#state.recordExists) this.#report(true);
  }

  /**
   * Accepts one message. Resolves only once the device's summary is written,
   * so the caller's acknowledgement means the message is durable; a seq at or
   * below the last accepted one is a repeat, answered again and never counted.
   *
   * A direct call, not a stream: the caller needs this answer (durable, and the
   * commands), and a stream publish resolves when the item is queued, not handled.
   */
  async telemetry(t: Telemetry): Promise<TelemetryResult> {
    const s = this.#state.state;
    if (t.seq <= s.lastSeq) {
      // The device did not get our answer and sent again: the same answer, nothing counted.
      return { seq: t.seq, commands: t.seq === s.lastSeq ? s.delivered : [], duplicate: true };
    }
    const now = Date.now();
    const before = s.alerts;
    const wasOnline = s.online;
    const alerts = alertsOf(t);
    if (s.site !== '' && s.site !== t.site && !s.formerSites.includes(s.site)) {
      s.formerSites = [...s.formerSites, s.site].slice(-8);
    }
    s.formerSites = s.formerSites.filter((x) => x !== t.site);
    const movedFrom = s.site !== '' && s.site !== t.site ? s.site : null;
    s.rev++;
    s.lastSeq = t.seq;
    s.messages++;
    s.kind = t.kind;
    s.site = t.site;
    s.region = t.region;
    s.battery = t.battery;
    s.position = t.position ?? s.position;
    s.readings = t.readings;
    s.ts = t.ts;
    // Liveness runs on the server's clock: a device's clock may be wrong.
    s.lastSeenAt = now;
    s.online = true;
    s.alerts = alerts;
    s.delivered = s.pending;
    s.pending = [];
    await this.#write();

    const entry: HistoryEntry = {
      seq: t.seq,
      ts: t.ts,
      receivedAt: now,
      battery: t.battery,
      readings: t.readings,
      alerts,
    };
    if (t.position !== undefined) entry.position = t.position;
    this.#history.unshift(entry);
    this.#history.length = Math.min(this.#history.length, HISTORY);

    if (movedFrom !== null) this.#tombstone(movedFrom);
    this.#report(false);
    if (!wasOnline || !this.#watching) await this.#watchLiveness();
    await this.#publishAlerts(before, alerts, now);
    return { seq: t.seq, commands: s.delivered, duplicate: false };
  }

  /** Queues a command for the device's next message; durable before it resolves. */
  async enqueueCommand(name: string, args: Record<string, unknown>): Promise<{ commandId: string }> {
    const s = this.#state.state;
    if (s.pending.length >= MAX_PENDING_COMMANDS)
      throw new TooManyCommandsError(`${this.key} has ${s.pending.length} commands waiting; it has not picked them up`);
    const command: Command = { commandId: `cmd-${randomUUID()}`, name, args };
    s.pending = [...s.pending, command];
    await this.#write();
    return { commandId: command.commandId };
  }

  /** The device as the API shows it; null for a device that never sent anything. */
  @readOnly
  async view(): Promise<DeviceView | null> {
    if (!this.#state.recordExists) {
      // Nothing to keep in memory for an id that was only looked up.
      this.deactivateOnIdle();
      return null;
    }
    const s = this.#state.state;
    const v: DeviceView = {
      id: this.key,
      kind: s.kind,
      site: s.site,
      region: s.region,
      status: s.online ? 'online' : 'offline',
      lastSeq: s.lastSeq,
      messages: s.messages,
      lastSeenAt: s.lastSeenAt,
      ts: s.ts,
      battery: s.battery,
      readings: s.readings,
      alerts: s.alerts,
      pendingCommands: s.pending.length,
      history: this.#history,
    };
    if (s.position !== null) v.position = s.position;
    return v;
  }

  /**
   * Liveness is a durable reminder, not a timer: a timer dies with its
   * activation, and an idle device's activation is collected (or lost with
   * its silo) exactly when the device has gone quiet, which is when the
   * check must run. The reminder is registered when the device comes online
   * and removed when it goes offline, so a quiet fleet costs the reminder
   * table nothing; its period is half the offline time, so a device is
   * flagged between 1x and 1.5x that time after its last message.
   */
  async receiveReminder(name: string, _tick: ReminderTick): Promise<void> {
    if (name !== 'liveness') return;
    const s = this.#state.state;
    if (!s.online) {
      this.#watching = false;
      await this.unregisterReminder('liveness');
      return;
    }
    if (Date.now() - s.lastSeenAt < fleetSettings.offlineAfterMs) return;
    s.online = false;
    s.rev++;
    await this.#write();
    this.#report(false);
    this.#watching = false;
    await this.unregisterReminder('liveness');
  }

  /**
   * Registers the liveness reminder. A table that fails here does not fail
   * the message, which is durable already: the next message tries again.
   */
  async #watchLiveness(): Promise<void> {
    const period = livenessPeriodMs();
    try {
      await this.registerReminder('liveness', { dueMs: period, periodMs: period });
      this.#watching = true;
    } catch (e) {
      fleetSettings.warn(
        { device: this.key, err: e },
        'liveness reminder not registered; trying again with the next message',
      );
    }
  }

  /**
   * Writes the summary. A write that fails leaves this activation's memory
   * ahead of the store (lastSeq moved on), so the activation goes: the next
   * call reads what is really stored, and a repeated message is counted then.
   */
  async #write(): Promise<void> {
    try {
      await this.#state.write();
    } catch (e) {
      this.deactivateOnIdle();
      throw e;
    }
  }

  #snapshot(): DeviceSnapshot {
    const s = this.#state.state;
    return {
      id: this.key,
      rev: s.rev,
      site: s.site,
      region: s.region,
      kind: s.kind,
      messages: s.messages,
      online: s.online,
      alerts: s.alerts,
      battery: s.battery,
    };
  }

  /**
   * Hands the device's whole snapshot to this silo's pre-aggregator (one-way:
   * the message is already durable, and the totals follow within a flush).
   */
  #report(withFormerSites: boolean): void {
    this.#send(this.#snapshot());
    if (withFormerSites) for (const site of this.#state.state.formerSites) this.#tombstone(site);
  }

  #tombstone(site: string): void {
    this.#send({ ...this.#snapshot(), site, gone: true });
  }

  #send(snapshot: DeviceSnapshot): void {
    this.getGrain(SiteReporter, 'local')
      .report(snapshot)
      .catch((e: unknown) => fleetSettings.warn({ device: this.key, err: e }, 'snapshot not reported'));
  }

  /**
   * Alert changes go on the region's alerts stream: the alert log and the
   * live views consume them, and the device neither knows nor waits for
   * them. Published after the write, so nobody hears of an alert that a crash
   * could take back. The stream is best effort (memory streams: at most
   * once); the exact list of devices in alert comes from the aggregates.
   */
  async #publishAlerts(before: string[], now: string[], at: number): Promise<void> {
    const raised = now.filter((a) => !before.includes(a));
    const cleared = before.filter((a) => !now.includes(a));
    if (raised.length === 0 && cleared.length === 0) return;
    const s = this.#state.state;
    const change: AlertChange = {
      id: this.key,
      site: s.site,
      region: s.region,
      kind: s.kind,
      alerts: now,
      raised,
      cleared,
      at,
    };
    try {
      await this.getStream<AlertChange>(STREAMS.provider, STREAMS.alerts, s.region).publish(change);
    } catch (e) {
      fleetSettings.warn({ device: this.key, err: e }, 'alert change not published');
    }
  }
}

/**
 * Pre-aggregation, one per silo (a stateless worker is always local and
 * never registered): devices hand it their snapshots, it keeps the newest
 * per device in a batch per site, and flushes each batch as one call on a
 * short timer. Ten thousand devices sending once a second then make a few
 * calls per site per flush, not ten thousand calls on one grain.
 *
 * Reentrant, so snapshots keep coming in while a flush awaits the sites. The
 * batches live in memory: a crash loses them, and the devices' re-reports
 * (on activation and on every message) make that good.
 */
@grain('fleet.siteReporter')
@statelessWorker({ maxLocal: 1 })
@reentrant
export class SiteReporter extends Grain {
  readonly #batches = new Map<string, Map<string, DeviceSnapshot>>();
  #timer: TimerHandle | undefined;
  #flushing = false;

  override async onActivate(): Promise<void> {
    this.#timer = this.registerTimer(() => this.#flush(), {
      dueMs: fleetSettings.flushMs,
      periodMs: fleetSettings.flushMs,
      interleave: true,
    });
  }

  override async onDeactivate(reason: DeactivationReason): Promise<void> {
    this.#timer?.dispose();
    // At shutdown the sites may be going too; what does not reach them comes
    // again when its devices next activate, so it is not worth a warning.
    await this.#flush(reason === 'shutdown');
  }

  /** Takes a device's snapshot for its site's next batch; a newer one replaces an older one. */
  @oneWay
  async report(snapshot: DeviceSnapshot): Promise<void> {
    this.#merge(snapshot);
  }

  #merge(s: DeviceSnapshot): void {
    let batch = this.#batches.get(s.site);
    if (batch === undefined) this.#batches.set(s.site, (batch = new Map()));
    const had = batch.get(s.id);
    if (had === undefined || had.rev < s.rev || (had.rev === s.rev && s.gone === true)) batch.set(s.id, s);
  }

  async #flush(quiet = false): Promise<void> {
    if (this.#flushing || this.#batches.size === 0) return;
    this.#flushing = true;
    const batches = [...this.#batches];
    this.#batches.clear();
    try {
      await Promise.all(
        batches.map(async ([site, batch]) => {
          const snapshots = [...batch.values()];
          try {
            await this.getGrain(Site, site).apply(snapshots);
          } catch (e) {
            // Kept for the next flush; newer snapshots that came meanwhile win.
            for (const s of snapshots) this.#merge(s);
            if (!quiet)
              fleetSettings.warn({ site, devices: snapshots.length, err: e }, 'site batch not applied; retrying');
          }
        }),
      );
    } finally {
      this.#flushing = false;
    }
  }
}

/** The state of an aggregator: the latest whole report of each member, and its own revision. */
interface AggregateState<M> {
  rev: number;
  /** The parent this aggregator reports to (a site's region); '' until the first member reported. */
  parent: string;
  members: Record<string, M>;
}

/**
 * What sites and regions share: they keep the newest report of each member,
 * persist the map, and push their own summary to the parent on a short
 * timer when it changed. The push goes again on activation and on a durable
 * resync reminder, so after a crash the parent converges even if no member
 * ever reports again.
 */
abstract class Aggregator<M extends { rev: number }> extends Grain {
  protected readonly agg: PersistentState<AggregateState<M>> = this.persistentState<AggregateState<M>>('aggregate', {
    initial: () => ({ rev: 0, parent: '', members: {} }),
  });
  #dirty = true;
  /** False for the top of the hierarchy, which has nobody to push to. */
  protected readonly pushes: boolean = true;

  override async onActivate(): Promise<void> {
    if (!this.pushes) return;
    this.registerTimer(() => this.#push(), { dueMs: fleetSettings.pushMs, periodMs: fleetSettings.pushMs });
    if (this.agg.recordExists) {
      await this.#watchResync();
    }
  }

  /** The durable resync: the push goes again every resyncMs even if no member reports. */
  async #watchResync(): Promise<void> {
    const period = Math.max(fleetSettings.resyncMs, 1);
    await this.registerReminder('resync', { dueMs: period, periodMs: period });
  }

  async receiveReminder(name: string, _tick: ReminderTick): Promise<void> {
    if (name !== 'resync') return;
    this.#dirty = true;
    await this.#push();
  }

  /** Applies members' reports; a report no newer than the one kept is ignored. Durable before it resolves. */
  protected async applyReports(reports: ReadonlyArray<{ key: string; report: M; parent: string }>): Promise<void> {
    const st = this.agg.state;
    let changed = false;
    for (const { key, report, parent } of reports) {
      const had = st.members[key];
      if (had !== undefined && had.rev >= report.rev) continue;
      st.members[key] = report;
      // A site is a place: its region is the one its first device named.
      if (st.parent === '' && parent !== '') st.parent = parent;
      changed = true;
    }
    if (!changed) return;
    const first = !this.agg.recordExists;
    st.rev++;
    try {
      await this.agg.write();
    } catch (e) {
      this.deactivateOnIdle(); // memory is ahead of the store: start again from what is stored
      throw e;
    }
    this.#dirty = true;
    if (first && this.pushes) {
      await this.#watchResync();
    }
  }

  /** This aggregator's summary: its members' totals added up, and the devices in alert (capped). */
  protected summarize(): Summary {
    const totals = emptyTotals();
    const alerts: AlertEntry[] = [];
    for (const m of Object.values(this.agg.state.members)) {
      const part = this.memberSummary(m);
      addTotals(totals, part.totals);
      for (const a of part.alerts) if (alerts.length < ALERT_LIST_CAP) alerts.push(a);
    }
    return { key: this.key, rev: this.agg.state.rev, totals, alerts };
  }

  protected abstract memberSummary(m: M): { totals: Totals; alerts: AlertEntry[] };
  /** Hands the summary to the parent; false when there is no parent. */
  protected abstract pushUp(summary: Summary): Promise<boolean>;

  async #push(): Promise<void> {
    if (!this.#dirty || !this.agg.recordExists) return;
    try {
      if (await this.pushUp(this.summarize())) this.#dirty = false;
    } catch (e) {
      fleetSettings.warn({ aggregator: `${this.id.type}/${this.key}`, err: e }, 'summary not pushed; retrying');
    }
  }
}

/** A site's totals, as GET /api/sites/:s shows them. */
export interface SiteView extends Summary {
  region: string;
  /** The site's devices (up to 1,000), with status and alerts. */
  devices: Array<{ id: string; kind: DeviceKind; online: boolean; alerts: string[]; messages: number }>;
}

/**
 * A site keeps the latest snapshot of each of its devices, so its totals
 * are exact: a device counts once whatever it reported and how often.
 */
@grain('fleet.site')
export class Site extends Aggregator<DeviceSnapshot> {
  /** A batch of device snapshots from a silo's pre-aggregator. */
  async apply(snapshots: DeviceSnapshot[]): Promise<void> {
    await this.applyReports(snapshots.map((s) => ({ key: s.id, report: s, parent: s.gone === true ? '' : s.region })));
  }

  @readOnly
  async view(): Promise<SiteView | null> {
    if (!this.agg.recordExists) return null;
    const devices = Object.values(this.agg.state.members)
      .filter((d) => d.gone !== true)
      .slice(0, 1000)
      .map((d) => ({ id: d.id, kind: d.kind, online: d.online, alerts: d.alerts, messages: d.messages }));
    return { ...this.summarize(), region: this.agg.state.parent, devices };
  }

  protected memberSummary(d: DeviceSnapshot): { totals: Totals; alerts: AlertEntry[] } {
    const alerts: AlertEntry[] =
      d.gone !== true && d.alerts.length > 0
        ? [
            {
              id: d.id,
              site: d.site,
              region: d.region,
              kind: d.kind,
              alerts: d.alerts,
              battery: d.battery,
              online: d.online,
            },
          ]
        : [];
    return { totals: totalsOf(d), alerts };
  }

  protected async pushUp(summary: Summary): Promise<boolean> {
    const region = this.agg.state.parent;
    if (region === '') return false;
    await this.getGrain(Region, region).applySite(summary);
    return true;
  }
}

/** A region's totals and those of each of its sites, as GET /api/regions/:r shows them. */
export interface RegionView extends Summary {
  sites: Array<{ site: string; totals: Totals }>;
}

/** A region keeps the latest summary of each of its sites. */
@grain('fleet.region')
export class Region extends Aggregator<Summary> {
  async applySite(summary: Summary): Promise<void> {
    await this.applyReports([{ key: summary.key, report: summary, parent: 'fleet' }]);
  }

  @readOnly
  async view(): Promise<RegionView | null> {
    if (!this.agg.recordExists) return null;
    const sites = Object.values(this.agg.state.members).map((s) => ({ site: s.key, totals: s.totals }));
    return { ...this.summarize(), sites };
  }

  protected memberSummary(s: Summary): { totals: Totals; alerts: AlertEntry[] } {
    return s;
  }

  protected async pushUp(summary: Summary): Promise<boolean> {
    await this.getGrain(Fleet, 'fleet').applyRegion(summary);
    return true;
  }
}

/** The fleet's totals, as GET /api/fleet shows them. */
export interface FleetView extends Totals {
  regions: Record<string, Totals>;
  /** Server time, epoch ms. */
  at: number;
}

/**
 * The top of the hierarchy: one grain, but only regions call it (a few calls
 * a second each, whatever the number of devices), and readers read it.
 */
@grain('fleet.fleet')
export class Fleet extends Aggregator<Summary> {
  async applyRegion(summary: Summary): Promise<void> {
    await this.applyReports([{ key: summary.key, report: summary, parent: '' }]);
  }

  @readOnly
  async view(): Promise<FleetView> {
    const { totals } = this.summarize();
    const regions: Record<string, Totals> = {};
    for (const r of Object.values(this.agg.state.members)) regions[r.key] = r.totals;
    return { ...totals, regions, at: Date.now() };
  }

  /** Devices in alert, all regions (the list is capped; `inAlert` is exact). */
  @readOnly
  async alerts(): Promise<{ inAlert: number; devices: AlertEntry[]; truncated: boolean }> {
    const { totals, alerts } = this.summarize();
    return { inAlert: totals.inAlert, devices: alerts, truncated: alerts.length < totals.inAlert };
  }

  protected override readonly pushes = false;

  protected memberSummary(s: Summary): { totals: Totals; alerts: AlertEntry[] } {
    return s;
  }

  protected async pushUp(): Promise<boolean> {
    return false;
  }
}

/** Alert changes kept per region. */
export const ALERT_LOG = 100;

/**
 * The alert log of a region: an implicit subscriber to the region's alerts
 * stream, so it needs no subscribe call and is activated by the first alert.
 * It keeps the newest changes; it is a log for people, best effort like the
 * stream, while the exact alert state lives in the devices and aggregates.
 */
@grain('fleet.alertLog')
@implicitSubscription(STREAMS.alerts)
export class AlertLog extends Grain {
  readonly #log: PersistentState<{ changes: AlertChange[] }> = this.persistentState('log', {
    initial: () => ({ changes: [] }),
  });

  async onStreamItem(change: AlertChange, _token: StreamToken, _stream: StreamId): Promise<void> {
    const s = this.#log.state;
    s.changes = [change, ...s.changes].slice(0, ALERT_LOG);
    await this.#log.write();
  }

  @readOnly
  async recent(): Promise<AlertChange[]> {
    return this.#log.state.changes;
  }
}

/** Every grain class of the fleet, for a silo's `grains` option. */
export const fleetGrains = [Device, SiteReporter, Site, Region, Fleet, AlertLog];
