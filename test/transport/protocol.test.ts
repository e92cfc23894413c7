// Bad input on the wire: each case closes only the offending connection, with a
// warn line naming the peer, while a good connection to the same listener keeps
// working in the same test. Also the client side facing a broken server.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { SiloUnavailableError } from '../../src/errors.ts';
import type { Connection } from '../../src/transport/connection.ts';
import { Connector } from '../../src/transport/connector.ts';
import { encodeFrame } from '../../src/transport/framing.ts';
import { FRAME_HELLO, PROTOCOL_VERSION, type HelloInit } from '../../src/transport/handshake.ts';
import { listen, type Listener } from '../../src/transport/listener.ts';
import { eventually } from '../helpers.ts';
import {
  closedWithin,
  collector,
  helloFrame,
  rawSocket,
  recordingLogger,
  seededBytes,
  seenAs,
  type RecordingLogger,
} from './support.ts';

const HANDSHAKE_MS = 300;

function clientHello(address: string, extra: Partial<HelloInit> = {}): HelloInit {
  return { clusterId: 'test', address, generation: 1, role: 'client', ...extra };
}

describe('protocol violations', () => {
  let log: RecordingLogger;
  let listener: Listener;
  let good: Connector;
  let goodConn: Connection;
  const goodFrames = collector();

  before(async () => {
    log = recordingLogger();
    listener = await listen({
      port: 0,
      hello: { clusterId: 'test', generation: 1, role: 'silo' },
      logger: log,
      limits: { handshakeTimeoutMs: HANDSHAKE_MS },
      handler: collector({ echo: true, reject: [200], throwOn: [201] }),
      onConnection: () => {},
    });
    good = new Connector({ hello: clientHello('good-client'), handler: goodFrames });
    goodConn = await good.get(listener.address);
  });

  after(async () => {
    await good.close();
    await listener.close();
  });

  /** The good connection still round-trips a frame through the listener. */
  async function goodStillServed(what: string): Promise<void> {
    const before = goodFrames.frames.length;
    const marker = Buffer.from(`after ${what}`);
    goodConn.send(1, marker);
    await eventually(`the good connection is still served after ${what}`, () => goodFrames.frames.length > before);
    assert.ok(goodFrames.frames[before]?.body.equals(marker));
    assert.equal(goodConn.state, 'open');
  }

  /** Sends `bytes` on a raw socket; expects the listener to drop it and to log `pattern` naming the peer. */
  async function expectDropped(
    what: string,
    bytes: Buffer | undefined,
    pattern: RegExp,
    prelude?: (s: Socket) => Promise<void>,
  ): Promise<void> {
    const socket = await rawSocket(listener.port);
    const peer = seenAs(socket);
    if (prelude !== undefined) await prelude(socket);
    if (bytes !== undefined) socket.write(bytes);
    await closedWithin(socket, what);
    const entry = await log.waitFor('warn', pattern);
    assert.match(entry.message, /^dropped connection with /, `${what}: the line says what happened`);
    assert.ok(
      entry.message.includes(prelude === undefined ? peer : 'raw-peer') && entry.fields['remote'] === peer,
      `${what}: the line names the peer (${peer}): ${entry.message}`,
    );
    socket.destroy();
    await goodStillServed(what);
  }

  /** Handshakes by hand as 'raw-peer' and waits for the listener's HELLO. */
  async function handshake(socket: Socket): Promise<void> {
    socket.write(helloFrame(clientHello('raw-peer')));
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    assert.equal(chunk.readUInt8(4), FRAME_HELLO, 'the listener answers with its HELLO');
  }

  it('random bytes', async () => {
    const bytes = seededBytes(42, 512);
    // Whatever the seed, random bytes fail one of these checks.
    await expectDropped(
      'random bytes',
      bytes,
      /frame length \d+ exceeds|frame type \d+ before the handshake|malformed HELLO|no handshake/,
    );
  });

  it('a length prefix of 0xFFFFFFFF, before and after the handshake, refused without waiting for the body', async () => {
    await expectDropped(
      'a huge length before the handshake',
      Buffer.from([0xff, 0xff, 0xff, 0xff]),
      /frame length 4294967295 exceeds maxFrameBytes \(65536\)/,
    );
    await expectDropped(
      'a huge length after the handshake',
      Buffer.from([0xff, 0xff, 0xff, 0xff, 1]),
      /frame length 4294967295 exceeds maxFrameBytes \(16777216\)/,
      handshake,
    );
  });

  it('a truncated frame followed by a close', async () => {
    const truncated = Buffer.concat([Buffer.from([0, 0, 0, 100, 9]), Buffer.alloc(10)]);
    await expectDropped(
      'a truncated frame',
      undefined,
      /peer hung up inside a frame \(15 bytes of it received\)/,
      async (socket) => {
        await handshake(socket);
        socket.end(truncated);
      },
    );
  });

  it('a frame before the handshake, and a HELLO that is not one', async () => {
    await expectDropped(
      'a frame before the handshake',
      encodeFrame(5, Buffer.from('hi')),
      /frame type 5 before the handshake/,
    );
    await expectDropped(
      'a malformed HELLO',
      encodeFrame(FRAME_HELLO, Buffer.from('not json')),
      /malformed HELLO: not JSON/,
    );
    await expectDropped(
      'a HELLO without a role',
      encodeFrame(
        FRAME_HELLO,
        Buffer.from(JSON.stringify({ protocol: 1, clusterId: 'test', address: 'x', generation: 1 })),
      ),
      /malformed HELLO: role/,
    );
  });

  it('no handshake within handshakeTimeoutMs', async () => {
    await expectDropped('silence', undefined, new RegExp(`no handshake within ${HANDSHAKE_MS} ms`));
    await expectDropped(
      'half a HELLO',
      helloFrame(clientHello('slow')).subarray(0, 10),
      new RegExp(`no handshake within ${HANDSHAKE_MS} ms \\(10 bytes of an unfinished frame\\)`),
    );
  });

  it('a frame type the handler rejects (by returning false, by throwing)', async () => {
    for (const [type, pattern] of [
      [200, /frame type 200 rejected by the handler/],
      [201, /frame type 201 rejected: no handler for frame type 201/],
    ] as const) {
      const clientLog = recordingLogger();
      const bad = new Connector({ hello: clientHello(`bad-client-${type}`), handler: collector(), logger: clientLog });
      try {
        const conn = await bad.get(listener.address);
        conn.send(type, Buffer.from('unknown'));
        const info = await conn.closed;
        assert.equal(info.kind, 'peer', 'the client sees the listener hang up');
        const entry = await log.waitFor('warn', pattern);
        assert.equal(entry.message, `dropped connection with bad-client-${type}: ${entry.fields['reason'] as string}`);
        assert.match(String(entry.fields['remote']), /^127\.0\.0\.1:\d+$/);
        await goodStillServed(`frame type ${type}`);
      } finally {
        await bad.close();
      }
    }
  });

  it('a HELLO of another cluster or protocol gets a REJECT with the reason, logged on both sides', async () => {
    const cases = [
      { extra: { clusterId: 'other' }, reason: `cluster 'other' != 'test'` },
      {
        extra: { protocol: PROTOCOL_VERSION + 998 },
        reason: `protocol ${PROTOCOL_VERSION + 998} != ${PROTOCOL_VERSION}`,
      },
    ];
    for (const { extra, reason } of cases) {
      const clientLog = recordingLogger();
      const stranger = new Connector({
        hello: clientHello('127.0.0.1:5555', extra),
        handler: collector(),
        logger: clientLog,
      });
      try {
        await assert.rejects(stranger.get(listener.address), (e: unknown) => {
          assert.ok(e instanceof SiloUnavailableError, `a SiloUnavailableError, got ${String(e)}`);
          assert.ok(e.message.includes(reason), `the REJECT reason reaches the client: ${e.message}`);
          return true;
        });
        const served = await log.waitFor(
          'warn',
          new RegExp(`^refused peer 127\\.0\\.0\\.1:5555: ${reason.replace(/[()]/g, '\\$&')}$`),
        );
        assert.equal(served.fields['reason'], reason);
        await clientLog.waitFor(
          'warn',
          new RegExp(`^refused by peer ${listener.address.replace(/\./g, '\\.')}: ${reason}$`),
        );
        await assert.rejects(stranger.get(listener.address), SiloUnavailableError, 'fails fast afterwards');
        await goodStillServed(reason);
      } finally {
        await stranger.close();
      }
    }
  });

  it('a listener that only lets silos in refuses a client', async () => {
    const silosOnly = await listen({
      port: 0,
      hello: { clusterId: 'test', generation: 1, role: 'silo' },
      acceptRoles: ['silo'],
      onConnection: () => {},
    });
    const c = new Connector({ hello: clientHello('a-client'), handler: collector() });
    try {
      await assert.rejects(c.get(silosOnly.address), /role 'client' not accepted here/);
    } finally {
      await c.close();
      await silosOnly.close();
    }
  });
});

