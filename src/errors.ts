// The one error hierarchy of Granary. Every error has a stable string `code`
// from one closed set (`ErrorCodes`), one class per code, and every one
// survives the trip across a grain boundary (the codec rebuilds these classes
// by name on the other side).

/** Every code a Granary error can carry. Users match on these. */
export const ErrorCodes = {
  /** A failure with no more specific code. */
  Error: 'GRANARY_ERROR',
  Timeout: 'GRANARY_TIMEOUT',
  Deadlock: 'GRANARY_DEADLOCK',
  SiloUnavailable: 'GRANARY_SILO_UNAVAILABLE',
  SiloStopped: 'GRANARY_SILO_STOPPED',
  InconsistentState: 'GRANARY_INCONSISTENT_STATE',
  Serialization: 'GRANARY_SERIALIZATION',
  Storage: 'GRANARY_STORAGE',
  StorageCorrupt: 'GRANARY_STORAGE_CORRUPT',
  UnknownGrainType: 'GRANARY_UNKNOWN_GRAIN_TYPE',
  UnknownMethod: 'GRANARY_UNKNOWN_METHOD',
  Cancelled: 'GRANARY_CANCELLED',
  Configuration: 'GRANARY_CONFIGURATION',
  RemoteError: 'GRANARY_REMOTE_ERROR',
  Membership: 'GRANARY_MEMBERSHIP',
  Reminders: 'GRANARY_REMINDERS',
  /** A stream provider's broker refused or could not be reached; the items were not accepted. */
  Stream: 'GRANARY_STREAM',
  ForwardLimit: 'GRANARY_FORWARD_LIMIT',
  Overloaded: 'GRANARY_OVERLOADED',
  Protocol: 'GRANARY_PROTOCOL',
  Transport: 'GRANARY_TRANSPORT',
  FrameTooLarge: 'GRANARY_FRAME_TOO_LARGE',
  GrainConstructed: 'GRANARY_GRAIN_CONSTRUCTED',
} as const;

/** The union of every Granary error code. */
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/**
 * Codes of failures a retry may cure: the cluster was changing, busy or
 * stopping. A caller tells "try again" from "your bug" with
 * `isTransient(err)`. All but one say the call did not run; a
 * `SiloUnavailableError` for a call already sent when its silo died may have
 * run, so retry only what is idempotent. A timeout is not among them.
 */
const transientCodes: ReadonlySet<string> = new Set<ErrorCode>([
  ErrorCodes.SiloUnavailable,
  ErrorCodes.SiloStopped,
  ErrorCodes.ForwardLimit,
  ErrorCodes.Overloaded,
]);

/** Whether `err` is a Granary failure a retry may cure (see `transientCodes`). */
export function isTransient(err: unknown): boolean {
  return err instanceof GranaryError && transientCodes.has(err.code);
}

/**
 * The base of every error Granary raises. Match on `code`, not on the class.
 * Granary's own classes each narrow `code` to one `ErrorCode`; an application
 * may extend this class with codes of its own (`OUT_OF_STOCK`).
 */
export class GranaryError extends Error {
  /** Stable, machine-readable code, e.g. `GRANARY_TIMEOUT`. */
  readonly code: string;
  constructor(message: string, code: string = ErrorCodes.Error, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A call did not complete before its deadline. */
export class TimeoutError extends GranaryError {
  declare readonly code: typeof ErrorCodes.Timeout;
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCodes.Timeout, options);
  }
}

/** A call chain came back to a non-reentrant grain that is waiting in that chain. */
export class DeadlockError extends GranaryError {
  declare readonly code: typeof ErrorCodes.Deadlock;
  /** The chain of grains, printable as `a/1 -> b/1 -> a/1`. */
  readonly chain: string[];
  constructor(chain: string[], message?: string) {
    super(
      message ?? `deadlock: call chain ${chain.join(' -> ')} comes back to a grain that is busy in that chain`,
      ErrorCodes.Deadlock,
    );
    this.chain = chain;
  }
}

/** The silo that hosts (or hosted) the target is gone or unreachable. */
export class SiloUnavailableError extends GranaryError {
  declare readonly code: typeof ErrorCodes.SiloUnavailable;
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCodes.SiloUnavailable, options);
  }
}

/** A state write or clear carried a stale ETag: someone else wrote first. Nothing was changed. */
export class InconsistentStateError extends GranaryError {
  declare readonly code: typeof ErrorCodes.InconsistentState;
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCodes.InconsistentState, options);
  }
}

/** A value cannot cross a grain boundary. `path` names the offending value, e.g. `args[0].handler`. */
export class SerializationError extends GranaryError {
  declare readonly code: typeof ErrorCodes.Serialization;
  readonly path: string;
  constructor(message: string, path = '', options?: ErrorOptions) {
    super(message, ErrorCodes.Serialization, options);
    this.path = path;
  }
}

/** A storage provider failed: unreachable store, bad schema, a write of unknown outcome. */
export class StorageError extends GranaryError {
  declare readonly code: typeof ErrorCodes.Storage | typeof ErrorCodes.StorageCorrupt;
  constructor(
    message: string,
    code: typeof ErrorCodes.Storage | typeof ErrorCodes.StorageCorrupt = ErrorCodes.Storage,
    options?: ErrorOptions,
  ) {
    super(message, code, options);
  }
}

