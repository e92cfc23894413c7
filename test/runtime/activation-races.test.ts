// An activation dropped while the directory decides on it (a stop that timed
// out, an abort): whatever the directory answers later must neither crash the
// process nor leave a directory entry behind.

import { describe, it, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { Grain, SiloStoppedError } from 'granary';
import { Activation, type ActivationHost } from '../../src/runtime/activation.ts';
import { GrainTypes } from '../../src/runtime/grain-types.ts';
import { systemClock } from '../../src/clock.ts';

class Plain extends Grain {
  hello(): string {
    return 'hi';
  }
}

interface Recorder {
  host: ActivationHost;
  unregistered: Activation[];
  answer: { resolve(winner: string | undefined): void; reject(err: unknown): void };
}

/** A host whose directory answers when the test says so. */
function recorder(): Recorder {
  const unregistered: Activation[] = [];
  let answer!: Recorder['answer'];
  const pending = new Promise<string | undefined>((resolve, reject) => (answer = { resolve, reject }));
  const noop = (): void => {};
  const host = {
    siloInfo: { address: '127.0.0.1:1' },
    logger: { warn: noop, info: noop, debug: noop, error: noop },
    clock: systemClock,
    clustered: true,
    calls: { succeed: noop, fail: noop },
    registerActivation: () => pending,
    unregister: (a: Activation) => unregistered.push(a),
    redispatch: noop,
    incomingFilters: () => undefined,
    tracer: undefined,
    activated: noop,
    activationFailed: noop,
    deactivated: noop,
    activationLost: noop,
  } as unknown as ActivationHost;
  return { host, unregistered, answer };
}

function activation(host: ActivationHost): Activation {
  const type = new GrainTypes(1).register(Plain);
  return new Activation(host, { type: type.name, key: 'k' }, `${type.name}/k`, type, undefined, 1);
}

describe('an activation dropped while it registers', () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => void unhandled.push(e);
  process.on('unhandledRejection', onUnhandled);
  afterEach(() => {
    unhandled.length = 0;
  });

  const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

  it('unregisters when the directory then says it won', async () => {
    const r = recorder();
    const a = activation(r.host);
    a.activate();
    a.forceInvalidate(new SiloStoppedError('stopping'));
    r.answer.resolve(undefined);
    await settle();
    assert.deepEqual(unhandled, []);
    assert.deepEqual(r.unregistered, [a], 'the entry it won must not outlive it');
    assert.equal(a.registered, false);
  });

  it('stays dropped when the directory then names another winner', async () => {
    const r = recorder();
    const a = activation(r.host);
    a.activate();
    a.forceInvalidate(new SiloStoppedError('stopping'));
    r.answer.resolve('127.0.0.1:2');
    await settle();
    assert.deepEqual(unhandled, []);
    assert.deepEqual(r.unregistered, []);
  });

  it('stays dropped when the directory then fails', async () => {
    const r = recorder();
    const a = activation(r.host);
    a.activate();
    a.forceInvalidate(new SiloStoppedError('stopping'));
    r.answer.reject(new Error('directory unreachable'));
    await settle();
    assert.deepEqual(unhandled, []);
  });
});
