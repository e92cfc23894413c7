// The process's first RequestContext.set, made in an outgoing filter before the
// request context was in use: it reaches the call, and never the caller.
// (A file of its own: the request context, once in use, stays on for the process.)
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { Grain, grain, RequestContext, Silo, silentLogger, type OutgoingCallFilter } from 'granary';

@grain('firstUse')
class FirstUse extends Grain {
  async read(key: string): Promise<unknown> {
    return RequestContext.get(key);
  }
}

describe('the first request context value of a process, set in a filter', () => {
  let silo: Silo | undefined;
  after(() => silo?.stop());

  it('goes with the filtered call and does not stay with the caller', async () => {
    let calls = 0;
    const stamp: OutgoingCallFilter = async (ctx) => {
      if (calls++ === 0) RequestContext.set('stamp', 'first');
      await ctx.invoke();
    };
    silo = await Silo.start({ grains: [FirstUse], outgoingFilters: [stamp], logger: silentLogger() });
    assert.equal(await silo.getGrain(FirstUse, 'a').read('stamp'), 'first');
    assert.equal(RequestContext.get('stamp'), undefined, 'the caller does not see it');
    assert.equal(await silo.getGrain(FirstUse, 'a').read('stamp'), undefined, 'a later call does not carry it');
  });
});
