// TestCluster behaves like silos on one database: a grain that moves finds the
// state it wrote, and a reminder fires whichever silo owns it.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Grain, Silo, grain, memoryReminders, memoryStorage, type Logger } from 'granary';
import { sqliteMembership } from 'granary/sqlite';
import { TestCluster, waitFor } from 'granary/testing';

const ticked = new Set<string>();

@grain('tcKeeper')
class Keeper extends Grain {
  readonly box = this.persistentState('box', { initial: () => ({ value: '' }) });
  async put(v: string): Promise<string> {
    this.box.state.value = v;
    await this.box.write();
    return this.silo.address;
  }
  async get(): Promise<{ value: string; silo: string }> {
    return { value: this.box.state.value, silo: this.silo.address };
  }
  async remind(): Promise<void> {
    await this.registerReminder('r', { dueMs: 50, periodMs: 200 });
  }
  async receiveReminder(): Promise<void> {
    ticked.add(this.key);
    await this.unregisterReminder('r');
  }
}

describe('TestCluster', () => {
  it('shares one state store among its silos: a grain moved off a stopped silo finds its state', async () => {
    const c = await TestCluster.start({ silos: 3, grains: [Keeper] });
    try {
      const keys = Array.from({ length: 30 }, (_, i) => `k${i}`);
      const where = await Promise.all(keys.map((k) => c.client.getGrain(Keeper, k).put(`v-${k}`)));
      const victim = c.silos.findIndex((s) => where.includes(s.info.address));
      const gone = c.silos[victim]?.info.address;
      await c.stopSilo(victim);
      for (const k of keys) {
        const got = await c.client.getGrain(Keeper, k).get();
        assert.equal(got.value, `v-${k}`, `${k} lost its state`);
        assert.notEqual(got.silo, gone);
      }
    } finally {
      await c.stop();
    }
  });

  it('shares one reminder table among its silos: every reminder fires, whichever silo registered it', async () => {
    const c = await TestCluster.start({ silos: 3, grains: [Keeper], siloOptions: { minReminderPeriodMs: 100 } });
    try {
      const keys = Array.from({ length: 30 }, (_, i) => `r${i}`);
      await Promise.all(keys.map((k) => c.client.getGrain(Keeper, k).remind()));
      await waitFor('every reminder fired', () => keys.every((k) => ticked.has(k)), 10_000);
    } finally {
      await c.stop();
    }
  });
});

describe('a silo with membership shared between processes', () => {
  function recording(): Logger & { warnings: string[] } {
    const warnings: string[] = [];
    const noop = (): void => {};
    const logger: Logger & { warnings: string[] } = {
      warnings,
      debug: noop,
      info: noop,
      error: noop,
      warn: (_f: object, m?: string) => void warnings.push(m ?? ''),
      child: () => logger,
    };
    return logger;
  }

  it('warns that state and reminders kept in its own memory are not shared, and not when they are given', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'granary-shared-'));
    try {
      const bare = recording();
      const a = await Silo.start({
        grains: [Keeper],
        port: 0,
        clusterId: 'warned',
        membership: sqliteMembership({ path: join(dir, 'm.db') }),
        logger: bare,
      });
      await a.stop();
      assert.ok(
        bare.warnings.some((w) => /grain state is kept in this process's memory/.test(w)),
        bare.warnings.join(' | '),
      );
      assert.ok(
        bare.warnings.some((w) => /reminders are kept in this process's memory/.test(w)),
        bare.warnings.join(' | '),
      );
      const given = recording();
      const b = await Silo.start({
        grains: [Keeper],
        port: 0,
        clusterId: 'quiet',
        membership: sqliteMembership({ path: join(dir, 'm2.db') }),
        storage: { default: memoryStorage() },
        reminders: memoryReminders(),
        logger: given,
      });
      await b.stop();
      assert.deepEqual(
        given.warnings.filter((w) => /kept in this process's memory/.test(w)),
        [],
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
