// `granary/nats`: stream providers on NATS JetStream.
export { natsStreams, type NatsStreamsOptions } from './streams.ts';
