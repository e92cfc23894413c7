import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Silo, silentLogger, memoryStorage } from 'granary';
import { natsStreams } from 'granary/nats';
import { DeviceTotals, type Reading } from '../../examples/streams/totals.ts';
import { eventually } from '../helpers.ts';
import { NATS, natsClusterId } from '../streams/nats-support.ts';

const clusterId = natsClusterId();

describe('examples/streams (docs/streams.md)', () => {
  it('totals readings per device, and keeps the totals across a silo restart', async () => {
    const storage = memoryStorage();
    const options = {
      clusterId,
      grains: [DeviceTotals],
      logger: silentLogger(),
      storage: { default: storage },
      streams: { events: natsStreams({ servers: NATS }) },
    };
    let silo = await Silo.start(options);
    try {
      const meter = silo.getStream<Reading>('events', 'telemetry', 'meter-1');
      await meter.publishBatch([{ watts: 5 }, { watts: 7 }]);
      await meter.publish({ watts: 30 });
      await silo.getStream<Reading>('events', 'telemetry', 'meter-2').publish({ watts: 1 });
      const totals = silo.getGrain(DeviceTotals, 'meter-1');
      await eventually('three readings counted', async () => (await totals.totals()).count === 3);
      assert.deepEqual(await totals.totals(), { total: 42, count: 3 });
    } finally {
      await silo.stop();
    }
    silo = await Silo.start(options);
    try {
      assert.deepEqual(await silo.getGrain(DeviceTotals, 'meter-1').totals(), { total: 42, count: 3 });
      await silo.getStream<Reading>('events', 'telemetry', 'meter-1').publish({ watts: 8 });
      await eventually(
        'the fourth reading counted',
        async () => (await silo.getGrain(DeviceTotals, 'meter-1').totals()).count === 4,
      );
      // meter-2's reading may still have been on its way at the stop: then it comes again now.
      const m2 = silo.getGrain(DeviceTotals, 'meter-2');
      await eventually('meter-2 counted', async () => (await m2.totals()).count === 1);
      assert.deepEqual(await m2.totals(), { total: 1, count: 1 });
    } finally {
      await silo.stop();
    }
  });
});
