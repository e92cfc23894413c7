// Connections over loopback: the handshake result, round trips of mixed sizes,
// batching of one tick's sends (early writes of full batches), frames cut byte by byte, and
// back-pressure reported while the peer does not read.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { setImmediate as nextLoop } from 'node:timers/promises';
import { FrameTooLargeError, ProtocolError, TransportError } from '../../src/errors.ts';
import type { Connection } from '../../src/transport/connection.ts';
import { Connector } from '../../src/transport/connector.ts';
import { encodeFrame } from '../../src/transport/framing.ts';
import { PROTOCOL_VERSION } from '../../src/transport/handshake.ts';
import { listen, type Listener } from '../../src/transport/listener.ts';
import { transportDefaults } from '../../src/transport/limits.ts';
import { eventually, nextEvent } from '../helpers.ts';
import { body, collector, helloFrame, rawSocket, recordingLogger } from './support.ts';

describe('connection', () => {
  const serverLog = recordingLogger();
  const server = collector({ echo: true });
  const accepted: Connection[] = [];
  const client = collector();
  let listener: Listener;
  let connector: Connector;

  before(async () => {
    listener = await listen({
      port: 0,
      hello: { clusterId: 'test', generation: 7, role: 'silo' },
      logger: serverLog,
      handler: server,
      onConnection: (c) => accepted.push(c),
    });
    connector = new Connector({
      hello: { clusterId: 'test', address: 'client-1', generation: 3, role: 'client' },
      handler: client,
    });
  });

  after(async () => {
    await connector.close();
    await listener.close();
  });

  it('hands over connections after the handshake; each side knows the other HELLO', async () => {
    const conn = await connector.get(listener.address);
    assert.equal(conn.state, 'open');
    const maxFrameBytes = transportDefaults.maxFrameBytes;
    assert.deepEqual(conn.peer, {
      protocol: PROTOCOL_VERSION,
      clusterId: 'test',
      address: listener.address,
      generation: 7,
      role: 'silo',
      maxFrameBytes,
    });
    await eventually('the listener hands over the connection', () => accepted.length === 1);
    assert.deepEqual(accepted[0]?.peer, {
      protocol: PROTOCOL_VERSION,
      clusterId: 'test',
      address: 'client-1',
      generation: 3,
      role: 'client',
      maxFrameBytes,
    });
    assert.equal(await connector.get(listener.address), conn, 'one connection per address');
  });

  it('publishes open and close on granary:transport:* diagnostics channels', async () => {
    const other = new Connector({
      hello: { clusterId: 'test', address: 'observed-client', generation: 1, role: 'client' },
      handler: collector(),
    });
    const opened = nextEvent<{ side: string; peer: { address: string } }>(
      'granary:transport:open',
      (m) => m.side === 'accept' && m.peer.address === 'observed-client',
    );
    const closed = nextEvent<{ side: string; peer: string; kind: string }>(
      'granary:transport:close',
      (m) => m.side === 'connect' && m.peer === listener.address,
    );
    await other.get(listener.address);
    await opened;
    await other.close();
    assert.equal((await closed).kind, 'local');
  });

  it('round-trips frames of mixed sizes, 0 bytes and several MiB included, in order', async () => {
    const conn = await connector.get(listener.address);
    const sizes = [0, 1, 5, 0, 4096, 65_536, 3 * 1024 * 1024 + 17, 0, 12, 200_000, 1, 8 * 1024 * 1024];
    const start = client.frames.length;
    for (let i = 0; i < sizes.length; i++) conn.send(i, body(sizes[i] ?? 0, i));
    await eventually('every frame echoed back', () => client.frames.length - start === sizes.length, 10_000);
    for (let i = 0; i < sizes.length; i++) {
      const got = client.frames[start + i];
      assert.equal(got?.type, i, `frame ${i} in order`);
      assert.ok(got.body.equals(body(sizes[i] ?? 0, i)), `frame ${i} of ${sizes[i]} bytes intact`);
    }
  });

  /** Sends 10,000 small frames in one tick; returns the bytes they take on the wire. */
  function sendTenThousand(conn: Connection): number {
    let bytes = 0;
    for (let i = 0; i < 10_000; i++) {
      const b = Buffer.allocUnsafe(4 + (i % 50));
      b.writeUInt32BE(i, 0);
      conn.send(42, b);
      bytes += 5 + b.length;
    }
    return bytes;
  }

  async function assertTenThousandArrived(framesBefore: number): Promise<void> {
    await eventually('10,000 frames at the server', () => server.frames.length - framesBefore === 10_000);
    for (let i = 0; i < 10_000; i++) {
      const f = server.frames[framesBefore + i];
      assert.equal(f?.body.readUInt32BE(0), i, `frame ${i} in order`);
      assert.equal(f.body.length, 4 + (i % 50));
    }
  }

  it('sends 10,000 frames of one tick in order, writing a batch as soon as it holds flushBytes', async () => {
    const conn = await connector.get(listener.address);
    const framesBefore = server.frames.length;
    const writesBefore = conn.stats.writes;
    const bytes = sendTenThousand(conn);
    const inTick = conn.stats.writes - writesBefore;
    const full = Math.floor(bytes / transportDefaults.flushBytes);
    // Each write in the tick took a full batch (at least flushBytes), and no more than one frame over it.
    assert.ok(
      inTick >= Math.floor(bytes / (transportDefaults.flushBytes + 5 + 53)) && inTick <= full,
      `${inTick} writes in the tick for ${bytes} bytes`,
    );
    assert.ok(inTick >= 2, 'the peer gets the first frames before the tick ends');
    await assertTenThousandArrived(framesBefore);
    assert.equal(conn.stats.writes - writesBefore, inTick + 1, 'the rest leaves in one write at the end of the tick');
  });

  it("with a flushBytes above the tick's bytes, sends the tick's frames in one socket write", async () => {
    const own = new Connector({
      hello: { clusterId: 'test', address: 'one-write-client', generation: 1, role: 'client' },
      handler: collector(),
      limits: { flushBytes: 64 * 1024 * 1024 },
    });
    try {
      const conn = await own.get(listener.address);
      const framesBefore = server.frames.length;
      const writesBefore = conn.stats.writes;
      sendTenThousand(conn);
      assert.equal(conn.stats.writes, writesBefore, 'nothing written before the tick ends');
      await assertTenThousandArrived(framesBefore);
      assert.equal(conn.stats.writes - writesBefore, 1, 'one socket write for the batch');
    } finally {
      await own.close();
    }
  });

  it('reassembles a frame written to the socket one byte at a time', async () => {
    const socket = await rawSocket(listener.port);
    socket.write(helloFrame({ clusterId: 'test', address: 'bytewise', generation: 1, role: 'client' }));
    await eventually('the raw peer is accepted', () => accepted.some((c) => c.peer?.address === 'bytewise'));
    const payload = body(1000, 9);
    const frame = Buffer.concat([encodeFrame(77, payload), encodeFrame(78, body(0, 0))]);
    const before = server.frames.length;
    for (let i = 0; i < frame.length; i++) {
      socket.write(frame.subarray(i, i + 1));
      if (i % 16 === 0) await nextLoop();
    }
    await eventually('both frames arrive', () => server.frames.length - before === 2);
    assert.equal(server.frames[before]?.type, 77);
    assert.ok(server.frames[before]?.body.equals(payload));
    assert.equal(server.frames[before + 1]?.type, 78);
    assert.equal(server.frames[before + 1]?.body.length, 0);
    socket.destroy();
  });

  it('holds frames for a handler set after the handover, and delivers them in order', async () => {
    const late = collector();
    const handedOver: Connection[] = [];
    const bare = await listen({
      port: 0,
      hello: { clusterId: 'test', generation: 1, role: 'silo' },
      onConnection: (c) => handedOver.push(c),
    });
    const c = new Connector({
      hello: { clusterId: 'test', address: 'early-sender', generation: 1, role: 'client' },
      handler: collector(),
    });
    try {
      const conn = await c.get(bare.address);
      for (let i = 0; i < 5; i++) conn.send(i, Buffer.from([i]));
      await eventually('the frames reach the listener', () => handedOver[0]?.stats.framesReceived === 5);
      const remote = handedOver[0];
      assert.ok(remote);
      remote.setHandler(late);
      assert.deepEqual(
        late.frames.map((f) => f.type),
        [0, 1, 2, 3, 4],
      );
      assert.throws(
        () => remote.setHandler(late),
        (e: unknown) => e instanceof TransportError && /already has a handler/.test(e.message),
      );
    } finally {
      await c.close();
      await bare.close();
    }
  });

  it('close() writes the frames sent before it, then hangs up', async () => {
    const c = new Connector({
      hello: { clusterId: 'test', address: 'closing-client', generation: 1, role: 'client' },
      handler: collector(),
    });
    const conn = await c.get(listener.address);
    const before = server.frames.length;
    for (let i = 0; i < 100; i++) conn.send(9, Buffer.from(`last words ${i}`));
    conn.close('done');
    assert.equal(conn.state, 'closed');
    assert.deepEqual(await conn.closed, { kind: 'local', reason: 'done', error: undefined });
    await eventually('the frames sent before close() arrive', () => server.frames.length - before === 100);
    assert.equal(server.frames.at(-1)?.body.toString(), 'last words 99');
    await eventually(
      'the listener sees the hang-up',
      () => ![...listener.connections].some((x) => x.peer?.address === 'closing-client'),
    );
    await c.close();
  });

  it('refuses a port that is taken with a TransportError whose cause is the socket error', async () => {
    await assert.rejects(
      listen({
        port: listener.port,
        hello: { clusterId: 'test', generation: 1, role: 'silo' },
        handler: collector(),
        onConnection: () => {},
      }),
      (e: unknown) =>
        e instanceof TransportError &&
        e.code === 'GRANARY_TRANSPORT' &&
        e.message.startsWith(`cannot listen on ${listener.address}: `) &&
        (e.cause as { code?: string } | undefined)?.code === 'EADDRINUSE',
    );
  });

  it('refuses to send a frame over maxFrameBytes without closing the connection', async () => {
    const small = new Connector({
      hello: { clusterId: 'test', address: 'client-small', generation: 1, role: 'client' },
      handler: collector(),
      limits: { maxFrameBytes: 1024 },
    });
    try {
      const conn = await small.get(listener.address);
      assert.throws(
        () => conn.send(1, Buffer.alloc(1024)),
        (e: unknown) => e instanceof FrameTooLargeError && e.code === 'GRANARY_FRAME_TOO_LARGE',
      );
      assert.throws(() => conn.send(300, Buffer.alloc(1)), ProtocolError);
      conn.send(1, Buffer.alloc(1023));
      assert.equal(conn.state, 'open');
    } finally {
      await small.close();
    }
  });

  it('never sends a frame bigger than the peer said it accepts', async () => {
    const strict = await listen({
      port: 0,
      hello: { clusterId: 'test', generation: 1, role: 'silo' },
      limits: { maxFrameBytes: 1000 },
      handler: collector(),
      onConnection: () => {},
    });
    try {
      const conn = await connector.get(strict.address);
      assert.equal(conn.peer?.maxFrameBytes, 1000);
      assert.throws(() => conn.send(1, Buffer.alloc(1000)), /frame of 1001 bytes exceeds maxFrameBytes \(1000\)/);
      conn.send(1, Buffer.alloc(999));
      await eventually('the listener gets the frame that fits', () =>
        [...strict.connections].some((c) => c.stats.framesReceived === 1),
      );
      assert.equal(conn.state, 'open');
    } finally {
      await strict.close();
    }
  });

  it('writes batches over one reused buffer only once the socket took them: frames stay intact while the peer stalls', async () => {
    const local = new Connector({
      hello: { clusterId: 'test', address: 'stalling-reader-client', generation: 1, role: 'client' },
      handler: collector(),
    });
    try {
      const conn = await local.get(listener.address);
      await eventually('the listener hands over the connection', () =>
        accepted.some((c) => c.peer?.address === 'stalling-reader-client'),
      );
      const remote = accepted.find((c) => c.peer?.address === 'stalling-reader-client');
      assert.ok(remote);
      const framesBefore = server.frames.length;
      const frameOf = (n: number): Buffer => {
        const b = Buffer.alloc(8 + (n % 3000), n & 0xff);
        b.writeUInt32BE(n, 0);
        return b;
      };
      let n = 0;
      // Batches flowing (the buffer reused), then with the reader stalled (the socket queues them), then flowing again.
      for (let tick = 0; tick < 300; tick++) {
        if (tick === 100) remote.pause();
        if (tick === 200) remote.resume();
        for (let i = 0; i < 200; i++) conn.send(9, frameOf(n++));
        await nextLoop();
      }
      await eventually('every frame reaches the server', () => server.frames.length - framesBefore === n, 20_000);
      for (let i = 0; i < n; i++) {
        const f = server.frames[framesBefore + i];
        assert.ok(f?.body.equals(frameOf(i)), `frame ${i} intact`);
      }
    } finally {
      await local.close();
    }
  });

  it('reports back-pressure while the peer does not read, and clears it after it resumes', async () => {
    const local = new Connector({
      hello: { clusterId: 'test', address: 'slow-reader-client', generation: 1, role: 'client' },
      handler: collector(),
      limits: { writeHighWaterMark: 256 * 1024 },
    });
    try {
      const conn = await local.get(listener.address);
      await eventually('the listener hands over the connection', () =>
        accepted.some((c) => c.peer?.address === 'slow-reader-client'),
      );
      const remote = accepted.find((c) => c.peer?.address === 'slow-reader-client');
      assert.ok(remote);
      remote.pause();
      let blocked = 0;
      conn.on('blocked', () => blocked++);
      const frame = Buffer.alloc(256 * 1024, 1);
      const framesBefore = server.frames.length;
      let sent = 0;
      // Fill the kernel buffers: at most 256 MiB, one 256 KiB frame per loop turn.
      while (conn.writable && sent < 1024) {
        conn.send(5, frame);
        sent++;
        await nextLoop();
      }
      assert.equal(conn.writable, false, `unwritable after ${sent} frames of 256 KiB`);
      assert.equal(blocked, 1);
      assert.ok(conn.bufferedBytes >= 256 * 1024, `bufferedBytes ${conn.bufferedBytes} reported`);
      conn.send(6, Buffer.from('still accepted while blocked'));
      const drained = once(conn, 'drain');
      remote.resume();
      await drained;
      assert.equal(conn.writable, true);
      await conn.waitForDrain();
      await eventually(
        'every frame reaches the server',
        () => server.frames.length - framesBefore === sent + 1,
        20_000,
      );
      assert.equal(server.frames.at(-1)?.type, 6);
    } finally {
      await local.close();
    }
  });
});
