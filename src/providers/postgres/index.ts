// The `granary/postgres` entry point: PostgreSQL providers, for clusters whose
// silos run on several hosts and share one database.

export { postgresMembership, postgresMembershipDefaults } from './membership.ts';
export type { PostgresMembershipOptions } from './membership.ts';
