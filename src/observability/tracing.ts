// OpenTelemetry tracing through @opentelemetry/api: a span per grain call on
// the caller's side (CLIENT) and on the grain's silo (SERVER), per activation,
// per storage operation. The trace context travels in the RequestContext as
// W3C `traceparent`/`tracestate`, so a request through clients and silos is
// one trace. With no tracer provider registered nothing here is installed: the
// call path is the one without filters.

import {
  context as otel,
  ProxyTracerProvider,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  createTraceState,
  trace,
  type Context,
  type Span,
  type SpanContext,
  type Tracer,
  type TracerProvider,
} from '@opentelemetry/api';
import { GranaryError } from '../errors.ts';
import type { IncomingCallFilter, OutgoingCallFilter } from '../messaging/filters.ts';
import {
  currentContext,
  enableRequestContext,
  setTraceContext,
  type ContextValues,
} from '../messaging/request-context.ts';
import type { StateAddress, StorageProvider } from '../storage/provider.ts';

/** Tracing of a silo or client: on (the global tracer provider, or the one given) or off. */
export type TracingOption = boolean | { tracerProvider: TracerProvider };

/** The RequestContext keys the trace context travels under (as Orleans names them). */
export const TRACEPARENT = 'traceparent';
export const TRACESTATE = 'tracestate';

const noopDelegate = new ProxyTracerProvider().getDelegate();

/**
 * The tracer to use, or undefined for none. Default (`undefined` or `true`):
 * the global tracer provider, if an OpenTelemetry SDK registered one before the
 * silo or client started; `false`: none.
 */
export function tracerOf(option: TracingOption | undefined): Tracer | undefined {
  if (option === false) return undefined;
  let provider: TracerProvider;
  if (typeof option === 'object') provider = option.tracerProvider;
  else {
    provider = trace.getTracerProvider();
    if (provider instanceof ProxyTracerProvider && provider.getDelegate() === noopDelegate) return undefined;
  }
  // Every traced call sets the trace context: turn the request context on now, before any call.
  enableRequestContext();
  return provider.getTracer('granary');
}

/** `traceparent` of a span context (W3C trace context, version 00). */
export function traceparentOf(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

function isHex(s: string, from: number, to: number): boolean {
  let nonZero = false;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      if (c !== 48) nonZero = true;
    } else if (c >= 97 && c <= 102) nonZero = true;
    else return false;
  }
  return nonZero;
}

/** The remote span context a `traceparent` names, or undefined when it is malformed. */
export function parseTraceparent(value: unknown, state: unknown): SpanContext | undefined {
  if (typeof value !== 'string') return undefined;
  // 00-<32 hex trace id, not all zero>-<16 hex span id, not all zero>-<2 hex flags>
  if (
    value.length !== 55 ||
    !value.startsWith('00-') ||
    value[35] !== '-' ||
    value[52] !== '-' ||
    !isHex(value, 3, 35) ||
    !isHex(value, 36, 52) ||
    !/^[0-9a-f]{2}$/.test(value.slice(53))
  )
    return undefined;
  const sc: SpanContext = {
    traceId: value.slice(3, 35),
    spanId: value.slice(36, 52),
    traceFlags: parseInt(value.slice(53), 16) & TraceFlags.SAMPLED,
    isRemote: true,
    ...(typeof state === 'string' && state !== '' ? { traceState: createTraceState(state) } : {}),
  };
  return sc;
}

/**
 * The span context a request context names, parsed once per context (tracing's
 * own writes come with it already): undefined when it names none.
 */
function spanContextOf(ctx: ContextValues | undefined): SpanContext | undefined {
  if (ctx === undefined) return undefined;
  let sc = ctx.trace as SpanContext | null | undefined;
  if (sc === undefined) {
    sc = parseTraceparent(ctx.values[TRACEPARENT], ctx.values[TRACESTATE]) ?? null;
    ctx.trace = sc;
  }
  return sc ?? undefined;
}

/**
 * The parent of a span started here: the active span if a context manager
 * keeps one, else the span the request context names (the grain turn's own
 * span, or the caller's), else none.
 */
function parentContext(): Context {
  const active = otel.active();
  if (trace.getSpan(active) !== undefined) return active;
  const sc = spanContextOf(currentContext());
  return sc === undefined ? active : trace.setSpanContext(ROOT_CONTEXT, sc);
}

/** Marks a span failed with `err`. */
function fail(span: Span, err: unknown): void {
  if (err instanceof Error) span.recordException(err);
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
  if (err instanceof GranaryError) span.setAttribute('granary.error.code', err.code);
}

