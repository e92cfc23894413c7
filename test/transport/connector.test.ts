// The Connector: one shared attempt per address, fail-fast SiloUnavailableError
// while an address is unreachable, back-off between attempts, reconnection after
// the listener comes back on the same port, markDead and close.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { once } from 'node:events';
import { ConfigurationError, SiloUnavailableError } from '../../src/errors.ts';
import { Connector, parseAddress } from '../../src/transport/connector.ts';
import { listen, type Listener } from '../../src/transport/listener.ts';
import { resolveTransportLimits, transportDefaults } from '../../src/transport/limits.ts';
import { eventually } from '../helpers.ts';
import { collector, recordingLogger } from './support.ts';

const hello = { clusterId: 'test', address: 'client', generation: 1, role: 'client' } as const;

function startListener(port = 0): Promise<Listener> {
  return listen({
    port,
    hello: { clusterId: 'test', generation: 1, role: 'silo' },
    handler: collector({ echo: true }),
    onConnection: () => {},
  });
}

/** A loopback port nobody listens on (bound, then released). */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  return typeof address === 'object' && address !== null ? address.port : 0;
}

describe('connector', () => {
  it('shares one attempt among concurrent callers and then one connection', async () => {
    const listener = await startListener();
    const connector = new Connector({ hello, handler: collector() });
    try {
      const all = await Promise.all([1, 2, 3, 4, 5].map(() => connector.get(listener.address)));
      assert.ok(all.every((c) => c === all[0]));
      assert.equal(connector.status(listener.address).attempts, 1);
      assert.equal(connector.status(listener.address).state, 'open');
      assert.equal(connector.peek(listener.address), all[0]);
    } finally {
      await connector.close();
      await listener.close();
    }
  });

  it('fails fast with SiloUnavailableError while nothing listens, until the next attempt is due', async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const log = recordingLogger();
    const connector = new Connector({
      hello,
      handler: collector(),
      logger: log,
      limits: { backoffMinMs: 60_000, backoffMaxMs: 60_000 },
    });
    try {
      await assert.rejects(
        connector.get(address),
        (e: unknown) => e instanceof SiloUnavailableError && /ECONNREFUSED/.test(e.message),
      );
      assert.equal(connector.status(address).state, 'failing');
      assert.equal(connector.status(address).attempts, 1);
      // The next calls are answered without touching the network: no new attempt is made.
      for (let i = 0; i < 10; i++) {
        await assert.rejects(
          connector.get(address),
          (e: unknown) =>
            e instanceof SiloUnavailableError &&
            e.code === 'GRANARY_SILO_UNAVAILABLE' &&
            /unreachable .*ECONNREFUSED.*next attempt in \d+ ms/.test(e.message),
        );
      }
      assert.equal(connector.status(address).attempts, 1);
      await log.waitFor(
        'info',
        new RegExp(`cannot connect to ${address.replace(/\./g, '\\.')} \\(attempt 1\\): .*ECONNREFUSED`),
      );
    } finally {
      await connector.close();
    }
  });

  it('backs off exponentially between attempts, capped at backoffMaxMs', async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const connector = new Connector({
      hello,
      handler: collector(),
      random: () => 0.5,
      limits: { backoffMinMs: 20, backoffMaxMs: 70 },
    });
    try {
      const delays: number[] = [];
      for (let attempt = 1; attempt <= 4; attempt++) {
        await eventually(`attempt ${attempt} is due`, () => connector.status(address).retryInMs === 0);
        await assert.rejects(connector.get(address), SiloUnavailableError);
        const status = connector.status(address);
        assert.equal(status.failures, attempt);
        assert.ok(status.retryInMs <= status.backoffMs);
        delays.push(status.backoffMs);
      }
      // Jitter is ±25% around the doubling value; random() = 0.5 puts it in the middle.
      assert.deepEqual(delays, [20, 40, 70, 70]);
    } finally {
      await connector.close();
    }
  });

  it('reconnects after the listener restarts on the same port, in the background', async () => {
    let listener = await startListener();
    const { port, address } = listener;
    const frames = collector();
    const connector = new Connector({ hello, handler: frames, limits: { backoffMinMs: 10, backoffMaxMs: 100 } });
    try {
      const first = await connector.get(address);
      await listener.close();
      const info = await first.closed;
      assert.equal(info.kind, 'peer');
      await eventually('the connector notices the drop', () => connector.peek(address) === undefined);
      listener = await startListener(port);
      await eventually('the connector reconnects by itself', () => connector.peek(address)?.state === 'open', 10_000);
      const second = await connector.get(address);
      assert.notEqual(second, first);
      second.send(3, Buffer.from('after restart'));
      await eventually('the echo arrives over the new connection', () =>
        frames.frames.some((f) => f.body.toString() === 'after restart'),
      );
      assert.equal(connector.status(address).failures, 0);
    } finally {
      await connector.close();
      await listener.close();
    }
  });

  it('markDead closes the connection and stops trying for good; forget starts afresh', async () => {
    const listener = await startListener();
    const connector = new Connector({ hello, handler: collector() });
    try {
      const conn = await connector.get(listener.address);
      connector.markDead(listener.address);
      const info = await conn.closed;
      assert.equal(info.kind, 'local');
      assert.equal(connector.status(listener.address).state, 'dead');
      await assert.rejects(connector.get(listener.address), /is dead/);
      assert.equal(connector.peek(listener.address), undefined);
      connector.forget(listener.address);
      const again = await connector.get(listener.address);
      assert.equal(again.state, 'open');
    } finally {
      await connector.close();
      await listener.close();
    }
  });

  it('close() closes every connection; later calls fail', async () => {
    const listener = await startListener();
    const connector = new Connector({ hello, handler: collector() });
    const conn = await connector.get(listener.address);
    await connector.close();
    assert.equal(conn.state, 'closed');
    await assert.rejects(connector.get(listener.address), SiloUnavailableError);
    assert.throws(() => conn.send(1, Buffer.alloc(1)), SiloUnavailableError);
    await listener.close();
    assert.equal(listener.connections.size, 0);
  });

  it('rejects addresses that are not host:port', async () => {
    const connector = new Connector({ hello, handler: collector() });
    for (const bad of ['nope', ':80', 'host:', 'host:0', 'host:70000', 'host:1.5']) {
      await assert.rejects(connector.get(bad), ConfigurationError, bad);
    }
    assert.deepEqual(parseAddress('[::1]:8080'), { host: '::1', port: 8080 });
    assert.deepEqual(parseAddress('10.0.0.1:11111'), { host: '10.0.0.1', port: 11111 });
    await connector.close();
  });
});

