// Element-wise ops the attention layer needs that have no native kernel yet. Each is one
// function with a plain TypeScript loop, marked TODO(native): they run on the JavaScript thread
// and should move to native/src (and to the CUDA backend) before they show up in profiles.
// Everything else in model/ goes through native code.

/** g = logsigmoid(z) · invTau, elementwise (stable: min(z,0) − log1p(e^{−|z|})). TODO(native) */
export function logSigmoidScaled(z: Float32Array, invTau: number): Float32Array {
  const g = new Float32Array(z.length);
  for (let i = 0; i < z.length; i++) {
    const x = z[i]!;
    g[i] = (Math.min(x, 0) - Math.log1p(Math.exp(-Math.abs(x)))) * invTau;
  }
  return g;
}

/** dz = dg · sigmoid(−z) · invTau (the backward of logSigmoidScaled). TODO(native) */
export function logSigmoidScaledBackward(z: Float32Array, dg: Float32Array, invTau: number): Float32Array {
  const dz = new Float32Array(z.length);
  for (let i = 0; i < z.length; i++) dz[i] = (dg[i]! * invTau) / (1 + Math.exp(z[i]!));
  return dz;
}

/** y = sigmoid(z) = 1 / (1 + e^{−z}), elementwise. TODO(native) */
export function sigmoid(z: Float32Array): Float32Array {
  const y = new Float32Array(z.length);
  for (let i = 0; i < z.length; i++) y[i] = 1 / (1 + Math.exp(-z[i]!));
  return y;
}

/** dz = dy · y(1 − y), given y = sigmoid(z). TODO(native) */
export function sigmoidBackward(y: Float32Array, dy: Float32Array): Float32Array {
  const dz = new Float32Array(y.length);
  for (let i = 0; i < y.length; i++) dz[i] = dy[i]! * y[i]! * (1 - y[i]!);
  return dz;
}

/**
 * Row-wise L2 normalisation of x [rows, d]: y = x · inv, inv = 1/sqrt(Σ x² + eps) per row
 * (per head of k for the delta kinds). Returns inv [rows] for the backward. TODO(native)
 */
export function l2NormalizeRows(x: Float32Array, rows: number, d: number, eps: number): { y: Float32Array; inv: Float32Array } {
  const y = new Float32Array(rows * d);
  const inv = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += x[r * d + j]! ** 2;
    const iv = 1 / Math.sqrt(s + eps);
    inv[r] = iv;
    for (let j = 0; j < d; j++) y[r * d + j] = x[r * d + j]! * iv;
  }
  return { y, inv };
}

/** dx = inv · (dy − y (y·dy)) per row (exact also with eps > 0). TODO(native) */
export function l2NormalizeRowsBackward(y: Float32Array, inv: Float32Array, dy: Float32Array, rows: number, d: number): Float32Array {
  const dx = new Float32Array(rows * d);
  for (let r = 0; r < rows; r++) {
    let dot = 0;
    for (let j = 0; j < d; j++) dot += y[r * d + j]! * dy[r * d + j]!;
    const iv = inv[r]!;
    for (let j = 0; j < d; j++) dx[r * d + j] = iv * (dy[r * d + j]! - y[r * d + j]! * dot);
  }
  return dx;
}
