// The coordinator as an in-process object (also what `lasp coordinator` runs): a gRPC server with
// the Coordinator and Health services, the worker registry, the heartbeat monitor and rendezvous.
import * as grpc from '@grpc/grpc-js';
import { tokenServerInterceptor } from '../cluster/cluster-token.js';
import { serverCredentials, type TlsConfig } from '../cluster/tls.js';
import { protos } from '../proto/load.js';
import { bindServer, shutdownServer } from './grpc-call.js';
import { coordinatorHandlers } from './coordinator-service.js';
import { HealthService } from './health.js';
import { HeartbeatMonitor } from './heartbeat-monitor.js';
import { describeWorkers, waitForRegistry, WorkerRegistry, type WorkerInfo } from './registry.js';
import { Rendezvous, type FormGroupOptions, type Group, type RunTaskOptions, type TaskReply } from './rendezvous.js';
import { WorkerClient } from './worker-client.js';

export interface CoordinatorOptions {
  /** Address to listen on. Default "127.0.0.1". */
  host?: string;
  /** Port to listen on; 0 picks a free one. Default 0. */
  port?: number;
  /** Interval workers are told to heartbeat at. Default 2000 ms. */
  heartbeatIntervalMs?: number;
  /** Missed heartbeats before a worker is dead. Default 3. */
  missesAllowed?: number;
  /** Deadline of Assign and Abort calls to workers. Default 5000 ms. */
  controlTimeoutMs?: number;
  /** Cluster token: required on Register/Heartbeat (UNAUTHENTICATED without it) and sent to workers. Default none. */
  token?: string;
  /** TLS of the gRPC server and of the calls to workers (cluster/tls.ts loadTls). Default none (plaintext). */
  tls?: TlsConfig;
  /** Receives one line per notable event (registrations, deaths). Default: discard. */
  log?: (line: string) => void;
}

export class Coordinator {
  readonly registry = new WorkerRegistry();
  private readonly server: grpc.Server;
  private readonly health = new HealthService(['lasp.v1.Coordinator']);
  private readonly monitor: HeartbeatMonitor;
  private readonly rendezvous: Rendezvous;
  private readonly clients = new Map<string, WorkerClient>();
  private readonly log: (line: string) => void;
  private boundPort = 0;
  private stopped = false;

  private constructor(private readonly opts: CoordinatorOptions) {
    this.log = opts.log ?? (() => {});
    this.server = new grpc.Server(opts.token === undefined ? {} : { interceptors: [tokenServerInterceptor(opts.token, this.log)] });
    this.monitor = new HeartbeatMonitor(this.registry, {
      heartbeatIntervalMs: opts.heartbeatIntervalMs,
      missesAllowed: opts.missesAllowed,
    });
    this.rendezvous = new Rendezvous(this.registry, (id) => this.clientFor(id), { controlTimeoutMs: opts.controlTimeoutMs });
    this.registry.subscribe((event, w) => {
      if (event === 'changed' && w.state === 'draining') this.log(`worker ${w.id} (${w.address}) is draining`);
      if (event !== 'dead') return;
      this.log(`worker ${w.id} (${w.address}) is dead: ${w.deadReason ?? ''}`);
      void this.rendezvous.onWorkerDead(w);
    });
  }

  /** Starts listening; resolves once the server is bound. */
  static async start(opts: CoordinatorOptions = {}): Promise<Coordinator> {
    const c = new Coordinator(opts);
    const pkg = protos().coordinator.lasp.v1;
    c.server.addService(pkg.Coordinator.service, coordinatorHandlers(c.registry, c.monitor.heartbeatIntervalMs, c.log));
    c.health.addTo(c.server);
    c.boundPort = await bindServer(c.server, opts.host ?? '127.0.0.1', opts.port ?? 0, serverCredentials(opts.tls));
    c.monitor.start();
    return c;
  }

  get port(): number {
    return this.boundPort;
  }

  /** host:port workers should dial. */
  get address(): string {
    const host = this.opts.host ?? '127.0.0.1';
    return `${host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host}:${this.boundPort}`;
  }

  get heartbeatIntervalMs(): number {
    return this.monitor.heartbeatIntervalMs;
  }

  workers(): WorkerInfo[] {
    return this.registry.list();
  }

  /** Resolves once at least `n` workers are idle (registered, alive, not in a group). */
  waitForWorkers(n: number, timeoutMs: number): Promise<WorkerInfo[]> {
    return waitForRegistry(
      this.registry,
      (ws) => ws.filter((w) => w.state === 'idle').length >= n,
      timeoutMs,
      () => `waiting for ${n} idle workers: ${describeWorkers(this.registry.list())}`,
    );
  }

  formGroup(jobId: string, opts: FormGroupOptions): Promise<Group> {
    return this.rendezvous.formGroup(jobId, opts);
  }

  runTask(group: Group, type: string, config: unknown, opts?: RunTaskOptions): Promise<TaskReply[]> {
    return this.rendezvous.runTask(group, type, config, opts);
  }

  abortGroup(group: Group, reason: string): Promise<void> {
    return this.rendezvous.abortGroup(group, reason);
  }

  releaseGroup(group: Group): Promise<void> {
    return this.rendezvous.releaseGroup(group);
  }

  /** The cached WorkerControl client of a registered worker (re-created when its address changes). */
  clientFor(workerId: string): WorkerClient {
    const w = this.registry.get(workerId);
    if (!w) throw new Error(`unknown worker ${workerId}`);
    let c = this.clients.get(workerId);
    if (!c || c.address !== w.address) {
      c?.close();
      c = new WorkerClient(w.id, w.address, this.opts.token, this.opts.tls);
      this.clients.set(workerId, c);
    }
    return c;
  }

  /** Stops the monitor, the server and every client. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.monitor.stop();
    this.health.shutdown();
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
    await shutdownServer(this.server, 1000);
  }
}