describe('transport limits', () => {
  it('has documented defaults', () => {
    assert.deepEqual(
      { ...transportDefaults },
      {
        maxFrameBytes: 16 * 1024 * 1024,
        handshakeTimeoutMs: 5000,
        connectTimeoutMs: 3000,
        backoffMinMs: 50,
        backoffMaxMs: 5000,
        writeHighWaterMark: 1024 * 1024,
        maxQueuedBytes: 64 * 1024 * 1024,
        flushBytes: 16 * 1024,
        closeTimeoutMs: 2000,
      },
    );
    assert.deepEqual(resolveTransportLimits({ maxFrameBytes: 1024 }), { ...transportDefaults, maxFrameBytes: 1024 });
  });

  it('names the option that is wrong', () => {
    const cases: [object, RegExp][] = [
      [{ maxFrameBytes: 0 }, /maxFrameBytes must be an integer from 1 to 4294967295 \(bytes\), got 0/],
      [{ maxFrameBytes: 2 ** 32 }, /maxFrameBytes/],
      [{ handshakeTimeoutMs: -5 }, /handshakeTimeoutMs .* got -5/],
      [{ connectTimeoutMs: 'soon' }, /connectTimeoutMs .* got soon/],
      [{ backoffMinMs: 1.5 }, /backoffMinMs/],
      [{ backoffMinMs: 500, backoffMaxMs: 100 }, /backoffMinMs \(500\) must not exceed backoffMaxMs \(100\)/],
      [{ maxFramBytes: 10 }, /unknown transport option maxFramBytes/],
    ];
    for (const [limits, message] of cases) {
      assert.throws(
        () => resolveTransportLimits(limits),
        (e: unknown) => e instanceof ConfigurationError && message.test(e.message),
        JSON.stringify(limits),
      );
    }
    assert.throws(
      () => new Connector({ hello, handler: collector(), limits: { connectTimeoutMs: 0 } }),
      ConfigurationError,
    );
  });
});
