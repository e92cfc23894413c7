// The error hierarchy as users rely on it: every Granary error survives the
// codec with its class, code, message and fields; each code has one class; and
// src/ throws no bare Error outside the folders still to be converted.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CancelledError,
  ConfigurationError,
  DeadlockError,
  ErrorCodes,
  ForwardLimitError,
  FrameTooLargeError,
  GrainConstructedError,
  GranaryError,
  InconsistentStateError,
  MembershipError,
  OverloadedError,
  ProtocolError,
  ReminderError,
  RemoteError,
  SerializationError,
  SiloStoppedError,
  SiloUnavailableError,
  StorageCorruptError,
  StorageError,
  StreamError,
  TimeoutError,
  TransportError,
  UnknownGrainTypeError,
  UnknownMethodError,
  decode,
  encode,
  isTransient,
} from 'granary';
import { builtinErrorClasses } from '../src/errors.ts';

/** One instance of every Granary error class, by class name. */
const samples: Record<string, () => GranaryError> = {
  GranaryError: () => new GranaryError('something failed'),
  TimeoutError: () => new TimeoutError('call to counter/a.get timed out after 30000 ms'),
  DeadlockError: () => new DeadlockError(['a/1', 'b/1', 'a/1']),
  SiloUnavailableError: () => new SiloUnavailableError('cannot reach silo 127.0.0.1:11111'),
  InconsistentStateError: () => new InconsistentStateError('stale etag'),
  SerializationError: () => new SerializationError('cannot encode args[0].handler: a function', 'args[0].handler'),
  StorageError: () => new StorageError('write of state failed'),
  StorageCorruptError: () => new StorageCorruptError('bad bytes in state of counter/a'),
  UnknownGrainTypeError: () => new UnknownGrainTypeError('no grain type ghost'),
  UnknownMethodError: () => new UnknownMethodError('counter has no method decrement'),
  CancelledError: () => new CancelledError('call was cancelled'),
  SiloStoppedError: () => new SiloStoppedError('the silo is stopping'),
  ConfigurationError: () => new ConfigurationError('responseTimeoutMs must be positive'),
  RemoteError: () => new RemoteError('out of stock', 'OutOfStockError'),
  MembershipError: () => new MembershipError('membership table unreachable'),
  ReminderError: () => new ReminderError('reminder table unreachable'),
  ForwardLimitError: () => new ForwardLimitError('forwarded 2 times'),
  OverloadedError: () => new OverloadedError('queue full'),
  ProtocolError: () => new ProtocolError('frame length 0'),
  TransportError: () => new TransportError('connection is not open yet'),
  FrameTooLargeError: () => new FrameTooLargeError('frame of 17 bytes exceeds maxFrameBytes (16)'),
  StreamError: () => new StreamError('nats: publish to events/chat/x failed: connection closed'),
  GrainConstructedError: () => new GrainConstructedError('Counter is a grain: it is never constructed by user code'),
};

const classes = builtinErrorClasses;

