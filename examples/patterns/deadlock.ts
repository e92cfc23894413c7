// Pattern: a call cycle, and two ways out of it.
//
// Bad: an account asks the ledger to record a transfer, and the ledger calls
// the account back for its balance. The account is busy in that very chain
// (its turn is waiting on the ledger), so the callback could never run: the
// runtime sees the cycle and fails it at once with DeadlockError (code
// GRANARY_DEADLOCK, `chain` = ['account/…', 'ledger/…', 'account/…']) instead
// of letting both wait for the call's deadline.
//
// Good, restructured: the account sends what the ledger needs with the call,
// so nothing calls back. Good, marked: `@callChainReentrancy` lets a call of
// the same chain into the busy account, which is safe here because the
// callback only reads.

import { Grain, callChainReentrancy, grain, readOnly } from 'granary';

// #region cycle
@grain('cyclicAccount')
export class CyclicAccount extends Grain {
  #balance = 100;

  async withdraw(amount: number): Promise<number> {
    this.#balance -= amount;
    await this.getGrain(Ledger, 'main').record(this.key, -amount); // the ledger calls back: deadlock
    return this.#balance;
  }

  @readOnly
  async balance(): Promise<number> {
    return this.#balance;
  }
}

@grain('ledger')
export class Ledger extends Grain {
  readonly #entries: Array<{ account: string; change: number; balance: number }> = [];

  /** Asks the account for its balance: a call back into the chain that called us. */
  async record(account: string, change: number): Promise<void> {
    const balance = await this.getGrain(CyclicAccount, account).balance();
    this.#entries.push({ account, change, balance });
  }

  /** The restructured call: everything the ledger needs comes with it. */
  async recordWith(account: string, change: number, balance: number): Promise<void> {
    this.#entries.push({ account, change, balance });
  }

  /** As `record`, for the reentrant account. */
  async recordReentrant(account: string, change: number): Promise<void> {
    const balance = await this.getGrain(ReentrantAccount, account).balance();
    this.#entries.push({ account, change, balance });
  }

  @readOnly
  async entries(): Promise<Array<{ account: string; change: number; balance: number }>> {
    return this.#entries;
  }
}
// #endregion cycle

// #region restructured
@grain('account')
export class Account extends Grain {
  #balance = 100;

  async withdraw(amount: number): Promise<number> {
    this.#balance -= amount;
    await this.getGrain(Ledger, 'main').recordWith(this.key, -amount, this.#balance); // no callback
    return this.#balance;
  }
}
// #endregion restructured

// #region reentrant
@grain('reentrantAccount')
@callChainReentrancy
export class ReentrantAccount extends Grain {
  #balance = 100;

  async withdraw(amount: number): Promise<number> {
    this.#balance -= amount;
    await this.getGrain(Ledger, 'main').recordReentrant(this.key, -amount); // its callback is let in
    return this.#balance;
  }

  @readOnly
  async balance(): Promise<number> {
    return this.#balance;
  }
}
// #endregion reentrant

export const deadlockGrains = [CyclicAccount, Ledger, Account, ReentrantAccount];
