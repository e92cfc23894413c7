// Edge cases of the activation lifecycle and the turn scheduler: races
// between calls, activation, deactivation, stop, deadlines, cancellation and
// timers. Each pins behaviour that once broke or was not covered elsewhere.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { setTimeout as delay } from 'node:timers/promises';
import {
  Silo,
  Grain,
  grain,
  silentLogger,
  readOnly,
  alwaysInterleave,
  oneWay,
  reentrant,
  callChainReentrancy,
  statelessWorker,
  DeadlockError,
  ConfigurationError,
  TimeoutError,
  CancelledError,
  type DeactivationReason,
  type SiloOptions,
  type TimerHandle,
} from 'granary';
import { deferred, eventually, nextEvent } from '../helpers.ts';

// ---- gates and records shared between tests and grains -----------------------

type Gate = ReturnType<typeof deferred<void>>;
const gates = new Map<string, Gate>();
/** A gate per name, created on first use. */
function gate(name: string): Gate {
  let g = gates.get(name);
  if (g === undefined) gates.set(name, (g = deferred<void>()));
  return g;
}
/** Things that happened, by name. */
const seen = new Set<string>();
const log: string[] = [];
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

async function withSilo(
  grains: NonNullable<SiloOptions['grains']>,
  fn: (silo: Silo) => Promise<void>,
  options: SiloOptions = {},
): Promise<void> {
  const silo = await Silo.start({ grains, logger: silentLogger(), ...options });
  try {
    await fn(silo);
  } finally {
    await silo.stop();
  }
}

/** The outcome of a promise, value or error, never a rejection. */
function settle<T>(p: Promise<T>): Promise<T | unknown> {
  return p.then(
    (v) => v,
    (e: unknown) => e,
  );
}

// ---- grains -------------------------------------------------------------------

/** Methods that do not return promises, and odd results. */
@grain('rvPlain')
class Plain extends Grain {
  hello(): string {
    return `hi ${this.key}`;
  }
  boom(): never {
    throw new RangeError(`boom ${this.key}`);
  }
  async slow(name: string): Promise<string> {
    seen.add(`slow started ${name}`);
    await gate(name).promise;
    return 'slow';
  }
  thenable(): PromiseLike<number> {
    return {
      then: (res) => {
        setImmediate(() => (res as (v: number) => void)(42));
        return undefined as never;
      },
    } as PromiseLike<number>;
  }
  badThenable(): object {
    return Object.defineProperty({}, 'then', {
      get() {
        throw new TypeError('then getter throws');
      },
    });
  }
  async ok(): Promise<string> {
    return 'ok';
  }
}

/** A synchronous timer callback whose tick waits behind a call. */
@grain('rvSyncTicker')
class SyncTicker extends Grain {
  ticks = 0;
  async holdWithTick(): Promise<string> {
    this.registerTimer(
      () => {
        this.ticks++;
      },
      { dueMs: 0 },
    );
    // Holds the turn on purpose: the timer's 0 ms timeout fires before this 20 ms one, so the tick
    // arrives during this turn and queues.
    await delay(20);
    return 'held';
  }
  async count(): Promise<number> {
    return this.ticks;
  }
}

// A calls B without awaiting it; B later calls A while A is busy with an unrelated turn.
@grain('rvFdA')
class FdA extends Grain {
  async kick(bKey: string): Promise<void> {
    void this.getGrain(FdB, bKey)
      .later(this.key)
      .catch(() => {});
  }
  async busy(name: string): Promise<string> {
    seen.add(`busy ${name}`);
    await gate(`busy ${name}`).promise;
    return 'busy done';
  }
  async z(): Promise<string> {
    return 'z';
  }
}
const fdOutcome = new Map<string, unknown>();
@grain('rvFdB')
class FdB extends Grain {
  async later(aKey: string): Promise<void> {
    seen.add(`later ${this.key}`);
    await gate(`later ${this.key}`).promise;
    seen.add(`later calling ${this.key}`);
    fdOutcome.set(this.key, await settle(this.getGrain(FdA, aKey).z()));
  }
}

