// What the benches share: reading `--name=value` options, medians, the
// parent's side of talking to child processes over IPC (waiting for one
// message, stopping them all), and the floor of a call that can time out.

import type { ChildProcess } from 'node:child_process';
import type { Silo } from 'granary';

/** The value of `--name=value` among the process's arguments, if given. */
export function option(name: string, argv: readonly string[] = process.argv.slice(2)): string | undefined {
  return argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}

/** The median (the upper one of an even count); NaN for none. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

/**
 * The next IPC message of `child` that `accept` takes (anything but
 * undefined), within `timeoutMs`; rejects, saying `what`, if the child exits
 * first or nothing comes. `send` goes to the child once the wait is set up.
 */
export function awaitMessage<M, T>(
  child: ChildProcess,
  what: string,
  timeoutMs: number,
  accept: (m: M) => T | undefined,
  send?: unknown,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    const onMessage = (m: M): void => {
      const v = accept(m);
      if (v === undefined) return;
      done();
      resolve(v);
    };
    const onExit = (code: number | null, signal: string | null): void => {
      done();
      reject(new Error(`${what}: the child exited first (code ${code}, signal ${signal})`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${what}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('message', onMessage);
    child.once('exit', onExit);
    if (send !== undefined) {
      if (!child.connected) return onExit(child.exitCode, child.signalCode);
      child.send(send as object);
    }
  });
}

/**
 * Asks each child to exit by closing its IPC channel (children exit on
 * disconnect, so CPU profiles get written), then kills what is left after
 * `killAfterMs`.
 */
export async function stopChildren(children: Iterable<ChildProcess>, killAfterMs = 5000): Promise<void> {
  await Promise.all(
    [...children].map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      if (child.connected) child.disconnect();
      else child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      await exited;
      clearTimeout(timer);
    }),
  );
}

/**
 * A silo child's answer to the parent's "how many silos do you see": polls the
 * silo's view until it holds `active` silos or `timeoutMs` passed, then sends
 * what it saw (the parent fails with that figure when it is short).
 */
export function reportView(silo: Silo, active: number, timeoutMs: number): void {
  const deadline = Date.now() + timeoutMs;
  const poll = (): void => {
    const seen = silo.cluster?.view.active.size ?? 0;
    if (seen >= active || Date.now() > deadline) process.send?.({ kind: 'view', active: seen });
    else setTimeout(poll, 20);
  };
  poll();
}

let capturedResolve: (v: number) => void = () => {};
let capturedReject: (e: unknown) => void = () => {};
function capture(res: (v: number) => void, rej: (e: unknown) => void): void {
  capturedResolve = res;
  capturedReject = rej;
}

/**
 * The floor of a call that can time out: the caller gets a promise the callee's
 * side can settle on its own (so a deadline can reject it while the method
 * still runs), and a reaction on the method's promise settles it. No queue, no
 * deadline bookkeeping, no copy: what any call path with the contract's
 * time-outs does at least. One call at a time per object, as a turn.
 */
export class Settleable {
  readonly #target: { add(n: number): Promise<number> };
  #resolve: (v: number) => void = capturedResolve;
  #reject: (e: unknown) => void = capturedReject;
  readonly #ok = (v: number): void => this.#resolve(v);
  readonly #failed = (e: unknown): void => this.#reject(e);
  constructor(target: { add(n: number): Promise<number> }) {
    this.#target = target;
  }
  add(n: number): Promise<number> {
    const p = new Promise<number>(capture);
    this.#resolve = capturedResolve;
    this.#reject = capturedReject;
    this.#target.add(n).then(this.#ok, this.#failed);
    return p;
  }
}
