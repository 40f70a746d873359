// One collective operation in flight: its deadline, the sends and receives it still waits for, and
// how it fails. The first failure (a peer error, the deadline, an abort) cancels every other pending
// part at once, so an op never hangs and never leaves receives posted behind it.

interface Pending {
  label: string;
  cancel: () => void;
  reject: (err: Error) => void;
}

export class OpScope {
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private failure: Error | undefined;
  private readonly timer: NodeJS.Timeout;

  /**
   * @param name what the op is, for error messages (e.g. `allGather step=3 layer=0 op="fwd.summary"`)
   * @param timeoutMs deadline of the whole op
   * @param onEnd called once when the op finishes or fails
   */
  constructor(
    readonly name: string,
    readonly timeoutMs: number,
    private readonly onEnd: () => void,
  ) {
    this.deadline = Date.now() + timeoutMs;
    this.timer = setTimeout(() => {
      const waiting = [...this.pending.values()].map((p) => p.label);
      this.fail(new Error(`${name} timed out after ${timeoutMs} ms; still waiting for: ${waiting.join(', ') || 'nothing'}`));
    }, timeoutMs);
  }

  /** Absolute deadline (ms since the epoch) for gRPC calls of this op. */
  readonly deadline: number;

  get failed(): Error | undefined {
    return this.failure;
  }

  /**
   * Track one part of the op. The returned promise settles with `promise`, or rejects as soon as
   * the op fails (then `cancel` is called). A rejection of the part fails the whole op.
   */
  track<T>(label: string, promise: Promise<T>, cancel: () => void): Promise<T> {
    if (this.failure !== undefined) {
      cancel();
      promise.catch(() => {});
      const p = Promise.reject(this.failure);
      p.catch(() => {});
      return p;
    }
    const id = this.nextId++;
    const out = new Promise<T>((resolve, reject) => {
      this.pending.set(id, { label, cancel, reject });
      promise.then(
        (v) => {
          if (this.pending.delete(id)) resolve(v);
        },
        (err: unknown) => {
          if (!this.pending.delete(id)) return;
          const e = err instanceof Error ? err : new Error(String(err));
          reject(e);
          this.fail(e);
        },
      );
    });
    out.catch(() => {}); // parts posted ahead of time may fail before anyone awaits them
    return out;
  }

  /** Fail the op: every pending part is cancelled and rejects with `err`. */
  fail(err: Error): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    clearTimeout(this.timer);
    const parts = [...this.pending.values()];
    this.pending.clear();
    for (const p of parts) {
      p.cancel();
      p.reject(err);
    }
    this.onEnd();
  }

  /** The op completed: parts still pending (e.g. the unused path of a receive) are cancelled. */
  finish(): void {
    if (this.failure !== undefined) return;
    clearTimeout(this.timer);
    const parts = [...this.pending.values()];
    this.pending.clear();
    for (const p of parts) p.cancel();
    this.onEnd();
  }

  /** Run `body` inside this scope: finishes on success, fails (and rethrows the first error) otherwise. */
  async run<T>(body: () => Promise<T>): Promise<T> {
    try {
      const v = await body();
      if (this.failure !== undefined) throw this.failure;
      this.finish();
      return v;
    } catch (err) {
      const e = this.failure ?? (err instanceof Error ? err : new Error(String(err)));
      this.fail(e);
      throw e;
    }
  }
}
