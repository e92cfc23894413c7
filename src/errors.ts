// The one error hierarchy of Granary. Every error has a stable string `code`
// that users match on, and every one survives the trip across a grain boundary
// (the codec rebuilds these classes by name on the other side).

/** The base of every error Granary raises. Match on `code`, not on the class. */
export class GranaryError extends Error {
  /** Stable, machine-readable code, e.g. `GRANARY_TIMEOUT`. */
  readonly code: string;
  constructor(message: string, code = 'GRANARY_ERROR', options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A call did not complete before its deadline. */
export class TimeoutError extends GranaryError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 'GRANARY_TIMEOUT', options);
  }
}

/** A call chain came back to a non-reentrant grain that is waiting in that chain. */
export class DeadlockError extends GranaryError {
  /** The chain of grains, printable as `a/1 -> b/1 -> a/1`. */
  readonly chain: string[];
  constructor(chain: string[], message?: string) {
    super(
      message ?? `deadlock: call chain ${chain.join(' -> ')} comes back to a grain that is busy in that chain`,
      'GRANARY_DEADLOCK',
    );
    this.chain = chain;
  }
}

/** The silo that hosts (or hosted) the target is gone or unreachable. */
export class SiloUnavailableError extends GranaryError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 'GRANARY_SILO_UNAVAILABLE', options);
  }
}

/** A state write or clear carried a stale ETag: someone else wrote first. Nothing was changed. */
export class InconsistentStateError extends GranaryError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 'GRANARY_INCONSISTENT_STATE', options);
  }
}

/** A value cannot cross a grain boundary. `path` names the offending value, e.g. `args[0].handler`. */
export class SerializationError extends GranaryError {
  readonly path: string;
  constructor(message: string, path = '', options?: ErrorOptions) {
    super(message, 'GRANARY_SERIALIZATION', options);
    this.path = path;
  }
}

/** A storage provider failed: unreachable store, corrupt row, bad schema. */
export class StorageError extends GranaryError {
  constructor(message: string, code = 'GRANARY_STORAGE', options?: ErrorOptions) {
    super(message, code, options);
  }
}

/** The grain type is not registered on the silo that was asked to host it. */
export class UnknownGrainTypeError extends GranaryError {
  constructor(message: string) {
    super(message, 'GRANARY_UNKNOWN_GRAIN_TYPE');
  }
}

/** The grain type has no public method of that name. */
export class UnknownMethodError extends GranaryError {
  constructor(message: string) {
    super(message, 'GRANARY_UNKNOWN_METHOD');
  }
}

/** The caller's AbortSignal aborted the call. */
export class CancelledError extends GranaryError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 'GRANARY_CANCELLED', options);
  }
}

/** The silo is stopping or stopped and takes no new work. */
export class SiloStoppedError extends GranaryError {
  constructor(message: string) {
    super(message, 'GRANARY_SILO_STOPPED');
  }
}

/** Options given to Granary are invalid; the message says what to change. */
export class ConfigurationError extends GranaryError {
  constructor(message: string) {
    super(message, 'GRANARY_CONFIGURATION');
  }
}

/**
 * An error thrown in a grain whose class the caller's side does not know
 * (not registered with `registerError`). `remoteName` is the original `name`.
 */
export class RemoteError extends GranaryError {
  readonly remoteName: string;
  constructor(message: string, remoteName: string, code = 'GRANARY_REMOTE_ERROR') {
    super(message, code);
    this.remoteName = remoteName;
  }
}

/** The membership table could not be read or written (store down, bad row). */
export class MembershipError extends GranaryError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 'GRANARY_MEMBERSHIP', options);
  }
}

/** A reminder table failed (store unreachable, bad row); the reminder service retries. */
export class ReminderError extends GranaryError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 'GRANARY_REMINDERS', options);
  }
}

/** Error classes of Granary itself, rebuilt by name when they arrive. */
export const builtinErrorClasses: ReadonlyArray<new (...args: never[]) => Error> = [
  GranaryError,
  TimeoutError,
  DeadlockError,
  SiloUnavailableError,
  InconsistentStateError,
  SerializationError,
  StorageError,
  UnknownGrainTypeError,
  UnknownMethodError,
  CancelledError,
  SiloStoppedError,
  ConfigurationError,
  RemoteError,
  MembershipError,
  ReminderError,
];
