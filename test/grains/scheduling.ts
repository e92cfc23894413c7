// Shared test grains for the turn scheduler: ordering, interleaving,
// deadlocks, deadlines, cancellation, timers and stateless workers.

import {
  Grain,
  grain,
  readOnly,
  alwaysInterleave,
  reentrant,
  statelessWorker,
  callChainReentrancy,
  type GrainRef,
} from 'granary';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Records the start and end of each turn; `work` awaits several times. */
@grain('recorder')
export class Recorder extends Grain {
  log: string[] = [];
  async work(tag: string, steps = 3): Promise<void> {
    this.log.push(`start ${tag}`);
    for (let i = 0; i < steps; i++) await tick();
    this.log.push(`end ${tag}`);
  }
  @readOnly
  async read(tag: string, steps = 3): Promise<void> {
    this.log.push(`start ${tag}`);
    for (let i = 0; i < steps; i++) await tick();
    this.log.push(`end ${tag}`);
  }
  @alwaysInterleave
  async peek(tag: string): Promise<void> {
    this.log.push(`peek ${tag}`);
  }
  @readOnly
  async getLog(): Promise<string[]> {
    return this.log;
  }
}

@grain('reentrantRecorder')
@reentrant
export class ReentrantRecorder extends Recorder {}

/** A calls B calls back A. */
@grain('pinger')
export class Pinger extends Grain {
  async pingVia(other: string): Promise<string> {
    return this.getGrain(Ponger, other).pongBack(this.key);
  }
  async pingViaStored(other: GrainRef<Ponger>): Promise<string> {
    await tick();
    return other.pongBack(this.key);
  }
  async hello(): Promise<string> {
    return `hello from ${this.key}`;
  }
}

@grain('ponger')
export class Ponger extends Grain {
  async pongBack(pingerKey: string): Promise<string> {
    await tick();
    return this.getGrain(Pinger, pingerKey).hello();
  }
  async pongBackChainReentrant(key: string): Promise<string> {
    return this.getGrain(ChainReentrant, key).hello();
  }
}

@grain('chainReentrant')
@callChainReentrancy
export class ChainReentrant extends Grain {
  async viaPonger(ponger: string): Promise<string> {
    return this.getGrain(Ponger, ponger).pongBackChainReentrant(this.key);
  }
  async hello(): Promise<string> {
    return `hello from ${this.key}`;
  }
}

/** Keys of the Sleeper grains waiting in `waitForAbort`, so a test aborts once the call is in the grain. */
export const waitingForAbort = new Set<string>();

/** Slow calls, cancellation and timers. */
@grain('sleeper')
export class Sleeper extends Grain {
  ticks = 0;
  tickLog: string[] = [];
  sawAbort = false;
  async sleep(ms: number): Promise<string> {
    await new Promise((r) => setTimeout(r, ms));
    return 'slept';
  }
  async waitForAbort(signal: AbortSignal): Promise<string> {
    if (!(signal instanceof AbortSignal)) throw new TypeError('no signal');
    const aborted = new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    waitingForAbort.add(this.key);
    await aborted;
    waitingForAbort.delete(this.key);
    this.sawAbort = signal.aborted;
    return 'aborted';
  }
  async abortSeen(): Promise<boolean> {
    return this.sawAbort;
  }
  async startTimer(periodMs: number, slowMs: number): Promise<void> {
    this.registerTimer(
      async () => {
        this.tickLog.push('tick start');
        this.ticks++;
        if (slowMs > 0) await new Promise((r) => setTimeout(r, slowMs));
        this.tickLog.push('tick end');
      },
      { dueMs: periodMs, periodMs },
    );
  }
  async busy(ms: number): Promise<void> {
    this.tickLog.push('call start');
    await new Promise((r) => setTimeout(r, ms));
    this.tickLog.push('call end');
  }
  async timerTicks(): Promise<number> {
    return this.ticks;
  }
  async stopTimers(): Promise<void> {
    this.deactivateOnIdle();
  }
  async log(): Promise<string[]> {
    return this.tickLog;
  }
}

export const workerStats = { live: 0, maxLive: 0, activations: 0 };

@grain('worker')
@statelessWorker({ maxLocal: 3 })
export class Worker extends Grain {
  override async onActivate(): Promise<void> {
    workerStats.activations++;
    workerStats.live++;
    workerStats.maxLive = Math.max(workerStats.maxLive, workerStats.live);
  }
  override async onDeactivate(): Promise<void> {
    workerStats.live--;
  }
  async work(ms: number): Promise<number> {
    await new Promise((r) => setTimeout(r, ms));
    return 1;
  }
}
