// The codec: copy and encode/decode follow the same rules, keep every
// supported type, refuse the rest with a SerializationError naming the path,
// and never let caller and callee share a mutable object.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copy, copyArgs, decode, encode, immutable } from '../../src/serialization/codec.ts';
import { registerError, registerType } from '../../src/serialization/registry.ts';
import { GRAIN_REF, type CodecContext, type RefIdentity } from '../../src/serialization/symbols.ts';
import { ConfigurationError, GranaryError, RemoteError, SerializationError, TimeoutError } from '../../src/errors.ts';

const wire = <T>(v: T, ctx?: CodecContext): unknown => decode(encode(v), ctx);
const modes: ReadonlyArray<[string, (v: unknown) => unknown]> = [
  ['copy', (v) => copy(v)],
  ['encode/decode', (v) => wire(v)],
];

/** Runs `fn` for copy and for encode, expecting a SerializationError; returns it. */
function refusal(mode: string, value: unknown, root: string): SerializationError {
  let thrown: unknown;
  try {
    if (mode === 'copy') copy(value, undefined, root);
    else encode(value, root);
  } catch (e) {
    thrown = e;
  }
  assert.ok(thrown instanceof SerializationError, `${mode} should refuse the value, got ${String(thrown)}`);
  assert.equal(thrown.code, 'GRANARY_SERIALIZATION');
  return thrown;
}

// ---- Fixtures ----------------------------------------------------------------

class Point {
  static constructed = 0;
  x: number;
  y: number;
  constructor(x: number, y: number) {
    Point.constructed++;
    this.x = x;
    this.y = y;
  }
  norm(): number {
    return Math.hypot(this.x, this.y);
  }
}
registerType(Point);

class Money {
  readonly cents: bigint;
  readonly currency: string;
  constructor(cents: bigint, currency: string) {
    this.cents = cents;
    this.currency = currency;
  }
  toString(): string {
    return `${this.cents} ${this.currency}`;
  }
}
registerType(Money, {
  name: 'test.Money',
  serialize: (m) => `${m.cents}:${m.currency}`,
  deserialize: (data) => {
    const [cents, currency] = String(data).split(':');
    return new Money(BigInt(cents ?? '0'), currency ?? '');
  },
});

class Unregistered {
  a = 1;
}

class PaymentDeclined extends GranaryError {
  readonly reason: string;
  constructor(reason: string) {
    super(`payment declined: ${reason}`, 'PAYMENT_DECLINED');
    this.reason = reason;
  }
}
registerError(PaymentDeclined);

class LocalOnlyError extends Error {
  override name = 'LocalOnlyError';
  detail = { attempts: [1, 2] };
  code = 'E_LOCAL';
}

/** A stand-in for a grain reference, as the grain layer makes them: a class instance with GRAIN_REF. */
class FakeRef {
  readonly #id: RefIdentity;
  constructor(type: string, key: string) {
    this.#id = { type, key };
  }
  get [GRAIN_REF](): RefIdentity {
    return this.#id;
  }
}

class Revived {
  readonly id: RefIdentity;
  constructor(id: RefIdentity) {
    this.id = id;
  }
}
const ctx: CodecContext = { reviveRef: (id) => new Revived(id) };

// ---- Round trips -------------------------------------------------------------

