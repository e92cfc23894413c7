import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterClient, silentLogger, type SiloEntry } from 'granary';
import { SiloProcess, fastMembership } from 'granary/testing';
import { formatStatus, healthOf, statusReport, type StatusReport } from '../../src/cli/status.ts';
import { eventually } from '../helpers.ts';
import { runCli, type Outcome } from './support.ts';

const entry = (over: Partial<SiloEntry>): SiloEntry => ({
  address: '127.0.0.1:1',
  generation: 1,
  status: 'Active',
  gatewayAddress: '127.0.0.1:2',
  hostName: 'h',
  startedAt: 1000,
  iAmAliveAt: 5000,
  suspicions: [],
  ...over,
});

describe('granary status: reading the table', () => {
  it('tells suspected, declared dead and left silos apart', () => {
    const now = 100_000;
    assert.equal(healthOf(entry({}), now), 'active');
    assert.equal(healthOf(entry({ suspicions: [{ by: 'x@1', at: now - 1000 }] }), now), 'suspected');
    // A vote older than the votes' expiry no longer counts.
    assert.equal(healthOf(entry({ suspicions: [{ by: 'x@1', at: now - 3_600_000 }] }), now), 'active');
    assert.equal(healthOf(entry({ status: 'Dead', suspicions: [{ by: 'x@1', at: 6000 }] }), now), 'declared dead');
    // Votes before its last I-am-alive: it recovered, then stopped by itself.
    assert.equal(healthOf(entry({ status: 'Dead', suspicions: [{ by: 'x@1', at: 4000 }] }), now), 'left');
    assert.equal(healthOf(entry({ status: 'Dead' }), now), 'left');
    assert.equal(healthOf(entry({ status: 'Joining' }), now), 'joining');
    assert.equal(healthOf(entry({ status: 'ShuttingDown' }), now), 'shutting down');
  });

  it('is healthy with a live silo and no recent death or suspicion', () => {
    const now = 100_000;
    const header = { clusterId: 'c', table: 't', loadFrom: null, loadError: 'none' };
    const report = (members: SiloEntry[], within = 60_000): StatusReport =>
      statusReport(members, undefined, now, within, header);
    const live = entry({});
    const left = entry({ address: '127.0.0.1:3', status: 'Dead', iAmAliveAt: 3000 });
    const killed = entry({ address: '127.0.0.1:5', status: 'Dead', suspicions: [{ by: 'x@1', at: now - 1000 }] });
    assert.equal(report([live, left]).healthy, true);
    assert.equal(report([live, killed]).healthy, false);
    assert.equal(report([live, killed], 500).healthy, true, 'a death older than --dead-within-ms is history');
    assert.equal(report([entry({ suspicions: [{ by: 'x@1', at: now - 10 }] })]).healthy, false);
    assert.equal(report([left]).healthy, false, 'no silo is active');
    assert.equal(report([]).healthy, false);
    // Live silos first by address, then the dead, latest first.
    assert.deepEqual(
      report([left, killed, live]).silos.map((s) => s.address),
      ['127.0.0.1:1', '127.0.0.1:5', '127.0.0.1:3'],
    );
    const text = formatStatus(report([live, killed]), now);
    assert.match(text, /^cluster c: 1 of 2 silos in the table are live; NOT healthy$/m);
    assert.match(text, /127\.0\.0\.1:5 +1 +Dead \(declared\)/);
  });
});

