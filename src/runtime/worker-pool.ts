// Stateless workers: several local activations of one grain id, never
// registered in the directory. A call goes to an idle activation; when all are
// busy the pool grows up to maxLocal, then queues on the least loaded one.
// Idle activations are collected one by one, so the pool shrinks when idle.

import type { GrainId } from '../grain/identity.ts';
import type { GrainTypeInfo } from '../grain/options.ts';
import type { Message } from '../messaging/message.ts';
import type { RefIdentity } from '../serialization/symbols.ts';
import { ActivationState, type Activation, type Target } from './activation.ts';

/** What a pool needs from the catalog that holds it. */
export interface PoolHost {
  /** A new worker activation of this pool. */
  newActivation(id: GrainId, idStr: string, type: GrainTypeInfo, pool: WorkerPool): Activation;
  /** Delivers a call whose target went away. */
  redispatch(msg: Message): void;
  /** A reference revived in a call's arguments. */
  ref(type: string, key: string): unknown;
  /** The pool has no worker left: it leaves the catalog. */
  poolEmpty(p: WorkerPool): void;
}

/** The local activations of one stateless-worker grain id. */
export class WorkerPool implements Target {
  readonly id: GrainId;
  readonly idStr: string;
  readonly type: GrainTypeInfo;
  readonly #host: PoolHost;
  readonly workers: Activation[] = [];
  live = true;

  constructor(host: PoolHost, id: GrainId, idStr: string, type: GrainTypeInfo) {
    this.#host = host;
    this.id = id;
    this.idStr = idStr;
    this.type = type;
  }

  receive(msg: Message): void {
    if (!this.live) {
      this.#host.redispatch(msg);
      return;
    }
    const ws = this.workers;
    let best: Activation | undefined;
    let bestLoad = Infinity;
    let live = 0;
    for (let i = 0; i < ws.length; i++) {
      const w = ws[i] as Activation;
      if (w.state > ActivationState.Valid) continue;
      live++;
      const load = w.running + w.queueLength + (w.state < ActivationState.Valid ? 1 : 0);
      if (load === 0) {
        w.receive(msg);
        return;
      }
      if (load < bestLoad) {
        bestLoad = load;
        best = w;
      }
    }
    if (live < this.type.maxLocalWorkers || best === undefined) {
      const w = this.#host.newActivation(this.id, this.idStr, this.type, this);
      ws.push(w);
      w.receive(msg);
      return;
    }
    best.receive(msg);
  }

  reviveRef(id: RefIdentity): unknown {
    return this.#host.ref(id.type, id.key);
  }

  /** A worker left (deactivated or failed). */
  remove(a: Activation): void {
    const i = this.workers.indexOf(a);
    if (i >= 0) this.workers.splice(i, 1);
    if (this.workers.length === 0) {
      this.live = false;
      this.#host.poolEmpty(this);
    }
  }
}