for (const [mode, rt] of modes) {
  describe(`${mode}: round trip`, () => {
    it('keeps primitives, including bigint and undefined', () => {
      for (const v of [
        '',
        'héllo ✓ 😀',
        0,
        1.5,
        -7,
        2 ** 40,
        NaN,
        Infinity,
        -Infinity,
        true,
        false,
        null,
        undefined,
        0n,
        -5n,
        2n ** 63n - 1n,
        -(2n ** 63n),
        2n ** 64n - 1n,
        2n ** 200n,
        -(3n ** 150n),
      ]) {
        assert.deepEqual(rt(v), v);
      }
    });

    it('keeps plain objects and arrays, with undefined in both', () => {
      const v = {
        a: 1,
        b: 'two',
        c: [1, 'x', null, undefined, [true, { d: undefined }]],
        e: undefined,
        'odd key': { '': 0 },
      };
      const out = rt(v) as typeof v;
      assert.deepEqual(out, v);
      assert.ok(Object.hasOwn(out, 'e'));
      assert.ok(Object.hasOwn((out.c[4] as unknown[])[1] as object, 'd'), 'nested undefined property kept');
    });

    it('keeps null-prototype objects and an own __proto__ key', () => {
      const bare = Object.assign(Object.create(null) as Record<string, unknown>, { a: 1, nested: { b: 2 } });
      const out = rt(bare) as Record<string, unknown>;
      assert.equal(Object.getPrototypeOf(out), null);
      assert.deepEqual({ ...out }, { a: 1, nested: { b: 2 } });

      const tricky = JSON.parse('{"__proto__": {"polluted": true}, "x": 1}') as Record<string, unknown>;
      const out2 = rt(tricky) as Record<string, unknown>;
      assert.equal(Object.getPrototypeOf(out2), Object.prototype);
      assert.ok(Object.hasOwn(out2, '__proto__'));
      assert.deepEqual(Object.getOwnPropertyDescriptor(out2, '__proto__')?.value, { polluted: true });
      assert.equal(out2['x'], 1);
    });

    it('keeps a Map of Set of Date, Maps with non-string keys, and Sets', () => {
      const v = new Map<unknown, unknown>([
        ['dates', new Set([new Date(0), new Date('2020-02-29T12:34:56.789Z'), new Date(-1e12)])],
        [42, new Map([[1n, 'big']])],
        [{ compound: true }, [1, 2]],
      ]);
      const out = rt(v);
      assert.ok(out instanceof Map);
      assert.deepEqual(out, v);
      const dates = [...(out.get('dates') as Set<Date>)];
      assert.ok(dates.every((d) => d instanceof Date));
      assert.equal(dates[1]?.getTime(), Date.parse('2020-02-29T12:34:56.789Z'));
      const invalid = rt(new Date(NaN));
      assert.ok(invalid instanceof Date && Number.isNaN(invalid.getTime()), 'an invalid Date stays an invalid Date');
    });

    it('keeps every typed array, ArrayBuffer, DataView, Buffer and Uint8Array', () => {
      const typed = [
        new Int8Array([-1, 2]),
        new Uint8Array([1, 255]),
        new Uint8ClampedArray([0, 255]),
        new Int16Array([-300, 300]),
        new Uint16Array([65535]),
        new Int32Array([-1 << 30]),
        new Uint32Array([2 ** 32 - 1]),
        new Float32Array([1.5]),
        new Float64Array([Math.PI, -0.5]),
        new BigInt64Array([-(2n ** 62n)]),
        new BigUint64Array([2n ** 64n - 1n]),
      ];
      for (const t of typed) {
        const out = rt(t);
        assert.equal(Object.getPrototypeOf(out), Object.getPrototypeOf(t));
        assert.deepEqual(out, t);
      }
      const buf = Buffer.from('granary');
      const outBuf = rt({ buf }) as { buf: Buffer };
      assert.ok(Buffer.isBuffer(outBuf.buf));
      assert.equal(outBuf.buf.toString(), 'granary');

      const u8 = rt(new Uint8Array([7, 8])) as Uint8Array;
      assert.equal(Object.getPrototypeOf(u8), Uint8Array.prototype);

      // A view keeps only its own bytes.
      const view = new Uint16Array(new Uint16Array([1, 2, 3, 4]).buffer, 2, 2);
      const outView = rt(view) as Uint16Array;
      assert.deepEqual([...outView], [2, 3]);
      assert.equal(outView.buffer.byteLength, 4);

      const ab = new Uint8Array([1, 2, 3]).buffer;
      const outAb = rt(ab) as ArrayBuffer;
      assert.ok(outAb instanceof ArrayBuffer);
      assert.deepEqual([...new Uint8Array(outAb)], [1, 2, 3]);

      const dv = new DataView(new Uint8Array([9, 8, 7, 6]).buffer, 1, 2);
      const outDv = rt(dv) as DataView;
      assert.ok(outDv instanceof DataView);
      assert.deepEqual([outDv.getUint8(0), outDv.getUint8(1), outDv.byteLength], [8, 7, 2]);
    });

    it('keeps regular expressions', () => {
      const out = rt({ re: /a+(b)?/giu }) as { re: RegExp };
      assert.ok(out.re instanceof RegExp);
      assert.equal(out.re.source, 'a+(b)?');
      assert.equal(out.re.flags, 'giu');
    });

    it('makes sparse arrays dense, with undefined in the holes', () => {
      const sparse: unknown[] = [1];
      sparse[2] = 3;
      const out = rt(sparse) as unknown[];
      assert.equal(out.length, 3);
      assert.equal(out[1], undefined);
      assert.equal(out[2], 3);
    });

    it('rebuilds a registered type without calling its constructor', () => {
      const p = new Point(3, 4);
      const before = Point.constructed;
      const out = rt({ p, list: [p] }) as { p: Point; list: Point[] };
      assert.equal(Point.constructed, before);
      assert.ok(out.p instanceof Point);
      assert.equal(out.p.norm(), 5);
      assert.deepEqual({ ...out.p }, { x: 3, y: 4 });
      assert.ok(out.list[0] instanceof Point);
    });

    it('uses custom serialize and deserialize', () => {
      const m = new Money(1999n, 'EUR');
      const out = rt(new Map([['price', m]])) as Map<string, Money>;
      const back = out.get('price');
      assert.ok(back instanceof Money);
      assert.equal(back.toString(), '1999 EUR');
    });

    it('rebuilds registered errors as their class, with code, custom fields, cause and stack', () => {
      const cause = new TypeError('bad input');
      const original = new TimeoutError('too slow', { cause });
      const out = rt(original);
      assert.ok(out instanceof TimeoutError);
      assert.equal(out.name, 'TimeoutError');
      assert.equal(out.message, 'too slow');
      assert.equal(out.code, 'GRANARY_TIMEOUT');
      assert.equal(out.stack, original.stack);
      assert.ok(out.cause instanceof TypeError);
      assert.equal((out.cause as Error).message, 'bad input');

      const declined = rt(new PaymentDeclined('card expired'));
      assert.ok(declined instanceof PaymentDeclined);
      assert.ok(declined instanceof GranaryError);
      assert.equal(declined.code, 'PAYMENT_DECLINED');
      assert.equal(declined.reason, 'card expired');
      assert.equal(declined.name, 'PaymentDeclined');

      const plain = Object.assign(new Error('disk'), { code: 'ENOSPC', errno: -28 });
      const outPlain = rt(plain) as Error & { code: string; errno: number };
      assert.equal(Object.getPrototypeOf(outPlain), Error.prototype);
      assert.deepEqual([outPlain.code, outPlain.errno, outPlain.message], ['ENOSPC', -28, 'disk']);

      const agg = rt(new AggregateError([new RangeError('r')], 'many'));
      assert.ok(agg instanceof AggregateError);
      assert.ok(agg.errors[0] instanceof RangeError);
    });

    it('turns errors of unregistered classes into RemoteError carrying the original name', () => {
      const original = new LocalOnlyError('only here');
      const out = rt(original);
      assert.ok(out instanceof RemoteError);
      assert.ok(out instanceof Error);
      assert.equal(out.name, 'RemoteError');
      assert.equal(out.remoteName, 'LocalOnlyError');
      assert.equal(out.message, 'only here');
      assert.equal(out.code, 'E_LOCAL');
      assert.deepEqual((out as unknown as LocalOnlyError).detail, { attempts: [1, 2] });
      assert.equal(out.stack, original.stack);

      class NoCode extends Error {
        override name = 'NoCode';
      }
      const noCode = rt(new NoCode('x'));
      assert.ok(noCode instanceof RemoteError);
      assert.equal(noCode.code, 'GRANARY_REMOTE_ERROR');
    });

    it('leaves out error properties that cannot cross, rather than losing the error', () => {
      const e = Object.assign(new Error('with socket'), { socket: new Unregistered(), retry: 3, onDone: () => {} });
      const out = rt(e) as Error & Record<string, unknown>;
      assert.equal(out.message, 'with socket');
      assert.equal(out['retry'], 3);
      assert.ok(!('socket' in out));
      assert.ok(!('onDone' in out));

      const loop = Object.assign(new Error('loop'), { n: 1 }) as unknown as Error & Record<string, unknown>;
      loop['self'] = loop;
      loop.cause = loop;
      const outLoop = rt(loop) as Error & Record<string, unknown>;
      assert.deepEqual(
        [outLoop.message, outLoop['n'], 'self' in outLoop, 'cause' in outLoop],
        ['loop', 1, false, false],
      );
    });
  });
}

