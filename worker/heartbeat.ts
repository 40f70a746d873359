// The worker's link to the coordinator: register (retrying with backoff until it answers, so a
// worker may start before the coordinator), then heartbeat every interval the coordinator asked
// for; register again when a heartbeat comes back known=false (the coordinator restarted or
// declared this worker dead).
import { withToken } from '../cluster/cluster-token.js';
import { channelCredentials, type TlsConfig } from '../cluster/tls.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { protos } from '../proto/load.js';
import type { CoordinatorClient } from '../proto/generated/lasp/v1/Coordinator.js';
import type { HeartbeatReply__Output } from '../proto/generated/lasp/v1/HeartbeatReply.js';
import type { RegisterReply__Output } from '../proto/generated/lasp/v1/RegisterReply.js';
import type { RegisterRequest } from '../proto/generated/lasp/v1/RegisterRequest.js';
import { callUnary, CLIENT_CHANNEL_OPTIONS } from '../coordinator/grpc-call.js';
import type { WorkerStatus } from './control-service.js';

export interface CoordinatorLinkOptions {
  /** host:port of the coordinator. */
  coordinator: string;
  /** Cluster token sent on every call. Default none. */
  token?: string;
  /** TLS of the channel to the coordinator. Default none (plaintext). */
  tls?: TlsConfig;
  /** What this worker registers as. */
  registration: Required<Pick<RegisterRequest, 'workerId' | 'address' | 'host' | 'pid' | 'device' | 'threads'>>;
  /** Current state for heartbeats. */
  status: () => WorkerStatus | { state: 'draining'; jobId: string; generation: number; step: number };
  /** Deadline of a Register call. Default 2000 ms. */
  registerTimeoutMs?: number;
  /** First retry delay after a failed Register; doubles up to maxBackoffMs. Default 100 ms. */
  initialBackoffMs?: number;
  /** Default 2000 ms. */
  maxBackoffMs?: number;
  /** Called once, when a heartbeat reply asks this worker to drain (POST /v1/workers/:id/drain). Default: nothing. */
  onDrainRequest?: () => void;
  /** Default: discard. */
  log?: (line: string) => void;
}

export class CoordinatorLink {
  private readonly client: CoordinatorClient;
  private readonly stopper = new AbortController();
  private readonly label: string;
  private readonly log: (line: string) => void;
  private intervalMs = 2000;
  private loop: Promise<void> | undefined;
  private registeredOnce!: () => void;
  /** Resolves after the first successful registration. */
  readonly registered: Promise<void>;
  /** Number of successful registrations so far (> 1 after re-registering). */
  registrations = 0;
  /** ms since the epoch of the last register or heartbeat the coordinator answered; 0 before the first. */
  lastContact = 0;
  draining = false;
  private drainAsked = false;

  constructor(private readonly opts: CoordinatorLinkOptions) {
    const Ctor = protos().coordinator.lasp.v1.Coordinator;
    this.client = new Ctor(opts.coordinator, channelCredentials(opts.tls), withToken(CLIENT_CHANNEL_OPTIONS, opts.token));
    this.label = `coordinator ${opts.coordinator}`;
    this.log = opts.log ?? (() => {});
    this.registered = new Promise((resolve) => (this.registeredOnce = resolve));
  }

  get heartbeatIntervalMs(): number {
    return this.intervalMs;
  }

  start(): void {
    this.loop ??= this.run().catch((err: unknown) => {
      if (!this.stopper.signal.aborted) this.log(`coordinator link stopped: ${(err as Error).message}`);
    });
  }

  /** Stops heartbeating; with `drain`, first tells the coordinator this worker is draining (best effort). */
  async stop(drain = true): Promise<void> {
    if (drain && this.registrations > 0 && !this.stopper.signal.aborted) {
      this.draining = true;
      await this.heartbeat(Math.min(500, this.intervalMs)).catch(() => undefined);
    }
    this.stopper.abort();
    await this.loop;
    this.client.close();
  }

  /** From now on heartbeats say "draining"; sends one at once (best effort). */
  async announceDraining(): Promise<void> {
    this.draining = true;
    if (this.registrations > 0 && !this.stopper.signal.aborted)
      await this.heartbeat(Math.min(1000, this.intervalMs)).catch(() => undefined);
  }

  private async run(): Promise<void> {
    const signal = this.stopper.signal;
    let needRegister = true;
    let backoff = this.opts.initialBackoffMs ?? 100;
    let lastError = '';
    let lastBeat = 0;
    while (!signal.aborted) {
      if (needRegister) {
        try {
          await this.register();
          lastBeat = Date.now();
          this.lastContact = lastBeat;
          needRegister = false;
          backoff = this.opts.initialBackoffMs ?? 100;
          lastError = '';
        } catch (err) {
          const msg = (err as Error).message;
          if (msg !== lastError) this.log(`register failed (retrying): ${msg}`);
          lastError = msg;
          await sleep(backoff, undefined, { signal });
          backoff = Math.min(backoff * 2, this.opts.maxBackoffMs ?? 2000);
          continue;
        }
      }
      await sleep(Math.max(0, lastBeat + this.intervalMs - Date.now()), undefined, { signal });
      lastBeat = Date.now();
      try {
        const known = await this.heartbeat(this.intervalMs);
        this.lastContact = Date.now();
        if (lastError) this.log(`${this.label} answers again`);
        lastError = '';
        if (!known) {
          this.log(`${this.label} does not know this worker: registering again`);
          needRegister = true;
        }
      } catch (err) {
        const msg = (err as Error).message;
        if (msg !== lastError) this.log(`heartbeat failed: ${msg}`);
        lastError = msg;
      }
    }
  }

  private async register(): Promise<void> {
    const req = this.opts.registration;
    const reply = await callUnary<RegisterReply__Output>(this.label, 'Register', this.opts.registerTimeoutMs ?? 2000, (o, cb) =>
      this.client.Register(req, o, cb),
    );
    if (reply.heartbeatIntervalMs > 0) this.intervalMs = reply.heartbeatIntervalMs;
    this.registrations++;
    this.log(`registered with ${this.label} as ${req.workerId} (heartbeat every ${this.intervalMs} ms)`);
    this.registeredOnce();
  }

  private async heartbeat(timeoutMs: number): Promise<boolean> {
    const s = this.opts.status();
    const req = {
      workerId: this.opts.registration.workerId,
      state: this.draining ? 'draining' : s.state,
      jobId: s.jobId,
      generation: s.generation,
      step: s.step,
    };
    const reply = await callUnary<HeartbeatReply__Output>(this.label, 'Heartbeat', timeoutMs, (o, cb) => this.client.Heartbeat(req, o, cb));
    if (reply.drain && !this.drainAsked) {
      this.drainAsked = true;
      this.log(`${this.label} asks this worker to drain`);
      this.opts.onDrainRequest?.();
    }
    return reply.known;
  }
}
