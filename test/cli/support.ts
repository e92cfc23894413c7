// Running the `granary` command in child processes from tests: one-shot
// commands with their output and exit code, and silos that serve until told.

import { spawn, type ChildProcess } from 'node:child_process';
import { eventually } from '../helpers.ts';

/** Node arguments that run the command from source. */
export const cli = ['--import', 'tsx', '--conditions=source', 'src/cli/main.ts'];

/** The environment of a child: this one's without GRANARY_* (the test runner sets a log level), plus `env`. */
export function childEnv(env: Record<string, string> = {}): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('GRANARY_')) out[k] = v;
  return { ...out, ...env };
}

/** What a finished command left. */
export interface Outcome {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `granary <args>` to its end. */
export function runCli(args: readonly string[], env: Record<string, string> = {}): Promise<Outcome> {
  const child = spawn(process.execPath, [...cli, ...args], { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += String(d)));
  child.stderr.on('data', (d) => (stderr += String(d)));
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
}

/** `granary silo` in a child process, once it logged 'silo started'. */
export class CliSilo {
  readonly child: ChildProcess;
  readonly address: string;
  readonly gateway: string | null;
  /** Resolves with the exit code (null if a signal ended it) when the process ends. */
  readonly exited: Promise<number | null>;
  #stderr: () => string;

  private constructor(
    child: ChildProcess,
    address: string,
    gateway: string | null,
    exited: Promise<number | null>,
    stderr: () => string,
  ) {
    this.child = child;
    this.address = address;
    this.gateway = gateway;
    this.exited = exited;
    this.#stderr = stderr;
  }

  /** What the silo logged so far. */
  get stderr(): string {
    return this.#stderr();
  }

  /** Starts `granary silo <args>` at log level info (unless `env` says otherwise) and waits until it serves. */
  static async start(args: readonly string[], env: Record<string, string> = {}): Promise<CliSilo> {
    const child = spawn(process.execPath, [...cli, 'silo', ...args], {
      env: childEnv({ GRANARY_LOG_LEVEL: 'info', ...env }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    child.stdout.on('data', (d) => (stderr += String(d)));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    let ended = false;
    void exited.then(() => (ended = true));
    try {
      await eventually(
        `granary silo ${args.join(' ')} to log 'silo started'`,
        () => {
          if (ended) throw new Error(`granary silo exited before it started:\n${stderr}`);
          return stderr.includes('"msg":"silo started"');
        },
        30_000,
      );
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    }
    const started = JSON.parse(stderr.split('\n').find((l) => l.includes('"msg":"silo started"')) as string) as {
      address: string;
      gateway: string | null;
    };
    return new CliSilo(child, started.address, started.gateway, exited, () => stderr);
  }

  /** Waits until the silo has logged a line matching `pattern`. */
  async logged(pattern: RegExp, what: string, timeoutMs = 20_000): Promise<void> {
    await eventually(`the silo to log ${what}`, () => pattern.test(this.stderr), timeoutMs);
  }

  /** Sends `signal` and waits for the exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    this.child.kill(signal);
    return this.exited;
  }

  /** Ends the process for good (cleanup after a failed check). */
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}
