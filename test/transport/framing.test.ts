// FrameWriter and FrameDecoder without sockets: round trips, every way of cutting
// a stream into chunks, zero-copy bodies, limits checked before buffering.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FrameTooLargeError, ProtocolError } from '../../src/errors.ts';
import { FrameDecoder, FrameWriter, encodeFrame, type FrameSink } from '../../src/transport/framing.ts';
import { body } from './support.ts';

interface Got {
  type: number;
  body: Buffer;
}

function decoderInto(out: Got[], max = 16 * 1024 * 1024): FrameDecoder {
  const sink: FrameSink = {
    onFrame: (type, b, start, end) => (out.push({ type, body: Buffer.from(b.subarray(start, end)) }), true),
  };
  return new FrameDecoder(sink, max);
}

function stream(frames: readonly Got[]): Buffer {
  const writer = new FrameWriter(64 * 1024 * 1024, 256);
  for (const f of frames) writer.append(f.type, f.body);
  return writer.take() ?? Buffer.alloc(0);
}

const sample: Got[] = [
  { type: 1, body: body(0, 1) },
  { type: 255, body: body(1, 2) },
  { type: 0, body: body(3, 3) },
  { type: 7, body: body(4, 4) },
  { type: 8, body: body(5, 5) },
  { type: 9, body: body(300, 6) },
];

