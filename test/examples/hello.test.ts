import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from 'granary';
import { startHello } from '../../examples/hello/app.ts';

describe('examples/hello', () => {
  it('counts over HTTP and keeps the counts across a restart', async () => {
    const dbPath = join(mkdtempSync(join(tmpdir(), 'granary-hello-')), 'hello.db');
    let app = await startHello({ port: 0, dbPath, silo: { logger: silentLogger() } });
    try {
      const inc = await fetch(`${app.url}/counter/alice/increment`, {
        method: 'POST',
        body: JSON.stringify({ by: 2 }),
      });
      assert.deepEqual(await inc.json(), { key: 'alice', value: 2 });
      const bad = await fetch(`${app.url}/counter/alice/increment`, {
        method: 'POST',
        body: JSON.stringify({ by: 'x' }),
      });
      assert.equal(bad.status, 400);
      assert.equal((await fetch(`${app.url}/nothing`)).status, 404);
    } finally {
      await app.stop();
    }
    app = await startHello({ port: 0, dbPath, silo: { logger: silentLogger() } });
    try {
      const got = await fetch(`${app.url}/counter/alice`);
      assert.deepEqual(await got.json(), { key: 'alice', value: 2 });
    } finally {
      await app.stop();
    }
  });
});
