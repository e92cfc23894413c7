// The members JournaledGrain adds to Grain, in a module of their own: the
// runtime's method scan and the GrainRef<T> type both leave them out, and
// grain/ref.ts cannot import journaled-grain.ts (which imports grain/).

/** Methods of JournaledGrain: never callable through a reference, even where a subclass makes them public. */
export const JOURNALED_GRAIN_MEMBERS = [
  'initialState',
  'apply',
  'raiseEvent',
  'raiseEvents',
  'confirmEvents',
  'retrieveEvents',
] as const;

/** A name in `JOURNALED_GRAIN_MEMBERS`. */
export type JournaledGrainMember = (typeof JOURNALED_GRAIN_MEMBERS)[number];

/** Brands JournaledGrain's instance type, so that GrainRef<T> knows T is journaled. Never set at run time. */
export const JOURNALED: unique symbol = Symbol('granary.journaled') as never;
