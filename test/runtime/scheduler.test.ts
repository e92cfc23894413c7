import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Silo, silentLogger, DeadlockError, TimeoutError, CancelledError } from 'granary';
import {
  Recorder,
  ReentrantRecorder,
  Pinger,
  Ponger,
  ChainReentrant,
  Sleeper,
  waitingForAbort,
} from '../grains/scheduling.ts';
import { eventually } from '../helpers.ts';

/** True when no two turns overlap in the log (every start is followed by its end). */
function serial(log: string[]): boolean {
  for (let i = 0; i < log.length; i += 2) {
    const s = log[i];
    const e = log[i + 1];
    if (s === undefined || e === undefined || !s.startsWith('start ') || e !== `end ${s.slice(6)}`) return false;
  }
  return true;
}

describe('turn scheduler', () => {
  let silo: Silo;
  before(async () => {
    silo = await Silo.start({
      grains: [Recorder, ReentrantRecorder, Pinger, Ponger, ChainReentrant, Sleeper],
      logger: silentLogger(),
    });
  });
  after(() => silo.stop());

  it('runs one call at a time, awaits included, in arrival order', async () => {
    const r = silo.getGrain(Recorder, 'serial');
    await Promise.all([r.work('a'), r.work('b'), r.work('c')]);
    const log = await r.getLog();
    assert.deepEqual(log, ['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  });

  it('interleaves every call of a reentrant grain at its awaits', async () => {
    const r = silo.getGrain(ReentrantRecorder, 'reentrant');
    await Promise.all([r.work('a'), r.work('b')]);
    const log = await r.getLog();
    assert.equal(serial(log), false, `expected interleaving, got ${log.join(', ')}`);
    assert.deepEqual(log.slice(0, 2), ['start a', 'start b']);
  });

  it('interleaves read-only calls with each other but never with a write', async () => {
    const r = silo.getGrain(Recorder, 'readonly');
    await Promise.all([r.read('r1'), r.read('r2'), r.work('w'), r.read('r3')]);
    const log = await r.getLog();
    assert.deepEqual(log.slice(0, 2), ['start r1', 'start r2'], log.join(', '));
    const w = log.indexOf('start w');
    assert.equal(log[w + 1], 'end w', `a write interleaved: ${log.join(', ')}`);
    assert.ok(log.indexOf('start r3') > w, 'a later read overtook the queued write');
  });

  it('lets an always-interleave call in while a turn is running', async () => {
    const r = silo.getGrain(Recorder, 'interleave');
    await Promise.all([r.work('a', 5), r.peek('p')]);
    const log = await r.getLog();
    assert.deepEqual(log, ['start a', 'peek p', 'end a']);
  });

  it('fails A -> B -> A at once with a DeadlockError naming the chain', async () => {
    const a = silo.getGrain(Pinger, 'dl-a');
    await assert.rejects(a.withOptions({ timeoutMs: 20_000 }).pingVia('dl-b'), (e: unknown) => {
      assert.ok(e instanceof DeadlockError, String(e));
      assert.equal(e.code, 'GRANARY_DEADLOCK');
      assert.deepEqual(e.chain, ['pinger/dl-a', 'ponger/dl-b', 'pinger/dl-a']);
      assert.match(e.message, /pinger\/dl-a -> ponger\/dl-b -> pinger\/dl-a/);
      return true;
    });
    // The grain is not left stuck.
    assert.equal(await a.hello(), 'hello from dl-a');
  });

  it('tracks the chain through references received as arguments, across awaits', async () => {
    const a = silo.getGrain(Pinger, 'dl-c');
    const b = silo.getGrain(Ponger, 'dl-d');
    await assert.rejects(a.withOptions({ timeoutMs: 20_000 }).pingViaStored(b), DeadlockError);
  });

  it('lets a chain come back in with callChainReentrancy', async () => {
    const c = silo.getGrain(ChainReentrant, 'cr');
    assert.equal(await c.viaPonger('cr-p'), 'hello from cr');
  });

  it('fails a call past its deadline with TimeoutError, and the grain carries on', async () => {
    const s = silo.getGrain(Sleeper, 'deadline');
    await assert.rejects(
      s.withOptions({ timeoutMs: 50 }).sleep(400),
      (e: unknown) => e instanceof TimeoutError && /sleeper\/deadline\.sleep/.test(e.message),
    );
    assert.equal(await s.sleep(1), 'slept');
  });

  it('uses the silo responseTimeoutMs by default', async () => {
    const quick = await Silo.start({ grains: [Sleeper], responseTimeoutMs: 50, logger: silentLogger() });
    try {
      await assert.rejects(quick.getGrain(Sleeper, 'x').sleep(300), TimeoutError);
    } finally {
      await quick.stop();
    }
  });

  it('cancels a call with an AbortSignal: the grain sees an aborted signal and the caller a CancelledError', async () => {
    const s = silo.getGrain(Sleeper, 'abort');
    const ac = new AbortController();
    const call = s.waitForAbort(ac.signal);
    await eventually('the call waits in the grain', () => waitingForAbort.has('abort'));
    ac.abort(new Error('user gave up'));
    await assert.rejects(call, (e: unknown) => e instanceof CancelledError && e.code === 'GRANARY_CANCELLED');
    // The callee saw its own signal abort.
    await eventually('the grain saw its signal abort', () => s.abortSeen());
    const pre = new AbortController();
    pre.abort();
    await assert.rejects(s.waitForAbort(pre.signal), CancelledError);
  });

  it('runs timer ticks as turns: never beside a call, period counted from the end of a tick', async () => {
    const s = silo.getGrain(Sleeper, 'timer');
    await s.startTimer(10, 30);
    await s.busy(80);
    await eventually('the timer ticks again after the call', async () => (await s.timerTicks()) >= 2);
    const log = await s.log();
    for (let i = 0; i < log.length; i += 2) {
      const a = log[i] as string;
      const b = log[i + 1] as string;
      assert.equal(a.replace('start', 'end'), b, `a tick and a call overlapped: ${log.join(', ')}`);
    }
    assert.ok((await s.timerTicks()) >= 2, 'the timer should have ticked repeatedly');
  });
});
