// Type-level tests, checked by `npm run typecheck`: what the runtime refuses to
// call through a reference (RESERVED_METHODS, JOURNALED_GRAIN_MEMBERS) does not
// compile on a GrainRef, and lists of grain classes take grain classes only.

import { Grain, JournaledGrain, Silo, type AnyGrainClass, type GrainRef, type ReminderTick } from 'granary';
import { TestCluster } from 'granary/testing';

class Alarm extends Grain {
  async ring(): Promise<string> {
    return 'ring';
  }
  async receiveReminder(_name: string, _tick: ReminderTick): Promise<void> {}
  async onStreamItem(_item: unknown): Promise<void> {}
  override async onActivate(): Promise<void> {}
}

/** A journaled grain whose subclass made the base class's members public (TypeScript allows it). */
class Tally extends JournaledGrain<{ n: number }, number> {
  initialState(): { n: number } {
    return { n: 0 };
  }
  apply(s: { n: number }, e: number): { n: number } {
    return { n: s.n + e };
  }
  override raiseEvent(e: number): void {
    super.raiseEvent(e);
  }
  async add(n: number): Promise<number> {
    this.raiseEvent(n);
    await this.confirmEvents();
    return this.state.n;
  }
}

/** Not journaled: a method named like a JournaledGrain member is an ordinary method. */
class Calculator extends Grain {
  async apply(x: number): Promise<number> {
    return x * 2;
  }
}

declare const silo: Silo;
const alarm = silo.getGrain(Alarm, 'a');
const tally = silo.getGrain(Tally, 't');

export const rang: Promise<string> = alarm.ring();
// @ts-expect-error receiveReminder is called by the reminder service only
void alarm.receiveReminder('r', {} as ReminderTick);
// @ts-expect-error onStreamItem is called by the stream runtime only
void alarm.onStreamItem(1);
// @ts-expect-error lifecycle hooks are not callable through a reference, even when overridden
void alarm.onActivate();
// @ts-expect-error nor onDeactivate
void alarm.onDeactivate('idle');

// By type name, the interface's reserved methods are left out too.
declare const byName: GrainRef<{ receiveReminder(name: string): Promise<void>; ping(): Promise<void> }>;
export const pinged: Promise<void> = byName.ping();
// @ts-expect-error a reserved method is not on a reference made from an interface either
void byName.receiveReminder('r');

export const added: Promise<number> = tally.add(1);
// @ts-expect-error JournaledGrain members made public by a subclass are still not on its reference
void tally.apply({ n: 0 }, 1);
// @ts-expect-error initialState neither
void tally.initialState();
// @ts-expect-error raiseEvent neither
void tally.raiseEvent(1);

// A grain that is not journaled keeps a method whose name a JournaledGrain member has.
export const doubled: Promise<number> = silo.getGrain(Calculator, 'c').apply(2);

class NotAGrain {
  async ring(): Promise<string> {
    return 'ring';
  }
}

export const grains: AnyGrainClass[] = [Alarm, Tally, Calculator];
// @ts-expect-error a class that does not extend Grain is not a grain class
export const wrong: AnyGrainClass[] = [NotAGrain];
// @ts-expect-error an abstract grain class cannot be activated
export const abstract: AnyGrainClass[] = [JournaledGrain];

export const cluster: Promise<TestCluster> = TestCluster.start({ grains: [Alarm, Tally] });
// @ts-expect-error TestCluster takes grain classes only
export const rejected: Promise<TestCluster> = TestCluster.start({ grains: [Alarm, NotAGrain] });

// @ts-expect-error Silo.start takes grain classes only
export const refused: Promise<Silo> = Silo.start({ grains: [NotAGrain] });