describe('granary status against a two-silo cluster on SQLite membership', () => {
  it(
    "prints the table and each silo's activations (exit code 0), then exit code 4 once a silo is declared dead",
    { timeout: 90_000 },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'granary-cli-status-'));
      const path = join(dir, 'cluster.db');
      const options = {
        grains: 'test/grains/basic.ts',
        clusterId: 'status',
        membership: { kind: 'sqlite' as const, path },
        membershipOptions: fastMembership,
        siloOptions: { loadReportIntervalMs: 100 },
      };
      const silos = [await SiloProcess.start(options)];
      try {
        silos.push(await SiloProcess.start(options));
        const [a, b] = silos as [SiloProcess, SiloProcess];
        const client = await ClusterClient.connect({
          clusterId: 'status',
          gateways: [a.gatewayAddress as string, b.gatewayAddress as string],
          logger: silentLogger(),
        });
        try {
          for (let i = 0; i < 12; i++)
            await client.getGrain<{ increment(): Promise<number> }>('counter', `s${i}`).increment();
        } finally {
          await client.close();
        }
        const args = ['status', '--membership', `sqlite:${path}`, '--cluster-id', 'status'];
        const json = async (extra: string[] = []): Promise<{ o: Outcome; r: StatusReport }> => {
          const o = await runCli([...args, '--json', ...extra]);
          assert.ok(o.stdout !== '', `no output (exit ${o.code}): ${o.stderr}`);
          return { o, r: JSON.parse(o.stdout) as StatusReport };
        };

        let last: { o: Outcome; r: StatusReport } | undefined;
        await eventually(
          'granary status to count the 12 activations over both silos',
          async () => {
            last = await json();
            return last.r.silos.reduce((n, s) => n + (s.activations ?? 0), 0) === 12;
          },
          30_000,
        );
        const { o, r } = last as { o: Outcome; r: StatusReport };
        assert.equal(o.code, 0, o.stderr);
        assert.equal(r.healthy, true);
        assert.deepEqual(
          r.silos.map((s) => [s.address, s.status, s.health, s.gateway]),
          [a, b]
            .map((p) => [p.address, 'Active', 'active', p.gatewayAddress])
            .sort((x, y) => String(x[0]).localeCompare(String(y[0]))),
        );
        assert.ok(r.loadFrom === a.address || r.loadFrom === b.address, `load from ${r.loadFrom}`);
        for (const s of r.silos) assert.ok(Date.parse(s.iAmAliveAt) >= Date.parse(s.startedAt), JSON.stringify(s));

        // As a table, and through a gateway alone.
        const [text, viaGateway] = await Promise.all([
          runCli(args),
          runCli(['status', '--gateway', b.gatewayAddress as string, '--cluster-id', 'status', '--json']),
        ]);
        assert.equal(text.code, 0, text.stderr);
        assert.match(text.stdout, /^cluster status: 2 of 2 silos in the table are live; healthy$/m);
        assert.match(
          text.stdout,
          /^ADDRESS +GENERATION +STATUS +HOST +GATEWAY +STARTED +LAST I-AM-ALIVE +ACTIVATIONS$/m,
        );
        for (const p of [a, b])
          assert.match(text.stdout, new RegExp(`^${p.address} +\\d+ +Active +\\S+ +${p.gatewayAddress}`, 'm'));
        assert.equal(viaGateway.code, 0, viaGateway.stderr);
        const g = JSON.parse(viaGateway.stdout) as StatusReport;
        assert.equal(g.loadFrom, b.address);
        assert.deepEqual(g.silos.map((s) => s.address).sort(), [a.address, b.address].sort());

        // A crash: the other silo votes it dead, and status says so with exit code 4.
        await b.kill();
        await eventually(
          `granary status to show ${b.address} declared dead`,
          async () => {
            last = await json();
            return last.r.silos.find((s) => s.address === b.address)?.health === 'declared dead';
          },
          30_000,
        );
        const dead = last as { o: Outcome; r: StatusReport };
        assert.equal(dead.o.code, 4, dead.o.stderr);
        assert.equal(dead.r.healthy, false);
        assert.equal(dead.r.silos.find((s) => s.address === a.address)?.health, 'active');
        // Deaths older than --dead-within-ms are history.
        const older = await json(['--dead-within-ms', '1']);
        assert.equal(older.o.code, 0, older.o.stderr);
      } finally {
        for (const s of silos) if (s.child.exitCode === null && s.child.signalCode === null) await s.stop();
      }
    },
  );
});
