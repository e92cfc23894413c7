// Frames and bytes sent and received per peer over the connections of one
// silo, for its metrics. Each connection counts its own (ConnectionStats);
// this adds them up by peer at scrape time, and keeps the totals of closed
// connections so that the sums never go down.

import type { Connection } from './connection.ts';

/** What was sent to and received from one peer. */
export interface PeerTotals {
  framesSent: number;
  framesReceived: number;
  bytesSent: number;
  bytesReceived: number;
}

/** The peer name a connection counts under: the silo's address, or `client` for every client. */
function peerOf(conn: Connection): string {
  const p = conn.peer;
  if (p === undefined) return 'unknown';
  return p.role === 'client' ? 'client' : p.address;
}

function add(to: Map<string, PeerTotals>, peer: string, s: Readonly<PeerTotals>): void {
  const t = to.get(peer);
  if (t === undefined) {
    to.set(peer, {
      framesSent: s.framesSent,
      framesReceived: s.framesReceived,
      bytesSent: s.bytesSent,
      bytesReceived: s.bytesReceived,
    });
    return;
  }
  t.framesSent += s.framesSent;
  t.framesReceived += s.framesReceived;
  t.bytesSent += s.bytesSent;
  t.bytesReceived += s.bytesReceived;
}

/** The traffic of one silo's connections, by peer. */
export class PeerTraffic {
  readonly #live = new Set<Connection>();
  readonly #closed = new Map<string, PeerTotals>();
  /** Peers that left the cluster: what their open connections carried is dropped when they close. */
  readonly #gone = new Set<string>();

  /** Counts `conn` (once its handshake is done) from now on, what it carried so far included, and after it closes. */
  track(conn: Connection): void {
    if (this.#live.has(conn) || conn.state === 'closed') return;
    const peer = peerOf(conn);
    this.#gone.delete(peer);
    this.#live.add(conn);
    void conn.closed.then(() => {
      this.#live.delete(conn);
      if (!this.#gone.has(peer)) add(this.#closed, peer, conn.stats);
      else if (!this.#hasLive(peer)) this.#gone.delete(peer);
    });
  }

  /** Drops a peer that left the cluster, so departed silos do not stay in the metrics. */
  forget(peer: string): void {
    this.#closed.delete(peer);
    if (this.#hasLive(peer)) this.#gone.add(peer);
  }

  #hasLive(peer: string): boolean {
    for (const c of this.#live) if (peerOf(c) === peer) return true;
    return false;
  }

  /** Totals by peer: the closed connections' and the open ones' so far. */
  totals(): Map<string, PeerTotals> {
    const out = new Map<string, PeerTotals>();
    for (const [peer, t] of this.#closed) add(out, peer, t);
    for (const c of this.#live) add(out, peerOf(c), c.stats);
    return out;
  }
}
