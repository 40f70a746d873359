// LM head: logits [N,V] = x W [D,V] (untied from the embedding), then softmax cross-entropy.
import type { Backend, Tensor } from '../backend.js';
import type { ParamStore } from '../params.js';
import { Linear, type LinearCache } from './linear.js';

export interface LmHeadCache {
  proj: LinearCache;
  dlogits?: Tensor;
  /** Set when the forward was asked to keep the logits (for predictions). */
  logits?: Tensor;
}

export function lmHeadCache(): LmHeadCache {
  return { proj: {} };
}

export class LmHead {
  readonly proj: Linear;

  constructor(
    private readonly be: Backend,
    store: ParamStore,
    name: string,
    dModel: number,
    vocab: number,
  ) {
    this.proj = new Linear(be, store, name, dModel, vocab);
  }

  /**
   * Summed token loss over targets ≠ -1 and their count; the gradient of (scale · summed loss)
   * is kept for backward (scale = 1/total counted tokens gives the mean).
   */
  async forward(
    x: Tensor,
    targets: Int32Array,
    scale: number,
    cache: LmHeadCache,
    keepLogits = false,
  ): Promise<{ loss: number; count: number }> {
    const logits = await this.proj.forward(x, cache.proj);
    if (keepLogits) cache.logits = logits;
    const { loss, count, dlogits } = await this.be.crossEntropy(logits, targets, scale);
    cache.dlogits = dlogits;
    return { loss, count };
  }

  async backward(cache: LmHeadCache): Promise<Tensor> {
    if (!cache.dlogits) throw new Error('lasp model: LmHead.backward without a forward cache');
    return this.proj.backward(cache.dlogits, cache.proj);
  }
}
