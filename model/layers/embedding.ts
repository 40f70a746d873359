// Token embedding: table [V,D] ~ N(0, 1); y [N,D] = table[ids].
import type { Backend, Tensor } from '../backend.js';
import type { Param, ParamStore } from '../params.js';

export interface EmbeddingCache {
  ids?: Int32Array;
}

export class Embedding {
  readonly table: Param;

  constructor(
    private readonly be: Backend,
    store: ParamStore,
    name: string,
    readonly vocab: number,
    readonly dim: number,
    scale = 1,
  ) {
    this.table = store.add(name, [vocab, dim], { dist: 'normal', scale });
  }

  async forward(ids: Int32Array, cache: EmbeddingCache): Promise<Tensor> {
    cache.ids = ids;
    return this.be.embedding(this.table.value, this.vocab, this.dim, ids);
  }

  /** Accumulates the table gradient; the input (token ids) has none. */
  async backward(dy: Tensor, cache: EmbeddingCache): Promise<void> {
    if (!cache.ids) throw new Error(`lasp model: ${this.table.name}.backward without a forward cache`);
    await this.be.addInto(this.table.grad, await this.be.embeddingBackward(this.vocab, this.dim, cache.ids, dy));
  }
}
