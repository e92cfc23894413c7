import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';

const cli = ['--import', 'tsx', '--conditions=source', 'src/cli/main.ts'];

describe('granary command', () => {
  it('runs a silo with the grains a module exports and stops it gracefully on SIGTERM', async () => {
    const child = spawn(process.execPath, [...cli, 'silo', '--grains', 'test/grains/basic.ts', '--storage', 'memory', '--port', '0'], {
      env: { ...process.env, GRANARY_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d) => (err += String(d)));
    const deadline = Date.now() + 20_000;
    while (!err.includes('silo started')) {
      if (Date.now() > deadline || child.exitCode !== null) {
        child.kill('SIGKILL');
        assert.fail(`the silo did not start: ${err}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.match(err, /"grains":\["box","counter","flaky","lifecycle"\]/);
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    assert.equal(code, 0, err);
    assert.match(err, /SIGTERM: stopping silo gracefully[\s\S]*silo stopped/);
  });

  it('fails with a clear message on bad arguments', () => {
    const r = spawnSync(process.execPath, [...cli, 'silo', '--grains', 'test/helpers.ts', '--storage', 'memory'], { encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /exports no grain class/);
    const s = spawnSync(process.execPath, [...cli, 'silo', '--grains', 'test/grains/basic.ts', '--storage', 'postgres'], { encoding: 'utf8' });
    assert.equal(s.status, 2);
    assert.match(s.stderr, /--storage takes 'memory' or 'sqlite:<path>'/);
    const v = spawnSync(process.execPath, [...cli, 'version'], { encoding: 'utf8' });
    assert.match(v.stdout, /^\d+\.\d+\.\d+/);
  });
});
