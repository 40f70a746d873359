// The model backend under sequence parallelism: every op of the CPU backend, except that the
// attention kernel runs as generalised LASP-2 across the group (one AllGather of block summaries
// forward, one of state gradients backward, per layer and sequence). The model code is unchanged:
// it calls Backend.attention on its block, and this backend makes the collective calls.
import { cpuBackend, type AttentionContext, type Backend } from '../../model/backend.js';
import type { AttentionSpec, BackwardResult } from '../../native/kernels.js';
import type { Communicator } from '../collectives/communicator.js';
import { lasp2BackwardBatch, lasp2ForwardBatch, type SpBatchForward, type SpContext } from './lasp2.js';

interface SpAttentionContext extends AttentionContext {
  readonly sp: SpContext;
  readonly fwd: SpBatchForward;
}

export interface SpBackendOptions {
  /** Accumulates the time spent waiting for collectives (see SpContext.timing). Default none. */
  timing?: { collectiveMs: number };
}

export class SpBackend {
  /** The collective tags' step: set before each forward (the trainer uses its step number). */
  step = 0;
  /** Appended to the tags' op names, e.g. "eval3" for an evaluation pass. Default "". */
  phase = '';
  readonly backend: Backend;

  constructor(
    readonly comm: Communicator,
    private readonly opts: SpBackendOptions = {},
  ) {
    this.backend = {
      ...cpuBackend,
      attention: (specs, layer) => this.attention(specs, layer),
      attentionBackward: (ctx, dO) => this.attentionBackward(ctx, dO),
    };
  }

  private async attention(specs: AttentionSpec[], layer: number): Promise<{ o: Float32Array[]; ctx: AttentionContext }> {
    const sp: SpContext = {
      comm: this.comm,
      step: this.step,
      layer,
      ...(this.phase ? { scope: `.${this.phase}` } : {}),
      ...(this.opts.timing ? { timing: this.opts.timing } : {}),
    };
    const fwd = await lasp2ForwardBatch(sp, specs);
    const ctx: SpAttentionContext = { specs, sp, fwd };
    return { o: fwd.results.map((r) => r.o), ctx };
  }

  private async attentionBackward(ctx: AttentionContext, dO: Float32Array[]): Promise<BackwardResult[]> {
    const c = ctx as SpAttentionContext;
    if (!c.sp || !c.fwd) throw new Error('SpBackend: attentionBackward with a context from another backend');
    return lasp2BackwardBatch(c.sp, [...c.specs], c.fwd, dO);
  }
}
