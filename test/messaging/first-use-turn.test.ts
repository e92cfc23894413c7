// The process's first RequestContext.set, made in a grain turn before the
// request context was in use: it reaches the calls of that turn, no other.
// (A file of its own: the request context, once in use, stays on for the process.)
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { Grain, grain, RequestContext, Silo, silentLogger } from 'granary';

@grain('firstUseTurn')
class FirstUseTurn extends Grain {
  async setAndCall(next: string): Promise<unknown> {
    RequestContext.set('by', this.key);
    return this.getGrain(FirstUseTurn, next).read('by');
  }
  async read(key: string): Promise<unknown> {
    return RequestContext.get(key);
  }
}

describe('the first request context value of a process, set in a turn', () => {
  let silo: Silo | undefined;
  after(() => silo?.stop());

  it('reaches the calls that turn makes, never the caller or later calls', async () => {
    silo = await Silo.start({ grains: [FirstUseTurn], logger: silentLogger() });
    assert.equal(await silo.getGrain(FirstUseTurn, 'a').setAndCall('b'), 'a');
    assert.equal(RequestContext.get('by'), undefined, 'the caller does not see it');
    assert.equal(await silo.getGrain(FirstUseTurn, 'c').read('by'), undefined, 'a later call does not carry it');
  });
});
