// A flat parameter store: every weight lives in one Float32Array and every gradient in another,
// with per-parameter views, so the optimizer step (one ops.adamW call) and the gradient
// AllReduce of the distributed trainer each operate on a single buffer.
import { kernels } from '../native/kernels.js';
import { tensor, type Tensor } from './backend.js';

/** How a parameter starts: N(0, scale²) or all ones (norm weights). */
export type Init = { dist: 'normal'; scale: number } | { dist: 'ones' } | { dist: 'zeros' };

export class Param {
  private w: Float32Array | undefined;
  private g: Float32Array | undefined;

  constructor(
    readonly name: string,
    readonly shape: readonly number[],
    readonly size: number,
    readonly offset: number,
    readonly init: Init,
  ) {}

  /** @internal called once by ParamStore.allocate. */
  bind(data: Float32Array, grads: Float32Array): void {
    this.w = data.subarray(this.offset, this.offset + this.size);
    this.g = grads.subarray(this.offset, this.offset + this.size);
  }

  /** The weights (a view into the store's data). */
  get value(): Float32Array {
    if (!this.w) throw new Error(`lasp model: parameter ${this.name} used before ParamStore.allocate()`);
    return this.w;
  }

  /** The gradient accumulator (a view into the store's grads). */
  get grad(): Float32Array {
    if (!this.g) throw new Error(`lasp model: parameter ${this.name} used before ParamStore.allocate()`);
    return this.g;
  }

  /** The weights as a tensor of the parameter's shape. */
  get tensor(): Tensor {
    return tensor(this.shape, this.value);
  }
}

export class ParamStore {
  readonly params: Param[] = [];
  private total = 0;
  private buffers: { data: Float32Array; grads: Float32Array } | undefined;

  /** Registers a parameter (before allocate); its views are valid after allocate. */
  add(name: string, shape: readonly number[], init: Init): Param {
    if (this.buffers) throw new Error(`lasp model: cannot add parameter ${name} after allocate()`);
    if (this.params.some((p) => p.name === name)) throw new Error(`lasp model: duplicate parameter name ${name}`);
    const size = shape.reduce((a, b) => a * b, 1);
    const p = new Param(name, [...shape], size, this.total, init);
    this.params.push(p);
    this.total += size;
    return p;
  }

  /** Allocates the two flat buffers (zeroed) and binds every parameter's views. */
  allocate(): void {
    if (this.buffers) return;
    const data = new Float32Array(this.total);
    const grads = new Float32Array(this.total);
    for (const p of this.params) p.bind(data, grads);
    this.buffers = { data, grads };
  }

  get size(): number {
    return this.total;
  }

  /** All weights, one buffer. */
  get data(): Float32Array {
    if (!this.buffers) throw new Error('lasp model: ParamStore.allocate() has not run');
    return this.buffers.data;
  }

  /** All gradients, one buffer (the one to AllReduce). */
  get grads(): Float32Array {
    if (!this.buffers) throw new Error('lasp model: ParamStore.allocate() has not run');
    return this.buffers.grads;
  }

  /**
   * Seeded initialisation: a normal parameter at flat offset o gets draws [o, o+size) of stream
   * `seed` (kernels.fillRandom is counter-based), so every process gets identical weights.
   */
  async initialize(seed: number): Promise<void> {
    this.allocate();
    for (const p of this.params) {
      if (p.init.dist === 'normal') await kernels.fillRandom(p.value, { seed, offset: p.offset, dist: 'normal', scale: p.init.scale });
      else p.value.fill(p.init.dist === 'ones' ? 1 : 0);
    }
  }

  zeroGrads(): void {
    this.grads.fill(0);
  }

  byName(name: string): Param {
    const p = this.params.find((x) => x.name === name);
    if (!p) throw new Error(`lasp model: no parameter named ${name}`);
    return p;
  }
}