// X calls A; A awaits, an always-interleave call passes through A, then A calls back X.
@grain('rvLcX')
@callChainReentrancy
class LcX extends Grain {
  async viaA(aKey: string): Promise<string> {
    return this.getGrain(LcA, aKey).relay('rvLcX', this.key);
  }
  async hello(): Promise<string> {
    return 'hello';
  }
}
@grain('rvLcY')
class LcY extends Grain {
  async viaA(aKey: string): Promise<string> {
    return this.getGrain(LcA, aKey).relay('rvLcY', this.key);
  }
  async hello(): Promise<string> {
    return 'hello';
  }
}
@grain('rvLcA')
class LcA extends Grain {
  async relay(type: string, key: string): Promise<string> {
    seen.add(`relay ${this.key}`);
    await gate(`relay ${this.key}`).promise;
    return this.getGrain<{ hello(): Promise<string> }>(type, key).hello();
  }
  @alwaysInterleave
  async probe(): Promise<string> {
    return 'probe';
  }
}

// A call-chain-reentrant grain whose chain comes back on a read-only method.
@grain('rvCrRo')
@callChainReentrancy
class CrRo extends Grain {
  async viaB(bKey: string): Promise<string> {
    return this.getGrain(CrB, bKey).back(this.key);
  }
  @readOnly
  async peek(): Promise<string> {
    return 'peek';
  }
}
@grain('rvCrB')
class CrB extends Grain {
  async back(key: string): Promise<string> {
    return this.getGrain(CrRo, key).peek();
  }
}

/** Calls with AbortSignals, one-way and two-way. */
@grain('rvSig')
class Sig extends Grain {
  @oneWay
  async fire(tag: string, _signal?: AbortSignal): Promise<void> {
    log.push(`fire ${tag}`);
  }
  @oneWay
  async fireThrow(tag: string): Promise<void> {
    log.push(`fireThrow ${tag}`);
    throw new Error('one-way failure');
  }
  async work(tag: string, _signal?: AbortSignal): Promise<string> {
    log.push(`work ${tag}`);
    return tag;
  }
  async hold(name: string): Promise<string> {
    seen.add(`hold ${name}`);
    await gate(name).promise;
    return 'held';
  }
}

/** onActivate waits on a gate named by the key. */
@grain('rvSlowAct')
class SlowAct extends Grain {
  override async onActivate(): Promise<void> {
    seen.add(`activating ${this.key}`);
    await gate(`activate ${this.key}`).promise;
    if (this.key.startsWith('leave')) this.deactivateOnIdle();
  }
  async ping(): Promise<string> {
    return 'pong';
  }
}

/** A grain with lifecycle hooks, holds, timers and requested deactivation. */
const lifeLog: string[] = [];
@grain('rvLife')
class Life extends Grain {
  n = 0;
  timer: TimerHandle | undefined;
  override async onActivate(): Promise<void> {
    lifeLog.push(`activate ${this.key}`);
    if (this.key.startsWith('leave-on-activate')) this.deactivateOnIdle();
  }
  override async onDeactivate(reason: DeactivationReason): Promise<void> {
    lifeLog.push(`deactivate ${this.key} ${reason}`);
    if (this.key.startsWith('slow-deact')) await gate(`deact ${this.key}`).promise;
    lifeLog.push(`deactivated ${this.key}`);
  }
  async ping(): Promise<number> {
    return ++this.n;
  }
  async hold(name: string): Promise<string> {
    seen.add(`hold ${name}`);
    await gate(name).promise;
    return 'held';
  }
  async leaveEachTime(): Promise<number> {
    this.deactivateOnIdle();
    await tick();
    return ++this.n;
  }
  async leaveFromTimer(): Promise<void> {
    this.timer = this.registerTimer(
      async () => {
        lifeLog.push(`tick ${this.key}`);
        await tick();
        this.deactivateOnIdle();
      },
      { dueMs: 1, periodMs: 5 },
    );
  }
  async startTimer(keepAlive: boolean): Promise<void> {
    this.timer = this.registerTimer(
      () => {
        lifeLog.push(`tick ${this.key}`);
      },
      { dueMs: 1, periodMs: 5, keepAlive },
    );
  }
}

