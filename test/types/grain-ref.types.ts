// Type-level tests of GrainRef<T>, checked by `npm run typecheck`: every
// line marked @ts-expect-error must fail to compile, or the typecheck fails.

import { Silo, type GrainRef } from 'granary';
import type { Counter, Box } from '../grains/basic.ts';
import { Counter as CounterClass } from '../grains/basic.ts';

declare const silo: Silo;
const counter = silo.getGrain(CounterClass, 'a');
const byName = silo.getGrain<Counter>('counter', 'a');

// Methods are typed from the class, and return promises of awaited results.
export const n: Promise<number> = counter.increment(5);
export const m: Promise<number> = byName.get();
export const defaulted: Promise<number> = counter.increment();

// @ts-expect-error a wrong argument type does not compile
void counter.increment('five');
// @ts-expect-error an unknown method does not compile
void counter.decrement();
// @ts-expect-error Grain members are not on a reference
void counter.persistentState;
// @ts-expect-error lifecycle hooks are not callable through a reference
void counter.onActivate();
// @ts-expect-error too many arguments
void counter.increment(1, 2);
// @ts-expect-error the result type is the awaited result
export const wrong: Promise<string> = counter.get();

// A synchronous grain method still returns a promise on the reference.
declare const box: GrainRef<Box>;
export const sync: Promise<never> = box.syncThrow();
// withOptions keeps the type.
export const timed: Promise<number> = counter.withOptions({ timeoutMs: 10 }).get();
// @ts-expect-error withOptions takes known options only
counter.withOptions({ timeout: 10 });
