// The `granary/sqlite` entry point: embedded SQLite providers, the default for
// local and single-host use.

export { sqliteStorage, sqliteStorageDefaults } from './storage.ts';
export type { SqliteStorageOptions } from './storage.ts';
export { sqliteMembership, sqliteMembershipDefaults } from './membership.ts';
export type { SqliteMembershipOptions } from './membership.ts';
export { sqliteReminders, sqliteRemindersDefaults } from './reminders.ts';
export type { SqliteRemindersOptions } from './reminders.ts';
export { sqliteEventLog, sqliteEventLogDefaults } from './event-log.ts';
export type { SqliteEventLogOptions } from './event-log.ts';
