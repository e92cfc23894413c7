// Durable reminders across real silo processes: a reminder on each of 50
// grains keeps firing when the silo that fires some of them is killed; and
// every reminder fires again after the whole cluster is stopped and started
// anew on the same PostgreSQL, with the grains' state as they left it.

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { ClusterClient, silentLogger } from 'granary';
import { SiloProcess, waitFor, type SiloProcessOptions } from 'granary/testing';
import type { PTicker } from './process-grains.ts';

const grains = join(import.meta.dirname, 'process-grains.ts');
const fast = {
  iAmAliveIntervalMs: 200,
  tableRefreshIntervalMs: 100,
  probeIntervalMs: 150,
  probeTimeoutMs: 300,
  missedProbesLimit: 3,
  joinTimeoutMs: 5000,
};
const connectionString = process.env['GRANARY_TEST_POSTGRES'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const PERIOD = 1000;

const running: SiloProcess[] = [];
const clients: ClusterClient[] = [];
const prefixes: string[] = [];
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(running.map((p) => p.kill().catch(() => undefined)));
  if (prefixes.length === 0) return;
  const admin = new pg.Client({ connectionString });
  await admin.connect();
  try {
    for (const p of prefixes) {
      const { rows } = await admin.query<{ tablename: string }>(
        'SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND starts_with(tablename, $1)',
        [p],
      );
      for (const r of rows) await admin.query(`DROP TABLE IF EXISTS "${r.tablename}" CASCADE`);
    }
  } finally {
    await admin.end();
  }
});

interface Tick {
  key: string;
  dueAt: number;
  receivedAt: number;
  missed: number;
  silo: string;
  count: number;
}

function readTicks(path: string): Tick[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const [key, dueAt, receivedAt, missed, silo, count] = l.split(' ');
      return {
        key: key as string,
        dueAt: Number(dueAt),
        receivedAt: Number(receivedAt),
        missed: Number(missed),
        silo: silo as string,
        count: Number(count),
      };
    });
}

function byKey(ticks: Tick[]): Map<string, Tick[]> {
  const m = new Map<string, Tick[]>();
  for (const t of ticks) {
    const list = m.get(t.key) ?? [];
    list.push(t);
    m.set(t.key, list);
  }
  return m;
}

async function startSilos(
  n: number,
  opts: SiloProcessOptions,
): Promise<{ silos: SiloProcess[]; client: ClusterClient }> {
  const silos: SiloProcess[] = [];
  for (let i = 0; i < n; i++) {
    const p = await SiloProcess.start(opts);
    running.push(p);
    silos.push(p);
  }
  const client = await ClusterClient.connect({
    clusterId: opts.clusterId,
    gateways: silos.map((s) => s.gatewayAddress as string),
    responseTimeoutMs: 5000,
    logger: silentLogger(),
  });
  clients.push(client);
  return { silos, client };
}

