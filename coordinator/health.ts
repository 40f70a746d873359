// The standard grpc.health.v1 service, served by the coordinator and by every worker.
// Service "" is the whole server; named services are registered with set().
import * as grpc from '@grpc/grpc-js';
import { protos } from '../proto/load.js';
import type { HealthHandlers } from '../proto/generated/grpc/health/v1/Health.js';
import type { HealthCheckResponse } from '../proto/generated/grpc/health/v1/HealthCheckResponse.js';
import { serviceError } from './grpc-call.js';
import { quoteUntrusted } from './status-details.js';

export type ServingStatus = 'SERVING' | 'NOT_SERVING';
type WatchCall = grpc.ServerWritableStream<unknown, HealthCheckResponse>;

export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Map<string, Set<WatchCall>>();

  /** `services`: names answered besides "" (all start SERVING). */
  constructor(services: string[] = []) {
    this.statuses.set('', 'SERVING');
    for (const s of services) this.statuses.set(s, 'SERVING');
  }

  addTo(server: grpc.Server): void {
    server.addService(protos().health.grpc.health.v1.Health.service, this.handlers());
  }

  /** Sets the status of `service` ("" = whole server) and tells its watchers. */
  set(service: string, status: ServingStatus): void {
    this.statuses.set(service, status);
    for (const call of this.watchers.get(service) ?? []) call.write({ status });
  }

  /** Marks every service NOT_SERVING (call before shutting the server down). */
  shutdown(): void {
    for (const s of [...this.statuses.keys()]) this.set(s, 'NOT_SERVING');
    for (const set of this.watchers.values()) for (const call of set) call.end();
    this.watchers.clear();
  }

  private handlers(): HealthHandlers {
    return {
      Check: (call, callback) => {
        const status = this.statuses.get(call.request.service);
        if (status === undefined) callback(serviceError(grpc.status.NOT_FOUND, `unknown service ${quoteUntrusted(call.request.service)}`));
        else callback(null, { status });
      },
      Watch: (call) => {
        const service = call.request.service;
        call.write({ status: this.statuses.get(service) ?? 'SERVICE_UNKNOWN' });
        let set = this.watchers.get(service);
        if (!set) this.watchers.set(service, (set = new Set()));
        set.add(call);
        call.on('cancelled', () => set.delete(call));
      },
    };
  }
}
