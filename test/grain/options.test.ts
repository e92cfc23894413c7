import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Silo, Grain, silentLogger, ConfigurationError, grain } from 'granary';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Written in plain-JavaScript style: options in a static object, no decorators. */
class PlainReentrant extends Grain {
  static grainOptions = { name: 'plainReentrant', reentrant: true };
  log: string[] = [];
  async work(tag: string): Promise<void> {
    this.log.push(`start ${tag}`);
    await tick();
    this.log.push(`end ${tag}`);
  }
  async getLog(): Promise<string[]> {
    return this.log;
  }
}

class PlainReadOnly extends Grain {
  static grainOptions = { name: 'plainReadOnly', methods: { read: { readOnly: true }, fire: { oneWay: true } } };
  log: string[] = [];
  async read(tag: string): Promise<void> {
    this.log.push(`start ${tag}`);
    await tick();
    this.log.push(`end ${tag}`);
  }
  async fire(): Promise<void> {
    await new Promise((r) => setTimeout(r, 100));
  }
  async getLog(): Promise<string[]> {
    return this.log;
  }
}

describe("static grainOptions, the decorators' plain equivalent", () => {
  it('names the type, makes it reentrant, and marks methods read-only and one-way', async () => {
    const silo = await Silo.start({ grains: [PlainReentrant, PlainReadOnly], logger: silentLogger() });
    try {
      const r = silo.getGrain<PlainReentrant>('plainReentrant', 'a');
      await Promise.all([r.work('a'), r.work('b')]);
      assert.deepEqual((await r.getLog()).slice(0, 2), ['start a', 'start b']);
      const ro = silo.getGrain(PlainReadOnly, 'b');
      await Promise.all([ro.read('x'), ro.read('y')]);
      assert.deepEqual((await ro.getLog()).slice(0, 2), ['start x', 'start y']);
      const t0 = Date.now();
      await ro.fire();
      assert.ok(Date.now() - t0 < 100, 'a one-way call does not wait for the grain');
    } finally {
      await silo.stop();
    }
  });

  it('refuses options that name a method the class does not have, and clashing type names', async () => {
    class Bad extends Grain {
      static grainOptions = { methods: { nope: { readOnly: true } } };
    }
    await assert.rejects(
      Silo.start({ grains: [Bad], logger: silentLogger() }),
      (e: unknown) => e instanceof ConfigurationError && /nope/.test(e.message),
    );
    @grain('same')
    class One extends Grain {}
    @grain('same')
    class Two extends Grain {}
    await assert.rejects(
      Silo.start({ grains: [One, Two], logger: silentLogger() }),
      (e: unknown) => e instanceof ConfigurationError && /same/.test(e.message),
    );
    class NotAGrain {}
    await assert.rejects(Silo.start({ grains: [NotAGrain as never], logger: silentLogger() }), ConfigurationError);
  });

  it('validates silo options with a message that says what to change', async () => {
    await assert.rejects(
      Silo.start({ responseTimeoutMs: -1, logger: silentLogger() }),
      (e: unknown) => e instanceof ConfigurationError && /responseTimeoutMs/.test(e.message),
    );
    await assert.rejects(
      Silo.start({ storage: { default: {} as never }, logger: silentLogger() }),
      (e: unknown) => e instanceof ConfigurationError && /storage provider 'default'/.test(e.message),
    );
  });
});
