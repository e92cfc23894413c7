// Opening a SQLite file the way every Granary provider wants it: its folder
// made, WAL journal, NORMAL sync, and a busy timeout so that the processes of
// one host can share the file; and the check of a table found already there.

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { ConfigurationError } from '../../errors.ts';
import { missingColumns, quote } from '../shared.ts';

/** Opens `path` (or `:memory:`); `fail` turns a failure into the provider's own error. */
export function openSqlite(
  path: string,
  busyTimeoutMs: number,
  fail: (err: unknown, what: string) => Error,
): Database.Database {
  if (path !== ':memory:') {
    try {
      mkdirSync(dirname(path), { recursive: true });
    } catch (err) {
      throw fail(err, `cannot create the folder of database file ${path}`);
    }
  }
  let db: Database.Database | undefined;
  try {
    db = new Database(path, { timeout: busyTimeoutMs });
    // busy_timeout first, so that switching to WAL waits for other processes.
    db.pragma(`busy_timeout = ${busyTimeoutMs}`);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    return db;
  } catch (err) {
    db?.close();
    throw fail(err, `cannot open database file ${path}`);
  }
}

/** The options every SQLite provider takes. */
export interface SqliteFileOptions {
  readonly path: string;
  readonly tablePrefix?: string;
  readonly busyTimeoutMs?: number;
}

/**
 * Checks the options every SQLite provider takes; `fn` names the provider in
 * messages (e.g. `sqliteStorage`). Throws a ConfigurationError naming the option.
 */
export function validateFileOptions(
  fn: string,
  options: SqliteFileOptions,
  defaults: { readonly tablePrefix: string; readonly busyTimeoutMs: number },
): { path: string; tablePrefix: string; busyTimeoutMs: number } {
  const { path } = options;
  if (typeof path !== 'string' || path === '') {
    throw new ConfigurationError(
      `${fn}: option path must be a database file path or ':memory:', got ${JSON.stringify(path)}`,
    );
  }
  const tablePrefix = options.tablePrefix ?? defaults.tablePrefix;
  if (typeof tablePrefix !== 'string' || !/^[A-Za-z0-9_]*$/.test(tablePrefix)) {
    throw new ConfigurationError(
      `${fn}: option tablePrefix may hold only letters, digits and '_', got ${JSON.stringify(tablePrefix)}`,
    );
  }
  const busyTimeoutMs = options.busyTimeoutMs ?? defaults.busyTimeoutMs;
  if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0 || busyTimeoutMs > 0x7fffffff) {
    throw new ConfigurationError(
      `${fn}: option busyTimeoutMs must be a whole number of ms from 0 to 2147483647, got ${busyTimeoutMs}`,
    );
  }
  return { path, tablePrefix, busyTimeoutMs };
}

/** The column names of table `name`, undefined if there is no such table. */
export function tableColumns(db: Database.Database, name: string): Set<string> | undefined {
  if (db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(name) === undefined)
    return undefined;
  return new Set(
    db
      .prepare<[], { name: string }>(`PRAGMA table_info(${quote(name)})`)
      .all()
      .map((c) => c.name),
  );
}

/**
 * Whether table `name` exists; if it does, checks it has the `required`
 * columns, throwing what `fail` makes of the problem if not.
 */
export function checkTable(
  db: Database.Database,
  name: string,
  required: readonly string[],
  fail: (problem: string) => Error,
): boolean {
  const columns = tableColumns(db, name);
  if (columns === undefined) return false;
  const problem = missingColumns(name, columns, required);
  if (problem !== undefined) throw fail(problem);
  return true;
}