// ---- copy specifics ----------------------------------------------------------

describe('copy', () => {
  it('returns primitives as they are and copies everything mutable', () => {
    assert.equal(copy('s'), 's');
    const original = {
      list: [{ n: 1 }],
      map: new Map([['k', { n: 2 }]]),
      set: new Set([[1]]),
      date: new Date(5),
      bytes: new Uint8Array([1]),
      point: new Point(1, 2),
      err: Object.assign(new Error('e'), { data: { n: 3 } }),
    };
    const c = copy(original);
    c.list[0]!.n = 10;
    c.map.get('k')!.n = 20;
    [...c.set][0]!.push(2);
    c.date.setTime(0);
    c.bytes[0] = 9;
    c.point.x = 100;
    (c.err as Error & { data: { n: number } }).data.n = 30;
    assert.equal(original.list[0]!.n, 1);
    assert.equal(original.map.get('k')!.n, 2);
    assert.deepEqual([...original.set][0], [1]);
    assert.equal(original.date.getTime(), 5);
    assert.equal(original.bytes[0], 1);
    assert.equal(original.point.x, 1);
    assert.equal((original.err as Error & { data: { n: number } }).data.n, 3);
  });

  it('skips immutable() values, which still encode', () => {
    const shared = immutable({ table: [1, 2, 3] });
    assert.equal(immutable(5), 5);
    assert.equal(copy(shared), shared);
    const outer = copy({ shared, other: { x: 1 } });
    assert.equal(outer.shared, shared);
    assert.deepEqual(wire(shared), { table: [1, 2, 3] });
    assert.notEqual(wire(shared), shared);
  });

  it('revives grain references through the context, and passes them as they are without one', () => {
    const ref = new FakeRef('counter', 'alice');
    const revived = copy({ who: [ref] }, ctx).who[0] as unknown as Revived;
    assert.ok(revived instanceof Revived);
    assert.deepEqual(revived.id, { type: 'counter', key: 'alice' });
    assert.equal(copy(ref), ref);
  });

  it('copyArgs copies in place and leaves primitive arguments alone', () => {
    const prims = [1, 'a', true, null, undefined, 5n];
    const same = copyArgs(prims);
    assert.equal(same, prims);
    assert.deepEqual(same, [1, 'a', true, null, undefined, 5n]);

    const obj = { deep: { x: 1 } };
    const args: unknown[] = ['k', obj, new FakeRef('room', 'r1')];
    assert.equal(copyArgs(args, ctx), args);
    assert.notEqual(args[1], obj);
    assert.deepEqual(args[1], obj);
    assert.ok(args[2] instanceof Revived);
  });

  it('copyArgs names the argument in the path', () => {
    assert.throws(
      () => copyArgs([1, { ok: true }, { handlers: [() => {}] }]),
      (e: unknown) => {
        assert.ok(e instanceof SerializationError);
        assert.equal(e.path, 'args[2].handlers[0]');
        assert.match(e.message, /args\[2\]\.handlers\[0\]/);
        return true;
      },
    );
  });
});

