// The hello service: an HTTP front end whose every request is a grain call.
//   GET  /counter/:key            -> { key, value }
//   POST /counter/:key/increment  -> { key, value }   (body: optional { by })

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Silo, type SiloOptions } from 'granary';
import { sqliteStorage } from 'granary/sqlite';
import { Counter } from './grains.ts';

/** Starts the silo and the HTTP server; `stop()` closes both. */
export async function startHello(
  options: { port?: number; dbPath?: string; silo?: SiloOptions } = {},
): Promise<{ url: string; silo: Silo; server: Server; stop(): Promise<void> }> {
  const silo = await Silo.start({
    grains: [Counter],
    storage: { default: sqliteStorage({ path: options.dbPath ?? '.granary/hello.db' }) },
    ...options.silo,
  });
  const server = createServer((req, res) => void handle(silo, req, res));
  await new Promise<void>((resolve) => server.listen(options.port ?? 8080, '127.0.0.1', resolve));
  const addr = server.address();
  const url = `http://127.0.0.1:${typeof addr === 'object' && addr !== null ? addr.port : 0}`;
  return {
    url,
    silo,
    server,
    async stop() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await silo.stop();
    },
  };
}

async function body(req: IncomingMessage): Promise<unknown> {
  let s = '';
  for await (const chunk of req) s += String(chunk);
  return s === '' ? {} : JSON.parse(s);
}

function send(res: ServerResponse, status: number, payload: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(payload));
}

async function handle(silo: Silo, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const m = /^\/counter\/([^/]+)(\/increment)?$/.exec(req.url ?? '');
  if (m === null) return send(res, 404, { error: 'try GET /counter/:key or POST /counter/:key/increment' });
  const key = decodeURIComponent(m[1] as string);
  const counter = silo.getGrain(Counter, key);
  try {
    if (m[2] !== undefined && req.method === 'POST') {
      const { by = 1 } = (await body(req)) as { by?: unknown };
      if (typeof by !== 'number' || !Number.isFinite(by))
        return send(res, 400, { error: `'by' must be a number, got ${JSON.stringify(by)}` });
      return send(res, 200, { key, value: await counter.increment(by) });
    }
    if (m[2] === undefined && req.method === 'GET') return send(res, 200, { key, value: await counter.get() });
    return send(res, 405, { error: `${req.method} not allowed here` });
  } catch (e) {
    return send(res, 500, { error: (e as Error).message, code: (e as { code?: string }).code });
  }
}
