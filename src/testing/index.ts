// granary/testing: clusters for tests, in this process or as child processes.

export { TestCluster, fastMembership, waitFor, type TestClusterOptions } from './test-cluster.ts';
export { SiloProcess, type SiloProcessOptions, type ProviderSpec } from './process.ts';