/** A stored record cannot be read back (bad bytes, unknown format): only that grain's record fails. */
export class StorageCorruptError extends StorageError {
  declare readonly code: typeof ErrorCodes.StorageCorrupt;
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCodes.StorageCorrupt, options);
  }
}

/** The grain type is not registered on the silo that was asked to host it. */
export class UnknownGrainTypeError extends GranaryError {
  declare readonly code: typeof ErrorCodes.UnknownGrainType;
  constructor(message: string) {
    super(message, ErrorCodes.UnknownGrainType);
  }
}

/** The grain type has no public method of that name. */
export class UnknownMethodError extends GranaryError {
  declare readonly code: typeof ErrorCodes.UnknownMethod;
  constructor(message: string) {
    super(message, ErrorCodes.UnknownMethod);
  }
}

/** The caller's AbortSignal aborted the call. */
export class CancelledError extends GranaryError {
  declare readonly code: typeof ErrorCodes.Cancelled;
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCodes.Cancelled, options);
  }
}

/** The silo is stopping or stopped and takes no new work. */
export class SiloStoppedError extends GranaryError {
  declare readonly code: typeof ErrorCodes.SiloStopped;
  constructor(message: string) {
    super(message, ErrorCodes.SiloStopped);
  }
}

/** Options or arguments given to Granary are invalid; the message says what to change. */
export class ConfigurationError extends GranaryError {
  declare readonly code: typeof ErrorCodes.Configuration;
  constructor(message: string) {
    super(message, ErrorCodes.Configuration);
  }
}

/**
 * An error thrown in a grain whose class the caller's side does not know
 * (not registered with `registerError`). `remoteName` is the original `name`;
 * `code` is the original `code`, or `GRANARY_REMOTE_ERROR` if it had none.
 */
export class RemoteError extends GranaryError {
  readonly remoteName: string;
  constructor(message: string, remoteName: string, code: string = ErrorCodes.RemoteError) {
    super(message, code);
    this.remoteName = remoteName;
  }
}

/** The membership table could not be read or written (store down, bad row). */
export class MembershipError extends GranaryError {
  declare readonly code: typeof ErrorCodes.Membership;
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCodes.Membership, options);
  }
}

/** A reminder table failed (store unreachable, bad row); the reminder service retries. */
export class ReminderError extends GranaryError {
  declare readonly code: typeof ErrorCodes.Reminders;
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCodes.Reminders, options);
  }
}

/** A call was forwarded `maxForwardCount` times without reaching an activation (the cluster was changing). */
export class ForwardLimitError extends GranaryError {
  declare readonly code: typeof ErrorCodes.ForwardLimit;
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCodes.ForwardLimit, options);
  }
}

/** The call was refused, unsent or unrun, because a queue or a connection is full. Retry later. */
export class OverloadedError extends GranaryError {
  declare readonly code: typeof ErrorCodes.Overloaded;
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCodes.Overloaded, options);
  }
}

/** A peer broke the wire protocol (corrupt frame, unknown frame or system call, bad handshake), or a frame cannot be written in it (type outside 0..255). */
export class ProtocolError extends GranaryError {
  declare readonly code: typeof ErrorCodes.Protocol;
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCodes.Protocol, options);
  }
}

/** A connection could not be made or used (port taken, connect timed out, not open yet, handler already set). */
export class TransportError extends GranaryError {
  declare readonly code: typeof ErrorCodes.Transport;
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCodes.Transport, options);
  }
}

/**
 * A stream provider could not take items (its broker is down or refused
 * them): they were not accepted, publish again once it is back.
 */
export class StreamError extends GranaryError {
  declare readonly code: typeof ErrorCodes.Stream;
  constructor(message: string, options?: ErrorOptions) {
    super(message, ErrorCodes.Stream, options);
  }
}

/** A frame's body is over the transport's `maxFrameBytes`: the message was not sent. */
export class FrameTooLargeError extends GranaryError {
  declare readonly code: typeof ErrorCodes.FrameTooLarge;
  constructor(message: string) {
    super(message, ErrorCodes.FrameTooLarge);
  }
}

/** User code constructed a grain class with `new`: grains are activated by the runtime. */
export class GrainConstructedError extends GranaryError {
  declare readonly code: typeof ErrorCodes.GrainConstructed;
  constructor(message: string) {
    super(message, ErrorCodes.GrainConstructed);
  }
}

/** Error classes of Granary itself, rebuilt by name when they arrive. */
export const builtinErrorClasses: ReadonlyArray<new (...args: never[]) => GranaryError> = [
  GranaryError,
  TimeoutError,
  DeadlockError,
  SiloUnavailableError,
  InconsistentStateError,
  SerializationError,
  StorageError,
  StorageCorruptError,
  UnknownGrainTypeError,
  UnknownMethodError,
  CancelledError,
  SiloStoppedError,
  ConfigurationError,
  RemoteError,
  MembershipError,
  ReminderError,
  ForwardLimitError,
  OverloadedError,
  ProtocolError,
  TransportError,
  FrameTooLargeError,
  GrainConstructedError,
  StreamError,
];
