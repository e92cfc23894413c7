import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Grain, grain, type GrainRef } from 'granary';
import { TestCluster, waitFor } from 'granary/testing';

interface ChatObserver {
  onMessage(m: string): Promise<void> | void;
}

@grain('chatRoom')
class ChatRoom extends Grain {
  readonly members: GrainRef<ChatObserver>[] = [];
  async join(o: GrainRef<ChatObserver>): Promise<string> {
    this.members.push(o);
    return this.silo.address;
  }
  async say(m: string): Promise<number> {
    const r = await Promise.allSettled(this.members.map((o) => o.onMessage(m)));
    return r.filter((x) => x.status === 'fulfilled').length;
  }
}

describe('observers', () => {
  it('reach a client through its gateway from grains on any silo, until disposed', async () => {
    const c = await TestCluster.start({ silos: 3, grains: [ChatRoom] });
    try {
      const got: string[] = [];
      const obs = c.client.createObserver<ChatObserver>({ onMessage: (m: string) => void got.push(m) });
      // Rooms on every silo, so some live away from the client's gateway.
      const rooms = await Promise.all(
        Array.from({ length: 12 }, async (_, i) => {
          const room = c.client.getGrain(ChatRoom, `room-${i}`);
          return { room, silo: await room.join(obs) };
        }),
      );
      assert.equal(new Set(rooms.map((r) => r.silo)).size, 3);
      for (const { room } of rooms) assert.equal(await room.say(`hi from ${room.id.key}`), 1);
      await waitFor('every message delivered', () => got.length === 12);
      obs.dispose();
      // A disposed observer refuses calls: the room's call to it fails.
      assert.equal(await rooms[0]?.room.say('after dispose'), 0);
    } finally {
      await c.stop();
    }
  });
});