/** Every kind of call; each call must get its own result. */
class MixBase extends Grain {
  async write(tag: string, steps: number): Promise<string> {
    for (let i = 0; i < steps; i++) await tick();
    return `w:${tag}`;
  }
  @readOnly
  async read(tag: string, steps: number): Promise<string> {
    for (let i = 0; i < steps; i++) await tick();
    return `r:${tag}`;
  }
  @alwaysInterleave
  async peek(tag: string): Promise<string> {
    return `p:${tag}`;
  }
}
@grain('rvMixR')
@reentrant
class MixR extends MixBase {}
@grain('rvMixC')
@callChainReentrancy
class MixC extends MixBase {
  async bounce(tag: string, via: string): Promise<string> {
    return this.getGrain(MixBounce, via).back(this.key, tag);
  }
}
@grain('rvMixBounce')
class MixBounce extends Grain {
  async back(key: string, tag: string): Promise<string> {
    await tick();
    return this.getGrain(MixC, key).write(tag, 1);
  }
}

/** A turn that never ends. */
@grain('rvStuck')
class Stuck extends Grain {
  async never(): Promise<void> {
    await new Promise(() => {});
  }
}

/** A timer due far in the future. */
@grain('rvFar')
class Far extends Grain {
  async start(dueMs: number): Promise<void> {
    this.registerTimer(
      () => {
        log.push(`far tick ${this.key}`);
      },
      { dueMs },
    );
  }
}

/** A stateless worker whose onDeactivate waits on a gate. */
let swLive = 0;
let swDeactivating = 0;
@grain('rvSw')
@statelessWorker({ maxLocal: 2 })
class Sw extends Grain {
  override async onActivate(): Promise<void> {
    swLive++;
  }
  override async onDeactivate(): Promise<void> {
    swDeactivating++;
    await gate('sw deact').promise;
    swLive--;
  }
  async leave(): Promise<string> {
    this.deactivateOnIdle();
    await tick();
    return 'left';
  }
  async work(): Promise<string> {
    await tick();
    return 'worked';
  }
}

// ---- tests ---------------------------------------------------------------------

// Every timer of the runtime is unref'd: a call stuck on a broken activation
// would let the process exit in the middle of a test. Keep it alive.
let keepAlive: NodeJS.Timeout | undefined;
before(() => {
  keepAlive = setInterval(() => {}, 60_000);
});
after(() => clearInterval(keepAlive));

describe('scheduler edge cases: results that are not promises', () => {
  it('a grain method returning a plain value works on the first call of a new activation', async () => {
    await withSilo([Plain], async (silo) => {
      assert.equal(await settle(Promise.resolve().then(() => silo.getGrain(Plain, 'p1').hello())), 'hi p1');
    });
  });

  it('a grain method throwing synchronously fails only its own call on the first call', async () => {
    await withSilo([Plain], async (silo) => {
      const r = await settle(Promise.resolve().then(() => silo.getGrain(Plain, 'p2').boom()));
      assert.ok(r instanceof RangeError, `expected the grain's RangeError, got ${String(r)}`);
      assert.equal(r.message, 'boom p2');
    });
  });

  it('a plain-value call queued behind an async turn: both calls complete', async () => {
    await withSilo([Plain], async (silo) => {
      const g = silo.getGrain(Plain, 'p3').withOptions({ timeoutMs: 1000 });
      assert.equal(await g.ok(), 'ok');
      const slow = settle(g.slow('p3'));
      const plain = settle(g.hello());
      await eventually('the slow turn started', () => seen.has('slow started p3'));
      gate('p3').resolve();
      assert.deepEqual(await Promise.all([slow, plain]), ['slow', 'hi p3']);
      assert.equal(await g.ok(), 'ok');
    });
  });

  it('a synchronous timer callback whose tick queues behind a call does not break that call', async () => {
    await withSilo([SyncTicker], async (silo) => {
      const g = silo.getGrain(SyncTicker, 't1').withOptions({ timeoutMs: 1000 });
      assert.equal(await settle(g.holdWithTick()), 'held');
      await eventually('the tick ran', async () => (await g.count()) === 1, 2000);
    });
  });

  it('awaits a foreign thenable returned by a grain method (warm and fresh activation)', async () => {
    await withSilo([Plain], async (silo) => {
      assert.equal(await silo.getGrain(Plain, 'th-fresh').thenable(), 42);
      const g = silo.getGrain(Plain, 'th-warm');
      await g.ok();
      assert.equal(await g.thenable(), 42);
    });
  });

  it('a result whose `then` getter throws fails that call (as a rejection) and leaves the grain usable', async () => {
    // No withSilo: with the bug the activation keeps a turn that never ends, and stop() would wait for it forever.
    const silo = await Silo.start({ grains: [Plain], logger: silentLogger() });
    const g = silo.getGrain(Plain, 'bad-then').withOptions({ timeoutMs: 500 });
    await g.ok();
    let sync: unknown;
    let p: Promise<unknown> | undefined;
    try {
      p = settle(g.badThenable());
    } catch (e) {
      sync = e;
    }
    assert.equal(sync, undefined, `the reference call threw synchronously: ${String(sync)}`);
    const r = await p;
    assert.ok(r instanceof Error && /then getter throws/.test(r.message), String(r));
    assert.equal(await settle(g.ok()), 'ok');
    await silo.stop();
  });
});

