// A silo's metrics in the Prometheus text format, through prom-client: one
// registry per silo (never the library's global one: several silos may share
// a process), whose metrics read the silo's plain counters when scraped.
// Nothing here runs per call. The process's own metrics (CPU, memory, event
// loop lag, GC) come from one registry per process, shared by its silos.

import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import type { LatencyHistogram } from './stats.ts';

/** Label values of one series, by label name. */
export type Labels = Readonly<Record<string, string>>;

/** Hands one series' value to the metric being scraped. */
export type Emit<V> = (labels: Labels, value: V) => void;

/** The process metrics, made once for every silo of the process. */
let processRegistry: Registry | undefined;

function processMetrics(): Registry {
  if (processRegistry === undefined) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/** One silo's metrics: each reads its values at scrape time from a `collect` function. */
export class MetricsRegistry {
  readonly #registry = new Registry();
  readonly #process = processMetrics();

  /** The content type of `text()`. */
  get contentType(): string {
    return this.#registry.contentType;
  }

  /** A counter whose values `collect` gives at each scrape: totals since the silo started. */
  counter(name: string, help: string, labelNames: readonly string[], collect: (emit: Emit<number>) => void): void {
    new Counter({
      name,
      help,
      labelNames,
      registers: [this.#registry],
      collect(this: Counter) {
        this.reset();
        collect((labels, value) => this.inc(labels, value));
      },
    });
  }

  /** A gauge whose values `collect` gives at each scrape. */
  gauge(name: string, help: string, labelNames: readonly string[], collect: (emit: Emit<number>) => void): void {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [this.#registry],
      collect(this: Gauge) {
        this.reset();
        collect((labels, value) => this.set(labels, value));
      },
    });
  }

  /**
   * A histogram whose series `collect` gives at each scrape as plain
   * `LatencyHistogram`s (prom-client's own would be fed per observation).
   */
  histogram(
    name: string,
    help: string,
    labelNames: readonly string[],
    collect: (emit: Emit<LatencyHistogram>) => void,
  ): void {
    const metric = {
      name,
      help,
      type: 'histogram',
      aggregator: 'sum',
      labelNames,
      reset: (): void => {},
      get: async () => {
        const values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> = [];
        collect((labels, h) => {
          let acc = 0;
          h.bounds.forEach((le, i) => {
            acc += h.counts[i] as number;
            values.push({ labels: { ...labels, le }, value: acc, metricName: `${name}_bucket` });
          });
          values.push({ labels: { ...labels, le: '+Inf' }, value: h.count, metricName: `${name}_bucket` });
          values.push({ labels: { ...labels }, value: h.sumMs / 1000, metricName: `${name}_sum` });
          values.push({ labels: { ...labels }, value: h.count, metricName: `${name}_count` });
        });
        return { name, help, type: 'histogram', aggregator: 'sum', values };
      },
    };
    // The registry reads any metric through get(); this one builds its series from the plain counts.
    this.#registry.registerMetric(metric as unknown as Metric);
  }

  /** Every metric of the silo, then the process's, as Prometheus text. */
  async text(): Promise<string> {
    return (await this.#registry.metrics()) + (await this.#process.metrics());
  }
}
