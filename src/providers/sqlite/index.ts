// The `granary/sqlite` entry point: embedded SQLite providers, the default for
// local and single-host use.

export { sqliteStorage, sqliteStorageDefaults } from './storage.ts';
export type { SqliteStorageOptions } from './storage.ts';
export { sqliteMembership, sqliteMembershipDefaults } from './membership.ts';
export type { SqliteMembershipOptions } from './membership.ts';
