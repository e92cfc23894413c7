// The fleet's HTTP API (fastify, one server per silo process): telemetry in,
// commands out, the aggregates, the live feed as server-sent events, the
// OpenAPI description, and the web page. Every request is a grain call; the
// server keeps no state of its own beyond the live feed's connections.

import { readFileSync } from 'node:fs';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance } from 'fastify';
import { isTransient, type Silo } from 'granary';
import { AlertLog, Device, Fleet, Region, Site } from './grains.ts';
import type { LiveHub } from './live.ts';
import { DEVICE_ID, REGION_ID, SITE_ID, parseTelemetry, telemetrySchema } from './model.ts';

const page = readFileSync(new URL('./page.html', import.meta.url), 'utf8');

const anyObject = { type: 'object', additionalProperties: true } as const;
const errorBody = {
  type: 'object',
  properties: { statusCode: { type: 'integer' }, error: { type: 'string' }, message: { type: 'string' } },
} as const;
const commandSchema = {
  type: 'object',
  required: ['commandId', 'name', 'args'],
  properties: { commandId: { type: 'string' }, name: { type: 'string' }, args: anyObject },
} as const;
const idParam = (name: string, pattern: RegExp, example: string) =>
  ({
    type: 'object',
    required: [name],
    properties: { [name]: { type: 'string', pattern: pattern.source, description: `like ${example}` } },
  }) as const;

/**
 * A grain's error as an HTTP status: the application's own codes; 503 for the
 * cluster's transient failures and 504 for a timeout, which a device may retry
 * (its seq makes a retry safe); 500 for the rest, a bug that a retry won't cure.
 */
function statusOf(e: unknown): number {
  const code = (e as { code?: unknown }).code;
  if (code === 'FLEET_TOO_MANY_COMMANDS') return 429;
  if (isTransient(e)) return 503;
  if (code === 'GRANARY_TIMEOUT') return 504;
  return 500;
}

/** Builds the fastify app (not listening yet). */
export async function buildHttp(silo: Silo, live: LiveHub): Promise<FastifyInstance> {
  // No type coercion: a seq sent as "5" is a bad body, not 5.
  const app = Fastify({ logger: false, ajv: { customOptions: { coerceTypes: false } } });
  await app.register(swagger, {
    openapi: {
      info: {
        title: 'Granary fleet',
        version: '1.0.0',
        description: 'A back end for a fleet of connected devices, built on Granary grains.',
      },
    },
  });

  app.setErrorHandler((err: Error & { statusCode?: number; validation?: unknown }, _req, reply) => {
    if (err.validation !== undefined || err.statusCode === 400 || err.statusCode === 415)
      return reply
        .code(err.statusCode ?? 400)
        .send({ statusCode: err.statusCode ?? 400, error: 'Bad Request', message: err.message });
    const status = statusOf(err);
    return reply.code(status).send({ statusCode: status, error: err.name, message: err.message });
  });

  app.post<{ Params: { id: string }; Body: unknown }>(
    '/api/devices/:id/telemetry',
    {
      schema: {
        summary: 'Send one telemetry message',
        description:
          'Answered once the message is durable (the device state is written). A seq at or below the last accepted one is a repeat: answered again (with the commands handed out with that seq), never counted twice.',
        params: idParam('id', DEVICE_ID, 'dev-000042'),
        body: telemetrySchema,
        response: {
          200: {
            type: 'object',
            properties: {
              seq: { type: 'integer' },
              commands: { type: 'array', items: commandSchema },
              duplicate: { type: 'boolean' },
            },
          },
          400: errorBody,
        },
      },
    },
    async (req, reply) => {
      const parsed = parseTelemetry(req.body);
      if (!parsed.ok) return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: parsed.error });
      return silo.getGrain(Device, req.params.id).telemetry(parsed.value);
    },
  );

  app.get<{ Params: { id: string } }>(
    '/api/devices/:id',
    {
      schema: {
        summary: 'A device: latest state, short history, status, alerts',
        params: idParam('id', DEVICE_ID, 'dev-000042'),
        response: { 200: anyObject, 404: errorBody },
      },
    },
    async (req, reply) => {
      const view = await silo.getGrain(Device, req.params.id).view();
      if (view === null)
        return reply
          .code(404)
          .send({ statusCode: 404, error: 'Not Found', message: `${req.params.id} never sent telemetry` });
      return view;
    },
  );

  app.post<{ Params: { id: string }; Body: { name: string; args?: Record<string, unknown> } }>(
    '/api/devices/:id/commands',
    {
      schema: {
        summary: 'Queue a command for a device',
        description: 'Durable once answered; delivered once, with the answer to the device’s next telemetry.',
        params: idParam('id', DEVICE_ID, 'dev-000042'),
        body: {
          type: 'object',
          required: ['name'],
          properties: { name: { type: 'string', minLength: 1, maxLength: 64 }, args: anyObject },
        },
        response: {
          202: { type: 'object', properties: { commandId: { type: 'string' } } },
          400: errorBody,
          429: errorBody,
        },
      },
    },
    async (req, reply) => {
      const queued = await silo.getGrain(Device, req.params.id).enqueueCommand(req.body.name, req.body.args ?? {});
      return reply.code(202).send(queued);
    },
  );

  app.get(
    '/api/fleet',
    { schema: { summary: 'Fleet totals, per kind and per region', response: { 200: anyObject } } },
    () => silo.getGrain(Fleet, 'fleet').view(),
  );

  app.get<{ Params: { region: string } }>(
    '/api/regions/:region',
    {
      schema: {
        summary: 'A region: totals, its sites, recent alert changes',
        params: idParam('region', REGION_ID, 'region-1'),
        response: { 200: anyObject, 404: errorBody },
      },
    },
    async (req, reply) => {
      const [view, recentAlerts] = await Promise.all([
        silo.getGrain(Region, req.params.region).view(),
        silo.getGrain(AlertLog, req.params.region).recent(),
      ]);
      if (view === null)
        return reply
          .code(404)
          .send({ statusCode: 404, error: 'Not Found', message: `no device reported in ${req.params.region}` });
      return { ...view, recentAlerts };
    },
  );

  app.get<{ Params: { site: string } }>(
    '/api/sites/:site',
    {
      schema: {
        summary: 'A site: totals and its devices',
        params: idParam('site', SITE_ID, 'site-7'),
        response: { 200: anyObject, 404: errorBody },
      },
    },
    async (req, reply) => {
      const view = await silo.getGrain(Site, req.params.site).view();
      if (view === null)
        return reply
          .code(404)
          .send({ statusCode: 404, error: 'Not Found', message: `no device reported at ${req.params.site}` });
      return view;
    },
  );

  app.get(
    '/api/alerts',
    { schema: { summary: 'Devices in alert (the count is exact, the list capped)', response: { 200: anyObject } } },
    () => silo.getGrain(Fleet, 'fleet').alerts(),
  );

  app.get(
    '/api/live',
    {
      schema: {
        summary:
          'Server-sent events: `fleet` (numbers, every second), `alerts` (the list, when it changes), `alert` (each change, as it happens)',
      },
    },
    (req, reply) => {
      reply.hijack();
      live.attach(req.raw, reply.raw);
    },
  );

  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger());
  app.get('/', { schema: { hide: true } }, (_req, reply) => reply.type('text/html; charset=utf-8').send(page));
  return app;
}
