// The worker process: one gRPC server hosting WorkerControl, Peer (collectives) and Health; a link
// to the coordinator (register + heartbeats). Start it with startWorker().
import * as grpc from '@grpc/grpc-js';
import { tokenServerInterceptor } from '../cluster/cluster-token.js';
import { serverCredentials, withChannelCredentials, type TlsConfig } from '../cluster/tls.js';
import { PEER_CHANNEL_OPTIONS } from './collectives/peer-clients.js';
import { availableParallelism, hostname } from 'node:os';
import { protos } from '../proto/load.js';
import { bindServer, shutdownServer } from '../coordinator/grpc-call.js';
import { HealthService } from '../coordinator/health.js';
import { ControlService, type PeerService } from './control-service.js';
import { CoordinatorLink } from './heartbeat.js';
import { PeerEndpoint, peerServerOptions } from './peer-endpoint.js';
import './tasks.js'; // built-in tasks
import './sp/sp-layer-task.js'; // sequence-parallel attention layer
import '../train/train-task.js'; // training steps, evaluation, checkpoints

/** The peer endpoint as the worker uses it (worker/peer-endpoint.ts's PeerEndpoint). */
export interface WorkerPeer extends PeerService {
  addTo(server: grpc.Server): void;
  close(): void;
}

export interface WorkerOptions {
  /** host:port of the coordinator. */
  coordinator: string;
  /** Address to advertise to the coordinator and peers. Default "127.0.0.1". */
  host?: string;
  /** Address to listen on. Default: `host`. */
  bindHost?: string;
  /** Port to listen on; 0 picks a free one. Default 0. */
  port?: number;
  /** Compute threads (reported to the coordinator). Default: LASP_THREADS, else the number of CPUs. */
  threads?: number;
  /** Stable worker id. Default "<hostname>-<pid>". */
  id?: string;
  /** "cpu" or "cuda:N". Default "cpu". */
  device?: string;
  /** Largest collective message in bytes. Default: the peer endpoint's (1 GiB). */
  maxMessageBytes?: number;
  /** Largest piece of a collective message (one Deliver call). Default: the peer endpoint's (1 MiB). */
  pieceBytes?: number;
  /** Deadline of every collective op. Default: the peer endpoint's (30000 ms). */
  collectiveTimeoutMs?: number;
  /** Cluster token: required on this worker's gRPC calls and sent on its own. Default: LASP_TOKEN, else LASP_CLUSTER_TOKEN, else none. */
  token?: string;
  /** TLS of this worker's server and of its calls to the coordinator and peers (cluster/tls.ts loadTls). Default none (plaintext). */
  tls?: TlsConfig;
  /** Receives log lines. Default: discard. */
  log?: (line: string) => void;
  /** Replaces the peer endpoint (tests). Default: a new PeerEndpoint. */
  peer?: WorkerPeer;
}

export class WorkerProcess {
  private stopping: Promise<void> | undefined;

  private constructor(
    readonly id: string,
    readonly address: string,
    readonly port: number,
    private readonly server: grpc.Server,
    private readonly health: HealthService,
    private readonly peer: WorkerPeer,
    readonly control: ControlService,
    readonly link: CoordinatorLink,
  ) {}

  /** Binds the server and starts registering (does not wait for the coordinator; see `registered`). */
  static async start(opts: WorkerOptions): Promise<WorkerProcess> {
    if (!opts.coordinator) throw new Error('worker: the coordinator address (host:port) is required');
    const log = opts.log ?? (() => {});
    const host = opts.host ?? '127.0.0.1';
    const id = opts.id ?? `${hostname()}-${process.pid}`;
    const token = opts.token ?? (process.env.LASP_TOKEN || process.env.LASP_CLUSTER_TOKEN || undefined);
    const threads = opts.threads ?? (Number(process.env.LASP_THREADS) || availableParallelism());
    const peer =
      opts.peer ??
      new PeerEndpoint({
        maxMessageBytes: opts.maxMessageBytes,
        pieceBytes: opts.pieceBytes,
        timeoutMs: opts.collectiveTimeoutMs,
        token,
        ...(opts.tls !== undefined ? { channelOptions: withChannelCredentials(PEER_CHANNEL_OPTIONS, opts.tls) } : {}),
      });
    const control = new ControlService(peer, (line) => log(`worker ${id}: ${line}`));
    const server = new grpc.Server({
      ...peerServerOptions(opts.pieceBytes),
      ...(token !== undefined ? { interceptors: [tokenServerInterceptor(token, (line) => log(`worker ${id}: ${line}`))] } : {}),
    });
    server.addService(protos().worker.lasp.v1.WorkerControl.service, control.handlers());
    peer.addTo(server);
    const health = new HealthService(['lasp.v1.WorkerControl', 'lasp.v1.Peer']);
    health.addTo(server);
    let port: number;
    try {
      port = await bindServer(server, opts.bindHost ?? host, opts.port ?? 0, serverCredentials(opts.tls));
    } catch (err) {
      peer.close();
      throw new Error(`worker ${id}: ${(err as Error).message}`);
    }
    const address = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    const link = new CoordinatorLink({
      coordinator: opts.coordinator,
      ...(token !== undefined ? { token } : {}),
      ...(opts.tls !== undefined ? { tls: opts.tls } : {}),
      registration: { workerId: id, address, host, pid: process.pid, device: opts.device ?? 'cpu', threads },
      status: () => control.status(),
      log: (line) => log(`worker ${id}: ${line}`),
    });
    link.start();
    return new WorkerProcess(id, address, port, server, health, peer, control, link);
  }

  /** Resolves after the first successful registration with the coordinator. */
  get registered(): Promise<void> {
    return this.link.registered;
  }

  /** Graceful stop: tell the coordinator we are draining, abort the group, close the server. Idempotent. */
  stop(reason = 'worker shutting down'): Promise<void> {
    this.stopping ??= (async () => {
      await this.link.stop(true);
      this.control.shutdown(reason);
      this.health.shutdown();
      this.peer.close();
      await shutdownServer(this.server, 1000);
    })();
    return this.stopping;
  }
}

export function startWorker(opts: WorkerOptions): Promise<WorkerProcess> {
  return WorkerProcess.start(opts);
}

/** Stops the worker on SIGTERM/SIGINT and exits (a second signal exits at once). */
export function stopOnSignals(worker: WorkerProcess, log: (line: string) => void = () => {}): void {
  let signalled = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) process.exit(1);
    signalled = true;
    log(`worker ${worker.id}: ${sig}: shutting down`);
    worker.stop(`worker received ${sig}`).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