describe('scheduler edge cases: call chains', () => {
  it('a chain coming back to a grain busy with an unrelated turn waits, it is no deadlock', async () => {
    await withSilo([FdA, FdB], async (silo) => {
      const a = silo.getGrain(FdA, 'fd');
      await a.kick('fd'); // A's turn ends; B.later runs on without A waiting for it
      await eventually('B.later started', () => seen.has('later fd'));
      const busy = a.busy('fd'); // A now busy with a turn that has nothing to do with B
      await eventually('A busy', () => seen.has('busy fd'));
      gate('later fd').resolve(); // B calls A.z(): its chain names A, but A waits on nothing of B's
      await eventually('B called A', () => seen.has('later calling fd'));
      gate('busy fd').resolve();
      assert.equal(await busy, 'busy done');
      await eventually('B got its answer', () => fdOutcome.has('fd'));
      const out = fdOutcome.get('fd');
      assert.equal(out, 'z', `A.z() should queue behind A.busy(), got ${String(out)}`);
    });
  });

  it('callChainReentrancy still lets the chain in after an interleaved call passed through the middle grain', async () => {
    await withSilo(
      [LcX, LcA],
      async (silo) => {
        const x = silo.getGrain(LcX, 'lc1');
        const p = settle(x.viaA('lc1'));
        await eventually('A.relay started', () => seen.has('relay lc1'));
        assert.equal(await silo.getGrain(LcA, 'lc1').probe(), 'probe'); // an always-interleave call in the middle of relay
        gate('relay lc1').resolve();
        const r = await p;
        assert.equal(r, 'hello', `expected the chain to re-enter X, got ${String(r)}`);
      },
      { responseTimeoutMs: 1500 },
    );
  });

  it('a deadlock after an interleaved call passed through the middle grain still fails at once with DeadlockError', async () => {
    await withSilo(
      [LcY, LcA],
      async (silo) => {
        const y = silo.getGrain(LcY, 'lc2');
        const p = settle(y.viaA('lc2'));
        await eventually('A.relay started', () => seen.has('relay lc2'));
        await silo.getGrain(LcA, 'lc2').probe();
        gate('relay lc2').resolve();
        const r = await p;
        assert.ok(r instanceof DeadlockError, `expected DeadlockError, got ${String(r)}`);
      },
      { responseTimeoutMs: 1500 },
    );
  });

  it('callChainReentrancy lets the chain back in on a read-only method too', async () => {
    await withSilo(
      [CrRo, CrB],
      async (silo) => {
        const r = await settle(silo.getGrain(CrRo, 'ro').viaB('ro'));
        assert.equal(r, 'peek', `expected the read-only call to re-enter, got ${String(r)}`);
      },
      { responseTimeoutMs: 1500 },
    );
  });
});

