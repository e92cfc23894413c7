// Bad input on the wire, sent to a live silo's ports: each bad connection is
// closed, the silo logs the peer, and it goes on serving its clients.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { Grain, grain } from 'granary';
import { TestCluster } from 'granary/testing';
import { encodeFrame, encodeHello, makeHello, FRAME_HELLO } from '../../src/transport/index.ts';

@grain('wireEcho')
class WireEcho extends Grain {
  async echo(s: string): Promise<string> {
    return s;
  }
}

function open(address: string): Promise<Socket> {
  const [host, port] = address.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    const s = connect(Number(port), host, () => resolve(s));
    s.once('error', reject);
  });
}

/** Resolves when the silo closes the socket (bounded). */
function closedByPeer(s: Socket, ms = 8000): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('the silo kept a bad connection open')), ms);
    s.on('error', () => undefined);
    s.resume(); // read what the silo says (a REJECT), so its close is seen
    s.once('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

describe('bad input on the wire', () => {
  it('closes only the offending connection, and the silo keeps serving', async () => {
    const c = await TestCluster.start({
      silos: 1,
      grains: [WireEcho],
      siloOptions: { transport: { handshakeTimeoutMs: 500 } },
    });
    try {
      const silo = c.silos[0];
      assert.ok(silo !== undefined);
      const targets = [silo.info.address, silo.cluster?.gatewayAddress as string];
      const hello = (clusterId: string, protocol = 1): Buffer =>
        encodeFrame(
          FRAME_HELLO,
          encodeHello(makeHello({ clusterId, address: '127.0.0.1:9', generation: 1, role: 'silo', protocol })),
        );
      const attacks: Array<[string, (s: Socket) => void]> = [
        ['random bytes', (s) => s.write(randomBytes(4096))],
        ['a truncated frame', (s) => s.end(Buffer.from([0, 0, 0, 50, 1, 2, 3]))],
        ['a huge length prefix', (s) => s.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1]))],
        ['another cluster id', (s) => s.write(hello('someone-else'))],
        ['another protocol version', (s) => s.write(hello(c.clusterId, 99))],
        ['nothing at all', () => undefined],
      ];
      for (const target of targets) {
        for (const [name, attack] of attacks) {
          const s = await open(target);
          const closed = closedByPeer(s);
          attack(s);
          await closed.catch((e: unknown) => assert.fail(`${name} on ${target}: ${(e as Error).message}`));
          assert.equal(
            await c.client.getGrain(WireEcho, 'still').echo(name),
            name,
            `the silo stopped serving after ${name}`,
          );
        }
      }
    } finally {
      await c.stop();
    }
  });
});
