// Stream ids as one string (the rendezvous grain's key): every id round-trips,
// and two different ids never share a key, whatever '/' and '%' they hold.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseStreamKey, streamKey, type StreamId } from '../../src/streams/types.ts';

describe('stream keys', () => {
  it('round-trip any id and keep different ids apart', () => {
    const ids: StreamId[] = [
      { provider: 'events', namespace: 'chat', key: 'room-1' },
      { provider: 'events', namespace: 'chat/room', key: '1' },
      { provider: 'events', namespace: 'chat', key: 'room/1' },
      { provider: 'ev%2Fents', namespace: 'a%b', key: '%2F' },
      { provider: 'events', namespace: 'chat', key: '' },
    ];
    const keys = ids.map(streamKey);
    assert.equal(new Set(keys).size, ids.length);
    for (const [i, id] of ids.entries()) assert.deepEqual(parseStreamKey(keys[i] as string), id);
    assert.equal(streamKey(ids[0] as StreamId), 'events/chat/room-1');
    assert.equal(parseStreamKey('only/two'), undefined);
  });
});
