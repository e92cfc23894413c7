// granary/testing: clusters for tests, in this process or as child processes,
// and a clock tests move by hand.

export { TestCluster, fastMembership, waitFor, type TestClusterOptions } from './test-cluster.ts';
export { SiloProcess, type SiloProcessOptions, type ProviderSpec, type StreamSpec } from './process.ts';
export { ManualClock, advanceUntilDefaults, type AdvanceUntilOptions } from './manual-clock.ts';
export { systemClock, sleep, type Clock, type ClockTimer } from '../clock.ts';
