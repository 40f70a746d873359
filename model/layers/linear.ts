// y [N,out] = x [N,in] · W [in,out], no bias. The weight grad accumulates into the store.
import { dims2, type Backend, type Tensor } from '../backend.js';
import type { Param, ParamStore } from '../params.js';

export interface LinearCache {
  x?: Tensor;
}

export class Linear {
  readonly w: Param;

  constructor(
    private readonly be: Backend,
    store: ParamStore,
    name: string,
    readonly inDim: number,
    readonly outDim: number,
    scale = 1 / Math.sqrt(inDim),
  ) {
    this.w = store.add(name, [inDim, outDim], { dist: 'normal', scale });
  }

  async forward(x: Tensor, cache: LinearCache): Promise<Tensor> {
    const [, d] = dims2(x);
    if (d !== this.inDim) throw new Error(`lasp model: ${this.w.name} expects input width ${this.inDim}, got ${d}`);
    cache.x = x;
    return this.be.matmul(x, this.w.tensor);
  }

  /**
   * dW += xᵀ dy; returns dx = dy Wᵀ, or adds it into `dxAcc` (several projections of one input)
   * and returns that.
   */
  async backward(dy: Tensor, cache: LinearCache, dxAcc?: Tensor): Promise<Tensor> {
    const x = cache.x;
    if (!x) throw new Error(`lasp model: ${this.w.name}.backward without a forward cache`);
    await this.be.matmul(x, dy, { transA: true, beta: 1, out: this.w.grad });
    return this.be.matmul(dy, this.w.tensor, { transB: true, ...(dxAcc ? { beta: 1, out: dxAcc.data } : {}) });
  }
}
