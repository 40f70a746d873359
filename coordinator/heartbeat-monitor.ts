// Declares workers dead when they stop heartbeating. Depends only on a clock and a two-method view
// of the registry, so it can be unit-tested alone with a fake clock.
import { systemClock, type Clock } from './clock.js';

/** What the monitor needs from the registry. */
export interface MonitoredRegistry {
  /** Workers that are not dead yet, with their last heartbeat (ms since the epoch). */
  liveWorkers(): Iterable<{ id: string; lastHeartbeat: number }>;
  markDead(id: string, reason: string): void;
}

export interface HeartbeatMonitorOptions {
  /** Interval the workers are told to heartbeat at. Default 2000 ms. */
  heartbeatIntervalMs?: number;
  /** Consecutive missed heartbeats before a worker is dead. Default 3. */
  missesAllowed?: number;
  /** How often to check. Default heartbeatIntervalMs / 4 (so death is noticed within a quarter interval). */
  checkEveryMs?: number;
  /** Default: the system clock. */
  clock?: Clock;
}

export class HeartbeatMonitor {
  readonly heartbeatIntervalMs: number;
  readonly missesAllowed: number;
  private readonly checkEveryMs: number;
  private readonly clock: Clock;
  private timer: unknown;

  constructor(
    private readonly registry: MonitoredRegistry,
    opts: HeartbeatMonitorOptions = {},
  ) {
    this.heartbeatIntervalMs = opts.heartbeatIntervalMs ?? 2000;
    this.missesAllowed = opts.missesAllowed ?? 3;
    if (!(this.heartbeatIntervalMs > 0)) throw new Error(`heartbeatIntervalMs must be > 0, got ${this.heartbeatIntervalMs}`);
    if (!(this.missesAllowed >= 1)) throw new Error(`missesAllowed must be >= 1, got ${this.missesAllowed}`);
    this.checkEveryMs = opts.checkEveryMs ?? Math.max(1, Math.floor(this.heartbeatIntervalMs / 4));
    this.clock = opts.clock ?? systemClock;
  }

  /** A worker silent for longer than this is dead. */
  get deadAfterMs(): number {
    return this.heartbeatIntervalMs * this.missesAllowed;
  }

  start(): void {
    if (this.timer === undefined) this.timer = this.clock.setInterval(() => this.check(), this.checkEveryMs);
  }

  stop(): void {
    if (this.timer !== undefined) this.clock.clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One sweep: marks every silent worker dead and returns their ids. */
  check(): string[] {
    const now = this.clock.now();
    const dead: string[] = [];
    for (const w of this.registry.liveWorkers()) {
      const silentMs = now - w.lastHeartbeat;
      if (silentMs > this.deadAfterMs) dead.push(w.id);
    }
    for (const id of dead) {
      this.registry.markDead(id, `missed ${this.missesAllowed} heartbeats (interval ${this.heartbeatIntervalMs} ms)`);
    }
    return dead;
  }
}
