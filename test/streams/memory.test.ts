// Memory streams in one silo: explicit subscriptions that outlive the
// activation, implicit subscriptions, batches, unsubscribe, retries and dead
// letters, and the errors a user meets.

import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import {
  ConfigurationError,
  OverloadedError,
  Silo,
  memoryStorage,
  memoryStreams,
  silentLogger,
  type DeadLetter,
} from 'granary';
import { eventually, nextEvent, recordEvents } from '../helpers.ts';
import {
  ClosureConsumer,
  Consumer,
  ImplicitConsumer,
  PROVIDER,
  Producer,
  ThrowingConsumer,
  received,
  resetLogs,
  throwing,
  tokensSeen,
} from './grains.ts';

const grains = [Producer, Consumer, ClosureConsumer, ImplicitConsumer, ThrowingConsumer];

describe('memory streams in one silo', () => {
  let silo: Silo;
  const letters: DeadLetter[] = [];
  before(async () => {
    silo = await Silo.start({
      grains,
      logger: silentLogger(),
      streams: {
        [PROVIDER]: memoryStreams({ retries: 2, retryDelayMs: 1, onDeadLetter: (l) => letters.push(l) }),
      },
    });
  });
  after(() => silo.stop());
  beforeEach(() => {
    resetLogs();
    letters.length = 0;
  });

  it('delivers every item, in order, to each explicit subscriber', async () => {
    const a = silo.getGrain(Consumer, 'a');
    const b = silo.getGrain(Consumer, 'b');
    await a.join('chat', 'room1');
    await b.join('chat', 'room1');
    const p = silo.getGrain(Producer, 'p');
    for (let i = 0; i < 50; i++) await p.send('chat', 'room1', i);
    const expected = Array.from({ length: 50 }, (_, i) => i);
    await eventually('both subscribers have 50 items', () => received.get('a')?.length === 50);
    await eventually('b has 50 items', () => received.get('b')?.length === 50);
    assert.deepEqual(received.get('a'), expected);
    assert.deepEqual(received.get('b'), expected);
    const tokens = tokensSeen.get('a') ?? [];
    for (let i = 1; i < tokens.length; i++)
      assert.ok(tokens[i]!.sequence > tokens[i - 1]!.sequence, 'tokens grow with each publish');
  });

  it('keeps a subscription made with a grain method across deactivation, with no re-subscribe', async () => {
    const c = silo.getGrain(Consumer, 'sleepy');
    const id = await c.join('chat', 'room2');
    const deactivated = nextEvent<{ grain: string }>(
      'granary:activation:deactivated',
      (e) => e.grain === 'streamConsumer/sleepy',
    );
    await c.goAway();
    await deactivated;
    await silo.getGrain(Producer, 'p').send('chat', 'room2', 'after');
    await eventually('the new activation got the item', () => received.get('sleepy')?.length === 1);
    assert.deepEqual(received.get('sleepy'), ['after']);
    assert.deepEqual(await c.subscriptions('chat', 'room2'), [id]);
  });

  it('stops delivering after unsubscribe', async () => {
    const c = silo.getGrain(Consumer, 'quitter');
    await c.join('chat', 'room3');
    const p = silo.getGrain(Producer, 'p');
    await p.send('chat', 'room3', 1);
    await eventually('first item', () => received.get('quitter')?.length === 1);
    assert.equal(await c.leave('chat', 'room3'), 1);
    assert.deepEqual(await c.subscriptions('chat', 'room3'), []);
    // A second subscriber shows when the later items have been delivered.
    await silo.getGrain(Consumer, 'witness').join('chat', 'room3');
    await p.send('chat', 'room3', 2);
    await eventually('the witness got the later item', () => received.get('witness')?.length === 1);
    assert.deepEqual(received.get('quitter'), [1]);
  });

  it('activates the implicitly subscribed grain with the stream key, with no subscribe at all', async () => {
    await silo.getStream(PROVIDER, 'telemetry', 'device-7').publishBatch(['a', 'b', 'c']);
    await eventually('implicit consumer got the batch', () => received.get('implicit:device-7')?.length === 3);
    assert.deepEqual(received.get('implicit:device-7'), ['a', 'b', 'c']);
    const tokens = tokensSeen.get('implicit:device-7') ?? [];
    assert.deepEqual(
      tokens.map((t) => t.index),
      [0, 1, 2],
      'a batch shares its sequence number and numbers its items',
    );
    assert.equal(new Set(tokens.map((t) => t.sequence)).size, 1);
  });

  it('retries an item whose handler throws, and goes on in order once it succeeds', async () => {
    throwing.failuresLeft = 2;
    await silo.getStream(PROVIDER, 'flaky', 'k1').publishBatch([1, 2, 3]);
    await eventually('all three delivered', () => received.get('flaky:k1')?.length === 3);
    assert.deepEqual(received.get('flaky:k1'), [1, 2, 3]);
    assert.equal(throwing.attempts, 5, 'two failed attempts of item 1, then one each');
    assert.deepEqual(letters, []);
  });

  it('gives an item up after its retries as a dead letter (hook and channel), and delivers the next', async () => {
    const onChannel = nextEvent<DeadLetter>('granary:stream:dead-letter', (l) => l.stream.key === 'k2');
    await silo.getStream(PROVIDER, 'flaky', 'k2').publishBatch(['before', 'poison', 'after']);
    const letter = await onChannel;
    assert.equal(letter.item, 'poison');
    assert.equal(letter.attempts, 3, 'the first attempt and two retries');
    assert.equal(letter.consumer, 'throwingConsumer/k2');
    assert.ok(letter.error instanceof RangeError);
    await eventually('the item after the poison one', () => received.get('flaky:k2')?.length === 2);
    assert.deepEqual(received.get('flaky:k2'), ['before', 'after']);
    assert.equal(letters.length, 1);
    assert.equal(letters[0]!.item, 'poison');
  });

  it('refuses a closure handler on a grain with no onStreamItem, naming what to do', async () => {
    await assert.rejects(
      silo.getGrain(ClosureConsumer, 'c').join('chat', 'room4'),
      (e: unknown) => e instanceof ConfigurationError && /one of the grain's own methods/.test(e.message),
    );
  });

  it('refuses an unknown provider, naming the configured ones', async () => {
    // Getting a handle is free and checks nothing; using it says what is wrong.
    await assert.rejects(
      silo.getStream('nope', 'chat', 'x').publish(1),
      (e: unknown) => e instanceof ConfigurationError && /no stream provider 'nope'.*events/.test(e.message),
    );
  });

  it('refuses rewind on memory streams, which keep no history', async () => {
    await assert.rejects(
      silo.getGrain(Consumer, 'rewinder').joinFrom('chat', 'room5', { sequence: 1, index: 0 }),
      (e: unknown) => e instanceof ConfigurationError && /keeps no history/.test(e.message),
    );
  });

  it('lets silo code publish but not subscribe', async () => {
    await assert.rejects(
      silo.getStream(PROVIDER, 'chat', 'x').subscribe(() => {}),
      (e: unknown) => e instanceof ConfigurationError && /only a grain or a client subscribes/.test(e.message),
    );
  });
});