describe('scheduler edge cases: deadlines and cancellation', () => {
  it('skips a call that timed out while queued: it never runs, and later calls do', async () => {
    await withSilo([Sig], async (silo) => {
      const g = silo.getGrain(Sig, 'to');
      const held = g.hold('to');
      await eventually('hold started', () => seen.has('hold to'));
      const late = settle(g.withOptions({ timeoutMs: 30 }).work('timed-out'));
      assert.ok((await late) instanceof TimeoutError);
      gate('to').resolve();
      assert.equal(await held, 'held');
      assert.equal(await g.work('after'), 'after');
      assert.ok(!log.includes('work timed-out'), 'a call that timed out in the queue ran anyway');
    });
  });

  it('cancels a queued call: the caller gets CancelledError, the grain never runs it and carries on', async () => {
    await withSilo([Sig], async (silo) => {
      const g = silo.getGrain(Sig, 'cq');
      const held = g.hold('cq');
      await eventually('hold started', () => seen.has('hold cq'));
      const ac = new AbortController();
      const queued = settle(g.work('cancelled-in-queue', ac.signal));
      ac.abort();
      assert.ok((await queued) instanceof CancelledError);
      assert.equal(getEventListeners(ac.signal, 'abort').length, 0);
      gate('cq').resolve();
      assert.equal(await held, 'held');
      assert.equal(await g.work('cq-after'), 'cq-after');
      assert.ok(!log.includes('work cancelled-in-queue'));
    });
  });

  it("releases the caller's AbortSignal when a two-way call completes", async () => {
    await withSilo([Sig], async (silo) => {
      const ac = new AbortController();
      assert.equal(await silo.getGrain(Sig, 'rel').work('rel', ac.signal), 'rel');
      assert.equal(getEventListeners(ac.signal, 'abort').length, 0);
    });
  });

  it("releases the caller's AbortSignal when a one-way call completes (no listener left behind)", async () => {
    await withSilo([Sig], async (silo) => {
      const ac = new AbortController();
      const g = silo.getGrain(Sig, 'ow-leak');
      for (let i = 0; i < 20; i++) await g.fire(`leak ${i}`, ac.signal);
      await eventually('the one-way calls ran', () => log.includes('fire leak 19'));
      await g.work('sync-point');
      const left = getEventListeners(ac.signal, 'abort').length;
      assert.equal(left, 0, `${left} abort listeners left on the caller's signal`);
    });
  });

  it('a one-way call whose signal is already aborted is not run (as for a fresh activation and two-way calls)', async () => {
    await withSilo([Sig], async (silo) => {
      const g = silo.getGrain(Sig, 'ow-pre');
      await g.work('warm');
      const ac = new AbortController();
      ac.abort();
      await g.fire('pre-aborted', ac.signal);
      await g.work('after-pre-aborted');
      assert.ok(
        !log.includes('fire pre-aborted'),
        'a one-way call cancelled before it was sent ran on an idle activation',
      );
    });
  });

  it('a call cancelled before it was sent leaves no activation behind', async () => {
    await withSilo([Sig], async (silo) => {
      const ac = new AbortController();
      ac.abort();
      assert.ok((await settle(silo.getGrain(Sig, 'never').work('x', ac.signal))) instanceof CancelledError);
      assert.equal(silo.activationCount, 0, 'an activation was created for a call that was never sent, and stays');
    });
  });

  it('a one-way call whose grain throws: the caller resolves and the grain carries on', async () => {
    await withSilo([Sig], async (silo) => {
      const g = silo.getGrain(Sig, 'ow-throw');
      assert.equal(await g.fireThrow('x'), undefined);
      await eventually('the one-way call ran', () => log.includes('fireThrow x'));
      assert.equal(await g.work('ow-throw-after'), 'ow-throw-after');
    });
  });
});

