// Framing of the byte stream between two processes: `[u32 BE length][u8 type][body]`,
// where the length counts the type byte and the body. The writer batches frames
// into one buffer per flush; the decoder cuts socket chunks back into frames.

import { FrameTooLargeError, ProtocolError } from '../errors.ts';

// Design notes.
// - FrameWriter appends into a slab (a large Buffer) from `end`; take() hands out
//   the view [start, end) and moves start up, so the bytes handed to the socket
//   are not written again while it may hold them, and nothing is copied at flush.
//   When the socket wrote a batch at once (its queue is empty after the write),
//   reuse() starts the next batch at the beginning of the same slab: a busy
//   connection then allocates no slab per 64 KiB sent. A batch that outgrows
//   the slab moves to a new, larger slab (one copy of the pending bytes, amortised
//   by doubling); oversized slabs are dropped after their batch is taken.
// - FrameDecoder hands out a body as (buffer, start, end): the socket chunk itself
//   when the frame lies whole inside it (Node allocates a fresh Buffer per read, so
//   its bytes stay valid for as long as they are held), with no view object per
//   frame. Only a frame cut by a chunk boundary is copied, once, into a buffer of
//   its exact size, allocated as soon as its length prefix is known and checked,
//   never before.

/** Bytes before a frame's type byte: the u32 length prefix. */
export const FRAME_PREFIX_BYTES = 4;
/** Bytes a frame takes besides its body: length prefix and type byte. */
export const FRAME_OVERHEAD_BYTES = 5;

/**
 * A frame header written straight into the outgoing batch: no scratch space,
 * no copy. The writer makes room for `maxBytes`, calls `writeTo`, then copies
 * the frame's payload after it.
 */
export interface FrameHead {
  /** At least the number of bytes `writeTo` writes. */
  readonly maxBytes: number;
  /** Writes the header into `buf` from `at`; returns the offset where it ended. Throws to refuse the frame (nothing is sent). */
  writeTo(buf: Buffer, at: number): number;
}

/**
 * Receives decoded frames: the body is `buf[start, end)`, valid for as long as
 * it is held and never written again. Return false to stop decoding the rest of
 * the chunk.
 */
export interface FrameSink {
  onFrame(type: number, buf: Buffer, start: number, end: number): boolean;
}

const EMPTY = Buffer.alloc(0);
const NO_HEAD = new Uint8Array(0);
/** Heads up to this size are copied byte by byte. */
const SMALL_HEAD_BYTES = 96;

/** Appends frames to a growing batch; `take()` returns the batch as one Buffer. */
export class FrameWriter {
  #slab: Buffer = EMPTY;
  #start = 0;
  #end = 0;
  readonly #slabBytes: number;
  #maxFrameBytes: number;

  /** `maxFrameBytes` bounds each frame (type byte and body); `slabBytes` is the usual slab size. */
  constructor(maxFrameBytes: number, slabBytes = 64 * 1024) {
    this.#maxFrameBytes = maxFrameBytes;
    this.#slabBytes = slabBytes;
  }

  /** The largest frame append() takes (type byte and body). */
  get maxFrameBytes(): number {
    return this.#maxFrameBytes;
  }

  set maxFrameBytes(value: number) {
    this.#maxFrameBytes = value;
  }

  /** Bytes appended since the last `take()`. */
  get pendingBytes(): number {
    return this.#end - this.#start;
  }

  /**
   * Appends one frame; the body is copied, so the caller may reuse it at once.
   * Throws a ProtocolError for a type outside 0..255 and a FrameTooLargeError
   * for a body over the limit.
   */
  append(type: number, body: Uint8Array): void {
    this.append2(type, NO_HEAD, body);
  }