describe('Granary errors', () => {
  it('every error class of Granary has a sample here, an instance of exactly that class', () => {
    assert.deepEqual(Object.keys(samples).sort(), classes.map((c) => c.name).sort());
    for (const Class of classes) {
      const e = samples[Class.name]?.();
      assert.ok(e !== undefined && Object.getPrototypeOf(e) === Class.prototype, Class.name);
      assert.ok(e instanceof GranaryError && e instanceof Error, Class.name);
      assert.equal(e.name, Class.name);
    }
  });

  it('round-trips every error class through the codec, keeping class, code, message, fields and transience', () => {
    for (const Class of classes) {
      const sent = samples[Class.name]?.() as GranaryError;
      const got = decode(encode(sent)) as GranaryError;
      assert.equal(Object.getPrototypeOf(got), Class.prototype, `${Class.name} arrives as ${Class.name}`);
      assert.equal(got.code, sent.code, Class.name);
      assert.equal(got.message, sent.message, Class.name);
      assert.equal(got.name, sent.name, Class.name);
      assert.deepEqual({ ...got }, { ...sent }, `${Class.name} keeps its own fields`);
      assert.equal(isTransient(got), isTransient(sent), Class.name);
    }
    assert.deepEqual((decode(encode(samples['DeadlockError']?.())) as DeadlockError).chain, ['a/1', 'b/1', 'a/1']);
    assert.equal((decode(encode(samples['SerializationError']?.())) as SerializationError).path, 'args[0].handler');
    assert.equal((decode(encode(samples['RemoteError']?.())) as RemoteError).remoteName, 'OutOfStockError');
  });

  it('has exactly one class per code, and no class with a code outside ErrorCodes', () => {
    const byCode = new Map<string, string[]>();
    for (const Class of classes) {
      const { code } = samples[Class.name]?.() as GranaryError;
      byCode.set(code, [...(byCode.get(code) ?? []), Class.name]);
    }
    for (const code of Object.values(ErrorCodes)) {
      assert.equal(byCode.get(code)?.length, 1, `${code} has one class, not ${JSON.stringify(byCode.get(code))}`);
    }
    assert.deepEqual([...byCode.keys()].sort(), Object.values(ErrorCodes).sort());
  });

  it('says which failures a retry may cure', () => {
    const transient = classes.filter((c) => isTransient(samples[c.name]?.())).map((c) => c.name);
    assert.deepEqual(transient.sort(), [
      'ForwardLimitError',
      'OverloadedError',
      'SiloStoppedError',
      'SiloUnavailableError',
    ]);
    assert.equal(isTransient(new Error('plain')), false);
  });
});

// ---- The static scan ---------------------------------------------------------

/**
 * Parts of src/ not converted yet: they may still construct a bare Error,
 * TypeError or RangeError, or write an error code as a string instead of using
 * its class. Remove an entry once its folder or file is converted; an entry
 * with nothing left to convert fails the test, so the list only shrinks.
 */
const notConvertedYet: readonly string[] = [];

const root = fileURLToPath(new URL('..', import.meta.url));

function sourceFiles(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) sourceFiles(p, out);
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** The text with comments blanked out, line breaks kept (so line numbers hold). */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, ' ')).replace(/(^|[^:])\/\/.*$/gm, '$1');
}

const bareError = /\bnew\s+(?:Error|TypeError|RangeError)\s*\(/g;
const codeLiteral = new RegExp(`['"](?:${Object.values(ErrorCodes).join('|')})['"]`, 'g');

/** `path:line: text` of every bare error and error code string in src/ (src/errors.ts aside). */
function offences(): { file: string; where: string }[] {
  const found: { file: string; where: string }[] = [];
  for (const path of sourceFiles(join(root, 'src'))) {
    const file = relative(root, path).split('\\').join('/');
    if (file === 'src/errors.ts') continue;
    const lines = code(readFileSync(path, 'utf8')).split('\n');
    lines.forEach((line, i) => {
      for (const re of [bareError, codeLiteral]) {
        re.lastIndex = 0;
        if (re.test(line)) found.push({ file, where: `${file}:${i + 1}: ${line.trim()}` });
      }
    });
  }
  return found;
}

describe('src/ throws Granary errors', () => {
  it('constructs no bare Error, TypeError or RangeError, and writes no error code as a string, outside the parts not converted yet', () => {
    const outside = offences().filter(({ file }) => !notConvertedYet.some((p) => file.startsWith(p)));
    assert.deepEqual(
      outside.map((o) => o.where),
      [],
      'throw the GranaryError class of the failure (src/errors.ts), with its code from ErrorCodes',
    );
  });

  it('lists as not converted yet only parts that still have something to convert', () => {
    const found = offences();
    const stale = notConvertedYet.filter((p) => !found.some(({ file }) => file.startsWith(p)));
    assert.deepEqual(stale, [], 'these parts are converted: remove them from notConvertedYet in test/errors.test.ts');
  });
});