describe('scheduler edge cases: deactivation', () => {
  it('deactivateOnIdle from onActivate: the first call is served, then the grain leaves', async () => {
    await withSilo([Life], async (silo) => {
      const gone = nextEvent<{ grain: string; reason: string }>(
        'granary:activation:deactivated',
        (m) => m.grain === 'rvLife/leave-on-activate',
      );
      assert.equal(await silo.getGrain(Life, 'leave-on-activate').ping(), 1);
      assert.equal((await gone).reason, 'requested');
      assert.equal(await silo.getGrain(Life, 'leave-on-activate').ping(), 1, 'a new activation serves the next call');
    });
  });

  it('deactivateOnIdle from onActivate is honoured even when the call that activated the grain timed out', async () => {
    await withSilo([SlowAct], async (silo) => {
      const gone = nextEvent<{ grain: string; reason: string }>(
        'granary:activation:deactivated',
        (m) => m.grain === 'rvSlowAct/leave-1',
        1500,
      );
      const r = await settle(silo.getGrain(SlowAct, 'leave-1').withOptions({ timeoutMs: 30 }).ping());
      assert.ok(r instanceof TimeoutError);
      gate('activate leave-1').resolve();
      assert.equal(((await settle(gone)) as { reason?: string }).reason, 'requested');
    });
  });

  it('deactivateOnIdle from a timer tick deactivates the grain and its timer stops', async () => {
    await withSilo([Life], async (silo) => {
      const gone = nextEvent<{ grain: string; reason: string }>(
        'granary:activation:deactivated',
        (m) => m.grain === 'rvLife/tick-leave',
      );
      await silo.getGrain(Life, 'tick-leave').leaveFromTimer();
      assert.equal((await gone).reason, 'requested');
      const ticks = lifeLog.filter((l) => l === 'tick tick-leave').length;
      await delay(40); // lets time pass on purpose: the timer must NOT tick after deactivation
      assert.equal(lifeLog.filter((l) => l === 'tick tick-leave').length, ticks, 'the timer ticked after deactivation');
      assert.equal(silo.activationCount, 0);
    });
  });

  it('collects an idle grain whose timer is not keepAlive, and keeps one whose timer is', async () => {
    await withSilo(
      [Life],
      async (silo) => {
        const gone = nextEvent<{ grain: string }>(
          'granary:activation:deactivated',
          (m) => m.grain === 'rvLife/timer-idle',
        );
        await silo.getGrain(Life, 'timer-idle').startTimer(false);
        await silo.getGrain(Life, 'timer-kept').startTimer(true);
        await gone;
        const n = lifeLog.filter((l) => l === 'tick timer-idle').length;
        await delay(60); // lets time pass on purpose: the collected grain's timer must NOT tick
        assert.equal(
          lifeLog.filter((l) => l === 'tick timer-idle').length,
          n,
          "a collected grain's timer kept ticking",
        );
        assert.ok(!lifeLog.includes('deactivate timer-kept idle'), 'a keepAlive timer did not keep its grain');
      },
      { collectionAgeMs: 40 },
    );
  });

  it('does not collect a grain mid-turn or with calls queued', async () => {
    await withSilo(
      [Life],
      async (silo) => {
        const g = silo.getGrain(Life, 'busy-long');
        const held = g.hold('busy-long');
        const queued = g.ping();
        await eventually('hold started', () => seen.has('hold busy-long'));
        await delay(200); // lets many collection quanta (10 ms each) pass on purpose: no collection may happen
        assert.ok(!lifeLog.some((l) => l.startsWith('deactivate busy-long')), lifeLog.join(', '));
        gate('busy-long').resolve();
        assert.equal(await held, 'held');
        assert.equal(await queued, 1);
      },
      { collectionAgeMs: 40 },
    );
  });

  it('calls queued on a grain that deactivates after every call are all served in one silo', async () => {
    await withSilo([Life], async (silo) => {
      const g = silo.getGrain(Life, 'each-time');
      const calls = [];
      for (let i = 0; i < 6; i++) calls.push(settle(g.leaveEachTime()));
      const results = await Promise.all(calls);
      assert.deepEqual(results, [1, 1, 1, 1, 1, 1], results.map(String).join(', '));
    });
  });

  it('a call arriving while onDeactivate runs waits and is served by a new activation', async () => {
    await withSilo([Life], async (silo) => {
      const g = silo.getGrain(Life, 'slow-deact-1');
      await g.ping();
      const gone = silo.getGrain(Life, 'slow-deact-1').leaveEachTime();
      await eventually('onDeactivate running', () => lifeLog.includes('deactivate slow-deact-1 requested'));
      const during = g.ping();
      gate('deact slow-deact-1').resolve();
      assert.equal(await gone, 2);
      assert.equal(await during, 1, 'served by a new activation');
    });
  });
});

