// The public surface of `granary`: grains, decorators, the silo, errors,
// memory providers and types. Named exports only.

export {
  Grain,
  type GrainClass,
  type AnyGrainClass,
  type DeactivationReason,
  type SiloInfo,
  type TimerOptions,
  type TimerHandle,
} from './grain/grain.ts';
export {
  grain,
  reentrant,
  readOnly,
  alwaysInterleave,
  oneWay,
  statelessWorker,
  placement,
  callChainReentrancy,
  collectionAge,
  journal,
  implicitSubscription,
  implicitChannelSubscription,
  type GrainOptions,
  type MethodOptions,
  type PlacementStrategy,
  type CustomPlacement,
  type JournalOptions,
} from './grain/options.ts';
export { grainId, type GrainId } from './grain/identity.ts';
export type { GrainRef, GrainRefBase, CallOptions } from './grain/ref.ts';
export { Silo, siloDefaults, type SiloOptions } from './hosting/silo.ts';
export { ClusterClient, type ClusterClientOptions, type ClusterStatus, type ObserverRef } from './client/client.ts';
export { RequestContext } from './messaging/request-context.ts';
export type {
  IncomingCallContext,
  IncomingCallFilter,
  OutgoingCallContext,
  OutgoingCallFilter,
} from './messaging/filters.ts';
export {
  memoryMembership,
  MemoryMembershipStore,
  type MemoryMembershipOptions,
} from './providers/memory/membership.ts';
export { memoryReminders, MemoryReminderStore, type MemoryRemindersOptions } from './providers/memory/reminders.ts';
export { membershipDefaults, type MembershipOptions, type ClusterView, type ActiveSilo } from './membership/service.ts';
export type {
  MembershipTable,
  SiloEntry,
  SiloStatus,
  TableVersion,
  MembershipSnapshot,
  Suspicion,
} from './membership/table.ts';
export { transportDefaults, type TransportLimits } from './transport/limits.ts';
export * from './errors.ts';
export { immutable, encode, decode } from './serialization/codec.ts';
export { registerType, registerError } from './serialization/registry.ts';
export type { PersistentState, PersistentStateOptions } from './storage/persistent-state.ts';
export type {
  StorageProvider,
  StateAddress,
  StoredState,
  StateSerializer,
  ProviderContext,
} from './storage/provider.ts';
export { memoryStorage, MemoryStore, type MemoryStorageOptions } from './providers/memory/storage.ts';
export { JournaledGrain } from './journal/journaled-grain.ts';
export type { EventLog, LogAddress, LoggedEvent, LogSnapshot, StoredLog } from './journal/log.ts';
export {
  memoryEventLog,
  MemoryEventStore,
  type MemoryEventLogOptions,
  type MemoryStream,
} from './providers/memory/event-log.ts';
export type { ReminderTick, ReminderInfo, ReminderOptions } from './reminders/service.ts';
export type { ReminderTable, ReminderEntry, StoredReminder, ReminderContext } from './reminders/table.ts';
export {
  defaultLogger,
  silentLogger,
  LOG_LEVELS,
  LOG_SUBSYSTEMS,
  type Logger,
  type LogLevel,
  type LogSubsystem,
} from './observability/logger.ts';
export { channels } from './observability/channels.ts';
export { memoryStreams, type MemoryStreamsOptions } from './streams/memory.ts';
export {
  deliveryDefaults,
  type DeliveryOptions,
  type DeadLetter,
  type StreamProvider,
  type StreamProviderContext,
  type StreamProviderSilo,
} from './streams/provider.ts';
export {
  compareTokens,
  type BroadcastChannel,
  type ChannelId,
  type Stream,
  type StreamId,
  type StreamToken,
  type StreamHandler,
  type StreamSubscription,
  type SubscribeOptions,
} from './streams/types.ts';