describe('framing', () => {
  it('writes [u32 BE length][type][body] with the length counting the type byte', () => {
    const frame = encodeFrame(0x2a, Buffer.from([1, 2, 3]));
    assert.deepEqual([...frame], [0, 0, 0, 4, 0x2a, 1, 2, 3]);
    assert.deepEqual([...encodeFrame(5)], [0, 0, 0, 1, 5]);
  });

  it('round-trips frames of mixed sizes, 0 bytes and several MiB included, in one chunk', () => {
    const frames: Got[] = [
      { type: 1, body: body(0, 1) },
      { type: 2, body: body(1, 2) },
      { type: 3, body: body(5 * 1024 * 1024 + 3, 3) },
      { type: 4, body: body(0, 4) },
      { type: 5, body: body(70_000, 5) },
      { type: 6, body: body(2 * 1024 * 1024, 6) },
    ];
    const got: Got[] = [];
    assert.equal(decoderInto(got).push(stream(frames)), true);
    assert.equal(got.length, frames.length);
    got.forEach((g, i) => {
      assert.equal(g.type, frames[i]?.type, `type of frame ${i}`);
      assert.ok(g.body.equals(frames[i]?.body ?? Buffer.alloc(1)), `body of frame ${i}`);
    });
  });

  it('decodes a stream fed byte by byte', () => {
    const bytes = stream(sample);
    const got: Got[] = [];
    const decoder = decoderInto(got);
    for (let i = 0; i < bytes.length; i++) decoder.push(bytes.subarray(i, i + 1));
    assert.deepEqual(got, sample);
    assert.equal(decoder.bufferedBytes, 0);
  });

  it('decodes a stream cut at every possible pair of points', () => {
    const bytes = stream(sample.slice(0, 5));
    for (let a = 0; a <= bytes.length; a++) {
      for (let b = a; b <= bytes.length; b++) {
        const got: Got[] = [];
        const decoder = decoderInto(got);
        decoder.push(bytes.subarray(0, a));
        decoder.push(bytes.subarray(a, b));
        decoder.push(bytes.subarray(b));
        assert.deepEqual(got, sample.slice(0, 5), `cut at ${a} and ${b}`);
      }
    }
  });

  it('hands out bodies that lie whole in a chunk as offsets into it, without copying', () => {
    const chunk = stream(sample);
    const seen: { buf: Buffer; start: number; end: number }[] = [];
    const decoder = new FrameDecoder(
      { onFrame: (_t, buf, start, end) => (seen.push({ buf, start, end }), true) },
      1024,
    );
    decoder.push(chunk);
    assert.equal(seen.length, sample.length);
    let at = 0;
    for (const [i, f] of seen.entries()) {
      assert.equal(f.buf, chunk, `frame ${i} is read from the chunk itself`);
      assert.equal(f.start, at + 5);
      assert.ok(f.buf.subarray(f.start, f.end).equals(sample[i]?.body ?? Buffer.alloc(1)), `frame ${i}'s bytes`);
      at = f.end;
    }
  });

  it('stops when the sink returns false', () => {
    const seen: number[] = [];
    const decoder = new FrameDecoder({ onFrame: (type) => (seen.push(type), type !== 255) }, 1024);
    assert.equal(decoder.push(stream(sample)), false);
    assert.deepEqual(seen, [1, 255]);
  });

  it('refuses a length prefix over the limit as soon as the prefix is complete', () => {
    const decoder = decoderInto([], 100);
    assert.throws(
      () => decoder.push(Buffer.from([0xff, 0xff, 0xff, 0xff])),
      (e: unknown) =>
        e instanceof ProtocolError &&
        e.code === 'GRANARY_PROTOCOL' &&
        /frame length 4294967295 exceeds maxFrameBytes \(100\)/.test(e.message),
    );
    const split = decoderInto([], 100);
    split.push(Buffer.from([0, 0]));
    assert.throws(() => split.push(Buffer.from([0, 101])), /frame length 101 exceeds/);
    assert.equal(split.bufferedBytes, 0, 'nothing of the refused frame is buffered');
    assert.doesNotThrow(() => decoderInto([], 100).push(encodeFrame(1, body(99, 1))));
  });

  it('refuses a length of 0', () => {
    assert.throws(
      () => decoderInto([]).push(Buffer.from([0, 0, 0, 0, 1])),
      (e: unknown) => e instanceof ProtocolError && /frame length 0/.test(e.message),
    );
  });

  it('applies a lowered limit from the next frame on, even within a chunk', () => {
    const got: Got[] = [];
    const decoder: FrameDecoder = new FrameDecoder(
      {
        onFrame: (type, b, start, end) => {
          got.push({ type, body: b.subarray(start, end) });
          decoder.maxFrameBytes = 10;
          return true;
        },
      },
      1000,
    );
    const bytes = Buffer.concat([encodeFrame(1, body(50, 1)), encodeFrame(2, body(50, 2))]);
    assert.throws(() => decoder.push(bytes), /frame length 51 exceeds maxFrameBytes \(10\)/);
    assert.equal(got.length, 1);
  });

  it('writer: checks type and size, batches into one buffer, keeps handed-out bytes intact', () => {
    const writer = new FrameWriter(10, 16);
    assert.throws(() => writer.append(256, Buffer.alloc(0)), ProtocolError);
    assert.throws(() => writer.append(-1, Buffer.alloc(0)), ProtocolError);
    assert.throws(() => writer.append(1.5, Buffer.alloc(0)), /frame type must be an integer from 0 to 255, got 1.5/);
    assert.throws(() => writer.append2(1, Buffer.alloc(2), Buffer.alloc(0), 3), ProtocolError);
    assert.throws(
      () => writer.append(1, Buffer.alloc(10)),
      (e: unknown) => e instanceof FrameTooLargeError && e.code === 'GRANARY_FRAME_TOO_LARGE',
    );
    assert.equal(writer.take(), undefined);
    writer.append(1, body(9, 1));
    const first = Buffer.from(writer.take() ?? Buffer.alloc(0));
    const firstView = writer.take();
    assert.equal(firstView, undefined);
    // Many frames: the slab grows; earlier batches must not change.
    const held: Buffer[] = [];
    const copies: Buffer[] = [];
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < round; i++) writer.append(i, body(i % 10, round));
      const out = writer.take();
      if (out !== undefined) {
        held.push(out);
        copies.push(Buffer.from(out));
      }
    }
    held.forEach((h, i) => assert.ok(h.equals(copies[i] ?? Buffer.alloc(0)), `batch ${i} unchanged`));
    assert.deepEqual([...first], [0, 0, 0, 10, 1, ...body(9, 1)]);
  });
});
