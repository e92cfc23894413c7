// Opening a SQLite file the way every Granary provider wants it: its folder
// made, WAL journal, NORMAL sync, and a busy timeout so that the processes of
// one host can share the file.

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

/** Opens `path` (or `:memory:`); `fail` turns a failure into the provider's own error. */
export function openSqlite(path: string, busyTimeoutMs: number, fail: (err: unknown, what: string) => Error): Database.Database {
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