  /**
   * Appends one frame whose body is the first `headLength` bytes of `head`
   * followed by `body`, with no intermediate copy (so a header can be written
   * into reused scratch space and sent without a view of its own).
   */
  append2(type: number, head: Uint8Array, body: Uint8Array, headLength = head.length): void {
    if ((type & 0xff) !== type) throw new ProtocolError(`frame type must be an integer from 0 to 255, got ${type}`);
    if (!(headLength >= 0 && headLength <= head.length))
      throw new ProtocolError(`headLength ${headLength} is outside the head's ${head.length} bytes`);
    const bodyLength = headLength + body.length;
    const length = bodyLength + 1;
    if (length > this.#maxFrameBytes) {
      throw new FrameTooLargeError(`frame of ${length} bytes exceeds maxFrameBytes (${this.#maxFrameBytes})`);
    }
    let at = this.#end;
    if (at + FRAME_OVERHEAD_BYTES + bodyLength > this.#slab.length) at = this.#grow(FRAME_OVERHEAD_BYTES + bodyLength);
    const slab = this.#slab;
    slab[at] = length >>> 24;
    slab[at + 1] = (length >>> 16) & 0xff;
    slab[at + 2] = (length >>> 8) & 0xff;
    slab[at + 3] = length & 0xff;
    slab[at + 4] = type;
    const h = at + FRAME_OVERHEAD_BYTES;
    if (headLength <= SMALL_HEAD_BYTES) {
      // Headers are tens of bytes: a loop beats a native copy's call cost, and needs no view.
      for (let i = 0; i < headLength; i++) slab[h + i] = head[i] as number;
    } else {
      slab.set(headLength === head.length ? head : new Uint8Array(head.buffer, head.byteOffset, headLength), h);
    }
    if (body.length !== 0) slab.set(body, h + headLength);
    this.#end = at + FRAME_OVERHEAD_BYTES + bodyLength;
  }

  /** Appends one frame whose body is `head`, written in place, followed by `body`. */
  appendHead(type: number, head: FrameHead, body: Uint8Array): void {
    if ((type & 0xff) !== type) throw new ProtocolError(`frame type must be an integer from 0 to 255, got ${type}`);
    if (body.length + 1 > this.#maxFrameBytes) {
      throw new FrameTooLargeError(
        `frame of more than ${body.length + 1} bytes exceeds maxFrameBytes (${this.#maxFrameBytes})`,
      );
    }
    const room = FRAME_OVERHEAD_BYTES + head.maxBytes + body.length;
    let at = this.#end;
    if (at + room > this.#slab.length) at = this.#grow(room);
    const slab = this.#slab;
    const h = at + FRAME_OVERHEAD_BYTES;
    // Written past #end: a header that throws, or a frame found too big, leaves the batch as it was.
    const headEnd = head.writeTo(slab, h);
    const length = headEnd - h + body.length + 1;
    if (length > this.#maxFrameBytes) {
      throw new FrameTooLargeError(`frame of ${length} bytes exceeds maxFrameBytes (${this.#maxFrameBytes})`);
    }
    slab[at] = length >>> 24;
    slab[at + 1] = (length >>> 16) & 0xff;
    slab[at + 2] = (length >>> 8) & 0xff;
    slab[at + 3] = length & 0xff;
    slab[at + 4] = type;
    if (body.length !== 0) slab.set(body, headEnd);
    this.#end = headEnd + body.length;
  }

  /** The pending frames as one Buffer (a view nobody writes again), or undefined when there are none. */
  take(): Buffer | undefined {
    const start = this.#start;
    const end = this.#end;
    if (start === end) return undefined;
    const out = this.#slab.subarray(start, end);
    if (this.#slab.length > this.#slabBytes) {
      // Do not keep an oversized slab for the next, probably small, batch.
      this.#slab = EMPTY;
      this.#start = this.#end = 0;
    } else {
      this.#start = end;
    }
    return out;
  }

  /**
   * Says that the bytes handed out by `take()` are no longer read (the socket
   * wrote them all at once): when nothing is pending, the next frames start
   * again at the beginning of the same slab instead of filling a new one.
   */
  reuse(): void {
    if (this.#start === this.#end) this.#start = this.#end = 0;
  }

  /** Drops the pending frames. */
  clear(): void {
    this.#start = this.#end;
  }

  /** Moves the pending bytes to a slab with room for `need` more; returns the new write offset. */
  #grow(need: number): number {
    const pending = this.#end - this.#start;
    let size = this.#slabBytes;
    while (size < pending + need) size *= 2;
    const slab = Buffer.allocUnsafe(size);
    if (pending !== 0) this.#slab.copy(slab, 0, this.#start, this.#end);
    this.#slab = slab;
    this.#start = 0;
    this.#end = pending;
    return pending;
  }
}

/** One frame as a Buffer of its own (tests, tools, hand-written peers). */
export function encodeFrame(type: number, body: Uint8Array = EMPTY): Buffer {
  const writer = new FrameWriter(0xffffffff, FRAME_OVERHEAD_BYTES + body.length);
  writer.append(type, body);
  return writer.take() ?? EMPTY;
}

/**
 * Cuts socket chunks into frames and hands each to the sink as `(type, body)`.
 * `push` throws a ProtocolError when a length prefix is 0 or over `maxFrameBytes`,
 * before any byte of that frame's body is buffered.
 */
export class FrameDecoder {
  readonly #sink: FrameSink;
  #maxFrameBytes: number;
  /** A length prefix cut by a chunk boundary. */
  readonly #head = Buffer.allocUnsafe(FRAME_PREFIX_BYTES);
  #headLength = 0;
  /** The type byte and body of a frame cut by a chunk boundary, filled up to #fill. */
  #frame: Buffer | undefined = undefined;
  #fill = 0;

  constructor(sink: FrameSink, maxFrameBytes: number) {
    this.#sink = sink;
    this.#maxFrameBytes = maxFrameBytes;
  }

  /** The largest frame accepted (type byte and body); may change between frames, even within one chunk. */
  get maxFrameBytes(): number {
    return this.#maxFrameBytes;
  }

  set maxFrameBytes(value: number) {
    this.#maxFrameBytes = value;
  }

  /** Bytes held of a frame not yet complete; 0 at a frame boundary. */
  get bufferedBytes(): number {
    return this.#headLength + (this.#frame === undefined ? 0 : FRAME_PREFIX_BYTES + this.#fill);
  }

  /** Decodes every whole frame of `chunk`; returns false when the sink asked to stop. */
  push(chunk: Buffer): boolean {
    const n = chunk.length;
    let off = 0;
    if (this.#headLength !== 0 || this.#frame !== undefined) {
      off = this.#resume(chunk);
      if (off < 0) return false;
    }
    const sink = this.#sink;
    while (n - off >= FRAME_PREFIX_BYTES) {
      const length = chunk.readUInt32BE(off);
      if (length === 0 || length > this.#maxFrameBytes) throw this.#lengthError(length);
      const end = off + FRAME_PREFIX_BYTES + length;
      if (end > n) {
        // The frame goes on in the next chunks: copy what is here into a buffer of its size.
        const frame = Buffer.allocUnsafe(length);
        this.#fill = chunk.copy(frame, 0, off + FRAME_PREFIX_BYTES, n);
        this.#frame = frame;
        return true;
      }
      const type = chunk[off + FRAME_PREFIX_BYTES] as number;
      const start = off + FRAME_OVERHEAD_BYTES;
      off = end;
      if (!sink.onFrame(type, chunk, start, end)) return false;
    }
    if (off < n) this.#headLength = chunk.copy(this.#head, 0, off, n);
    return true;
  }

  /** Completes the frame cut by the last chunk; returns the offset after it, n if it is still incomplete, -1 if stopped. */
  #resume(chunk: Buffer): number {
    const n = chunk.length;
    let off = 0;
    if (this.#headLength !== 0) {
      const take = Math.min(FRAME_PREFIX_BYTES - this.#headLength, n);
      chunk.copy(this.#head, this.#headLength, 0, take);
      this.#headLength += take;
      off = take;
      if (this.#headLength < FRAME_PREFIX_BYTES) return n;
      this.#headLength = 0;
      const length = this.#head.readUInt32BE(0);
      if (length === 0 || length > this.#maxFrameBytes) throw this.#lengthError(length);
      this.#frame = Buffer.allocUnsafe(length);
      this.#fill = 0;
    }
    const frame = this.#frame;
    if (frame === undefined) return off;
    const copied = chunk.copy(frame, this.#fill, off, Math.min(n, off + frame.length - this.#fill));
    this.#fill += copied;
    off += copied;
    if (this.#fill < frame.length) return n;
    this.#frame = undefined;
    this.#fill = 0;
    return this.#sink.onFrame(frame[0] as number, frame, 1, frame.length) ? off : -1;
  }

  #lengthError(length: number): ProtocolError {
    return new ProtocolError(
      length === 0
        ? 'frame length 0: a frame holds at least its type byte'
        : `frame length ${length} exceeds maxFrameBytes (${this.#maxFrameBytes})`,
    );
  }
}
