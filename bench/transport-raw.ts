// bench/transport-raw: request/response between two processes over Granary's
// transport (Connector → Listener) against the same over a bare net.Socket with
// hand-written length-prefixed framing batched per tick, measured in one run.
// Run: node --import tsx --conditions=source bench/transport-raw.ts [--quick] [--in-flight=1000]

import { fork } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Connector } from '../src/transport/connector.ts';
import { listen } from '../src/transport/listener.ts';

const IN_FLIGHT = Number(process.argv.find((a) => a.startsWith('--in-flight='))?.slice('--in-flight='.length) ?? 1000);
const BODY_BYTES = 32;
const quick = process.argv.includes('--quick');
const ROUND_MS = quick ? 300 : 700;
const ROUNDS = quick ? 2 : 3;

// ---- The hand-written baseline: framing and per-tick batching, as one would write it inline ----

type OnFrame = (type: number, body: Buffer) => void;

class RawPeer {
  #socket: Socket;
  #out = Buffer.allocUnsafe(64 * 1024);
  #outLength = 0;
  #scheduled = false;
  #rest: Buffer | undefined;

  constructor(socket: Socket, onFrame: OnFrame) {
    this.#socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      const buf = this.#rest === undefined ? chunk : Buffer.concat([this.#rest, chunk]);
      let off = 0;
      while (buf.length - off >= 4) {
        const length = buf.readUInt32BE(off);
        if (buf.length - off - 4 < length) break;
        onFrame(buf.readUInt8(off + 4), buf.subarray(off + 5, off + 4 + length));
        off += 4 + length;
      }
      this.#rest = off < buf.length ? buf.subarray(off) : undefined;
    });
  }

  send(type: number, body: Uint8Array): void {
    const need = this.#outLength + 5 + body.length;
    if (need > this.#out.length) {
      const bigger = Buffer.allocUnsafe(Math.max(need, this.#out.length * 2));
      this.#out.copy(bigger, 0, 0, this.#outLength);
      this.#out = bigger;
    }
    this.#out.writeUInt32BE(body.length + 1, this.#outLength);
    this.#out[this.#outLength + 4] = type;
    this.#out.set(body, this.#outLength + 5);
    this.#outLength = need;
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.#socket.write(this.#out.subarray(0, this.#outLength));
        this.#out = Buffer.allocUnsafe(64 * 1024);
        this.#outLength = 0;
      });
    }
  }
}

// ---- The child: two echo servers ----

async function child(): Promise<void> {
  const raw = createServer((socket) => {
    const peer: RawPeer = new RawPeer(socket, (type, body) => peer.send(type, body));
    socket.on('error', () => {});
  });
  raw.listen(0, '127.0.0.1');
  await once(raw, 'listening');
  const rawAddress = raw.address();
  const granary = await listen({
    port: 0,
    hello: { clusterId: 'bench', generation: 1, role: 'silo' },
    handler: { onFrame: (type, buf, start, end, connection) => connection.send(type, buf.subarray(start, end)) },
    onConnection: () => {},
  });
  process.send?.({
    raw: typeof rawAddress === 'object' && rawAddress !== null ? rawAddress.port : 0,
    granary: granary.address,
  });
  process.on('disconnect', () => process.exit(0));
}

// ---- The parent: 1,000 callers in flight, each awaiting its response ----

interface Caller {
  send(type: number, body: Uint8Array): void;
}

const waiting = new Map<number, () => void>();
let nextId = 0;
const scratch = Buffer.alloc(BODY_BYTES, 7);

function onResponse(_type: number, body: Buffer): void {
  const id = body.readUInt32LE(0);
  const resolve = waiting.get(id);
  waiting.delete(id);
  resolve?.();
}

function call(caller: Caller): Promise<void> {
  const id = nextId++ >>> 0;
  scratch.writeUInt32LE(id, 0);
  const done = new Promise<void>((resolve) => waiting.set(id, resolve));
  caller.send(1, scratch);
  return done;
}

async function calls(caller: Caller, ms: number): Promise<number> {
  let count = 0;
  const end = Date.now() + ms;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (Date.now() < end) {
        await call(caller);
        count++;
      }
    }),
  );
  return count / (ms / 1000);
}

async function parent(): Promise<void> {
  const worker = fork(fileURLToPath(import.meta.url), ['child'], {
    execArgv: ['--import', 'tsx', '--conditions=source'],
  });
  const [ports] = (await once(worker, 'message')) as [{ raw: number; granary: string }];

  const socket = connect({ host: '127.0.0.1', port: ports.raw });
  await once(socket, 'connect');
  const raw = new RawPeer(socket, onResponse);
  const connector = new Connector({
    hello: { clusterId: 'bench', address: 'bench-client', generation: 1, role: 'client' },
    handler: { onFrame: onResponse },
  });
  const connection = await connector.get(ports.granary);

  await calls(raw, ROUND_MS / 2);
  await calls(connection, ROUND_MS / 2);
  const rawRates: number[] = [];
  const granaryRates: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    rawRates.push(await calls(raw, ROUND_MS));
    granaryRates.push(await calls(connection, ROUND_MS));
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const rawRate = median(rawRates);
  const granaryRate = median(granaryRates);
  const fmt = (n: number): string => Math.round(n).toLocaleString('en-US').padStart(12);
  console.log(
    `request/response, ${IN_FLIGHT} in flight, ${BODY_BYTES}-byte bodies, median of ${ROUNDS} rounds of ${ROUND_MS} ms`,
  );
  console.log(`${'transport'.padEnd(34)}${'calls/s'.padStart(12)}`);
  console.log(`${'raw net.Socket, hand-written'.padEnd(34)}${fmt(rawRate)}`);
  console.log(`${'granary Connection'.padEnd(34)}${fmt(granaryRate)}`);
  console.log(
    `ratio granary/raw: ${(granaryRate / rawRate).toFixed(2)}  (writes: ${connection.stats.writes}, frames sent: ${connection.stats.framesSent})`,
  );

  socket.destroy();
  await connector.close();
  worker.disconnect();
}

if (process.argv[2] === 'child') await child();
else await parent();