describe('durable reminders across silo processes', () => {
  it('keep firing on 50 grains when the silo firing some of them is killed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'granary-remind-'));
    const log = join(dir, 'ticks.log');
    process.env['GRANARY_TICK_LOG'] = log;
    const opts: SiloProcessOptions = {
      grains,
      clusterId: `remind-${randomUUID().slice(0, 8)}`,
      membership: { kind: 'sqlite', path: join(dir, 'cluster.db') },
      storage: { kind: 'sqlite', path: join(dir, 'state.db') },
      reminders: { kind: 'sqlite', path: join(dir, 'state.db') },
      membershipOptions: fast,
      siloOptions: {
        responseTimeoutMs: 5000,
        loadReportIntervalMs: 100,
        minReminderPeriodMs: PERIOD,
        reminderRefreshIntervalMs: 2000,
      },
    };
    const { silos, client } = await startSilos(3, opts);
    const keys = Array.from({ length: 50 }, (_, i) => `r${i}`);
    await Promise.all(keys.map((k) => client.getGrain<PTicker>('pticker', k).start(PERIOD)));
    await waitFor(
      'every reminder ticked twice',
      () => {
        const m = byKey(readTicks(log));
        return keys.every((k) => (m.get(k)?.length ?? 0) >= 2);
      },
      20_000,
    );
    // Which silo fires a reminder is its ring owner; with 50 grains over 3 silos each fires some.
    const victim = silos[0] as SiloProcess;
    const killedAt = Date.now();
    await victim.kill();
    await waitFor(
      'every reminder ticked more than 6 s after the kill',
      () => {
        const after = byKey(readTicks(log));
        return keys.every((k) => (after.get(k) ?? []).some((t) => t.receivedAt > killedAt + 6000));
      },
      20_000,
    );
    const m = byKey(readTicks(log));
    // Detection takes about 2 s with these settings; a reminder may wait that long plus a period.
    const bound = 2500 + PERIOD + 1500;
    for (const k of keys) {
      const got = (m.get(k) ?? [])
        .filter((t) => t.receivedAt >= killedAt - 2 * PERIOD)
        .sort((a, b) => a.receivedAt - b.receivedAt);
      assert.ok(got.length >= 5, `${k}: only ${got.length} ticks around and after the kill`);
      for (let i = 1; i < got.length; i++) {
        const gap = (got[i] as Tick).receivedAt - (got[i - 1] as Tick).receivedAt;
        assert.ok(gap <= bound, `${k}: ${gap} ms without a tick (bound ${bound})`);
      }
      assert.ok(
        got.some((t) => t.receivedAt > killedAt + 6000),
        `${k}: no tick in the last 3 s`,
      );
    }
  });

  it("fire again after the whole cluster is stopped and started anew on PostgreSQL, with the grains' state", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'granary-remind-pg-'));
    const log = join(dir, 'ticks.log');
    process.env['GRANARY_TICK_LOG'] = log;
    const prefix = `t${randomUUID().replaceAll('-', '').slice(0, 10)}_`;
    prefixes.push(prefix);
    const pgSpec = { kind: 'postgres' as const, connectionString, tablePrefix: prefix };
    const opts: SiloProcessOptions = {
      grains,
      clusterId: `remind-pg-${randomUUID().slice(0, 8)}`,
      membership: pgSpec,
      storage: pgSpec,
      reminders: pgSpec,
      membershipOptions: fast,
      siloOptions: {
        responseTimeoutMs: 5000,
        loadReportIntervalMs: 100,
        minReminderPeriodMs: PERIOD,
        reminderRefreshIntervalMs: 2000,
      },
    };
    const first = await startSilos(3, opts);
    const keys = Array.from({ length: 20 }, (_, i) => `pg${i}`);
    await Promise.all(keys.map((k) => first.client.getGrain<PTicker>('pticker', k).start(PERIOD)));
    await waitFor(
      'every reminder ticked twice',
      () => {
        const m = byKey(readTicks(log));
        return keys.every((k) => (m.get(k)?.length ?? 0) >= 2);
      },
      20_000,
    );
    await first.client.close();
    await Promise.all(first.silos.map((s) => s.stop()));
    const before = byKey(readTicks(log));
    const stoppedAt = Date.now();
    // Lets time pass on purpose: the whole cluster is down for several periods.
    await new Promise((r) => setTimeout(r, 1500));

    const second = await startSilos(3, opts);
    await waitFor(
      'every reminder fired again',
      () => {
        const m = byKey(readTicks(log));
        return keys.every((k) => (m.get(k) ?? []).some((t) => t.receivedAt > stoppedAt));
      },
      20_000,
    );
    const m = byKey(readTicks(log));
    for (const k of keys) {
      const lastBefore = Math.max(...(before.get(k) ?? []).map((t) => t.count));
      const firstAfter = (m.get(k) ?? [])
        .filter((t) => t.receivedAt > stoppedAt)
        .sort((a, b) => a.receivedAt - b.receivedAt)[0] as Tick;
      assert.ok(
        firstAfter.count > lastBefore,
        `${k}: counted ${firstAfter.count} after the restart, ${lastBefore} before: state lost`,
      );
      assert.ok(firstAfter.missed >= 0, `${k}: missed ${firstAfter.missed}`);
    }
    // And the state is there for calls too.
    for (const k of keys.slice(0, 5)) assert.ok((await second.client.getGrain<PTicker>('pticker', k).count()) >= 3);
    await Promise.all(second.silos.map((s) => s.stop()));
  });
});
