// y = (silu(x W_gate) ⊙ (x W_up)) W_down.
import type { Backend, Tensor } from '../backend.js';
import type { ParamStore } from '../params.js';
import { Linear, type LinearCache } from './linear.js';

export interface SwigluMlpCache {
  gate: LinearCache;
  up: LinearCache;
  down: LinearCache;
  a?: Tensor;
  b?: Tensor;
}

export function swigluMlpCache(): SwigluMlpCache {
  return { gate: {}, up: {}, down: {} };
}

export class SwigluMlp {
  readonly gate: Linear;
  readonly up: Linear;
  readonly down: Linear;

  constructor(
    private readonly be: Backend,
    store: ParamStore,
    name: string,
    dModel: number,
    ffn: number,
  ) {
    this.gate = new Linear(be, store, `${name}.w_gate`, dModel, ffn);
    this.up = new Linear(be, store, `${name}.w_up`, dModel, ffn);
    this.down = new Linear(be, store, `${name}.w_down`, ffn, dModel);
  }

  async forward(x: Tensor, cache: SwigluMlpCache): Promise<Tensor> {
    const a = await this.gate.forward(x, cache.gate);
    const b = await this.up.forward(x, cache.up);
    cache.a = a;
    cache.b = b;
    return this.down.forward(await this.be.swiglu(a, b), cache.down);
  }

  async backward(dy: Tensor, cache: SwigluMlpCache): Promise<Tensor> {
    if (!cache.a || !cache.b) throw new Error('lasp model: SwigluMlp.backward without a forward cache');
    const dh = await this.down.backward(dy, cache.down);
    const { da, db } = await this.be.swigluBackward(cache.a, cache.b, dh);
    const dx = await this.gate.backward(da, cache.gate);
    return this.up.backward(db, cache.up, dx);
  }
}
