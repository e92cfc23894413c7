// The `granary/redis` entry point: Redis providers, for clusters whose silos
// run on several hosts and share one Redis.

export { redisMembership, redisMembershipDefaults } from './membership.ts';
export type { RedisMembershipOptions } from './membership.ts';
