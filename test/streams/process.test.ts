// A silo pulling NATS stream queues SIGKILLed under load, with silos as real
// child processes sharing SQLite membership and state: every acknowledged
// publish reaches its subscriber at least once after recovery; the duplicates
// and the time to recover are reported (not asserted: this machine is noisy).

import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { ClusterClient, silentLogger } from 'granary';
import { SiloProcess, waitFor, type SiloProcessOptions } from 'granary/testing';
import type { Ledger } from './process-grains.ts';
import { NATS, natsClusterId } from './nats-support.ts';

const running: SiloProcess[] = [];
const clients: ClusterClient[] = [];
after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await Promise.all(running.map((p) => p.kill().catch(() => undefined)));
});

describe('nats streams with silos as processes', () => {
  it('delivers every acknowledged publish at least once after a silo pulling queues is SIGKILLed under load', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'granary-streams-proc-'));
    const opts: SiloProcessOptions = {
      grains: join(import.meta.dirname, 'process-grains.ts'),
      clusterId: natsClusterId(),
      membership: { kind: 'sqlite', path: join(dir, 'cluster.db') },
      storage: { kind: 'sqlite', path: join(dir, 'state.db') },
      streams: { events: { kind: 'nats', servers: NATS, queues: 16, ackWaitMs: 2000 } },
      membershipOptions: {
        iAmAliveIntervalMs: 200,
        tableRefreshIntervalMs: 100,
        probeIntervalMs: 150,
        probeTimeoutMs: 300,
        missedProbesLimit: 3,
        joinTimeoutMs: 5000,
      },
      siloOptions: { responseTimeoutMs: 5000, loadReportIntervalMs: 100 },
    };
    const streamName = `granary_${opts.clusterId}_events`;
    const a = await SiloProcess.start(opts);
    running.push(a);
    const b = await SiloProcess.start(opts);
    running.push(b);
    const client = await ClusterClient.connect({
      clusterId: opts.clusterId,
      gateways: [a.gatewayAddress as string],
      responseTimeoutMs: 5000,
      logger: silentLogger(),
    });
    clients.push(client);

    const streams = 12;
    const acked = new Map<string, number[]>();
    let refused = 0;
    const publish = async (from: number, to: number): Promise<void> => {
      await Promise.all(
        Array.from({ length: streams }, async (_, s) => {
          const stream = client.getStream<number>('events', 'ledger', `s${s}`);
          for (let i = from; i < to; i++) {
            try {
              await stream.publish(i);
              let list = acked.get(`s${s}`);
              if (list === undefined) acked.set(`s${s}`, (list = []));
              list.push(i);
            } catch {
              refused++; // not acknowledged: nothing was promised
            }
          }
        }),
      );
    };
    await publish(0, 10);
    // The ring spreads the 16 queues over both silos: b must hold some (their leases say who pulls).
    const nc = await connect({ servers: NATS });
    let heldByB = 0;
    try {
      const leases = await new Kvm(nc).open(`${streamName}_leases`);
      await waitFor(
        'both silos pull queues',
        async () => {
          heldByB = 0;
          for (let q = 0; q < 16; q++) if ((await leases.get(`q${q}`))?.string() === b.address) heldByB++;
          return heldByB > 0 && heldByB < 16;
        },
        10_000,
      );
    } finally {
      await nc.close();
    }
    // Kill b under load.
    const load = publish(10, 30);
    await b.kill();
    const killedAt = Date.now();
    await load;
    await publish(30, 40);

    const ledger = (s: number) => client.getGrain<Ledger>('streamLedger', `s${s}`);
    await waitFor(
      'every acknowledged publish recorded by its subscriber',
      async () => {
        for (let s = 0; s < streams; s++) {
          const counts = await ledger(s).counts();
          if (!(acked.get(`s${s}`) ?? []).every((i) => (counts[String(i)] ?? 0) > 0)) return false;
        }
        return true;
      },
      60_000,
    );
    const recovered = Date.now() - killedAt;
    let total = 0;
    let duplicates = 0;
    for (let s = 0; s < streams; s++) {
      const counts = await ledger(s).counts();
      for (const n of Object.values(counts)) {
        total += n;
        duplicates += n - 1;
      }
    }
    const ackedCount = [...acked.values()].reduce((n, l) => n + l.length, 0);
    t.diagnostic(
      `b pulled ${heldByB} of 16 queues; acknowledged ${ackedCount}, refused ${refused}, deliveries recorded ${total}, duplicates ${duplicates}, all delivered ${recovered} ms after the kill`,
    );
    assert.ok(ackedCount >= streams * 30, 'publishes go on through the surviving silo');
  });
});
