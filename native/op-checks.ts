// Argument checks shared by the CPU ops (ops.ts) and their CUDA twins (cuda-ops.ts): the same
// rules and the same messages (the argument, the expected value, what arrived) on every device.
import { checkArray, checkInt, describe, fail } from './kernels.js';
import type { AdamWHyper, AdamWState, EmbeddingSpec, RmsNormSpec, ShortConvSpec } from './ops.js';

/** A finite number in [min, max] (an exclusive end when the flag says so). */
export function checkNumber(
  name: string,
  value: unknown,
  min: number,
  max: number,
  exclusive: { min?: boolean; max?: boolean } = {},
): number {
  const lo = exclusive.min ? '(' : '[';
  const hi = exclusive.max ? ')' : ']';
  if (
    typeof value !== 'number' ||
    !Number.isFinite(value) ||
    value < min ||
    value > max ||
    (exclusive.min && value === min) ||
    (exclusive.max && value === max)
  ) {
    fail(`${name} must be a finite number in ${lo}${min}, ${max}${hi}, got ${describe(value)}`);
  }
  return value;
}

/** An Int32Array of `length` ids, each in [lo, hi); names the first bad element. */
export function checkIds(name: string, value: unknown, length: number, lo: number, hi: number, shape: string): Int32Array {
  if (!(value instanceof Int32Array)) fail(`${name} must be an Int32Array of length ${length} (${shape}), got ${describe(value)}`);
  if (value.length !== length) fail(`${name} must have length ${length} (${shape}), got ${value.length}`);
  for (let i = 0; i < value.length; i++) {
    const id = value[i]!;
    if (id < lo || id >= hi) fail(`${name}[${i}] = ${id} is out of range [${lo}, ${hi})`);
  }
  return value;
}

export function checkRmsNorm(spec: RmsNormSpec) {
  if (spec === null || typeof spec !== 'object') fail(`spec must be an object, got ${describe(spec)}`);
  const N = checkInt('N', spec.N, 1);
  const D = checkInt('D', spec.D, 1);
  const eps = checkNumber('eps', spec.eps ?? 1e-6, 0, 1, { min: true });
  const x = checkArray('x', spec.x, N * D, '[N,D]');
  const w = checkArray('w', spec.w, D, '[D]');
  return { N, D, eps, x, w };
}

export function checkF32(name: string, x: unknown): Float32Array {
  if (!(x instanceof Float32Array)) fail(`${name} must be a Float32Array, got ${describe(x)}`);
  return x;
}

export function checkFinite(name: string, x: unknown): number {
  if (typeof x !== 'number' || !Number.isFinite(x)) fail(`${name} must be a finite number, got ${describe(x)}`);
  return x;
}

export function checkShortConv(spec: ShortConvSpec) {
  if (spec === null || typeof spec !== 'object') fail(`spec must be an object, got ${describe(spec)}`);
  const B = checkInt('B', spec.B ?? 1, 1);
  const T = checkInt('T', spec.T, 1);
  const C = checkInt('C', spec.C, 1);
  const K = checkInt('K', spec.K, 1, 64);
  const x = checkArray('x', spec.x, B * T * C, '[B,T,C]');
  const w = checkArray('w', spec.w, K * C, '[K,C]');
  const halo = spec.halo === undefined ? null : checkArray('halo', spec.halo, B * (K - 1) * C, '[B,K-1,C]');
  const silu = spec.silu ?? false;
  if (typeof silu !== 'boolean') fail(`silu must be a boolean, got ${describe(silu)}`);
  return { B, T, C, K, x, w, halo, silu };
}

export function checkEmbedding(spec: EmbeddingSpec) {
  if (spec === null || typeof spec !== 'object') fail(`spec must be an object, got ${describe(spec)}`);
  const V = checkInt('V', spec.V, 1);
  const D = checkInt('D', spec.D, 1);
  if (!(spec.ids instanceof Int32Array) || spec.ids.length < 1) fail(`ids must be a non-empty Int32Array, got ${describe(spec.ids)}`);
  const N = spec.ids.length;
  const ids = checkIds('ids', spec.ids, N, 0, V, '[N]');
  return { N, V, D, ids };
}

export function checkArrays(arrays: readonly Float32Array[]): Float32Array[] {
  if (!Array.isArray(arrays)) fail(`arrays must be an array of Float32Arrays, got ${describe(arrays)}`);
  arrays.forEach((a, i) => {
    if (!(a instanceof Float32Array)) fail(`arrays[${i}] must be a Float32Array, got ${describe(a)}`);
  });
  return [...arrays];
}

/** An AdamW step's arrays and hyper-parameters, defaults filled in. */
export function checkAdamW(state: AdamWState, hyper: AdamWHyper) {
  if (state === null || typeof state !== 'object') fail(`state must be an object, got ${describe(state)}`);
  if (hyper === null || typeof hyper !== 'object') fail(`hyper must be an object, got ${describe(hyper)}`);
  if (!(state.params instanceof Float32Array)) fail(`params must be a Float32Array, got ${describe(state.params)}`);
  const n = state.params.length;
  const grads = checkArray('grads', state.grads, n, 'same length as params');
  const m = checkArray('m', state.m, n, 'same length as params');
  const v = checkArray('v', state.v, n, 'same length as params');
  const lr = checkNumber('lr', hyper.lr, 0, 1e9);
  const beta1 = checkNumber('beta1', hyper.beta1 ?? 0.9, 0, 1, { max: true });
  const beta2 = checkNumber('beta2', hyper.beta2 ?? 0.999, 0, 1, { max: true });
  const eps = checkNumber('eps', hyper.eps ?? 1e-8, 0, 1e9, { min: true });
  const weightDecay = checkNumber('weightDecay', hyper.weightDecay ?? 0, 0, 1e9);
  const step = checkInt('step', hyper.step, 1);
  return { n, grads, m, v, lr, beta1, beta2, eps, weightDecay, step };
}

/** The arguments of l2NormalizeRowsBackward: y and dy [rows,d], inv [rows]. */
export function checkL2RowsBackward(y: Float32Array, inv: Float32Array, dy: Float32Array, rows: number, d: number): void {
  checkInt('rows', rows, 0);
  checkInt('d', d, 1);
  checkArray('y', y, rows * d, '[rows,d]');
  checkArray('inv', inv, rows, '[rows]');
  checkArray('dy', dy, rows * d, '[rows,d]');
}
