// RMSNorm over the last dimension of x [N,D] with a learned weight [D] (initialised to ones).
import type { Backend, Tensor } from '../backend.js';
import type { Param, ParamStore } from '../params.js';

export interface RmsNormCache {
  x?: Tensor;
  rstd?: Float32Array;
}

export class RmsNorm {
  readonly w: Param;

  constructor(
    private readonly be: Backend,
    store: ParamStore,
    name: string,
    readonly dim: number,
    readonly eps = 1e-6,
  ) {
    this.w = store.add(name, [dim], { dist: 'ones' });
  }

  async forward(x: Tensor, cache: RmsNormCache): Promise<Tensor> {
    const { y, rstd } = await this.be.rmsNorm(x, this.w.value, this.eps);
    cache.x = x;
    cache.rstd = rstd;
    return y;
  }

  async backward(dy: Tensor, cache: RmsNormCache): Promise<Tensor> {
    if (!cache.x || !cache.rstd) throw new Error(`lasp model: ${this.w.name}.backward without a forward cache`);
    const { dx, dw } = await this.be.rmsNormBackward(cache.x, this.w.value, this.eps, cache.rstd, dy);
    await this.be.addInto(this.w.grad, dw);
    return dx;
  }
}
