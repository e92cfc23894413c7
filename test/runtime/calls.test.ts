import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  Silo,
  silentLogger,
  immutable,
  SerializationError,
  RemoteError,
  UnknownGrainTypeError,
  UnknownMethodError,
  GranaryError,
  type GrainRef,
} from 'granary';
import { Box, Counter, OutOfStockError, Lifecycle } from '../grains/basic.ts';

describe('calls', () => {
  let silo: Silo;
  before(async () => {
    silo = await Silo.start({ grains: [Counter, Box, Lifecycle], logger: silentLogger() });
  });
  after(() => silo.stop());

  it('activates a grain on its first call and keeps state between calls', async () => {
    const c = silo.getGrain(Counter, 'calls-1');
    assert.equal(await c.increment(), 1);
    assert.equal(await c.increment(5), 6);
    assert.equal(await c.get(), 6);
  });

  it('reaches the same grain by class and by type name', async () => {
    await silo.getGrain(Counter, 'calls-2').increment(3);
    const byName = silo.getGrain<Counter>('counter', 'calls-2');
    assert.equal(await byName.get(), 3);
    assert.deepEqual({ type: byName.id.type, key: byName.id.key }, { type: 'counter', key: 'calls-2' });
    assert.equal(String(byName.id), 'counter/calls-2');
  });

  it('fails a call to an unknown grain type or method with a clear error, never a hang', async () => {
    const ghost = silo.getGrain<{ hello(): Promise<string> }>('ghost', 'x');
    await assert.rejects(
      ghost.hello(),
      (e: unknown) =>
        e instanceof UnknownGrainTypeError && /ghost/.test(e.message) && e.code === 'GRANARY_UNKNOWN_GRAIN_TYPE',
    );
    const wrong = silo.getGrain<{ nope(): Promise<void> }>('counter', 'x');
    await assert.rejects(
      wrong.nope(),
      (e: unknown) => e instanceof UnknownMethodError && /nope/.test(e.message) && /increment/.test(e.message),
    );
    assert.throws(() => silo.getGrain(class NotHere extends Counter {}, 'x'), UnknownGrainTypeError);
  });

  it('never lets user code construct a grain', () => {
    assert.throws(
      () => new Counter(),
      (e: unknown) => e instanceof GranaryError && /never constructed/.test(e.message),
    );
  });

  it("copies arguments: the callee never shares the caller's object", async () => {
    const box = silo.getGrain(Box, 'copy-args');
    const mine = { n: 1, nested: { list: [1, 2] } };
    await box.put(mine);
    await box.mutateHeld();
    assert.equal(mine.n, 1);
    assert.equal(await box.sameAsHeld(mine), false);
    const back = (await box.take()) as { n: number };
    assert.equal(back.n, 999);
    back.n = 5;
    assert.equal(((await box.take()) as { n: number }).n, 999, 'mutating a result must not change the grain');
  });

  it('skips the copy for values wrapped with immutable()', async () => {
    const box = silo.getGrain(Box, 'immutable');
    const shared = immutable({ n: 1 });
    await box.put(shared);
    assert.equal(await box.take(), shared);
  });

  it('keeps Map, Set, Date, BigInt and typed arrays across a call', async () => {
    const box = silo.getGrain(Box, 'types');
    const v = {
      m: new Map([['a', new Set([1, 2])]]),
      d: new Date(5),
      b: 2n ** 70n,
      u: new Uint8Array([1, 2, 3]),
      un: undefined,
    };
    await box.put(v);
    assert.deepEqual(await box.take(), v);
  });

  it('refuses an argument that cannot be serialized at the caller, naming its path', async () => {
    const box = silo.getGrain(Box, 'bad-arg');
    await assert.rejects(
      box.put({ ok: 1, handlers: [() => 1] }),
      (e: unknown) =>
        e instanceof SerializationError &&
        e.path === 'args[0].handlers[0]' &&
        e.message.includes('args[0].handlers[0]'),
    );
    assert.equal(await box.take(), undefined, 'the failed call must not reach the grain');
  });

  it('fails the caller with SerializationError when a result cannot be serialized', async () => {
    const box = silo.getGrain(Box, 'bad-result');
    await assert.rejects(box.giveFunction(), (e: unknown) => e instanceof SerializationError && e.path === 'result.cb');
    await assert.rejects(
      box.giveUnregistered(),
      (e: unknown) => e instanceof SerializationError && /Unregistered/.test(e.message) && e.path === 'result.list[0]',
    );
  });

  it('propagates errors with name, message, code and own properties; registered classes arrive as themselves', async () => {
    const box = silo.getGrain(Box, 'errors');
    await assert.rejects(box.throwOutOfStock('sku-1'), (e: unknown) => {
      assert.ok(e instanceof OutOfStockError);
      assert.equal(e.code, 'OUT_OF_STOCK');
      assert.equal(e.sku, 'sku-1');
      assert.equal(e.message, 'out of stock: sku-1');
      assert.match(String(e.stack), /throwOutOfStock/);
      return true;
    });
    await assert.rejects(box.throwUnknown(), (e: unknown) => {
      assert.ok(e instanceof RemoteError);
      assert.equal(e.remoteName, 'UnknownToCallerError');
      assert.equal((e as unknown as { detail: number }).detail, 42);
      return true;
    });
    await assert.rejects(box.syncThrow(), RangeError);
  });

  it('passes references as arguments and results, and they work where they arrive', async () => {
    const box = silo.getGrain(Box, 'refs');
    const counter = silo.getGrain(Counter, 'refs-target');
    assert.equal(await box.callVia(counter, 2), 2);
    const ref: GrainRef<Counter> = await box.refToCounter('refs-target');
    assert.equal(await ref.increment(1), 3);
    await box.put({ stored: counter });
    const back = (await box.take()) as { stored: GrainRef<Counter> };
    assert.equal(await back.stored.get(), 3);
  });

  it('resolves a one-way call once it is sent, before the grain finishes', async () => {
    const g = silo.getGrain(Lifecycle, 'oneway');
    const started = Date.now();
    await g.slowOneWay(200);
    assert.ok(Date.now() - started < 200, 'one-way call waited for the grain');
  });
});

describe('error stacks', () => {
  async function callerFrameForTest(silo: Silo): Promise<void> {
    await silo.getGrain(Box, 'stacks').throwOutOfStock('s');
  }

  it("show the grain's frames and the call by default, and the caller's frames with callerStacks", async () => {
    const plain = await Silo.start({ grains: [Box], logger: silentLogger() });
    const full = await Silo.start({ grains: [Box], callerStacks: true, logger: silentLogger() });
    try {
      await assert.rejects(callerFrameForTest(plain), (e: unknown) => {
        const stack = String((e as Error).stack);
        assert.match(stack, /throwOutOfStock/);
        assert.match(stack, /<grain call> box\/stacks\.throwOutOfStock/);
        return true;
      });
      await assert.rejects(callerFrameForTest(full), (e: unknown) => {
        const stack = String((e as Error).stack);
        assert.match(stack, /<grain call> box\/stacks\.throwOutOfStock/);
        assert.match(stack, /on the caller's side[\s\S]*callerFrameForTest/);
        return true;
      });
    } finally {
      await plain.stop();
      await full.stop();
    }
  });
});