/** Puts `span` in the request context, for the callee (outgoing) or the calls a turn makes (incoming). */
function propagate(span: Span): void {
  const sc = span.spanContext();
  const state = sc.traceState?.serialize();
  // Literal keys (TRACEPARENT, TRACESTATE) and no spread: both objects get a fixed shape at once.
  setTraceContext(
    state !== undefined && state !== ''
      ? { traceparent: traceparentOf(sc), tracestate: state }
      : { traceparent: traceparentOf(sc) },
    {
      traceId: sc.traceId,
      spanId: sc.spanId,
      traceFlags: sc.traceFlags,
      isRemote: true,
      traceState: sc.traceState,
    } as SpanContext,
  );
}

async function within(span: Span, parent: Context, invoke: () => Promise<void>): Promise<void> {
  try {
    await otel.with(trace.setSpan(parent, span), invoke);
  } catch (e) {
    fail(span, e);
    throw e;
  } finally {
    span.end();
  }
}

/** The outgoing filter that makes a CLIENT span per call and sends its context with the call. */
export function outgoingTracing(tracer: Tracer, side: string): OutgoingCallFilter {
  return (ctx) => {
    const parent = parentContext();
    const span = tracer.startSpan(
      `${ctx.target.type}/${ctx.method}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          'rpc.system': 'granary',
          'rpc.service': ctx.target.type,
          'rpc.method': ctx.method,
          'granary.grain.id': `${ctx.target.type}/${ctx.target.key}`,
          'granary.caller': ctx.source === undefined ? side : `${ctx.source.type}/${ctx.source.key}`,
        },
      },
      parent,
    );
    propagate(span);
    return within(span, parent, () => ctx.invoke());
  };
}

/** The incoming filter that makes a SERVER span per call, a child of the caller's span. */
export function incomingTracing(tracer: Tracer, silo: () => string): IncomingCallFilter {
  return (ctx) => {
    const parent = parentContext();
    const span = tracer.startSpan(
      `${ctx.grainId.type}/${ctx.method}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          'rpc.system': 'granary',
          'rpc.service': ctx.grainId.type,
          'rpc.method': ctx.method,
          'granary.grain.id': `${ctx.grainId.type}/${ctx.grainId.key}`,
          'granary.silo': silo(),
        },
      },
      parent,
    );
    // The turn's calls and storage operations are this span's children, with or without a context manager.
    propagate(span);
    return within(span, parent, () => ctx.invoke());
  };
}

/** A span for an activation of `grain` (state load and onActivate), a child of the call that made it. */
export function activationSpan(tracer: Tracer, grain: string, silo: string, context: ContextValues | undefined): Span {
  const sc = spanContextOf(context);
  const parent = sc === undefined ? otel.active() : trace.setSpanContext(ROOT_CONTEXT, sc);
  return tracer.startSpan(
    `activate ${grain.slice(0, grain.indexOf('/'))}`,
    { kind: SpanKind.INTERNAL, attributes: { 'granary.grain.id': grain, 'granary.silo': silo } },
    parent,
  );
}

/** Ends an activation span: `err` when the activation failed. */
export function endActivationSpan(span: Span, err: unknown): void {
  if (err !== undefined) fail(span, err);
  span.end();
}

/** `provider` with a span around each read, write and clear, a child of the turn that made it. */
export function tracedStorage(provider: StorageProvider, name: string, tracer: Tracer): StorageProvider {
  const op = <T>(what: string, address: StateAddress, run: () => Promise<T>): Promise<T> => {
    const parent = parentContext();
    const span = tracer.startSpan(
      `storage ${what}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          'granary.storage.provider': name,
          'granary.storage.kind': provider.kind,
          'granary.grain.id': `${address.grainType}/${address.grainKey}`,
          'granary.state': address.stateName,
        },
      },
      parent,
    );
    return otel.with(trace.setSpan(parent, span), run).then(
      (v) => {
        span.end();
        return v;
      },
      (e: unknown) => {
        fail(span, e);
        span.end();
        throw e;
      },
    );
  };
  return {
    get kind() {
      return provider.kind;
    },
    init: (ctx) => provider.init(ctx),
    read: (address) => op('read', address, () => provider.read(address)),
    write: (address, state, etag) => op('write', address, () => provider.write(address, state, etag)),
    clear: (address, etag) => op('clear', address, () => provider.clear(address, etag)),
    close: () => provider.close(),
  };
}
