// The worker process: one gRPC server hosting WorkerControl, Peer (collectives) and Health; a link
// to the coordinator (register + heartbeats). Start it with startWorker().
import * as grpc from '@grpc/grpc-js';
import { tokenServerInterceptor } from '../cluster/cluster-token.js';
import { serverCredentials, withChannelCredentials, type TlsConfig } from '../cluster/tls.js';
import { PEER_CHANNEL_OPTIONS } from './collectives/peer-clients.js';
import { joinAddress } from './collectives/h2-peer-stream.js';
import { availableParallelism, hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { protos } from '../proto/load.js';
import { bindServer, shutdownServer } from '../coordinator/grpc-call.js';
import { HealthService } from '../coordinator/health.js';
import { ControlService, type PeerService } from './control-service.js';
import { CoordinatorLink } from './heartbeat.js';
import { PeerEndpoint, peerServerOptions } from './peer-endpoint.js';
import { deviceName, kernelsFor, parseDevice, parsePrecision } from '../native/device.js';
import type { KernelSet } from '../native/kernel-set.js';
import type { StreamTransport } from './collectives/peer-clients.js';
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
  /** Attention arithmetic: 'fp32', or 'bf16' (CUDA only; native/cuda-bf16-attention.ts). Default 'fp32'. */
  precision?: string;
  /** Largest collective message in bytes. Default: the peer endpoint's (1 GiB). */
  maxMessageBytes?: number;
  /** Largest piece of a collective message (one Deliver call). Default: the peer endpoint's (1 MiB). */
  pieceBytes?: number;
  /** Deadline of every collective op. Default: the peer endpoint's (30000 ms). */
  collectiveTimeoutMs?: number;
  /** What carries collective pieces (PeerEndpointOptions.streamTransport). Default 'native' (DEFAULT_STREAM_TRANSPORT). */
  streamTransport?: StreamTransport;
  /** Cluster token: required on this worker's gRPC calls and sent on its own. Default: LASP_TOKEN, else LASP_CLUSTER_TOKEN, else none. */
  token?: string;
  /** TLS of this worker's server and of its calls to the coordinator and peers (cluster/tls.ts loadTls). Default none (plaintext). */
  tls?: TlsConfig;
  /** Receives log lines. Default: discard. */
  log?: (line: string) => void;
  /** How long a drain (SIGTERM, or the coordinator's request) waits for the job to checkpoint and release this worker before it stops anyway; 0: stop at once. Default 120000 ms. */
  drainTimeoutMs?: number;
  /** Replaces the peer endpoint (tests). Default: a new PeerEndpoint. */
  peer?: WorkerPeer;
}

