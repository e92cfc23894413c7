// Placement: which silo gets a new activation. Built-in strategies and custom
// ones share one shape; the default balances load (two random choices, the
// lighter wins) from the activation counts silos report to each other.

import { ConfigurationError } from '../errors.ts';
import type { PlacementStrategy } from '../grain/options.ts';
import { hash32 } from '../hash.ts';

const noContext: Readonly<Record<string, unknown>> = Object.freeze({});

/** A silo that may host a new activation. */
export interface PlacementCandidate {
  /** `host:port` */
  readonly address: string;
  /** Activations it reported (exact for the local silo). */
  readonly activations: number;
}

/** Picks a silo address for a new activation of `grain` among `candidates` (never empty). */
export function place(
  strategy: PlacementStrategy,
  grain: { type: string; key: string },
  idStr: string,
  candidates: readonly PlacementCandidate[],
  local: string,
  context?: Readonly<Record<string, unknown>>,
  random: () => number = Math.random,
): string {
  const n = candidates.length;
  if (n === 0) throw new ConfigurationError(`no silo can host grain type '${grain.type}'`);
  if (n === 1) return (candidates[0] as PlacementCandidate).address;
  switch (strategy) {
    case 'random':
      return (candidates[Math.floor(random() * n)] as PlacementCandidate).address;
    case 'preferLocal':
      for (const c of candidates) if (c.address === local) return local;
      return (candidates[Math.floor(random() * n)] as PlacementCandidate).address;
    case 'hash': {
      // Same answer on every silo with the same candidates, whatever their order.
      const sorted = candidates.map((c) => c.address).sort();
      return sorted[hash32(idStr) % n] as string;
    }
    case 'activationCount': {
      const a = candidates[Math.floor(random() * n)] as PlacementCandidate;
      let b = candidates[Math.floor(random() * (n - 1))] as PlacementCandidate;
      if (b === a) b = candidates[n - 1] as PlacementCandidate;
      if (a.activations !== b.activations) return a.activations < b.activations ? a.address : b.address;
      return a.address === local ? a.address : b.address;
    }
    default: {
      const chosen = strategy.place(
        grain,
        candidates.map((c) => c.address),
        local,
        context ?? noContext,
      );
      if (!candidates.some((c) => c.address === chosen)) {
        throw new ConfigurationError(
          `placement strategy '${strategy.name}' chose '${String(chosen)}', which is not one of the candidate silos`,
        );
      }
      return chosen;
    }
  }
}
