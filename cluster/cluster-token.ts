// The cluster token on gRPC: clients send `authorization: Bearer <token>` metadata on every call;
// servers refuse calls without it (or with another token) with UNAUTHENTICATED, logging the
// method and the peer but never the secret. grpc.health.v1 stays open for probes. Used by the
// coordinator (Register/Heartbeat, and its calls to workers) and the workers (WorkerControl and
// Peer, and their calls to the coordinator and each other).
import { timingSafeEqual } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';

const OPEN_PREFIX = '/grpc.health.v1.Health/';

/** Adds the token to every outgoing call. */
export function tokenClientInterceptor(token: string): grpc.Interceptor {
  const value = `Bearer ${token}`;
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', value);
        next(metadata, listener);
      },
    });
}

/** Channel options with the token interceptor (unchanged when no token). */
export function withToken<T extends grpc.ChannelOptions>(options: T, token: string | undefined): T & { interceptors?: grpc.Interceptor[] } {
  return token === undefined ? options : { ...options, interceptors: [tokenClientInterceptor(token)] };
}

/** Refuses calls without the token (all but the health service). */
export function tokenServerInterceptor(token: string, log: (line: string) => void = () => {}): grpc.ServerInterceptor {
  const expected = Buffer.from(`Bearer ${token}`);
  return (method, call) =>
    new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, mdNext) {
            if (method.path.startsWith(OPEN_PREFIX)) return mdNext(metadata);
            const got = metadata.get('authorization')[0];
            const b = typeof got === 'string' ? Buffer.from(got) : Buffer.isBuffer(got) ? got : Buffer.alloc(0);
            if (b.length === expected.length && timingSafeEqual(b, expected)) return mdNext(metadata);
            log(`refused ${method.path} from ${call.getPeer()}: ${got === undefined ? 'no' : 'wrong'} cluster token`);
            call.sendStatus({
              code: grpc.status.UNAUTHENTICATED,
              details: `${got === undefined ? 'missing' : 'wrong'} cluster token (authorization: Bearer <token>; lasp --token or LASP_TOKEN)`,
            });
          },
        });
      },
    });
}
