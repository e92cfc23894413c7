// Failures say on the wire what kind they are, so a caller can tell "try
// again" from "your bug" without knowing the error's class.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  ForwardLimitError,
  GranaryError,
  Grain,
  OverloadedError,
  SiloStoppedError,
  SiloUnavailableError,
  UnknownMethodError,
  grain,
  isTransient,
} from 'granary';
import { TestCluster } from 'granary/testing';
import {
  Frame,
  ResponseStatus,
  rejectionOf,
  rejectionStatus,
  requestArgs,
  requestHeadOf,
  responseId,
  responseStatus,
  responseValue,
} from '../../src/messaging/protocol.ts';
import { Connector, type Connection } from '../../src/transport/index.ts';
import { silentLogger } from '../../src/observability/logger.ts';

@grain('statusProbe')
class StatusProbe extends Grain {
  async ok(): Promise<number> {
    return 1;
  }
  async outOfStock(): Promise<never> {
    throw new GranaryError('no more', 'OUT_OF_STOCK');
  }
  async busy(): Promise<never> {
    throw new OverloadedError('the warehouse is busy');
  }
}

describe('response statuses', () => {
  it('are picked from the error: application, transient, overloaded, forward limit, unrecoverable', () => {
    assert.equal(rejectionStatus(new Error('x')), ResponseStatus.Error);
    assert.equal(rejectionStatus(new GranaryError('x', 'OUT_OF_STOCK')), ResponseStatus.Error);
    assert.equal(rejectionStatus(new SiloStoppedError('x')), ResponseStatus.Transient);
    assert.equal(rejectionStatus(new SiloUnavailableError('x')), ResponseStatus.Transient);
    assert.equal(rejectionStatus(new OverloadedError('x')), ResponseStatus.Overloaded);
    assert.equal(rejectionStatus(new ForwardLimitError('x')), ResponseStatus.ForwardLimit);
    assert.equal(rejectionStatus(new UnknownMethodError('x')), ResponseStatus.Unrecoverable);
  });

  it('a status the error does not carry (a peer whose class was lost) gives the class of the status', () => {
    const e = rejectionOf(ResponseStatus.Overloaded, new Error('shed'));
    assert.ok(e instanceof OverloadedError && isTransient(e));
    assert.equal(e.message, 'shed');
    const u = rejectionOf(ResponseStatus.Unrecoverable, new Error('bad call'));
    assert.ok(u instanceof GranaryError && !isTransient(u));
    const same = new UnknownMethodError('y');
    assert.equal(rejectionOf(ResponseStatus.Unrecoverable, same), same);
  });

  it('a gateway answers each failure with its status', async () => {
    const c = await TestCluster.start({ silos: 1, grains: [StatusProbe] });
    const responses = new Map<number, { status: number; value: unknown }>();
    const waiting = new Map<number, () => void>();
    const connector = new Connector({
      hello: { clusterId: c.clusterId, address: 'raw-client', generation: Date.now(), role: 'client' },
      handler: {
        onFrame(type: number, buf: Buffer, start: number, end: number): boolean {
          if (type !== Frame.Response) return true;
          const id = responseId(buf, start, end);
          responses.set(id, { status: responseStatus(buf, start), value: responseValue(buf, undefined, start, end) });
          waiting.get(id)?.();
          return true;
        },
      },
      logger: silentLogger(),
      onConnection: () => {},
    });
    try {
      const gateway = c.silos[0]?.cluster?.gatewayAddress as string;
      const conn: Connection = await connector.get(gateway);
      let seq = 0;
      const call = (target: string, method: string): Promise<{ status: number; value: unknown }> => {
        const id = ++seq;
        const got = new Promise<void>((r) => waiting.set(id, r));
        conn.sendHead(Frame.Request, requestHeadOf(id, 0, target, undefined, method, 5000, null, 0), requestArgs([]));
        return got.then(() => responses.get(id) as { status: number; value: unknown });
      };
      assert.equal((await call('statusProbe/a', 'ok')).status, ResponseStatus.Ok);
      const app = await call('statusProbe/a', 'outOfStock');
      assert.equal(app.status, ResponseStatus.Error);
      assert.equal((app.value as GranaryError).code, 'OUT_OF_STOCK');
      assert.equal((await call('statusProbe/a', 'busy')).status, ResponseStatus.Overloaded);
      assert.equal((await call('statusProbe/a', 'noSuchMethod')).status, ResponseStatus.Unrecoverable);
      assert.equal((await call('noSuchType/a', 'ok')).status, ResponseStatus.Unrecoverable);
    } finally {
      await connector.close();
      await c.stop();
    }
  });
});
