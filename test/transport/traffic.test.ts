import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Connection } from '../../src/transport/connection.ts';
import { PeerTraffic } from '../../src/transport/traffic.ts';
import { deferred } from '../helpers.ts';

/** A connection as PeerTraffic reads it: its peer, its counters, and a close the test triggers. */
function conn(address: string, role: 'silo' | 'client', sent: number): Connection & { end(): void } {
  const closed = deferred();
  const c = {
    peer: { address, role },
    state: 'open',
    stats: { framesSent: sent, framesReceived: 1, bytesSent: sent * 10, bytesReceived: 10, writes: 1 },
    closed: closed.promise,
    end: () => {
      c.state = 'closed';
      closed.resolve();
    },
  };
  return c as unknown as Connection & { end(): void };
}

const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('PeerTraffic', () => {
  it('adds up open and closed connections by peer, every client as one', async () => {
    const t = new PeerTraffic();
    const a1 = conn('10.0.0.1:11111', 'silo', 3);
    const a2 = conn('10.0.0.1:11111', 'silo', 4);
    t.track(a1);
    t.track(a2);
    t.track(a2); // twice: counted once
    t.track(conn('client-1', 'client', 5));
    t.track(conn('client-2', 'client', 6));
    a1.end();
    await settle();
    const totals = t.totals();
    assert.deepEqual([...totals.keys()].sort(), ['10.0.0.1:11111', 'client']);
    assert.equal(totals.get('10.0.0.1:11111')?.framesSent, 7, 'a closed connection still counts');
    assert.equal(totals.get('10.0.0.1:11111')?.bytesSent, 70);
    assert.equal(totals.get('client')?.framesSent, 11);
  });

  it('forgets a peer that left, even when its last connection closes after', async () => {
    const t = new PeerTraffic();
    const gone = conn('10.0.0.2:11111', 'silo', 2);
    const early = conn('10.0.0.2:11111', 'silo', 1);
    t.track(gone);
    t.track(early);
    early.end();
    await settle();
    t.forget('10.0.0.2:11111');
    assert.equal(t.totals().get('10.0.0.2:11111')?.framesSent, 2, 'the open connection counts until it closes');
    gone.end();
    await settle();
    assert.equal(t.totals().has('10.0.0.2:11111'), false);
    // The same address back (a new generation): counted afresh.
    t.track(conn('10.0.0.2:11111', 'silo', 9));
    assert.equal(t.totals().get('10.0.0.2:11111')?.framesSent, 9);
  });
});
