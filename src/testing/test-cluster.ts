// TestCluster: N silos in this process over real loopback TCP, sharing one
// in-memory membership table, state store and reminder table (unless the
// silo options give others), with a ClusterClient connected to their
// gateways. Failure detection is tuned to notice a dead silo within about a
// second, so fault tests stay short.

import { ClusterClient } from '../client/client.ts';
import { ConfigurationError, TimeoutError } from '../errors.ts';
import type { AnyGrainClass } from '../grain/grain.ts';
import type { MembershipOptions } from '../membership/service.ts';
import type { MembershipTable } from '../membership/table.ts';
import { silentLogger } from '../observability/logger.ts';
import { memoryMembership, MemoryMembershipStore } from '../providers/memory/membership.ts';
import { memoryReminders, MemoryReminderStore } from '../providers/memory/reminders.ts';
import { memoryStorage, MemoryStore } from '../providers/memory/storage.ts';
import { Silo, type SiloOptions } from '../hosting/silo.ts';

/** Failure detection for tests: a crashed silo is declared dead within about a second. */
export const fastMembership: MembershipOptions = {
  iAmAliveIntervalMs: 200,
  tableRefreshIntervalMs: 100,
  probeIntervalMs: 100,
  probeTimeoutMs: 200,
  missedProbesLimit: 2,
  joinTimeoutMs: 5000,
};

/** What the silos of one test cluster share unless their options say otherwise. */
interface Shared {
  readonly state: MemoryStore;
  readonly reminders: MemoryReminderStore;
}

/** Options of `TestCluster.start`. */
export interface TestClusterOptions {
  /** How many silos to start. Default 2. */
  silos?: number;
  /** The grain classes every silo hosts. */
  grains: AnyGrainClass[];
  /** Options every silo gets (ports, membership and clusterId are set by the test cluster unless given). */
  siloOptions?: SiloOptions;
  /** A membership table per silo; default: one shared in-memory table. */
  membership?: () => MembershipTable;
  clusterId?: string;
}

/** A cluster of silos in this process, and a client. */
export class TestCluster {
  readonly silos: Silo[] = [];
  readonly client: ClusterClient;
  readonly clusterId: string;
  readonly #opts: TestClusterOptions;
  readonly #membership: () => MembershipTable;
  readonly #shared: Shared;

  private constructor(
    opts: TestClusterOptions,
    clusterId: string,
    membership: () => MembershipTable,
    silos: Silo[],
    client: ClusterClient,
    shared: Shared,
  ) {
    this.#shared = shared;
    this.#opts = opts;
    this.clusterId = clusterId;
    this.#membership = membership;
    this.silos = silos;
    this.client = client;
  }

  /** Starts the silos one by one, waits until each sees all, and connects a client to every gateway. */
  static async start(options: TestClusterOptions): Promise<TestCluster> {
    const n = options.silos ?? 2;
    const clusterId = options.clusterId ?? `test-${Math.random().toString(36).slice(2, 10)}`;
    const store = new MemoryMembershipStore();
    const membership = options.membership ?? (() => memoryMembership({ store }));
    // The silos share one state store and one reminder table, as silos on one database do:
    // a grain that moves finds its state, and a reminder fires whichever silo owns it.
    const shared: Shared = { state: new MemoryStore(), reminders: new MemoryReminderStore() };
    const silos: Silo[] = [];
    try {
      for (let i = 0; i < n; i++) silos.push(await TestCluster.#startSilo(options, clusterId, membership, shared));
      await waitFor(
        `all ${n} silos see each other`,
        () => silos.every((s) => s.cluster?.view.active.size === n),
        10_000,
      );
      const client = await ClusterClient.connect({
        clusterId,
        gateways: silos.map((s) => s.cluster?.gatewayAddress).filter((g): g is string => typeof g === 'string'),
        logger: options.siloOptions?.logger ?? silentLogger(),
        ...(options.siloOptions?.responseTimeoutMs !== undefined
          ? { responseTimeoutMs: options.siloOptions.responseTimeoutMs }
          : {}),
      });
      return new TestCluster(options, clusterId, membership, silos, client, shared);
    } catch (e) {
      await Promise.all(silos.map((s) => s.abort()));
      throw e;
    }
  }

  static #startSilo(
    options: TestClusterOptions,
    clusterId: string,
    membership: () => MembershipTable,
    shared: Shared,
  ): Promise<Silo> {
    return Silo.start({
      logger: silentLogger(),
      membershipOptions: fastMembership,
      loadReportIntervalMs: 100,
      storage: { default: memoryStorage({ store: shared.state }) },
      reminders: memoryReminders({ store: shared.reminders }),
      ...options.siloOptions,
      clusterId,
      grains: options.grains,
      host: '127.0.0.1',
      port: 0,
      gatewayPort: 0,
      membership: membership(),
    });
  }

  /** Stops silo `i` gracefully. */
  async stopSilo(i: number): Promise<void> {
    await this.#silo(i).stop();
  }

  /** Stops silo `i` abruptly, as a crash: no goodbye. */
  async killSilo(i: number): Promise<void> {
    await this.#silo(i).abort();
  }

  /** Starts one more silo and waits until the running silos see it. */
  async startSilo(): Promise<Silo> {
    const s = await TestCluster.#startSilo(this.#opts, this.clusterId, this.#membership, this.#shared);
    this.silos.push(s);
    const addr = s.info.address;
    await waitFor(
      `the silos see ${addr}`,
      () => this.live().every((x) => x.cluster?.view.active.has(addr) === true),
      10_000,
    );
    return s;
  }

  /** Silos not stopped or killed. */
  live(): Silo[] {
    return this.silos.filter((s) => s.cluster?.stopping === false);
  }

  /** Closes the client and stops every silo still running. */
  async stop(): Promise<void> {
    await this.client.close();
    await Promise.all(this.live().map((s) => s.stop()));
  }

  #silo(i: number): Silo {
    const s = this.silos[i];
    if (s === undefined) throw new ConfigurationError(`no silo ${i}: the cluster has ${this.silos.length}`);
    return s;
  }
}

/** Polls until `check` holds; fails naming `what` after `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new TimeoutError(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
