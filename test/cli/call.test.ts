import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { callArgument, resultJson } from '../../src/cli/call.ts';
import { CliSilo, runCli } from './support.ts';

describe('granary call: arguments and results', () => {
  it('reads each argument as JSON when it parses, else as text', () => {
    assert.equal(callArgument('5'), 5);
    assert.equal(callArgument('-2.5'), -2.5);
    assert.equal(callArgument('true'), true);
    assert.equal(callArgument('null'), null);
    assert.equal(callArgument('"5"'), '5');
    assert.deepEqual(callArgument('{"a":[1,2]}'), { a: [1, 2] });
    assert.equal(callArgument('alice'), 'alice');
    assert.equal(callArgument('{not json'), '{not json');
    assert.equal(callArgument(''), '');
  });

  it('prints results as JSON, with nothing as null and the values JSON lacks in a plain form', () => {
    assert.equal(resultJson(undefined), 'null');
    assert.equal(resultJson(5), '5');
    assert.equal(resultJson({ big: 12345678901234567890n }), '{"big":"12345678901234567890"}');
    assert.equal(resultJson(new Map([['a', 1]])), '{"a":1}');
    assert.equal(resultJson(new Map([[1, 'a']])), '[[1,"a"]]');
    assert.equal(resultJson(new Set([1, 2])), '[1,2]');
    assert.equal(resultJson(new Uint8Array([1, 2, 3])), '"AQID"');
  });
});

describe('granary call against a silo process', () => {
  let silo: CliSilo | undefined;
  let gateway: string;
  let membership: string;

  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'granary-cli-call-'));
    membership = `sqlite:${join(dir, 'cluster.db')}`;
    silo = await CliSilo.start([
      '--grains',
      'test/grains/basic.ts',
      '--storage',
      'memory',
      '--membership',
      membership,
      '--cluster-id',
      'calls',
      '--port',
      '0',
      '--gateway-port',
      '0',
    ]);
    gateway = silo.gateway as string;
  });

  after(async () => {
    if (silo !== undefined) assert.equal(await silo.stop(), 0, silo.stderr);
  });

  it('calls a method by name with JSON arguments and prints the result (exit code 0), through --gateway, GRANARY_GATEWAYS or the membership table', async () => {
    const first = await runCli([
      'call',
      'counter/alice',
      'increment',
      '5',
      '--gateway',
      gateway,
      '--cluster-id',
      'calls',
    ]);
    assert.deepEqual([first.code, first.stdout, first.stderr], [0, '5\n', '']);
    const alias = await runCli(['client', 'call', 'counter/alice', 'increment', '5'], {
      GRANARY_GATEWAYS: `127.0.0.1:1,${gateway}`,
      GRANARY_CLUSTER_ID: 'calls',
    });
    assert.deepEqual([alias.code, alias.stdout], [0, '10\n'], alias.stderr);
    const put = await runCli([
      'call',
      'box/b',
      'put',
      '{"n":[1,"two"]}',
      '--membership',
      membership,
      '--cluster-id',
      'calls',
    ]);
    assert.deepEqual([put.code, put.stdout], [0, 'null\n'], put.stderr);
    const take = await runCli(['call', 'box/b', 'take', '--timeout', '5000'], {
      GRANARY_MEMBERSHIP: membership,
      GRANARY_CLUSTER_ID: 'calls',
    });
    assert.deepEqual([take.code, take.stdout], [0, '{"n":[1,"two"]}\n'], take.stderr);
  });

  it('prints a failed call as [CODE]: message on stderr with exit code 1', async () => {
    const base = ['--gateway', gateway, '--cluster-id', 'calls'];
    const [grainError, unknownMethod, unknownType] = await Promise.all([
      runCli(['call', 'box/b', 'throwOutOfStock', 'sku-1', ...base]),
      runCli(['call', 'box/b', 'nope', ...base]),
      runCli(['call', 'nosuch/x', 'ping', ...base]),
    ]);
    assert.deepEqual([grainError.code, grainError.stdout], [1, '']);
    assert.equal(grainError.stderr, '[OUT_OF_STOCK]: out of stock: sku-1\n');
    assert.equal(unknownMethod.code, 1);
    assert.match(unknownMethod.stderr, /^\[GRANARY_UNKNOWN_METHOD\]: grain type 'box' has no method 'nope'/);
    assert.equal(unknownType.code, 1);
    assert.match(unknownType.stderr, /^\[GRANARY_UNKNOWN_GRAIN_TYPE\]: unknown grain type 'nosuch'/);
  });

  it('fails with exit code 1 when no gateway answers, and 2 on bad usage', async () => {
    const [nobody, noTarget, noWay, missingFile] = await Promise.all([
      runCli(['call', 'counter/a', 'get', '--gateway', '127.0.0.1:1', '--cluster-id', 'calls', '--timeout', '300']),
      runCli(['call', 'counter', 'get', '--gateway', gateway]),
      runCli(['call', 'counter/a', 'get']),
      runCli(['call', 'counter/a', 'get', '--membership', 'sqlite:/nonexistent/cluster.db']),
    ]);
    assert.equal(nobody.code, 1, nobody.stderr);
    assert.match(
      nobody.stderr,
      /^granary \[GRANARY_SILO_UNAVAILABLE\]: no gateway of cluster 'calls' could be reached/,
    );
    assert.equal(noTarget.code, 2);
    assert.match(noTarget.stderr, /granary call takes <type>\/<key> first, e\.g\. counter\/alice, got 'counter'/);
    assert.equal(noWay.code, 2);
    assert.match(noWay.stderr, /granary call needs --gateway HOST:PORT \(or GRANARY_GATEWAYS\) or --membership SPEC/);
    assert.equal(missingFile.code, 2);
    assert.match(missingFile.stderr, /--membership: no membership file \/nonexistent\/cluster\.db/);
  });
});
