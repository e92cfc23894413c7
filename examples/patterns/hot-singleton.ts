// Pattern: a hot singleton, and staged aggregation.
//
// Bad: every device reports each reading to one aggregator grain. The grain
// runs one turn at a time, and each turn writes its state, so the whole fleet
// waits in one mailbox: throughput is one write round trip per reading, on
// one silo, however many silos there are.
//
// Good: each reading goes to a stateless worker on the device's own silo,
// which only adds it to a sum in memory; every `flushMs` it sends one sum per
// site to that site's aggregator, which writes and passes the change on to the
// one fleet grain. Writes fall from one per reading to one per site per flush.
// The totals are the same; the staged ones are at most a flush or two behind.

import { Grain, grain, readOnly, statelessWorker, type TimerHandle } from 'granary';

/** Device keys are `site/device`: the site is the part before the slash. */
export function siteOf(deviceKey: string): string {
  const slash = deviceKey.indexOf('/');
  return slash < 0 ? deviceKey : deviceKey.slice(0, slash);
}

export interface Totals {
  total: number;
  readings: number;
  bySite: Record<string, number>;
}

const noTotals = (): Totals => ({ total: 0, readings: 0, bySite: {} });

// #region hot
/** Bad: the one grain every reading goes to. */
@grain('hotFleetTotal')
export class HotFleetTotal extends Grain {
  readonly #totals = this.persistentState<Totals>('totals', { initial: noTotals });

  async add(site: string, watts: number): Promise<void> {
    const t = this.#totals.state;
    t.total += watts;
    t.readings++;
    t.bySite[site] = (t.bySite[site] ?? 0) + watts;
    await this.#totals.write(); // every reading of the fleet waits for this, one after another
  }

  @readOnly
  async totals(): Promise<Totals> {
    return this.#totals.state;
  }
}

@grain('hotDevice')
export class HotDevice extends Grain {
  async report(watts: number): Promise<void> {
    await this.getGrain(HotFleetTotal, 'fleet').add(siteOf(this.key), watts);
  }
}
// #endregion hot

/** How often a pre-aggregator sends its sums on (ms). */
export const flushMs = 50;

// #region staged
/** Good, stage 1: one of a few activations on each silo; sums in memory, sends on per site. */
@grain('preAggregator')
@statelessWorker({ maxLocal: 4 })
export class PreAggregator extends Grain {
  #pending = new Map<string, { watts: number; readings: number }>();
  #timer: TimerHandle | undefined;

  override async onActivate(): Promise<void> {
    this.#timer = this.registerTimer(() => this.#flush(), { dueMs: flushMs, periodMs: flushMs });
  }

  override async onDeactivate(): Promise<void> {
    this.#timer?.dispose();
    await this.#flush(); // nothing counted here is lost when the worker goes
  }

  async add(site: string, watts: number): Promise<void> {
    const p = this.#pending.get(site);
    if (p === undefined) this.#pending.set(site, { watts, readings: 1 });
    else {
      p.watts += watts;
      p.readings++;
    }
  }

  async #flush(): Promise<void> {
    if (this.#pending.size === 0) return;
    const batch = this.#pending;
    this.#pending = new Map();
    await Promise.all([...batch].map(([site, p]) => this.getGrain(SiteTotal, site).add(p.watts, p.readings)));
  }
}

/** Good, stage 2: one grain per site; a write per flush of each worker, not per reading. */
@grain('siteTotal')
export class SiteTotal extends Grain {
  readonly #totals = this.persistentState('totals', { initial: () => ({ watts: 0, readings: 0 }) });

  async add(watts: number, readings: number): Promise<void> {
    this.#totals.state.watts += watts;
    this.#totals.state.readings += readings;
    await this.#totals.write();
    await this.getGrain(FleetTotal, 'fleet').add(this.key, watts, readings);
  }

  @readOnly
  async totals(): Promise<{ watts: number; readings: number }> {
    return this.#totals.state;
  }
}

/** Good, stage 3: the one fleet grain, called once per site with readings in each pre-aggregator's flush. */
@grain('fleetTotal')
export class FleetTotal extends Grain {
  readonly #totals = this.persistentState<Totals>('totals', { initial: noTotals });

  async add(site: string, watts: number, readings: number): Promise<void> {
    const t = this.#totals.state;
    t.total += watts;
    t.readings += readings;
    t.bySite[site] = (t.bySite[site] ?? 0) + watts;
    await this.#totals.write();
  }

  @readOnly
  async totals(): Promise<Totals> {
    return this.#totals.state;
  }
}

@grain('stagedDevice')
export class StagedDevice extends Grain {
  async report(watts: number): Promise<void> {
    await this.getGrain(PreAggregator, 'local').add(siteOf(this.key), watts);
  }
}
// #endregion staged

export const hotSingletonGrains = [HotFleetTotal, HotDevice, PreAggregator, SiteTotal, FleetTotal, StagedDevice];
