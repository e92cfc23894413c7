// A grain whose deactivation never ends, so that a graceful stop of its silo
// lasts until something else ends it (a second signal, a stop timeout).

import { Grain, grain } from 'granary';

@grain('slowStop')
export class SlowStop extends Grain {
  async ping(): Promise<string> {
    return this.key;
  }

  override async onDeactivate(): Promise<void> {
    await new Promise<never>(() => {});
  }
}
