// SiloProcess: a silo in a child process, for tests that fail over real
// processes: start, stop (SIGTERM, graceful), kill (SIGKILL), pause (SIGSTOP)
// and resume (SIGCONT). The child reports its addresses over IPC once active.

import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { GranaryError, TimeoutError } from '../errors.ts';
import type { MembershipOptions } from '../membership/service.ts';

/** A provider as plain data, rebuilt in the child. */
export type ProviderSpec =
  | { kind: 'memory' }
  | { kind: 'sqlite'; path: string; tablePrefix?: string }
  | { kind: 'postgres'; connectionString: string; tablePrefix?: string }
  | { kind: 'redis'; url: string; keyPrefix?: string };

/** A stream provider as plain data, rebuilt in the child. */
export type StreamSpec = { kind: 'memory' } | { kind: 'nats'; servers: string; queues?: number; ackWaitMs?: number };

/** What the child silo runs. Everything is JSON: it crosses a process boundary. */
export interface SiloProcessOptions {
  /** A module whose exported grain classes the silo hosts (absolute path or relative to the cwd). */
  grains: string;
  clusterId: string;
  membership: ProviderSpec;
  storage?: ProviderSpec;
  /** The reminder table. Default: memory (reminders die with the process). */
  reminders?: ProviderSpec;
  /** Named stream providers. Default: none. */
  streams?: Record<string, StreamSpec>;
  membershipOptions?: MembershipOptions;
  /** Other JSON silo options: responseTimeoutMs, collectionAgeMs, deactivationTimeoutMs, ... */
  siloOptions?: Record<string, unknown>;
  /** Give the silo a gateway for clients. Default true. */
  gateway?: boolean;
  /** Node flags for the child. Default: the TypeScript loader when running from source. */
  execArgv?: string[];
  /** Log level in the child (GRANARY_LOG_LEVEL). Default 'warn'. */
  logLevel?: string;
}

interface Ready {
  type: 'ready';
  address: string;
  gateway: string | null;
  http: string | null;
}

/** A silo running in a child process. */
export class SiloProcess {
  readonly child: ChildProcess;
  readonly address: string;
  readonly gatewayAddress: string | null;
  /** `host:port` of its HTTP endpoint (siloOptions.httpPort); null without one. */
  readonly httpAddress: string | null;
  /** Resolves when the child exits, with its exit code or signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** What the child wrote to stderr (its logs). */
  stderr = '';

  private constructor(child: ChildProcess, ready: Ready, exited: SiloProcess['exited']) {
    this.child = child;
    this.address = ready.address;
    this.gatewayAddress = ready.gateway;
    this.httpAddress = ready.http ?? null;
    this.exited = exited;
  }

  /** Starts the child and waits until its silo is active (or fails, with its stderr in the error). */
  static async start(options: SiloProcessOptions, timeoutMs = 20_000): Promise<SiloProcess> {
    const entry = fileURLToPath(
      new URL(import.meta.url.endsWith('.ts') ? './silo-process-main.ts' : './silo-process-main.js', import.meta.url),
    );
    const execArgv = options.execArgv ?? (entry.endsWith('.ts') ? ['--import', 'tsx', '--conditions=source'] : []);
    const child = fork(entry, [], {
      execArgv,
      env: {
        ...process.env,
        GRANARY_SILO_PROCESS: JSON.stringify(options),
        GRANARY_LOG_LEVEL: options.logLevel ?? 'warn',
      },
      stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    });
    let stderr = '';
    child.stderr?.on('data', (d) => (stderr += String(d)));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    const ready = await new Promise<Ready>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new TimeoutError(`silo process did not become active within ${timeoutMs} ms; stderr:\n${stderr}`));
      }, timeoutMs);
      child.on('message', (m: unknown) => {
        if ((m as Ready)?.type === 'ready') {
          clearTimeout(timer);
          resolve(m as Ready);
        }
      });
      void exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new GranaryError(`silo process exited (${code ?? signal}) before becoming active; stderr:\n${stderr}`));
      });
    });
    const p = new SiloProcess(child, ready, exited);
    p.stderr = stderr;
    child.stderr?.on('data', (d) => (p.stderr += String(d)));
    return p;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** SIGTERM: the silo stops gracefully; resolves with the exit code. */
  async stop(timeoutMs = 30_000): Promise<number | null> {
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const { code } = await this.exited;
    clearTimeout(timer);
    return code;
  }

  /** SIGKILL: a crash. */
  async kill(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }

  /** SIGSTOP: the process freezes (no probes answered, no timers). */
  pause(): void {
    this.child.kill('SIGSTOP');
  }

  /** SIGCONT: the process runs again. */
  resume(): void {
    this.child.kill('SIGCONT');
  }
}