describe('a silo with no stream provider', () => {
  it('says how to configure one', async () => {
    const silo = await Silo.start({ grains: [Producer], logger: silentLogger() });
    try {
      await assert.rejects(
        silo.getGrain(Producer, 'p').send('chat', 'x', 1),
        (e: unknown) => e instanceof ConfigurationError && /streams: \{ default: memoryStreams\(\) \}/.test(e.message),
      );
    } finally {
      await silo.stop();
    }
  });

  it('refuses a stream provider whose pub-sub storage is not configured, at start', async () => {
    await assert.rejects(
      Silo.start({
        grains: [Producer],
        logger: silentLogger(),
        streams: { events: memoryStreams({ pubSubStorage: 'pubsub' }) },
      }),
      (e: unknown) => e instanceof ConfigurationError && /storage provider 'pubsub'/.test(e.message),
    );
  });
});

describe('memory streams under back-pressure', () => {
  it('refuses a publish with OverloadedError while a subscriber has maxQueuedItems waiting, and a batch larger than that outright', async () => {
    resetLogs();
    const silo = await Silo.start({
      grains,
      logger: silentLogger(),
      streams: { [PROVIDER]: memoryStreams({ maxQueuedItems: 5, retries: 1000, retryDelayMs: 20 }) },
    });
    try {
      throwing.failuresLeft = 1_000_000; // the subscriber fails every item until told otherwise
      const s = silo.getStream<number>(PROVIDER, 'flaky', 'pressure');
      for (let i = 0; i < 5; i++) await s.publish(i);
      await assert.rejects(
        s.publish(5),
        (e: unknown) => e instanceof OverloadedError && /maxQueuedItems 5/.test(e.message),
      );
      await assert.rejects(
        s.publishBatch([1, 2, 3, 4, 5, 6]),
        (e: unknown) => e instanceof ConfigurationError && /batch of 6 items/.test(e.message),
      );
      throwing.failuresLeft = 0;
      await eventually(
        'the five waiting items delivered once the subscriber recovers',
        () => received.get('flaky:pressure')?.length === 5,
      );
      assert.deepEqual(received.get('flaky:pressure'), [0, 1, 2, 3, 4]);
      await s.publish(5);
      await eventually('and the next one', () => received.get('flaky:pressure')?.length === 6);
    } finally {
      await silo.stop();
    }
  });
});

