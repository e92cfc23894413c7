import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Grain, grain, membershipDefaults, Silo, silentLogger, type GrainRef, type ObserverRef } from 'granary';
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

@grain('roomWatcher')
class RoomWatcher extends Grain {
  readonly got: string[] = [];
  #obs: ObserverRef<ChatObserver> | undefined;
  /** Joins the rooms with one observer made here; returns the rooms' silos. */
  async watch(rooms: string[]): Promise<string[]> {
    this.#obs ??= this.createObserver<ChatObserver>({ onMessage: (m: string) => void this.got.push(m) });
    const obs = this.#obs;
    return Promise.all(rooms.map((r) => this.getGrain(ChatRoom, r).join(obs)));
  }
  async received(): Promise<string[]> {
    return [...this.got];
  }
  async leave(): Promise<void> {
    this.deactivateOnIdle();
  }
}

@grain('observerCaller')
class ObserverCaller extends Grain {
  /** Calls the observer once; returns 'ok' or the error's code. */
  async call(o: GrainRef<ChatObserver>): Promise<string> {
    try {
      await o.onMessage('hello');
      return 'ok';
    } catch (e) {
      return String((e as { code?: unknown }).code);
    }
  }
  async where(): Promise<string> {
    return this.silo.address;
  }
}

describe('observers', () => {
  it('a silo makes observers that its grains call; dispose ends them', async () => {
    const silo = await Silo.start({ grains: [ChatRoom], logger: silentLogger() });
    try {
      const got: string[] = [];
      const obs = silo.createObserver<ChatObserver>({ onMessage: (m: string) => void got.push(m) });
      const room = silo.getGrain(ChatRoom, 'lobby');
      await room.join(obs);
      assert.equal(await room.say('hello'), 1);
      assert.deepEqual(got, ['hello']);
      obs.dispose();
      assert.equal(await room.say('after dispose'), 0);
      assert.deepEqual(got, ['hello']);
    } finally {
      await silo.stop();
    }
  });

  it("a grain's observer is called from grains on every silo, and ends with its activation", async () => {
    const c = await TestCluster.start({ silos: 3, grains: [ChatRoom, RoomWatcher] });
    try {
      const watcher = c.client.getGrain(RoomWatcher, 'w');
      const rooms = Array.from({ length: 12 }, (_, i) => `hall-${i}`);
      const silos = await watcher.watch(rooms);
      assert.equal(new Set(silos).size, 3, 'rooms on every silo, so most calls to the observer cross silos');
      for (const r of rooms) assert.equal(await c.client.getGrain(ChatRoom, r).say(`from ${r}`), 1);
      assert.deepEqual((await watcher.received()).sort(), rooms.map((r) => `from ${r}`).sort());
      await watcher.leave();
      await waitFor('the watcher deactivated', () => c.silos.every((s) => s.activationCount <= 12));
      // Its observer went with it: the rooms' calls to it now fail.
      for (const r of rooms) assert.equal(await c.client.getGrain(ChatRoom, r).say('after'), 0);
    } finally {
      await c.stop();
    }
  });

  it('a silo-made observer is reached from grains on other silos', async () => {
    const c = await TestCluster.start({ silos: 2, grains: [ChatRoom] });
    try {
      const got: string[] = [];
      const obs = c.silos[0]!.createObserver<ChatObserver>({ onMessage: (m: string) => void got.push(m) });
      const where = await Promise.all(
        Array.from({ length: 8 }, (_, i) => c.client.getGrain(ChatRoom, `r-${i}`).join(obs)),
      );
      assert.equal(new Set(where).size, 2);
      for (let i = 0; i < 8; i++) assert.equal(await c.client.getGrain(ChatRoom, `r-${i}`).say(`m${i}`), 1);
      assert.equal(got.length, 8);
    } finally {
      await c.stop();
    }
  });

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

  it('a call to an observer on a silo that crashed, still active in the view, fails as unavailable rather than hanging', async () => {
    // Slow failure detection, so the crashed silo is still an active member when the call is made,
    // and a deadline far beyond the test's wait, so a lost call would show as a timeout.
    const c = await TestCluster.start({
      silos: 2,
      grains: [ObserverCaller],
      siloOptions: { membershipOptions: membershipDefaults, responseTimeoutMs: 60_000 },
    });
    try {
      const [a, b] = [c.silos[0] as Silo, c.silos[1] as Silo];
      const obs = b.createObserver<ChatObserver>({ onMessage: () => {} });
      let caller: GrainRef<ObserverCaller> | undefined;
      for (let i = 0; caller === undefined; i++) {
        const g = a.getGrain(ObserverCaller, `caller-${i}`);
        if ((await g.where()) === a.info.address) caller = g;
      }
      assert.equal(await caller.call(obs), 'ok');
      await c.killSilo(1);
      assert.equal(await caller.call(obs), 'GRANARY_SILO_UNAVAILABLE');
    } finally {
      await c.stop();
    }
  });
});
