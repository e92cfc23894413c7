import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ProtocolError } from '../../src/errors.ts';
import { GrainDirectory, directoryHandlers } from '../../src/directory/directory.ts';
import { Ring } from '../../src/membership/ring.ts';
import type { ActiveSilo, ClusterView } from '../../src/membership/service.ts';
import { encodeSystemCall, encodeSystemResult } from '../../src/messaging/protocol.ts';
import {
  checkSystemCallResult,
  checkedSystemCaller,
  decodeSystemCall,
  decodeSystemResult,
  dispatchSystemCall,
  systemCalls,
  type RawSystemCall,
  type SystemCallHandlers,
  type WireClusterStatus,
} from '../../src/messaging/system-calls.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { eventually } from '../helpers.ts';

const A = '127.0.0.1:1001';
const B = '127.0.0.1:1002';

function viewOf(...addresses: string[]): ClusterView {
  const active = new Map<string, ActiveSilo>(
    addresses.map((address) => [address, { id: `${address}@1`, address, generation: 1, gatewayAddress: null }]),
  );
  const ring = new Ring(addresses);
  return { version: 1, active, ring, directoryRing: ring, dead: new Set(), leaving: new Set() };
}

/** The dashboard's calls, which these tests do not make. */
function noDashboard(): never {
  throw new Error('no dashboard in this test');
}

/** Handlers of one silo: its directory's, and records of the others. */
function handlersFor(dir: GrainDirectory, seen: string[]): SystemCallHandlers {
  return {
    ...directoryHandlers(dir),
    ping: () => true,
    refresh: () => {
      seen.push('refresh');
      return null;
    },
    probe: ([target, timeoutMs]) => {
      seen.push(`probe ${target} ${timeoutMs}`);
      return true;
    },
    load: ([activations], caller) => {
      seen.push(`load ${activations} from ${String(caller)}`);
      return null;
    },
    'reminder.changed': ([grainId, name]) => {
      seen.push(`reminder ${grainId} ${name}`);
      return null;
    },
    'cluster.status': (_args, caller) => {
      seen.push(`status for ${String(caller)}`);
      const member: WireClusterStatus[1][number] = [A, 1, 'Active', null, 'host-a', 10, 20, [[`${B}@1`, 15]]];
      return [A, [member], [[A, 3]]];
    },
    'dashboard.silo': noDashboard,
    'dashboard.cluster': noDashboard,
    'dashboard.grain': noDashboard,
    'dashboard.writeState': noDashboard,
    'dashboard.local': noDashboard,
    'dashboard.deactivate': noDashboard,
  };
}

/**
 * Two silos' system calls over the codec, as the cluster layer carries them:
 * each call and each result is encoded into a frame body and decoded again.
 */
function wire(handlers: Map<string, SystemCallHandlers>, from: string): RawSystemCall {
  return async (address, name, args) => {
    const call = decodeSystemCall(encodeSystemCall(7, name, args));
    const h = handlers.get(address);
    assert.ok(h !== undefined, `no silo at ${address}`);
    let body: Uint8Array;
    try {
      body = encodeSystemResult(call.seq, true, await dispatchSystemCall(h, call.name, call.args, from));
    } catch (e) {
      body = encodeSystemResult(call.seq, false, e);
    }
    const result = decodeSystemResult(body);
    assert.equal(result.seq, 7);
    if (!result.ok) throw result.value;
    return result.value;
  };
}

/** A grain id whose directory entry `owner` holds in `view`. */
function grainOwnedBy(view: ClusterView, owner: string): string {
  for (let i = 0; ; i++) if (view.ring.ownerOf(`counter/${i}`) === owner) return `counter/${i}`;
}

