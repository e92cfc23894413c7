// PostgreSQL going away under grain writes: calls that write fail with a typed
// error while it is gone, grains keep serving from memory, writes succeed
// again once it is back (same silo, no restart), and every write a caller saw
// succeed is in the database.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { Grain, Silo, decode, encode, grain, silentLogger } from 'granary';
import { postgresStorage } from 'granary/postgres';
import { startProxy } from '../../helpers.ts';

const connectionString = process.env['GRANARY_TEST_POSTGRES'] ?? 'postgres://postgres@127.0.0.1:5432/test';
const tablePrefix = `t${randomUUID().replaceAll('-', '').slice(0, 12)}_outage_`;

after(async () => {
  const admin = new pg.Client({ connectionString });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ tablename: string }>(
      'SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND starts_with(tablename, $1)',
      [tablePrefix],
    );
    for (const r of rows) await admin.query(`DROP TABLE IF EXISTS "${r.tablename}" CASCADE`);
  } finally {
    await admin.end();
  }
});

@grain('outageCounter')
class Counter extends Grain {
  readonly count = this.persistentState('count', { initial: () => ({ value: 0 }) });
  async add(): Promise<number> {
    this.count.state.value++;
    await this.count.write();
    return this.count.state.value;
  }
  async inMemory(): Promise<number> {
    return this.count.state.value;
  }
}

describe('postgres storage under an outage', () => {
  it('fails writes with a typed error while the database is gone, recovers after, and loses no acknowledged write', async () => {
    const url = new URL(connectionString);
    const proxy = await startProxy(url.hostname, Number(url.port || 5432));
    url.host = `127.0.0.1:${proxy.port}`;
    const silo = await Silo.start({
      grains: [Counter],
      storage: {
        default: postgresStorage({
          connectionString: url.toString(),
          tablePrefix,
          connectionTimeoutMs: 500,
          queryTimeoutMs: 1000,
        }),
      },
      responseTimeoutMs: 5000,
      logger: silentLogger(),
    });
    try {
      const keys = Array.from({ length: 8 }, (_, i) => `c${i}`);
      /** Per grain: the highest value a caller saw acknowledged, and every failure's code. */
      const acked = new Map<string, number>(keys.map((k) => [k, 0]));
      const failures: string[] = [];
      let phase: 'before' | 'down' | 'after' = 'before';
      const okIn = { before: 0, down: 0, after: 0 };
      let running = true;
      const writers = keys.map(async (k) => {
        const ref = silo.getGrain(Counter, k);
        while (running) {
          const p = phase;
          try {
            const v = await ref.add();
            acked.set(k, Math.max(acked.get(k) ?? 0, v));
            okIn[p]++;
          } catch (e) {
            failures.push(`${(e as { code?: string }).code ?? 'untyped'}: ${(e as Error).message}`);
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      });
      const until = async (what: string, ok: () => boolean, ms: number): Promise<void> => {
        const end = Date.now() + ms;
        while (!ok()) {
          if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      await until('writes before the outage', () => okIn.before >= 50, 10_000);
      phase = 'down';
      await proxy.cut();
      await new Promise((r) => setTimeout(r, 2500));
      const failedWhileDown = failures.length;
      await proxy.restore();
      phase = 'after';
      await until('writes after the outage', () => okIn.after >= 50, 20_000);
      running = false;
      await Promise.all(writers);

      assert.ok(failedWhileDown > 0, 'no write failed while the database was gone');
      const codes = new Set(failures.map((f) => f.split(':')[0]));
      assert.deepEqual(
        [...codes].filter((c) => c !== 'GRANARY_STORAGE'),
        [],
        `failures other than GRANARY_STORAGE: ${failures.slice(0, 3).join(' | ')}`,
      );
      assert.ok(
        failures.every((f) => /postgres/.test(f) && /outageCounter\/c\d/.test(f)),
        `a failure does not name the provider and the grain: ${failures[0]}`,
      );

      // Every acknowledged write is stored (later writes carry the earlier ones' state).
      const reader = postgresStorage({ connectionString, tablePrefix });
      await reader.init({ name: 'check', logger: silentLogger(), serializer: { encode, decode: (b) => decode(b) } });
      try {
        for (const k of keys) {
          const r = await reader.read({ grainType: 'outageCounter', grainKey: k, stateName: 'count' });
          const value = (r.state as { value: number } | undefined)?.value ?? 0;
          assert.ok(value >= (acked.get(k) ?? 0), `${k}: stored ${value}, but ${acked.get(k)} was acknowledged`);
          assert.equal(value, await silo.getGrain(Counter, k).inMemory(), `${k}: the stored value is the grain's`);
        }
      } finally {
        await reader.close();
      }
    } finally {
      await silo.stop();
      await proxy.cut().catch(() => undefined);
    }
  });
});