describe('scheduler edge cases: silo.stop()', () => {
  it('waits for an activation in the middle of onDeactivate', async () => {
    const silo = await Silo.start({ grains: [Life], logger: silentLogger() });
    const g = silo.getGrain(Life, 'slow-deact-2');
    await g.leaveEachTime();
    await eventually('onDeactivate running', () => lifeLog.includes('deactivate slow-deact-2 requested'));
    let stopped = false;
    const stopping = silo.stop().then(() => (stopped = true));
    await delay(20); // lets time pass on purpose: stop must NOT resolve while onDeactivate runs
    assert.equal(stopped, false, 'stop resolved before onDeactivate finished');
    gate('deact slow-deact-2').resolve();
    await stopping;
    assert.ok(lifeLog.includes('deactivated slow-deact-2'));
    assert.equal(silo.activationCount, 0);
  });

  it('the call that triggered an activation still running onActivate when stop() is called is served', async () => {
    const silo = await Silo.start({ grains: [SlowAct], logger: silentLogger() });
    const call = settle(silo.getGrain(SlowAct, 'stop-act').ping());
    await eventually('activating', () => seen.has('activating stop-act'));
    const stopping = silo.stop();
    gate('activate stop-act').resolve();
    await stopping;
    const r = await call;
    assert.equal(r, 'pong', `an in-flight call was not finished: ${String(r)}`);
  });

  it('calls queued behind a running turn when stop() is called finish', async () => {
    const silo = await Silo.start({ grains: [Life], logger: silentLogger() });
    const g = silo.getGrain(Life, 'stop-queue');
    const held = settle(g.hold('stop-queue'));
    const queued = settle(g.ping());
    await eventually('hold started', () => seen.has('hold stop-queue'));
    const stopping = silo.stop();
    gate('stop-queue').resolve();
    await stopping;
    assert.equal(await held, 'held');
    const r = await queued;
    assert.equal(r, 1, `an in-flight queued call was not finished: ${String(r)}`);
    assert.ok(lifeLog.includes('deactivate stop-queue shutdown'));
  });

  it('leaves no interval and no grain timer behind after stop', async () => {
    const live = new Set<unknown>();
    const orig = { setInterval, clearInterval, setTimeout, clearTimeout };
    globalThis.setInterval = ((fn: () => void, ms?: number) => {
      const h = orig.setInterval(fn, ms);
      live.add(h);
      return h;
    }) as typeof setInterval;
    globalThis.clearInterval = ((h: NodeJS.Timeout | undefined) => {
      live.delete(h);
      orig.clearInterval(h);
    }) as typeof clearInterval;
    globalThis.setTimeout = ((fn: () => void, ms?: number) => {
      const h: NodeJS.Timeout = orig.setTimeout(() => {
        live.delete(h);
        fn();
      }, ms);
      live.add(h);
      return h;
    }) as typeof setTimeout;
    globalThis.clearTimeout = ((h: NodeJS.Timeout | undefined) => {
      live.delete(h);
      orig.clearTimeout(h);
    }) as typeof clearTimeout;
    try {
      const silo = await Silo.start({ grains: [Life, Sig], logger: silentLogger(), collectionAgeMs: 1000 });
      await silo.getGrain(Life, 'timers-at-stop').startTimer(true);
      await silo.getGrain(Sig, 'timers-at-stop').withOptions({ timeoutMs: 20_000 }).work('x');
      assert.ok(live.size > 0);
      await silo.stop();
      assert.equal(live.size, 0, `${live.size} timers left after stop`);
    } finally {
      Object.assign(globalThis, orig);
    }
  });
});