describe('a broken server, seen from the connecting side', () => {
  let server: Server;
  let port = 0;
  let answer: (socket: Socket) => void = () => {};

  before(async () => {
    server = createServer((socket) => {
      socket.on('error', () => {});
      socket.resume(); // read, so that the client's hang-up is seen and server.close() can finish
      answer(socket);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const address = server.address();
    port = typeof address === 'object' && address !== null ? address.port : 0;
  });

  after(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  for (const [what, respond, pattern] of [
    [
      'garbage',
      (s: Socket) => s.write(seededBytes(7, 64)),
      /frame length \d+ exceeds|frame type \d+ before the handshake|no handshake/,
    ],
    ['silence', () => {}, new RegExp(`no handshake within ${HANDSHAKE_MS} ms`)],
    ['a hang-up', (s: Socket) => s.destroy(), /hung up during the handshake|ECONNRESET|socket closed/],
  ] as const) {
    it(`gets ${what} instead of a HELLO: the attempt fails with SiloUnavailableError`, async () => {
      answer = respond;
      const clientLog = recordingLogger();
      const c = new Connector({
        hello: clientHello('c'),
        handler: collector(),
        logger: clientLog,
        limits: { handshakeTimeoutMs: HANDSHAKE_MS },
      });
      try {
        await assert.rejects(
          c.get(`127.0.0.1:${port}`),
          (e: unknown) => e instanceof SiloUnavailableError && pattern.test(e.message),
        );
        assert.equal(c.status(`127.0.0.1:${port}`).state, 'failing');
      } finally {
        await c.close();
      }
    });
  }
});
