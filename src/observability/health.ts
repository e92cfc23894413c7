// What the health probes answer, from the silo's phase alone: nothing here
// asks the membership table, the storage or another silo, so a slow or
// unreachable store never fails a probe. Kubernetes' three probes:
//   startup  200 once the silo has started
//   live     200 unless the silo has stopped or the cluster declared it dead
//   ready    200 while the silo is active and takes calls; 503 from the first
//            moment of a stop, and once declared dead

/** Where a silo is in its life; it only moves forward. */
export type SiloPhase = 'starting' | 'active' | 'stopping' | 'stopped' | 'dead';

/** The probes a silo answers. */
export type ProbeKind = 'startup' | 'live' | 'ready';

/** A probe's answer. */
export interface ProbeResult {
  readonly ok: boolean;
  /** `pass` or `fail`. */
  readonly status: 'pass' | 'fail';
  /** Why it failed. */
  readonly reason?: string;
}

const order: Readonly<Record<SiloPhase, number>> = { starting: 0, active: 1, stopping: 2, stopped: 3, dead: 3 };

const why: Readonly<Record<SiloPhase, string>> = {
  starting: 'the silo is starting',
  active: '',
  stopping: 'the silo is stopping',
  stopped: 'the silo has stopped',
  dead: 'the silo was declared dead by the cluster',
};

/** A silo's phase as its probes read it. */
export class SiloHealth {
  #phase: SiloPhase = 'starting';
  /** The silo's address, for the probes' answers; set again once the silo knows the port it listens on. */
  address: string;

  constructor(address: string) {
    this.address = address;
  }

  get phase(): SiloPhase {
    return this.#phase;
  }

  /** Moves to `phase` if it is further on (a stop after a death declaration leaves it dead). */
  moveTo(phase: SiloPhase): void {
    if (order[phase] > order[this.#phase]) this.#phase = phase;
  }

  /** The answer of probe `kind` now. */
  probe(kind: ProbeKind): ProbeResult {
    const p = this.#phase;
    const ok =
      kind === 'startup' ? p !== 'starting' : kind === 'live' ? p !== 'stopped' && p !== 'dead' : p === 'active';
    return ok ? { ok, status: 'pass' } : { ok, status: 'fail', reason: why[p] };
  }
}