describe('scheduler edge cases: mixed interleaving', () => {
  it('gives every call its own result when reentrant, read-only, always-interleave and chain calls mix', async () => {
    await withSilo(
      [MixR, MixC, MixBounce],
      async (silo) => {
        const r = silo.getGrain(MixR, 'mix');
        const c = silo.getGrain(MixC, 'mix');
        const calls: Promise<string>[] = [];
        const want: string[] = [];
        for (let i = 0; i < 60; i++) {
          const steps = (i * 7) % 4;
          switch (i % 4) {
            case 0:
              calls.push(r.write(`${i}`, steps));
              want.push(`w:${i}`);
              break;
            case 1:
              calls.push(r.read(`${i}`, steps));
              want.push(`r:${i}`);
              break;
            case 2:
              calls.push(r.peek(`${i}`));
              want.push(`p:${i}`);
              break;
            default:
              calls.push(c.bounce(`${i}`, `b${i}`));
              want.push(`w:${i}`);
              break;
          }
          if (i % 3 === 0) {
            calls.push(c.write(`c${i}`, steps), c.read(`cr${i}`, steps), c.peek(`cp${i}`));
            want.push(`w:c${i}`, `r:cr${i}`, `p:cp${i}`);
          }
        }
        assert.deepEqual(await Promise.all(calls), want);
        assert.equal(await c.peek('end'), 'p:end');
        assert.equal(await r.write('end', 1), 'w:end');
      },
      { responseTimeoutMs: 3000 },
    );
  });
});

describe('scheduler edge cases: robustness', () => {
  it('stop() resolves even when a turn never ends', async () => {
    const silo = await Silo.start({ grains: [Stuck], deactivationTimeoutMs: 200, logger: silentLogger() });
    assert.ok(
      (await settle(silo.getGrain(Stuck, 'forever').withOptions({ timeoutMs: 30 }).never())) instanceof TimeoutError,
    );
    // A deadline for the test only: stop() gives up on the stuck turn after deactivationTimeoutMs.
    const outcome = await Promise.race([
      silo.stop().then(() => 'stopped'),
      delay(3000).then(() => 'still stopping after 3 s'),
    ]);
    assert.equal(outcome, 'stopped');
  });

  it('a per-call timeoutMs that is not a number of ms is refused, never a call without a deadline', async () => {
    await withSilo([Sig], async (silo) => {
      const g = silo.getGrain(Sig, 'nan-timeout');
      const call = settle(Promise.resolve().then(() => g.withOptions({ timeoutMs: Number.NaN }).hold('nan-timeout')));
      // A deadline for the test only: with NaN the call never expires.
      const outcome = await Promise.race([call, delay(1000).then(() => 'no deadline: still pending after 1 s')]);
      gate('nan-timeout').resolve();
      await call;
      assert.ok(outcome instanceof Error, `expected a refusal or a timeout, got ${String(outcome)}`);
    });
  });

  it('refuses a timer due in more than 2^31-1 ms instead of firing it at once', async () => {
    await withSilo([Far], async (silo) => {
      await assert.rejects(
        silo.getGrain(Far, 'far').start(2 ** 31),
        (e: unknown) => e instanceof ConfigurationError && /2147483647/.test(e.message),
      );
      await delay(50); // lets time pass on purpose: an overflowed timer would fire after 1 ms
      assert.ok(!log.includes('far tick far'), 'a timer due in ~25 days fired after 1 ms (setTimeout overflow)');
    });
  });

  it('a stateless-worker pool serves calls while all its workers deactivate, then shrinks', async () => {
    await withSilo([Sw], async (silo) => {
      const w = silo.getGrain(Sw, 'pool');
      assert.deepEqual(await Promise.all([w.leave(), w.leave()]), ['left', 'left']);
      await eventually('both workers in onDeactivate', () => swDeactivating === 2);
      assert.equal(swLive, 2);
      assert.equal(await w.work(), 'worked', 'a call while every worker deactivates is served by a new worker');
      gate('sw deact').resolve();
      await eventually('deactivating workers gone', () => silo.activationCount === 1 && swLive === 1);
      assert.equal(await w.work(), 'worked');
    });
  });
});
