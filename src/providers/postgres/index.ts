// The `granary/postgres` entry point: PostgreSQL providers, for clusters whose
// silos run on several hosts and share one database.

export { postgresStorage, postgresStorageDefaults } from './storage.ts';
export type { PostgresStorageOptions } from './storage.ts';
export { postgresMembership, postgresMembershipDefaults } from './membership.ts';
export type { PostgresMembershipOptions } from './membership.ts';
export { postgresReminders, postgresRemindersDefaults } from './reminders.ts';
export type { PostgresRemindersOptions } from './reminders.ts';
export { postgresEventLog, postgresEventLogDefaults } from './event-log.ts';
export type { PostgresEventLogOptions } from './event-log.ts';