describe('memory streams after inactivity', () => {
  it('delivers again after the rendezvous and the subscriber were collected as idle', async () => {
    resetLogs();
    const silo = await Silo.start({
      grains,
      logger: silentLogger(),
      collectionAgeMs: 100,
      streams: { [PROVIDER]: memoryStreams() },
    });
    try {
      await silo.getGrain(Consumer, 'idle-sub').join('chat', 'quiet');
      const p = silo.getGrain(Producer, 'idle-pub');
      await p.send('chat', 'quiet', 'before');
      await eventually('the first item', () => received.get('idle-sub')?.length === 1);
      // Both the stream's rendezvous and the subscriber go idle and are collected.
      await Promise.all([
        nextEvent<{ grain: string }>(
          'granary:activation:deactivated',
          (e) => e.grain.startsWith('granary.pubsub/'),
          10_000,
        ),
        nextEvent<{ grain: string }>(
          'granary:activation:deactivated',
          (e) => e.grain === 'streamConsumer/idle-sub',
          10_000,
        ),
      ]);
      await p.send('chat', 'quiet', 'after');
      await eventually('the item after the quiet spell', () => received.get('idle-sub')?.length === 2);
      assert.deepEqual(received.get('idle-sub'), ['before', 'after']);
    } finally {
      await silo.stop();
    }
  });
});

describe('the pub-sub records of a stream', () => {
  it('are kept in pages: a subscribe writes one, a silo reads them all back after a restart, producers read them page by page', async () => {
    resetLogs();
    const store = memoryStorage();
    const options = {
      grains,
      logger: silentLogger(),
      storage: { default: store },
      streams: { [PROVIDER]: memoryStreams({ pubSubPageSize: 3 }) },
    };
    const keys = Array.from({ length: 10 }, (_, i) => `paged-${i}`);
    let silo = await Silo.start(options);
    try {
      for (const k of keys) await silo.getGrain(Consumer, k).join('chat', 'crowd');
      const page = (n: number) =>
        store.read({ grainType: 'granary.pubsub', grainKey: `${PROVIDER}/chat/crowd`, stateName: `page-${n}` });
      assert.deepEqual(
        await Promise.all([0, 1, 2, 3].map(async (n) => ((await page(n)).state as { subs: unknown[] }).subs.length)),
        [3, 3, 3, 1],
        'ten subscriptions in pages of three',
      );
      await silo.getGrain(Producer, 'p').send('chat', 'crowd', 'one');
      await eventually('all ten got it', () => keys.every((k) => received.get(k)?.length === 1));
    } finally {
      await silo.stop();
    }
    silo = await Silo.start(options);
    try {
      for (const k of keys.slice(0, 4)) await silo.getGrain(Consumer, k).leave('chat', 'crowd');
      await silo.getGrain(Producer, 'p').send('chat', 'crowd', 'two');
      await eventually('the six still subscribed got it', () =>
        keys.slice(4).every((k) => received.get(k)?.length === 2),
      );
      assert.ok(
        keys.slice(0, 4).every((k) => received.get(k)?.length === 1),
        'the four that left did not',
      );
    } finally {
      await silo.stop();
    }
  });
});

describe('implicit-only namespaces', () => {
  it('deliver with no rendezvous at all, and refuse an explicit subscription', async () => {
    resetLogs();
    const created = recordEvents<{ grain: string }>('granary:activation:created');
    const silo = await Silo.start({
      grains,
      logger: silentLogger(),
      streams: { [PROVIDER]: memoryStreams({ implicitOnlyNamespaces: ['telemetry'] }) },
    });
    try {
      for (let i = 0; i < 20; i++) await silo.getStream(PROVIDER, 'telemetry', `dev-${i}`).publish(i);
      await eventually(
        'twenty implicit deliveries',
        () => [...received.keys()].filter((k) => k.startsWith('implicit:')).length === 20,
      );
      assert.deepEqual(
        created.events.filter((e) => e.grain.startsWith('granary.pubsub/')),
        [],
        'no rendezvous was activated',
      );
      await assert.rejects(
        silo.getGrain(Consumer, 'explicit').join('telemetry', 'dev-1'),
        (e: unknown) => e instanceof ConfigurationError && /implicit-only/.test(e.message),
      );
    } finally {
      created.close();
      await silo.stop();
    }
  });
});