describe('system calls', () => {
  it('carry directory calls between two silos with typed arguments and results', async () => {
    const handlers = new Map<string, SystemCallHandlers>();
    const seenA: string[] = [];
    const seenB: string[] = [];
    const refresh = async (): Promise<void> => {};
    const dirA = new GrainDirectory(A, { call: checkedSystemCaller(wire(handlers, A)), refresh }, silentLogger());
    const dirB = new GrainDirectory(B, { call: checkedSystemCaller(wire(handlers, B)), refresh }, silentLogger());
    handlers.set(A, handlersFor(dirA, seenA));
    handlers.set(B, handlersFor(dirB, seenB));
    const view = viewOf(A, B);
    const noDuplicates = (): void => assert.fail('no duplicate expected');
    await dirA.viewChanged(view, [], noDuplicates);
    await dirB.viewChanged(view, [], noDuplicates);

    const grain = grainOwnedBy(view, B);
    // A registers an activation of its own; B owns the entry and keeps it.
    assert.deepEqual(await dirA.register(grain, { address: A, activation: 3 }), { address: A, activation: 3 });
    assert.equal(dirB.partitionSize, 1);
    // First writer wins: B's own activation loses to A's.
    assert.deepEqual(await dirB.register(grain, { address: B, activation: 1 }), { address: A, activation: 3 });
    assert.deepEqual(await dirA.lookup(grain), { address: A, activation: 3 });
    dirA.unregister(grain, { address: A, activation: 3 });
    await eventually('the entry to leave B after A unregistered it', () => dirB.partitionSize === 0);
    assert.equal(await dirA.lookup(grain), undefined);

    // The calls outside the directory reach their handlers with their arguments and the caller.
    const call = checkedSystemCaller(wire(handlers, A));
    assert.equal(await call(B, 'ping', []), true);
    assert.equal(await call(B, 'probe', [A, 250]), true);
    assert.equal(await call(B, 'load', [42]), null);
    assert.equal(await call(B, 'reminder.changed', ['counter/a', 'daily']), null);
    assert.deepEqual(await call(B, 'cluster.status', []), [
      A,
      [[A, 1, 'Active', null, 'host-a', 10, 20, [[`${B}@1`, 15]]]],
      [[A, 3]],
    ]);
    assert.deepEqual(seenB, [`probe ${A} 250`, `load 42 from ${A}`, 'reminder counter/a daily', `status for ${A}`]);
  });

  it('refuse malformed arguments off the wire with a ProtocolError naming the call and the field', async () => {
    const dir = new GrainDirectory(
      A,
      { call: checkedSystemCaller(async () => null), refresh: async () => {} },
      silentLogger(),
    );
    const h = handlersFor(dir, []);
    await assert.rejects(
      dispatchSystemCall(h, 'dir.register', ['counter/a', A, 'x'], B),
      (e: unknown) => e instanceof ProtocolError && /dir\.register/.test(e.message) && /activation/.test(e.message),
    );
    await assert.rejects(
      dispatchSystemCall(h, 'dir.lookup', [], B),
      (e: unknown) =>
        e instanceof ProtocolError && /dir\.lookup/.test(e.message) && /1 argument \(grain\)/.test(e.message),
    );
    await assert.rejects(
      dispatchSystemCall(
        h,
        'dir.handoff',
        [
          [
            ['counter/a', A, 1],
            ['counter/b', A, -1],
          ],
        ],
        B,
      ),
      (e: unknown) =>
        e instanceof ProtocolError &&
        /dir\.handoff/.test(e.message) &&
        /argument entries\[1\]\[2\] \(activation\)/.test(e.message),
    );
    await assert.rejects(
      dispatchSystemCall(h, 'probe', [A, 0], B),
      (e: unknown) => e instanceof ProtocolError && /probe/.test(e.message) && /timeoutMs/.test(e.message),
    );
    await assert.rejects(
      dispatchSystemCall(h, 'load', 'many', B),
      (e: unknown) => e instanceof ProtocolError && /load/.test(e.message),
    );
    // Nothing reached the directory.
    assert.equal(dir.partitionSize, 0);
  });

  it('refuse an unknown call name with a ProtocolError naming it', async () => {
    const dir = new GrainDirectory(
      A,
      { call: checkedSystemCaller(async () => null), refresh: async () => {} },
      silentLogger(),
    );
    const h = handlersFor(dir, []);
    for (const name of ['dir.drop', 'toString', '__proto__']) {
      await assert.rejects(
        dispatchSystemCall(h, name, [], B),
        (e: unknown) => e instanceof ProtocolError && e.message.startsWith(`unknown system call '${name}'`),
        `call ${name}`,
      );
    }
    await assert.rejects(
      dispatchSystemCall(h, 42, [], B),
      (e: unknown) => e instanceof ProtocolError && e.message.startsWith('unknown system call 42'),
    );
  });

  it('refuse a malformed result at the caller with a ProtocolError naming the call', async () => {
    const liar: RawSystemCall = async (_address, name) => (name === 'dir.lookup' ? [A] : 'yes');
    const call = checkedSystemCaller(liar);
    await assert.rejects(
      call(B, 'dir.lookup', ['counter/a']),
      (e: unknown) => e instanceof ProtocolError && /result of system call dir\.lookup/.test(e.message),
    );
    await assert.rejects(
      call(B, 'ping', []),
      (e: unknown) => e instanceof ProtocolError && /ping/.test(e.message) && /must be true/.test(e.message),
    );
    assert.deepEqual(checkSystemCallResult('dir.registerMany', [[A, 1]]), [[A, 1]]);
    assert.throws(
      () => checkSystemCallResult('cluster.status', [A, [[A, 1, 'Active', null, 'h', 10, -20, []]], []]),
      (e: unknown) =>
        e instanceof ProtocolError && /the result\[1\] \(members\)\[0\]\[6\] \(iAmAliveAt\)/.test(e.message),
    );
  });

  it('refuse frames that are not [seq, name, args] or [seq, ok, value]', () => {
    assert.throws(() => decodeSystemCall(encodeSystemCall(-1, 'ping', [])), ProtocolError);
    assert.throws(() => decodeSystemCall(Uint8Array.of(0xff, 0xff, 0xff)), ProtocolError);
    assert.throws(() => decodeSystemResult(encodeSystemCall(1, 'ping', [])), ProtocolError);
  });

  it('keep the wire names of every call (silos of two versions must understand each other)', () => {
    assert.deepEqual(Object.keys(systemCalls).sort(), [
      'cluster.status',
      'dashboard.cluster',
      'dashboard.deactivate',
      'dashboard.grain',
      'dashboard.local',
      'dashboard.silo',
      'dashboard.writeState',
      'dir.handoff',
      'dir.handoffAll',
      'dir.lookup',
      'dir.register',
      'dir.registerMany',
      'dir.unregister',
      'load',
      'ping',
      'probe',
      'refresh',
      'reminder.changed',
    ]);
  });
});
