// Unary gRPC calls as promises, always with a deadline, failing with an error that names the
// remote party, the method and the gRPC status.
import * as grpc from '@grpc/grpc-js';
import { clampDetails } from './status-details.js';

/** A failed call: `target` names the remote party (e.g. "worker w-1 (127.0.0.1:40001)"). */
export class RpcError extends Error {
  constructor(
    readonly target: string,
    readonly method: string,
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(`${target}: ${method} failed: ${statusName(code)}: ${details}`);
    this.name = 'RpcError';
  }
}

export function statusName(code: grpc.status): string {
  return grpc.status[code] ?? `status ${code}`;
}

/** True for failures that mean "nobody answered" (process gone, network down, overloaded past the deadline). */
export function isUnreachable(err: unknown): boolean {
  return err instanceof RpcError && (err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED);
}

/**
 * Runs one unary call with a deadline of `timeoutMs` from now.
 * `invoke` starts the call with the given options and callback, e.g.
 * `(opts, cb) => client.Assign(req, opts, cb)`.
 */
export function callUnary<Res>(
  target: string,
  method: string,
  timeoutMs: number,
  invoke: (options: grpc.CallOptions, callback: grpc.requestCallback<Res>) => grpc.ClientUnaryCall,
): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    invoke({ deadline: Date.now() + timeoutMs }, (err, value) => {
      if (err) reject(new RpcError(target, method, err.code, err.details || err.message));
      else if (value === undefined) reject(new RpcError(target, method, grpc.status.INTERNAL, 'empty reply'));
      else resolve(value);
    });
  });
}

/** A gRPC error for a handler's callback: `{ code, details }` with a message the caller sees. */
export function serviceError(code: grpc.status, message: string): grpc.ServiceError {
  const details = clampDetails(message);
  const err = new Error(details) as grpc.ServiceError;
  err.code = code;
  err.details = details;
  err.metadata = new grpc.Metadata();
  return err;
}

/** Channel options shared by our clients: reconnect quickly after a peer restarts. */
export const CLIENT_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1000,
};

/** Binds `server` on host:port (0 = any free port) with `credentials` (default insecure) and resolves with the bound port. */
export function bindServer(
  server: grpc.Server,
  host: string,
  port: number,
  credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure(),
): Promise<number> {
  const hostPart = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return new Promise((resolve, reject) => {
    server.bindAsync(`${hostPart}:${port}`, credentials, (err, bound) => {
      if (err) reject(new Error(`cannot listen on ${hostPart}:${port}: ${err.message}`));
      else resolve(bound);
    });
  });
}

/** Graceful shutdown, forced after `graceMs`. */
export function shutdownServer(server: grpc.Server, graceMs = 2000): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    timer.unref();
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