// ---- encode/decode specifics -------------------------------------------------

describe('encode/decode', () => {
  it('encodes to bytes', () => {
    assert.ok(encode({ a: 1 }) instanceof Uint8Array);
    assert.equal(decode(encode('x')), 'x');
    assert.equal(decode(encode(undefined)), undefined);
  });

  it('revives grain references through the context, else as frozen markers that still carry GRAIN_REF', () => {
    const bytes = encode({ owner: new FakeRef('user', 'u1') });
    const revived = (decode(bytes, ctx) as { owner: Revived }).owner;
    assert.ok(revived instanceof Revived);
    assert.deepEqual(revived.id, { type: 'user', key: 'u1' });

    const marker = (decode(bytes) as { owner: { type: string; key: string; [GRAIN_REF]: RefIdentity } }).owner;
    assert.ok(Object.isFrozen(marker));
    assert.deepEqual({ type: marker.type, key: marker.key }, { type: 'user', key: 'u1' });
    assert.deepEqual(marker[GRAIN_REF], { type: 'user', key: 'u1' });
    // The marker is still a reference: it re-encodes as one and revives on copy.
    assert.ok((decode(encode(marker), ctx) as unknown) instanceof Revived);
    assert.ok(copy(marker, ctx) instanceof Revived);
  });

  it('refuses a type that is not registered on the reading side', () => {
    class OnlyHere {
      v = 1;
    }
    registerType(OnlyHere, { name: 'test.OnlyHere' });
    const bytes = Buffer.from(encode(new OnlyHere()));
    const at = bytes.indexOf('test.OnlyHere');
    assert.ok(at > 0);
    bytes.write('test.NotHere!', at);
    assert.throws(
      () => decode(bytes),
      (e: unknown) =>
        e instanceof SerializationError && /test\.NotHere!/.test(e.message) && /registerType/.test(e.message),
    );
  });

  it('throws SerializationError on every truncation of a valid encoding', () => {
    const bytes = encode({
      s: 'text',
      n: [1, 2.5, 3n],
      m: new Map([['k', new Set([new Date(1)])]]),
      e: new TimeoutError('t'),
    });
    for (let n = 0; n < bytes.length; n++) {
      assert.throws(() => decode(bytes.subarray(0, n)), SerializationError, `prefix of ${n} bytes`);
    }
  });

  it('throws SerializationError on wrong input, never another error', () => {
    assert.throws(() => decode(new Uint8Array(0)), SerializationError);
    assert.throws(() => decode(Buffer.from('{"a":1}')), SerializationError);
    assert.throws(() => decode('nope' as unknown as Uint8Array), SerializationError);
    const valid = encode([1, 2, 3]);
    assert.throws(() => decode(Buffer.concat([valid, Buffer.from([0x01])])), SerializationError);
    // Random bytes behind the right format byte: a clean failure or a value, nothing else.
    let seed = 12345;
    const rand = (): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    let refused = 0;
    for (let i = 0; i < 2000; i++) {
      const junk = new Uint8Array(1 + Math.floor(rand() * 40));
      for (let j = 0; j < junk.length; j++) junk[j] = Math.floor(rand() * 256);
      junk[0] = valid[0]!;
      try {
        decode(junk);
      } catch (e) {
        assert.ok(e instanceof SerializationError, `random bytes threw ${String(e)}`);
        refused++;
      }
    }
    assert.ok(refused > 1500, `only ${refused} of 2000 random inputs were refused`);
  });
});

