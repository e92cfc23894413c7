// The silo's metrics: every metric `/metrics` shows, its labels, and where its
// value is read when scraped (plain counters the parts keep; no metrics code
// runs per call). Names follow Orleans' instruments where one fits, with the
// prefix `granary_`. docs/operations.md lists them with the alerts to set. No
// label ever holds a grain key: type, method, error code, reason, peer silo,
// provider and operation are all few.

import { ConfigurationError } from '../errors.ts';
import { MetricsRegistry } from '../observability/metrics.ts';
import type { ReminderService } from '../reminders/service.ts';
import type { SiloCluster } from '../runtime/cluster.ts';
import type { Runtime } from '../runtime/runtime.ts';
import { STORAGE_OPERATIONS, type MeteredStorage } from '../storage/metered.ts';
import type { StreamService } from '../streams/service.ts';
import type { PeerTotals } from '../transport/traffic.ts';

/** Where the metrics read their values. */
export interface SiloMetricsSources {
  readonly runtime: Runtime;
  /** Whether the silo is one of a cluster: only then are there messages, membership and a directory to count. */
  readonly networked: boolean;
  /** The cluster layer, once the silo is networked and has joined. */
  cluster(): SiloCluster | undefined;
  readonly storage: ReadonlyMap<string, MeteredStorage>;
  readonly reminders: ReminderService;
  streams(): StreamService | undefined;
}

/** The metrics of one silo. Its runtime must count (`metrics: true`). */
export function siloMetrics(s: SiloMetricsSources): MetricsRegistry {
  const m = new MetricsRegistry();
  const rt = s.runtime;
  const meters = rt.meters;
  if (meters === undefined) throw new ConfigurationError('siloMetrics needs a runtime made with metrics: true');

  // ---- Grain calls (Orleans: app.requests.*) ----------------------------------
  m.counter(
    'granary_app_requests_total',
    "Grain calls this silo's activations settled, failed ones included, by grain type and method",
    ['type', 'method'],
    (emit) => {
      for (const t of meters.all()) for (const c of t.methods()) emit({ type: t.type, method: c.name }, c.calls);
    },
  );
  m.counter(
    'granary_app_requests_failed_total',
    "Grain calls this silo's activations failed, by grain type, method and error code (GRANARY_ERROR: an error that is no GranaryError)",
    ['type', 'method', 'code'],
    (emit) => {
      for (const t of meters.all())
        for (const c of t.methods())
          if (c.failures !== undefined)
            for (const [code, n] of c.failures.entries()) emit({ type: t.type, method: c.name, code }, n);
    },
  );
  m.histogram(
    'granary_app_requests_latency_seconds',
    'Time from a call reaching its activation (mailbox wait and activation included) to its outcome, by grain type',
    ['type'],
    (emit) => {
      for (const t of meters.all()) if (t.latency.count > 0) emit({ type: t.type }, t.latency);
    },
  );
  m.counter(
    'granary_app_requests_timedout_total',
    'Calls made from this silo whose deadline passed before an answer, by grain type of the callee',
    ['type'],
    (emit) => {
      for (const [type, n] of rt.calls.timeouts) emit({ type }, n);
    },
  );
  m.gauge(
    'granary_app_requests_pending',
    'Calls in flight on this silo: waited on here, or to be answered from here',
    [],
    (emit) => emit({}, rt.pendingCalls),
  );

  // ---- Activations (Orleans: catalog.*) -----------------------------------------
  m.gauge('granary_catalog_activations', 'Activations in memory, by grain type', ['type'], (emit) => {
    const byType = new Map<string, number>();
    for (const a of rt.catalog.activations()) byType.set(a.type.name, (byType.get(a.type.name) ?? 0) + 1);
    for (const [type, n] of byType) emit({ type }, n);
  });
  m.counter(
    'granary_catalog_activations_created_total',
    'Activations that became ready for calls, by grain type',
    ['type'],
    (emit) => {
      for (const t of meters.all()) if (t.activated > 0) emit({ type: t.type }, t.activated);
    },
  );
  m.counter(
    'granary_catalog_activations_failed_total',
    'Activations whose construction, state load or onActivate failed, by grain type',
    ['type'],
    (emit) => {
      for (const t of meters.all()) if (t.failedToActivate > 0) emit({ type: t.type }, t.failedToActivate);
    },
  );
  m.counter(
    'granary_catalog_activations_deactivated_total',
    'Activations deactivated, by grain type and reason: idle (collected), requested, shutdown, error',
    ['type', 'reason'],
    (emit) => {
      for (const t of meters.all())
        for (const [reason, n] of t.deactivated.entries()) emit({ type: t.type, reason }, n);
    },
  );
  const mailboxes = (): { total: number; max: number } => {
    let total = 0;
    let max = 0;
    for (const a of rt.catalog.activations()) {
      const n = a.queueLength;
      total += n;
      if (n > max) max = n;
    }
    return { total, max };
  };
  m.gauge(
    'granary_catalog_mailbox_messages',
    "Calls waiting in activations' mailboxes, all activations together",
    [],
    (emit) => emit({}, mailboxes().total),
  );
  m.gauge('granary_catalog_mailbox_messages_max', 'The longest mailbox of any activation', [], (emit) =>
    emit({}, mailboxes().max),
  );

  if (s.networked) clusterMetrics(m, s);
  storageMetrics(m, s);

  // ---- Reminders and streams -----------------------------------------------------------------
  m.counter('granary_reminders_fired_total', 'Reminder ticks this silo fired', [], (emit) =>
    emit({}, s.reminders.ticksFired),
  );
  m.counter(
    'granary_streams_dead_letters_total',
    'Stream items given up on after their retries, by stream provider',
    ['provider'],
    (emit) => {
      const st = s.streams();
      if (st !== undefined) for (const [provider, n] of st.deadLettersByProvider) emit({ provider }, n);
    },
  );
  return m;
}

