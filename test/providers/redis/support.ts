// Helpers shared by the Redis provider tests.

export { recordingLogger, type LogRecord } from '../postgres/support.ts';