// ---- Refusals ----------------------------------------------------------------

for (const mode of ['copy', 'encode']) {
  describe(`${mode}: refusals name the path`, () => {
    it('a function', () => {
      const e = refusal(mode, { f() {} }, 'args');
      assert.equal(e.path, 'args.f');
      assert.match(e.message, /args\.f: a function \(f\)/);
    });

    it('a symbol in an array', () => {
      const e = refusal(mode, [[1, 2], [Symbol('s')]], 'result');
      assert.equal(e.path, 'result[1][0]');
      assert.match(e.message, /symbol/);
    });

    it('a Promise', () => {
      const e = refusal(mode, { pending: Promise.resolve(1) }, 'value');
      assert.equal(e.path, 'value.pending');
      assert.match(e.message, /Promise.*await it first/);
    });

    it('an unregistered class instance, with the class name and registerType', () => {
      const e = refusal(mode, { items: [{ ok: 1 }, new Unregistered()] }, 'args');
      assert.equal(e.path, 'args.items[1]');
      assert.match(e.message, /class Unregistered/);
      assert.match(e.message, /registerType\(Unregistered\)/);
    });

    it('inside Maps, Sets and registered types', () => {
      assert.equal(refusal(mode, { map: new Map([['k', { h: () => {} }]]) }, 'result').path, 'result.map.get("k").h');
      assert.equal(refusal(mode, new Map([[1, new WeakMap()]]), 'value').path, 'value.get(1)');
      assert.equal(refusal(mode, new Map([[{ k: 1 }, new WeakSet()]]), 'value').path, 'value.values()[0]');
      assert.equal(refusal(mode, new Map([[Symbol('key'), 1]]), 'value').path, 'value.keys()[0]');
      assert.equal(refusal(mode, new Set([1, () => {}]), 'value').path, 'value.values()[1]');
      assert.equal(refusal(mode, { p: new Point(1, (() => 2) as unknown as number) }, 'args').path, 'args.p.y');
      assert.equal(refusal(mode, { 'odd key': [Symbol.iterator] }, 'value').path, 'value["odd key"][0]');
    });

    it('a symbol or function at the root', () => {
      assert.equal(refusal(mode, Symbol('root'), 'value').path, 'value');
      assert.equal(refusal(mode, () => {}, 'result').path, 'result');
    });

    it('a cyclic value, naming where the cycle closes', () => {
      const a: Record<string, unknown> = { name: 'a' };
      const b = { back: [a] };
      a['child'] = b;
      const e = refusal(mode, { root: a }, 'args');
      assert.equal(e.path, 'args.root.child.back[0]');
      assert.match(e.message, /cyclic/);
      assert.match(e.message, /refers back to args\.root\b/);
    });

    it('a value nested more than 1000 levels', () => {
      const root: Record<string, unknown> = {};
      let node = root;
      for (let i = 0; i < 1100; i++) {
        const next = {};
        node['n'] = next;
        node = next;
      }
      const e = refusal(mode, root, 'value');
      assert.match(e.message, /1000 levels/);
      assert.ok(e.path.startsWith('value.n.n.n'));
    });

    it('a value nested 1000 levels is fine', () => {
      let v: unknown = 'leaf';
      for (let i = 0; i < 999; i++) v = [v];
      assert.doesNotThrow(() => (mode === 'copy' ? copy(v) : encode(v)));
    });
  });
}

// ---- Registry ----------------------------------------------------------------

describe('registry', () => {
  it('re-registering the same class is a no-op; two classes under one name is a ConfigurationError', () => {
    assert.doesNotThrow(() => registerType(Point));
    class Point2 {}
    Object.defineProperty(Point2, 'name', { value: 'Point' });
    assert.throws(
      () => registerType(Point2),
      (e: unknown) => e instanceof ConfigurationError && /"Point"/.test(e.message),
    );
    assert.throws(() => registerError(class extends Error {}, { name: 'TimeoutError' }), ConfigurationError);
  });

  it('refuses classes that copying own properties would break', () => {
    assert.throws(
      () => registerType(class MyMap extends Map {}),
      (e: unknown) => e instanceof ConfigurationError && /serialize/.test(e.message),
    );
    assert.throws(
      () => registerType(class Oops extends Error {}),
      (e: unknown) => e instanceof ConfigurationError && /registerError/.test(e.message),
    );
    assert.throws(() => registerError(Point as never), ConfigurationError);
  });
});