/** Messages between silos (Orleans: messaging.*), membership and the directory: a networked silo's. */
function clusterMetrics(m: MetricsRegistry, s: SiloMetricsSources): void {
  const traffic = (name: string, help: string, pick: (t: PeerTotals) => number): void =>
    m.counter(name, help, ['peer'], (emit) => {
      const c = s.cluster();
      if (c === undefined) return;
      for (const [peer, t] of c.traffic.totals()) emit({ peer }, pick(t));
    });
  traffic(
    'granary_messaging_sent_messages_total',
    'Frames (calls, responses, control-plane calls) sent, by peer silo address; clients together as peer="client"',
    (t) => t.framesSent,
  );
  traffic(
    'granary_messaging_received_messages_total',
    'Frames received, by peer silo address; clients together as peer="client"',
    (t) => t.framesReceived,
  );
  traffic('granary_messaging_sent_bytes_total', 'Bytes written to connections, by peer', (t) => t.bytesSent);
  traffic('granary_messaging_received_bytes_total', 'Bytes read from connections, by peer', (t) => t.bytesReceived);

  // ---- Membership and directory (Orleans: membership.*, directory.*) ---------------------
  m.counter('granary_membership_changes_total', 'Changes of the set of active silos this silo has seen', [], (emit) => {
    const c = s.cluster();
    if (c !== undefined) emit({}, c.view.version);
  });
  m.gauge('granary_membership_active_silos', "Active silos in this silo's view of the cluster", [], (emit) => {
    const c = s.cluster();
    if (c !== undefined) emit({}, c.view.active.size);
  });
  m.gauge(
    'granary_membership_table_reachable',
    '1 while the last read or write of the membership table succeeded, else 0',
    [],
    (emit) => {
      const c = s.cluster();
      if (c !== undefined) emit({}, c.membership.tableReachable ? 1 : 0);
    },
  );
  m.gauge(
    'granary_directory_partition_size',
    'Grain directory entries this silo owns (its partition of the ring)',
    [],
    (emit) => {
      const c = s.cluster();
      if (c !== undefined) emit({}, c.directory.partitionSize);
    },
  );
}

/** Storage operations (Orleans: storage.*), per provider and operation. */
function storageMetrics(m: MetricsRegistry, s: SiloMetricsSources): void {
  m.counter(
    'granary_storage_operations_total',
    'Storage operations completed, failed ones included, by provider name and operation (read, write, clear)',
    ['provider', 'operation'],
    (emit) => {
      for (const [provider, p] of s.storage)
        for (const operation of STORAGE_OPERATIONS) emit({ provider, operation }, p.stats[operation].count);
    },
  );
  m.counter(
    'granary_storage_operations_failed_total',
    'Storage operations that failed, by provider, operation and error code (GRANARY_INCONSISTENT_STATE: a stale ETag)',
    ['provider', 'operation', 'code'],
    (emit) => {
      for (const [provider, p] of s.storage)
        for (const operation of STORAGE_OPERATIONS)
          for (const [code, n] of p.stats[operation].failures.entries()) emit({ provider, operation, code }, n);
    },
  );
  m.histogram(
    'granary_storage_latency_seconds',
    'Time a storage operation took, by provider and operation',
    ['provider', 'operation'],
    (emit) => {
      for (const [provider, p] of s.storage)
        for (const operation of STORAGE_OPERATIONS)
          if (p.stats[operation].latency.count > 0) emit({ provider, operation }, p.stats[operation].latency);
    },
  );
}
