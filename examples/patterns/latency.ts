// A storage provider with a round trip: wraps another provider and delays
// every read and write by a fixed time, as a database across a network does.
// The patterns use it so that a grain that writes on every call pays what it
// would pay in production, while the state itself stays in memory.

import { setTimeout as sleep } from 'node:timers/promises';
import type { StorageProvider } from 'granary';

/** `inner`, with every read, write and clear taking at least `ms` longer. */
export function withLatency(inner: StorageProvider, ms: number): StorageProvider {
  return {
    kind: `${inner.kind}+${ms}ms`,
    init: (ctx) => inner.init(ctx),
    async read(address) {
      await sleep(ms);
      return inner.read(address);
    },
    async write(address, state, etag) {
      await sleep(ms);
      return inner.write(address, state, etag);
    },
    async clear(address, etag) {
      await sleep(ms);
      return inner.clear(address, etag);
    },
    close: () => inner.close(),
  };
}
