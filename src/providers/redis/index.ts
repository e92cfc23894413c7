// The `granary/redis` entry point: Redis providers, for clusters whose silos
// run on several hosts and share one Redis.

export { redisStorage, redisStorageDefaults } from './storage.ts';
export type { RedisStorageOptions } from './storage.ts';
export { redisMembership, redisMembershipDefaults } from './membership.ts';
export type { RedisMembershipOptions } from './membership.ts';
export { redisReminders, redisRemindersDefaults } from './reminders.ts';
export type { RedisRemindersOptions } from './reminders.ts';
