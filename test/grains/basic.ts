// Shared test grains: calls, copying, errors, references, lifecycle.

import {
  Grain,
  grain,
  readOnly,
  oneWay,
  GranaryError,
  registerError,
  type GrainRef,
  type DeactivationReason,
} from 'granary';

export interface CounterState {
  value: number;
}

@grain('counter')
export class Counter extends Grain {
  readonly count = this.persistentState<CounterState>('count', { initial: () => ({ value: 0 }) });

  async increment(by = 1): Promise<number> {
    this.count.state.value += by;
    await this.count.write();
    return this.count.state.value;
  }

  @readOnly
  async get(): Promise<number> {
    return this.count.state.value;
  }

  async etag(): Promise<string | null> {
    return this.count.etag;
  }

  async reset(): Promise<void> {
    await this.count.clear();
  }
}

/** A class the codec does not know. */
export class Unregistered {
  x = 1;
}

export class OutOfStockError extends GranaryError {
  readonly sku: string;
  constructor(sku: string) {
    super(`out of stock: ${sku}`, 'OUT_OF_STOCK');
    this.sku = sku;
  }
}
registerError(OutOfStockError);

export class UnknownToCallerError extends Error {
  override name = 'UnknownToCallerError';
  readonly detail = 42;
}

/** Holds and mutates values, to check that calls copy them. */
@grain('box')
export class Box extends Grain {
  held: unknown;
  async put(v: unknown): Promise<void> {
    this.held = v;
  }
  async mutateHeld(): Promise<void> {
    (this.held as { n: number }).n = 999;
  }
  async take(): Promise<unknown> {
    return this.held;
  }
  async sameAsHeld(v: unknown): Promise<boolean> {
    return v === this.held;
  }
  async giveFunction(): Promise<unknown> {
    return { cb: () => 1 };
  }
  async giveUnregistered(): Promise<unknown> {
    return { list: [new Unregistered()] };
  }
  async throwOutOfStock(sku: string): Promise<never> {
    throw new OutOfStockError(sku);
  }
  async throwUnknown(): Promise<never> {
    throw new UnknownToCallerError('boom');
  }
  syncThrow(): never {
    throw new RangeError('sync');
  }
  async callVia(ref: GrainRef<Counter>, by: number): Promise<number> {
    return ref.increment(by);
  }
  async refToCounter(key: string): Promise<GrainRef<Counter>> {
    return this.getGrain(Counter, key);
  }
}

export const lifecycleLog: string[] = [];

@grain('lifecycle')
export class Lifecycle extends Grain {
  activatedAt = 0;
  override async onActivate(): Promise<void> {
    lifecycleLog.push(`activate ${this.key}`);
    this.activatedAt = Date.now();
  }
  override async onDeactivate(reason: DeactivationReason): Promise<void> {
    lifecycleLog.push(`deactivate ${this.key} ${reason}`);
  }
  async ping(): Promise<number> {
    return this.activatedAt;
  }
  async leave(): Promise<void> {
    this.deactivateOnIdle();
  }
  async leaveSlowly(ms: number): Promise<number> {
    lifecycleLog.push(`leave slowly ${this.key}`);
    this.deactivateOnIdle();
    await new Promise((r) => setTimeout(r, ms));
    return this.activatedAt;
  }
  async stay(ms: number): Promise<void> {
    this.delayDeactivation(ms);
  }
  @oneWay
  async slowOneWay(ms: number): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
    lifecycleLog.push(`oneway done ${this.key}`);
  }
}

export const flaky = { failuresLeft: 0, attempts: 0 };

@grain('flaky')
export class Flaky extends Grain {
  override async onActivate(): Promise<void> {
    flaky.attempts++;
    if (flaky.failuresLeft > 0) {
      flaky.failuresLeft--;
      throw new GranaryError('activation refused for the test', 'TEST_ACTIVATION');
    }
  }
  async hello(): Promise<string> {
    return `hello ${this.key}`;
  }
}