/** Default of WorkerOptions.drainTimeoutMs. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 120_000;

export class WorkerProcess {
  private stopping: Promise<void> | undefined;
  private draining: Promise<void> | undefined;
  private closedResolve!: () => void;
  /** Resolves once the worker has stopped (stop() or a finished drain). */
  readonly closed = new Promise<void>((resolve) => (this.closedResolve = resolve));

  private constructor(
    readonly id: string,
    readonly address: string,
    readonly port: number,
    private readonly server: grpc.Server,
    private readonly health: HealthService,
    private readonly peer: WorkerPeer,
    readonly control: ControlService,
    readonly link: CoordinatorLink,
    private readonly drainTimeoutMs: number,
    private readonly log: (line: string) => void,
  ) {}

  /** Binds the server and starts registering (does not wait for the coordinator; see `registered`). */
  static async start(opts: WorkerOptions): Promise<WorkerProcess> {
    if (!opts.coordinator) throw new Error('worker: the coordinator address (host:port) is required');
    const log = opts.log ?? (() => {});
    const host = opts.host ?? '127.0.0.1';
    const id = opts.id ?? `${hostname()}-${process.pid}`;
    const token = opts.token ?? (process.env.LASP_TOKEN || process.env.LASP_CLUSTER_TOKEN || undefined);
    const threads = opts.threads ?? (Number(process.env.LASP_THREADS) || availableParallelism());
    const device = parseDevice(opts.device ?? 'cpu', 'device');
    const precision = parsePrecision(opts.precision ?? 'fp32', 'precision');
    let kernels: KernelSet;
    try {
      kernels = await kernelsFor(device, precision);
    } catch (err) {
      throw new Error(`worker ${id}: device ${deviceName(device)}: ${(err as Error).message}`);
    }
    const peer =
      opts.peer ??
      new PeerEndpoint({
        maxMessageBytes: opts.maxMessageBytes,
        pieceBytes: opts.pieceBytes,
        timeoutMs: opts.collectiveTimeoutMs,
        ...(opts.streamTransport !== undefined ? { streamTransport: opts.streamTransport } : {}),
        token,
        ...(opts.tls !== undefined ? { channelOptions: withChannelCredentials(PEER_CHANNEL_OPTIONS, opts.tls), tls: opts.tls } : {}),
      });
    const control = new ControlService(peer, (line) => log(`worker ${id}: ${line}`), kernels);
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
    const address = joinAddress(host, port);
    const created: { worker?: WorkerProcess } = {};
    const link = new CoordinatorLink({
      onDrainRequest: () => void created.worker?.drain('the coordinator asked this worker to drain'),
      coordinator: opts.coordinator,
      ...(token !== undefined ? { token } : {}),
      ...(opts.tls !== undefined ? { tls: opts.tls } : {}),
      registration: { workerId: id, address, host, pid: process.pid, device: deviceName(device), threads },
      status: () => control.status(),
      log: (line) => log(`worker ${id}: ${line}`),
    });
    link.start();
    const self = new WorkerProcess(
      id,
      address,
      port,
      server,
      health,
      peer,
      control,
      link,
      opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS,
      (line) => log(`worker ${id}: ${line}`),
    );
    created.worker = self;
    return self;
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
      this.closedResolve();
    })();
    return this.stopping;
  }

  /** True once drain() was called. */
  get isDraining(): boolean {
    return this.draining !== undefined;
  }

  /**
   * Graceful leave: heartbeats say "draining" from now on (the coordinator gives this worker no new
   * group, and its job saves a checkpoint after the current step and goes on without it); waits
   * until the job has released this worker, at most `timeoutMs` and only while the coordinator
   * answers, then stops. Idempotent.
   */
  drain(reason: string, timeoutMs = this.drainTimeoutMs): Promise<void> {
    this.draining ??= (async () => {
      const t0 = Date.now();
      this.log(`draining: ${reason}`);
      if (timeoutMs > 0) {
        await this.link.announceDraining();
        const end = t0 + timeoutMs;
        while (this.control.status().state === 'busy' && this.stopping === undefined) {
          const silentMs = Date.now() - this.link.lastContact;
          if (Date.now() >= end) {
            this.log(`drain: still in a group after ${timeoutMs} ms: leaving anyway`);
            break;
          }
          if (silentMs > 3 * this.link.heartbeatIntervalMs) {
            this.log(`drain: the coordinator has not answered for ${silentMs} ms: leaving now`);
            break;
          }
          await sleep(100);
        }
        const a = this.control.assignment();
        this.log(`drained in ${Date.now() - t0} ms${a ? ` (last group: job ${a.jobId} generation ${a.generation})` : ''}`);
      }
      await this.stop(reason);
    })();
    return this.draining;
  }
}

export function startWorker(opts: WorkerOptions): Promise<WorkerProcess> {
  return WorkerProcess.start(opts);
}

/**
 * Drains the worker on SIGTERM/SIGINT (worker.drain: its job checkpoints and releases it, within
 * the drain timeout) and exits; a second signal exits at once.
 */
export function stopOnSignals(worker: WorkerProcess, log: (line: string) => void = () => {}): void {
  let signalled = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (signalled) process.exit(1);
    signalled = true;
    log(`worker ${worker.id}: ${sig}: draining, then shutting down (a second signal exits at once)`);
    worker.drain(`worker received ${sig}`).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
