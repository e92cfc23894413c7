import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(new URL('./fixtures/await-silent-grain.ts', import.meta.url));

describe('deadlines', () => {
  it('a call awaited alone in a script ends with TimeoutError: pending calls keep the process alive', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--conditions=source', script], {
      encoding: 'utf8',
      timeout: 30_000,
      env: { ...process.env, GRANARY_LOG_LEVEL: 'silent' },
    });
    assert.equal(r.stderr.includes('unsettled top-level await') || r.status === 13, false, r.stderr);
    assert.equal(r.stdout.trim(), 'TimeoutError', `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
    assert.equal(r.status, 0);
  });
});
