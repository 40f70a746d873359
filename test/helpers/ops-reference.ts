// Float64 references for the model ops (native/ops.ts), written plainly from their definitions,
// and central finite differences. Nothing here calls native code. Layouts are row-major.

type Arr = ArrayLike<number>;

export function toF64(a: Arr): Float64Array {
  return Float64Array.from(a);
}

/** <a, b> in float64. */
export function inner(a: Arr, b: Arr): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** y = x / sqrt(mean(x²) + eps) ⊙ w per row of x [N,D]; rstd [N]. */
export function refRmsNorm(x: Arr, w: Arr, N: number, D: number, eps: number): { y: Float64Array; rstd: Float64Array } {
  const y = new Float64Array(N * D);
  const rstd = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let ms = 0;
    for (let j = 0; j < D; j++) ms += x[n * D + j]! ** 2;
    const r = 1 / Math.sqrt(ms / D + eps);
    rstd[n] = r;
    for (let j = 0; j < D; j++) y[n * D + j] = x[n * D + j]! * r * w[j]!;
  }
  return { y, rstd };
}

export function silu(z: number): number {
  return z / (1 + Math.exp(-z));
}

/** y = silu(a) ⊙ b. */
export function refSwiglu(a: Arr, b: Arr): Float64Array {
  return Float64Array.from(a, (ai, i) => silu(ai) * b[i]!);
}

/** y [N,D] = table[ids[n], :]. */
export function refEmbedding(table: Arr, ids: Arr, D: number): Float64Array {
  const y = new Float64Array(ids.length * D);
  for (let n = 0; n < ids.length; n++) for (let j = 0; j < D; j++) y[n * D + j] = table[ids[n]! * D + j]!;
  return y;
}

/** Σ over rows with target ≠ -1 of logsumexp(logits[n,:]) − logits[n,target]; and that row count. */
export function refCrossEntropy(logits: Arr, targets: Arr, N: number, V: number): { loss: number; count: number } {
  let loss = 0;
  let count = 0;
  for (let n = 0; n < N; n++) {
    const t = targets[n]!;
    if (t === -1) continue;
    let m = -Infinity;
    for (let i = 0; i < V; i++) m = Math.max(m, logits[n * V + i]!);
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(logits[n * V + i]! - m);
    loss += m + Math.log(s) - logits[n * V + t]!;
    count++;
  }
  return { loss, count };
}

export interface AdamWRef {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
}

/** One AdamW step (PyTorch's formulation: decoupled decay on the parameter before the step). */
export function refAdamW(p: Arr, g: Arr, m: Arr, v: Arr, h: AdamWRef): { p: Float64Array; m: Float64Array; v: Float64Array } {
  const n = p.length;
  const out = { p: new Float64Array(n), m: new Float64Array(n), v: new Float64Array(n) };
  const bc1 = 1 - h.beta1 ** h.step;
  const bc2 = 1 - h.beta2 ** h.step;
  for (let i = 0; i < n; i++) {
    const mi = h.beta1 * m[i]! + (1 - h.beta1) * g[i]!;
    const vi = h.beta2 * v[i]! + (1 - h.beta2) * g[i]! ** 2;
    out.m[i] = mi;
    out.v[i] = vi;
    out.p[i] = p[i]! * (1 - h.lr * h.weightDecay) - (h.lr * (mi / bc1)) / (Math.sqrt(vi / bc2) + h.eps);
  }
  return out;
}

/**
 * Central finite differences of the scalar `loss()` with respect to `param` (modified in place
 * and restored) at `indices` (default: every element): (L(p + h) − L(p − h)) / 2h.
 */
export function finiteDiff(param: Float64Array, loss: () => number, indices?: number[], h = 1e-5): Float64Array {
  const at = indices ?? Array.from(param, (_, i) => i);
  const out = new Float64Array(at.length);
  at.forEach((i, k) => {
    const p0 = param[i]!;
    param[i] = p0 + h;
    const up = loss();
    param[i] = p0 - h;
    const down = loss();
    param[i] = p0;
    out[k] = (up - down) / (2 * h);
  });
  return out;
}

/** x[indices[k]] for each k. */
export function pick(x: Arr, indices: number[]): Float64Array {
  return Float64Array.from(indices, (i) => x[i]!);
}
